// The widget's protocol logic without a browser: backoff, the persistent
// outbox, the conversation's send order and error handling, the transport's
// fallback and cursor, triggers and theme layering.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backoffDelay } from '../../src/chat/backoff.js';
import { createConversation } from '../../src/chat/conversation.js';
import { createOutbox } from '../../src/chat/outbox.js';
import { jsonStore } from '../../src/chat/storage.js';
import { createTransport } from '../../src/chat/transport.js';
import { mergeThemes, pickTokens, positionOf, TOKENS } from '../../src/shared/theme.js';
import { dueTriggers, scrollPercent } from '../../src/shared/triggers.js';

/** A Web Storage stand-in. */
function fakeStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
    removeItem: (k) => m.delete(k),
  };
}

/** Timers run by hand. */
function fakeTimers() {
  let now = 0;
  let next = 1;
  const due = new Map();
  return {
    timer: (f, ms) => (due.set(next, { f, at: now + ms }), next++),
    untimer: (id) => due.delete(id),
    clock: () => now,
    advance(ms) {
      now += ms;
      for (const [id, t] of [...due].sort((a, b) => a[1].at - b[1].at)) {
        if (t.at <= now && due.has(id)) {
          due.delete(id);
          t.f();
        }
      }
    },
  };
}

/** A view that records what it was told. */
function fakeView() {
  const calls = [];
  const states = new Map();
  const rec =
    (name) =>
    (...a) =>
      calls.push([name, ...a]);
  return {
    calls,
    states,
    state: (id, s, code) => states.set(id, code ? `${s}:${code}` : s),
    visitor: (m, s) => states.set(m.id, s),
    welcome: rec('welcome'),
    replyStart: rec('replyStart'),
    replyToken: rec('replyToken'),
    replyDone: rec('replyDone'),
    agentMessage: rec('agentMessage'),
    agentTyping: rec('agentTyping'),
    thinking: rec('thinking'),
    person: rec('person'),
    handoff: rec('handoff'),
    ended: rec('ended'),
    notice: rec('notice'),
  };
}

function setup() {
  const store = jsonStore(fakeStorage);
  const outbox = createOutbox(store, 'q', 'p');
  const sent = [];
  let online = true;
  const view = fakeView();
  const t = fakeTimers();
  const conv = createConversation({
    outbox,
    view,
    send: (m) => online && (sent.push(m), true),
    now: t.clock,
    timer: t.timer,
    untimer: t.untimer,
  });
  return { store, outbox, sent, view, t, conv, setOnline: (v) => (online = v) };
}

const welcome = (history = [], extra = {}) => ({ type: 'welcome', conversation: 'c1', resumed: true, history, config: {}, ...extra });

describe('backoff', () => {
  it('grows exponentially, stays within [d/2, d], and is capped', () => {
    assert.equal(backoffDelay(0, () => 0), 250);
    assert.equal(backoffDelay(0, () => 1), 500);
    assert.equal(backoffDelay(3, () => 0), 2000);
    assert.equal(backoffDelay(3, () => 1), 4000);
    assert.equal(backoffDelay(30, () => 1), 15000);
    assert.equal(backoffDelay(30, () => 0), 7500);
  });
  it('spreads clients apart (jitter)', () => {
    const seen = new Set(Array.from({ length: 20 }, () => backoffDelay(4)));
    assert.ok(seen.size > 5, `${seen.size} distinct delays`);
  });
});

describe('outbox', () => {
  it('keeps messages in order across a reload, with their ids', () => {
    const backing = fakeStorage();
    const a = createOutbox(jsonStore(() => backing), 'q', 'x');
    const m1 = a.add('one');
    const m2 = a.add('two');
    assert.notEqual(m1.id, m2.id);
    // A new page: a new prefix, the same queue and ids.
    const b = createOutbox(jsonStore(() => backing), 'q', 'y');
    assert.deepEqual(
      b.list().map((m) => [m.id, m.text]),
      [
        [m1.id, 'one'],
        [m2.id, 'two'],
      ],
    );
    assert.ok(b.add('three').id.startsWith('y-'));
    assert.equal(b.remove(m1.id), 1);
    assert.deepEqual(
      a.list().map((m) => m.text),
      ['two', 'three'],
      'a second tab sees the same queue',
    );
  });
  it('makes ids the gateway accepts (1-64 chars)', () => {
    const o = createOutbox(jsonStore(fakeStorage), 'q');
    const { id } = o.add('x');
    assert.ok(id.length >= 1 && id.length <= 64, id);
  });
  it('falls back to memory when storage throws', () => {
    const s = jsonStore(() => {
      throw new Error('denied');
    });
    s.set('k', [1]);
    assert.deepEqual(s.get('k'), [1]);
  });
});

