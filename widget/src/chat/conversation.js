// The visitor's side of the chat protocol: when each queued message goes out,
// what every server message means, and what the visitor is shown for it.
// DOM-free and transport-free: it is handed a `send` function and a `view`
// (see view.js for the real one), so Node tests drive it with fakes.
//
// Messages go out one at a time, the next only after the previous one's ack:
// a rate-limited or busy message is then resent before anything typed after
// it, so the transcript keeps the visitor's order whatever the server refuses.

const ACK_TIMEOUT_MS = 20000;

export function createConversation({ outbox, send, view, now = Date.now, timer = setTimeout, untimer = clearTimeout }) {
  let ready = false; // welcomed on the current connection
  let inflight = null; // id sent and not yet acked or refused
  let ackTimer = null;
  let hold = null; // honouring a retry_after_ms
  let lastTyping = -Infinity;
  const replies = new Set(); // reply ids streaming now
  const awaiting = new Set(); // acked visitor ids whose AI answer has not started
  // A person is asked for, offered the conversation or holds it: the AI is
  // silent (the gateway answers nothing until `left`, `none_available` or
  // the end), so no "Assistant is typing" and no "Talk to a person".
  let person = false;

  const thinking = () => view.thinking(awaiting.size > 0);
  /** Whether a person has the conversation; what was awaited from the AI never comes. */
  function withPerson(on) {
    person = on;
    awaiting.clear();
    thinking();
    view.person(on);
  }

  function settle(id) {
    if (id !== inflight) return;
    inflight = null;
    untimer(ackTimer);
  }

  function pump() {
    if (!ready || inflight || hold) return;
    const head = outbox.list()[0];
    if (!head) return;
    inflight = head.id;
    view.state(head.id, 'sending');
    if (!send({ type: 'message', id: head.id, text: head.text })) {
      inflight = null;
      view.state(head.id, 'queued');
      return;
    }
    // An ack lost without the connection noticing: resending the same id is
    // safe, the gateway answers a repeated id with the original ack.
    ackTimer = timer(() => {
      if (inflight !== head.id) return;
      inflight = null;
      pump();
    }, ACK_TIMEOUT_MS);
  }

  function onError(m) {
    const id = m.id;
    if (!id) view.refused?.(m);
    if (m.code === 'rate_limited' || m.code === 'busy') {
      settle(id);
      if (id && outbox.has(id)) view.state(id, 'queued');
      untimer(hold);
      hold = timer(() => {
        hold = null;
        pump();
      }, m.retry_after_ms ?? 1000);
    } else if (m.code === 'unavailable') {
      awaiting.delete(id);
      thinking();
      view.notice('unavailable');
    } else if (id && outbox.has(id)) {
      // too_large, bad_request: resending cannot help; do not block the rest.
      settle(id);
      outbox.remove(id);
      view.state(id, 'failed', m.code);
      pump();
    }
  }

  const handlers = {
    welcome(m) {
      const delivered = m.history.filter((h) => h.from === 'visitor').map((h) => h.id);
      outbox.remove(...delivered);
      replies.clear();
      awaiting.clear();
      for (const s of m.streaming || []) replies.add(s.reply);
      settle(inflight);
      view.welcome(m, outbox.list());
      ready = true;
      // Where the hand-off stands (an extension of `welcome`, absent while
      // the AI answers): the events that said so may have reached another page.
      withPerson(!!m.handoff);
      pump();
    },
    ack(m) {
      settle(m.id);
      outbox.remove(m.id);
      view.state(m.id, 'delivered');
      // With a person, the message goes to them: the AI will not answer it.
      if (!person) awaiting.add(m.id);
      thinking();
      pump();
    },
    token(m) {
      if (!replies.has(m.reply)) {
        replies.add(m.reply);
        view.replyStart(m.reply, m.in_reply_to);
      }
      awaiting.delete(m.in_reply_to);
      thinking();
      view.replyToken(m.reply, m.text);
    },
    done(m) {
      if (!replies.has(m.reply)) view.replyStart(m.reply, m.in_reply_to);
      replies.delete(m.reply);
      awaiting.delete(m.in_reply_to);
      thinking();
      view.replyDone(m.reply, m.sources || []);
    },
    message(m) {
      awaiting.clear();
      thinking();
      view.agentMessage(m);
    },
    typing(m) {
      view.agentTyping(m.name);
    },
    agent(m) {
      // Queued or joined: a person answers from here on. Left, or nobody
      // available: the AI is back, for the messages written from now on.
      if (m.event !== 'message_left') withPerson(m.event === 'queued' || m.event === 'joined');
      // Whoever just joined hears of the visitor's typing from the first key.
      if (m.event === 'joined') lastTyping = -Infinity;
      view.handoff(m);
    },
    ended(m) {
      // The next message opens a new conversation, which the AI answers.
      withPerson(false);
      view.ended(m.reason);
    },
    error: onError,
  };

  return {
    /** Every server message, in order. */
    receive(m) {
      handlers[m.type]?.(m);
    },
    /** The connection dropped: nothing is in flight any more. */
    offline() {
      ready = false;
      if (inflight) view.state(inflight, 'queued');
      settle(inflight);
    },
    /** The visitor sends `text`: queued at once, sent when its turn comes. */
    submit(text) {
      const m = outbox.add(text, now());
      view.visitor(m, 'queued');
      pump();
      return m;
    },
    /** "Talk to a person"; false when offline. */
    human() {
      if (!(ready && send({ type: 'human' }))) return false;
      withPerson(true);
      return true;
    },
    csat: (score) => ready && send({ type: 'csat', score }),
    /** After `none_available`: a message for the site's agents; false when offline. */
    leave: (email, text) => ready && send({ type: 'leave_message', email, text }),
    /** The visitor is typing: told to the server at most every 3 s. */
    typing() {
      if (!ready || now() - lastTyping < 3000) return;
      lastTyping = now();
      send({ type: 'typing' });
    },
    get ready() {
      return ready;
    },
  };
}
