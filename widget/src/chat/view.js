// The chat window's transcript: message bubbles and their delivery states,
// replies growing token by token, hand-off notices, the typing line, the
// leave-a-message form and the rating prompt. It is the `view` that conversation.js drives. Text only ever
// enters the page as text nodes, never as HTML.

import { sourceList } from '../shared/sources.js';

const STATES = {
  queued: 'Not sent yet: it goes out when the connection is back',
  sending: 'Sending…',
  delivered: 'Delivered',
  failed: 'Not sent',
};
const FAILED = { too_large: 'Not sent: the message is too long' };
const NOTICES = {
  unavailable: "The assistant can't answer right now; a person will see your message.",
  asked: 'Asking for a person…',
  offline: 'You are offline. Try again when the connection is back.',
  ended: 'The conversation has ended.',
};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

/** A bubble: a hidden "who said it" for screen readers, then the text. */
function bubble(cls, who, text) {
  const li = el('li', 'm ' + cls);
  li.append(el('span', 'sr', who + ': '), el('div', 'b', text));
  return li;
}

export function createView({ log, typing, human, input, onScore, onLeave, onIncoming }) {
  const mine = new Map(); // visitor message id -> li
  const replies = new Map(); // reply id -> li
  let extras = []; // local lines not in the server's history: {ts, kind, text, li?}
  let queueNote = null; // the queue position line, updated in place
  let queueItem = null; // ...and its entry in extras
  let agentTyping = null;
  let agentTimer = null;
  let thinking = false;
  let greeting = '';
  let docsBase = ''; // the site's docs_base_url: where relative source paths live
  let leaving = null; // the leave-a-message form waiting for `message_left`: {li, email}
  let asked = false; // the visitor pressed "Talk to a person" and no answer came yet

  const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 60;
  function add(li, always) {
    const stick = always || nearBottom();
    log.append(li);
    if (stick) log.scrollTop = log.scrollHeight;
    return li;
  }

  function state(id, s, code) {
    const li = mine.get(id);
    if (!li) return;
    li.dataset.state = s;
    li.querySelector('.st').textContent = (s === 'failed' && FAILED[code]) || STATES[s];
  }

  function visitor(m, s) {
    const li = bubble('me', 'You', m.text);
    li.dataset.id = m.id;
    li.append(el('span', 'st'));
    mine.set(m.id, li);
    state(m.id, s);
    return add(li, true);
  }

  function replyStart(reply) {
    const li = bubble('ai', 'Assistant', '');
    li.dataset.reply = reply;
    li.dataset.done = 'false';
    // Announced once complete, not word by word.
    li.setAttribute('aria-busy', 'true');
    replies.set(reply, li);
    return add(li);
  }

  // Each document once, linked where it has an address (shared/sources.js).
  // Building the list must never throw: the history rebuild runs through it.
  function sources(li, list) {
    const docs = sourceList(list, docsBase);
    if (!docs.length) return;
    const ul = el('ul', 'src');
    ul.setAttribute('aria-label', 'Sources');
    for (const s of docs) {
      const item = ul.appendChild(el('li'));
      if (!s.href) {
        item.textContent = s.title;
        continue;
      }
      const a = item.appendChild(el('a', '', s.title));
      a.href = s.href;
      a.target = '_blank';
      a.rel = 'noopener';
    }
    li.append(ul);
  }

  function aiItem(text, reply, src) {
    const li = bubble('ai', 'Assistant', text);
    if (reply) li.dataset.reply = reply;
    li.dataset.done = 'true';
    sources(li, src || []);
    return li;
  }

  const agentItem = (name, text) => {
    const li = bubble('agent', name || 'Agent', text);
    const who = li.insertBefore(el('span', 'who', name || 'Agent'), li.firstChild);
    who.setAttribute('aria-hidden', 'true'); // the hidden prefix already says it
    return li;
  };

  // Forms (leave a message, rating) keep their element, and so what was typed, across a rebuild.
  const line = (x) => x.li || (x.kind === 'note' ? el('li', 'note', x.text) : aiItem(x.text));
  function extra(kind, text, ts = Date.now(), li) {
    const x = { kind, text, ts, li };
    extras.push(x);
    return [x, add(line(x), !!li)];
  }

  function showTyping() {
    const who = agentTyping || (thinking && 'Assistant');
    typing.hidden = !who;
    if (who) typing.lastChild.textContent = who + ' is typing…';
  }

  function csat() {
    const box = el('li', 'csat');
    box.setAttribute('role', 'group');
    box.setAttribute('aria-label', 'Rate this conversation');
    box.append(el('p', '', 'How was this conversation?'));
    const row = box.appendChild(el('div', 'stars'));
    for (let n = 1; n <= 5; n++) {
      const b = row.appendChild(el('button', 'star', '★'));
      b.type = 'button';
      b.dataset.score = n;
      b.setAttribute('aria-label', `${n} out of 5`);
      b.onclick = () => {
        onScore(n);
        box.replaceChildren(el('p', '', `Thank you! You rated this conversation ${n} out of 5.`));
        box.setAttribute('role', 'status');
      };
    }
    // Announced by the log; focus stays where the visitor has it.
    extra('csat', '', Date.now(), box);
  }

  function leaveForm() {
    const li = el('li', 'leave');
    const f = li.appendChild(el('form'));
    f.setAttribute('aria-label', 'Leave a message');
    const field = (text, tag) => f.appendChild(el('label', '', text)).appendChild(el(tag));
    const email = field('Your email', 'input');
    email.type = 'email';
    email.autocomplete = 'email';
    email.maxLength = 254;
    const msg = field('Message for the team', 'textarea');
    msg.rows = 3;
    msg.maxLength = 4000;
    email.required = msg.required = true;
    const go = f.appendChild(el('button', 'chip', 'Send message'));
    f.onsubmit = (e) => {
      e.preventDefault();
      const [a, t] = [email.value.trim(), msg.value.trim()];
      if (!t) return msg.focus();
      if (!onLeave(a, t)) return extra('note', NOTICES.offline);
      leaving = { li, email: a };
      email.disabled = msg.disabled = go.disabled = true;
      go.textContent = 'Sending…';
    };
    return li;
  }

  function leaveDone() {
    const text = leaving ? `Thank you! Your message was sent. We will reply to ${leaving.email}.` : 'Your message was sent to the team.';
    if (!leaving) return extra('note', text);
    const li = leaving.li;
    const had = li.contains(document.activeElement);
    leaving = null;
    li.setAttribute('role', 'status');
    li.tabIndex = -1;
    li.replaceChildren(el('p', '', text));
    if (had) li.focus();
  }

  return {
    state,
    visitor,
    replyStart,

    /** Rebuilds the transcript from a `welcome`, then the still-queued messages. */
    welcome(m, pending) {
      greeting = m.config?.greeting || '';
      docsBase = m.config?.docs_base_url || '';
      log.setAttribute('aria-busy', 'true');
      log.replaceChildren();
      mine.clear();
      replies.clear();
      queueNote = null;
      if (greeting) log.append(aiItem(greeting));
      // Local lines (proactive messages, notices) go where their time puts them.
      const rest = [...extras].sort((a, b) => a.ts - b.ts);
      const flush = (ts) => {
        while (rest.length && rest[0].ts <= ts) {
          const x = rest.shift();
          const li = log.appendChild(line(x));
          if (x === queueItem) queueNote = li;
        }
      };
      for (const h of m.history) {
        flush(h.ts);
        if (h.from === 'visitor') {
          visitor(h, 'delivered');
        } else {
          log.append(h.from === 'ai' ? aiItem(h.text, h.reply, h.sources) : agentItem(h.name, h.text));
        }
      }
      flush(Infinity);
      for (const s of m.streaming || []) replyStart(s.reply).querySelector('.b').append(s.text);
      for (const p of pending) visitor(p, 'queued');
      log.removeAttribute('aria-busy');
      log.scrollTop = log.scrollHeight;
    },

    replyToken(reply, text) {
      const li = replies.get(reply);
      if (!li) return;
      const stick = nearBottom();
      li.querySelector('.b').append(text);
      if (stick) log.scrollTop = log.scrollHeight;
    },

    replyDone(reply, src) {
      const li = replies.get(reply);
      if (!li) return;
      li.dataset.done = 'true';
      li.removeAttribute('aria-busy');
      sources(li, src);
      onIncoming();
    },

    agentMessage(m) {
      agentTyping = null;
      showTyping();
      add(agentItem(m.name, m.text));
      onIncoming();
    },

    agentTyping(name) {
      agentTyping = name || 'Agent';
      showTyping();
      clearTimeout(agentTimer);
      agentTimer = setTimeout(() => {
        agentTyping = null;
        showTyping();
      }, 4000);
    },

    thinking(on) {
      thinking = on;
      showTyping();
    },

    handoff(m) {
      const name = m.name || 'An agent';
      const justAsked = asked;
      asked = false;
      // Leaving a message makes no sense once a person is on the way.
      if ((m.event === 'queued' || m.event === 'joined') && !leaving) {
        extras = extras.filter((x) => !(x.kind === 'leave' && x.li.querySelector('form') && (x.li.remove(), true)));
      }
      if (m.event === 'queued') {
        const text = `Waiting for a person: you are number ${m.position ?? '…'} in the queue.`;
        // The position is resent as it changes: update the line, not a new one.
        if (queueNote?.isConnected) queueNote.textContent = queueItem.text = text;
        else [queueItem, queueNote] = extra('note', text);
        return;
      }
      queueNote = queueItem = null;
      const text = {
        joined: `${name} joined the conversation.`,
        left: `${name} left the conversation.`,
        none_available: 'No one is available right now. Leave a message and the team will reply by email, or keep chatting with the assistant.',
      }[m.event];
      if (text) extra('note', text);
      if (m.event === 'joined') onIncoming();
      // One form at a time: a second "none available" while one waits adds none.
      if (m.event === 'none_available' && !extras.some((x) => x.kind === 'leave' && x.li.querySelector('form'))) {
        const [x] = extra('leave', '', Date.now(), leaveForm());
        // The visitor just pressed "Talk to a person" (hidden since): on to the form. Typing elsewhere: left alone.
        const at = document.activeElement;
        if (at === human || at === document.body || justAsked) x.li.querySelector('input').focus();
      }
      if (m.event === 'message_left') leaveDone();
    },

    /** The gateway refused something that carried no id: a leave_message waiting for its answer, say. */
    refused(m) {
      if (!leaving) return;
      const f = leaving.li.querySelector('form');
      leaving = null;
      for (const e of f.elements) e.disabled = false;
      f.lastChild.textContent = 'Send message';
      extra('note', `Your message was not sent: ${m.message || m.code}`);
    },

    /** A person is asked for or has the conversation: no asking again; the AI back: the chip again. */
    person(on) {
      if (on && document.activeElement === human) {
        // The chip had the focus: it goes to the message field, not to nowhere.
        asked = true;
        input.focus();
      }
      human.hidden = on;
    },

    ended() {
      extra('note', NOTICES.ended);
      csat();
    },

    notice: (key) => extra('note', NOTICES[key]),

    /** A trigger's message, shown as the assistant speaking first. */
    proactive(text, ts) {
      extra('ai', text, ts);
      onIncoming();
    },

    /** Proactive lines fired before this page (kept in storage). */
    restore(list) {
      extras = list.map((x) => ({ kind: 'ai', text: x.text, ts: x.ts }));
    },
  };
}