describe('conversation', () => {
  it('queues while offline and sends in order, one at a time, on welcome', () => {
    const { conv, sent, view, outbox } = setup();
    const a = conv.submit('a');
    const b = conv.submit('b');
    assert.equal(sent.length, 0, 'nothing goes out before welcome');
    assert.equal(view.states.get(a.id), 'queued');
    conv.receive(welcome());
    assert.deepEqual(
      sent.map((m) => m.text),
      ['a'],
      'stop-and-wait: b waits for a',
    );
    assert.equal(view.states.get(a.id), 'sending');
    conv.receive({ type: 'ack', id: a.id, seq: 1 });
    assert.equal(view.states.get(a.id), 'delivered');
    assert.deepEqual(
      sent.map((m) => m.text),
      ['a', 'b'],
    );
    conv.receive({ type: 'ack', id: b.id, seq: 2 });
    assert.equal(outbox.list().length, 0);
  });

  it('resends under the same id after a reconnect, and drops what history shows delivered', () => {
    const { conv, sent, outbox } = setup();
    conv.receive(welcome());
    const a = conv.submit('a');
    conv.submit('b');
    conv.offline(); // the ack for a was lost with the connection
    conv.receive(welcome([{ seq: 1, from: 'visitor', id: a.id, text: 'a', ts: 1 }]));
    assert.deepEqual(
      sent.map((m) => m.text),
      ['a', 'b'],
      'a is not sent twice: history shows it stored',
    );
    assert.deepEqual(
      outbox.list().map((m) => m.text),
      ['b'],
    );
    conv.offline();
    conv.receive(welcome([{ seq: 1, from: 'visitor', id: a.id, text: 'a', ts: 1 }]));
    assert.equal(sent[2].id, sent[1].id, 'b resent with its original id');
  });

  it('honours retry_after_ms and keeps the order', () => {
    const { conv, sent, t, view } = setup();
    conv.receive(welcome());
    const a = conv.submit('a');
    conv.submit('b');
    conv.receive({ type: 'error', code: 'rate_limited', id: a.id, retry_after_ms: 400 });
    assert.equal(view.states.get(a.id), 'queued');
    assert.equal(sent.length, 1);
    t.advance(399);
    assert.equal(sent.length, 1, 'not before retry_after_ms');
    t.advance(1);
    assert.deepEqual(
      sent.map((m) => m.text),
      ['a', 'a'],
      'a again, before b',
    );
    conv.receive({ type: 'error', code: 'busy', id: a.id, retry_after_ms: 100 });
    t.advance(100);
    conv.receive({ type: 'ack', id: a.id, seq: 1 });
    assert.deepEqual(
      sent.map((m) => m.text),
      ['a', 'a', 'a', 'b'],
    );
  });

  it('marks a refused message failed and moves on', () => {
    const { conv, sent, view, outbox } = setup();
    conv.receive(welcome());
    const a = conv.submit('x'.repeat(5000));
    conv.submit('b');
    conv.receive({ type: 'error', code: 'too_large', id: a.id, message: 'too long' });
    assert.equal(view.states.get(a.id), 'failed:too_large');
    assert.equal(sent.at(-1).text, 'b');
    assert.ok(!outbox.has(a.id));
  });

  it('resends when an ack never comes on a live connection', () => {
    const { conv, sent, t } = setup();
    conv.receive(welcome());
    conv.submit('a');
    t.advance(20000);
    assert.equal(sent.length, 2);
    assert.equal(sent[0].id, sent[1].id);
  });

  it('streams tokens into one reply and shows thinking until the first token', () => {
    const { conv, view } = setup();
    conv.receive(welcome());
    const a = conv.submit('q');
    conv.receive({ type: 'ack', id: a.id, seq: 1 });
    assert.deepEqual(view.calls.filter((c) => c[0] === 'thinking').at(-1), ['thinking', true]);
    conv.receive({ type: 'token', reply: 'r1', in_reply_to: a.id, text: 'Hel' });
    conv.receive({ type: 'token', reply: 'r1', in_reply_to: a.id, text: 'lo' });
    conv.receive({ type: 'done', reply: 'r1', in_reply_to: a.id, seq: 2, sources: [], confidence: 1 });
    const names = view.calls.map((c) => c[0]).filter((n) => n !== 'thinking' && n !== 'welcome' && n !== 'person');
    assert.deepEqual(names, ['replyStart', 'replyToken', 'replyToken', 'replyDone']);
    assert.deepEqual(view.calls.filter((c) => c[0] === 'thinking').at(-1), ['thinking', false]);
  });

  it('continues a reply that was streaming when the socket joined', () => {
    const { conv, view } = setup();
    conv.receive(welcome([], { streaming: [{ reply: 'r9', in_reply_to: 'x', text: 'so far' }] }));
    conv.receive({ type: 'token', reply: 'r9', in_reply_to: 'x', text: ' more' });
    assert.ok(!view.calls.some((c) => c[0] === 'replyStart'), 'no second bubble for r9');
    assert.deepEqual(view.calls.at(-1), ['replyToken', 'r9', ' more']);
  });

  it('passes hand-off, agent and end events to the view; human and csat only when connected', () => {
    const { conv, sent, view, setOnline } = setup();
    assert.equal(conv.human(), false);
    conv.receive(welcome());
    assert.equal(conv.human(), true);
    conv.receive({ type: 'agent', event: 'queued', position: 2 });
    conv.receive({ type: 'agent', event: 'joined', name: 'Dana' });
    conv.receive({ type: 'message', seq: 3, from: 'agent', name: 'Dana', text: 'hi' });
    conv.receive({ type: 'ended', reason: 'resolved' });
    assert.equal(conv.csat(5), true);
    setOnline(false);
    assert.deepEqual(
      sent.map((m) => m.type),
      ['human', 'csat'],
    );
    const names = view.calls.map((c) => c[0]);
    for (const n of ['handoff', 'agentMessage', 'ended']) assert.ok(names.includes(n), n);
  });

  it('shows the assistant typing only while an AI reply is expected: not with a person, not after the end', () => {
    const { conv, view } = setup();
    const typing = () => view.calls.filter((c) => c[0] === 'thinking').at(-1)?.[1];
    const chip = () => !view.calls.filter((c) => c[0] === 'person').at(-1)?.[1];
    const say = (text) => {
      const m = conv.submit(text);
      conv.receive({ type: 'ack', id: m.id, seq: 1 });
      return m;
    };
    conv.receive(welcome());
    assert.equal(chip(), true);
    say('a');
    assert.equal(typing(), true, 'the AI answers');
    // "Talk to a person": from the click on, the AI is silent and the chip gone.
    assert.equal(conv.human(), true);
    assert.equal(typing(), false);
    assert.equal(chip(), false, 'asked for a person');
    say('b');
    assert.equal(typing(), false, 'asked: the message waits for a person');
    conv.receive({ type: 'agent', event: 'queued', position: 1 });
    say('c');
    assert.equal(typing(), false, 'queued or offered');
    assert.equal(chip(), false);
    conv.receive({ type: 'agent', event: 'joined', name: 'Ada' });
    say('d');
    assert.equal(typing(), false, 'a person holds the conversation');
    assert.equal(chip(), false);
    conv.receive({ type: 'agent', event: 'left', name: 'Ada' });
    assert.equal(chip(), true, 'released: the AI is back');
    const e = say('e');
    assert.equal(typing(), true);
    conv.receive({ type: 'token', reply: 'r5', in_reply_to: e.id, text: 'Hi' });
    assert.equal(typing(), false);
    // Held again, a message nobody answered, then resolved.
    conv.receive({ type: 'agent', event: 'joined', name: 'Ada' });
    say('f');
    conv.receive({ type: 'ended', reason: 'resolved' });
    assert.equal(typing(), false, 'resolved');
    assert.equal(chip(), true);
    say('g');
    assert.equal(typing(), true, 'the next conversation is the AI\'s');
    // A rule or a low-confidence reply handed over, nobody there: the AI is back.
    conv.receive({ type: 'agent', event: 'queued', position: 1 });
    conv.receive({ type: 'agent', event: 'none_available' });
    assert.equal(typing(), false, 'the message that asked is not answered by the AI');
    assert.equal(chip(), true);
  });

  it('takes where the hand-off stands from welcome, after a reload', () => {
    const { conv, view } = setup();
    conv.receive(welcome([], { handoff: 'held' }));
    const chip = () => !view.calls.filter((c) => c[0] === 'person').at(-1)?.[1];
    assert.equal(chip(), false);
    const m = conv.submit('still there?');
    conv.receive({ type: 'ack', id: m.id, seq: 4 });
    assert.deepEqual(view.calls.filter((c) => c[0] === 'thinking').at(-1), ['thinking', false]);
    conv.receive(welcome([], { handoff: 'waiting' }));
    assert.equal(chip(), false);
    conv.receive(welcome());
    assert.equal(chip(), true, 'no handoff: the AI answers');
  });

  it('tells the server about typing at most every 3 s', () => {
    const { conv, sent, t } = setup();
    conv.receive(welcome());
    conv.typing();
    conv.typing();
    t.advance(3000);
    conv.typing();
    assert.equal(sent.filter((m) => m.type === 'typing').length, 2);
  });
});

/** A WebSocket stand-in the test opens, fails or feeds. */
function fakeWsClass() {
  const made = [];
  class WS {
    constructor(url) {
      this.url = url;
      this.sent = [];
      made.push(this);
    }
    send(s) {
      this.sent.push(JSON.parse(s));
    }
    close() {
      this.closed = true;
    }
  }
  return { WS, made };
}

describe('transport', () => {
  const base = 'http://gw.test';
  function make(fetchFn, session = jsonStore(fakeStorage)) {
    const { WS, made } = fakeWsClass();
    const t = fakeTimers();
    const got = [];
    const states = [];
    const tr = createTransport({
      base,
      site: 'demo',
      session,
      hello: () => ({ type: 'hello' }),
      onMessage: (m) => got.push(m),
      onState: (s, kind) => states.push(`${s}/${kind}`),
      WS,
      fetchFn,
      timer: t.timer,
      untimer: t.untimer,
      random: () => 0,
      clock: t.clock,
    });
    return { tr, made, t, got, states, session };
  }

  it('opens a WebSocket, says hello first, and reconnects with backoff', () => {
    const { tr, made, t, got, states } = make(() => Promise.reject(new Error('unused')));
    tr.start();
    assert.equal(made[0].url, 'ws://gw.test/ws?site=demo');
    made[0].onopen();
    assert.deepEqual(made[0].sent, [{ type: 'hello' }]);
    made[0].onmessage({ data: '{"type":"welcome"}' });
    assert.equal(got[0].type, 'welcome');
    assert.equal(tr.send({ type: 'ping', id: '1' }), true);
    made[0].onclose();
    assert.equal(tr.state, 'offline');
    assert.equal(tr.send({ type: 'ping', id: '2' }), false);
    t.advance(249);
    assert.equal(made.length, 1);
    t.advance(1);
    assert.equal(made.length, 2, 'reconnected after the backoff delay');
    assert.deepEqual(states.slice(0, 3), ['connecting/ws', 'open/ws', 'offline/ws']);
  });

  it('falls back to long-polling when the upgrade fails, remembers it, and keeps the cursor', async () => {
    const calls = [];
    let recvs = 0;
    const fetchFn = async (url, opts = {}) => {
      calls.push([opts.method || 'GET', url, opts.body]);
      if (url.includes('/poll/send')) return { ok: true, status: 204 };
      recvs++;
      if (recvs === 1) return { ok: true, json: async () => ({ cursor: 2, messages: [{ type: 'welcome' }, { type: 'ack', id: 'a', seq: 1 }] }) };
      return new Promise(() => {}); // held
    };
    const { tr, made, got, session } = make(fetchFn);
    tr.start();
    made[0].onclose(); // never opened: the upgrade failed
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(tr.kind, 'poll');
    assert.equal(tr.state, 'open');
    assert.deepEqual(calls[0], ['POST', `${base}/poll/send?site=demo`, '[{"type":"hello"}]']);
    assert.equal(calls[1][1], `${base}/poll/recv?site=demo&cursor=0`);
    assert.deepEqual(
      got.map((m) => m.type),
      ['welcome', 'ack'],
    );
    assert.equal(calls[2][1], `${base}/poll/recv?site=demo&cursor=2`, 'the next recv continues from the cursor');
    assert.equal(session.get('lc:transport:demo'), 'poll');
    assert.equal(session.get('lc:cursor:demo'), 2);
    // A new page in the same tab goes straight to polling from the kept cursor.
    const again = make(fetchFn, session);
    again.tr.start();
    assert.equal(again.made.length, 0, 'no WebSocket tried again this session');
  });

  it('does not remember polling when the gateway is simply down', async () => {
    const { tr, made, session } = make(() => Promise.reject(new TypeError('network')));
    tr.start();
    made[0].onclose();
    await new Promise((r) => setImmediate(r));
    assert.equal(tr.state, 'offline');
    assert.equal(session.get('lc:transport:demo', 'ws'), 'ws');
  });

  it('gives up on a socket whose ping goes unanswered', () => {
    const { tr, made, t } = make(() => Promise.reject(new Error('unused')));
    tr.start();
    made[0].onopen();
    t.advance(30000);
    assert.deepEqual(made[0].sent.at(-1), { type: 'ping', id: 'hb' });
    t.advance(11000);
    assert.equal(tr.state, 'offline');
  });
});

describe('triggers', () => {
  const list = [
    { i: 0, after_seconds: 5, message: 't' },
    { i: 1, scroll_percent: 60, message: 's' },
    { i: 2, url_pattern: 'pricing', message: 'u' },
    { i: 3, url_pattern: '(', message: 'bad regexp never fires' },
    { i: 4, after_seconds: 2, url_pattern: '/shop', message: 'both' },
  ];
  const due = (st) => dueTriggers(list, st).map((t) => t.i);
  it('fires each kind on its own condition, and all conditions of one trigger together', () => {
    assert.deepEqual(due({ seconds: 0, scroll: 0, url: 'https://x/' }), []);
    assert.deepEqual(due({ seconds: 5, scroll: 0, url: 'https://x/' }), [0]);
    assert.deepEqual(due({ seconds: 0, scroll: 60, url: 'https://x/' }), [1]);
    assert.deepEqual(due({ seconds: 0, scroll: 0, url: 'https://x/pricing' }), [2]);
    assert.deepEqual(due({ seconds: 1, scroll: 0, url: 'https://x/shop' }), []);
    assert.deepEqual(due({ seconds: 2, scroll: 0, url: 'https://x/shop' }), [4]);
  });
  it('measures scroll depth as the share of the page seen', () => {
    assert.equal(scrollPercent(0, 800, 4000), 20);
    assert.equal(scrollPercent(3200, 800, 4000), 100);
    assert.equal(scrollPercent(0, 800, 600), 100);
  });
});

describe('theme', () => {
  it('has at least 20 tokens', () => assert.ok(Object.keys(TOKENS).length >= 20));
  it('layers site < config object < data attributes, and ignores unknown names', () => {
    const t = mergeThemes({ accent: '#111', radius: '4px', bogus: 'x' }, { radius: '8px' }, { launcherSize: '70px', site: 'demo' });
    assert.equal(t.accent, '#111');
    assert.equal(t.radius, '8px');
    assert.equal(t['launcher-size'], '70px');
    assert.ok(!('bogus' in t) && !('site' in t));
    assert.equal(t.bg, TOKENS.bg);
    assert.deepEqual(pickTokens({ fontSize: '14px' }), { 'font-size': '14px' });
    assert.equal(positionOf({ position: 'left' }), 'left');
    assert.equal(positionOf({ position: 'middle' }), 'right');
  });
});
