// The agent desk's logic without a browser: the state reducer over the
// gateway's frames, canned-reply completion, and the socket's reconnects.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cannedMatches, insert, slashWord, suggest } from '../../src/agent/canned.js';
import { createSocket } from '../../src/agent/socket.js';
import { canTransfer, duration, initial, isTyping, lineup, mergeItems, reduce, secondsLeft, throttle, waitingSince } from '../../src/agent/state.js';

const card = (id, extra = {}) => ({ conversation: id, site: 'demo', state: 'queued', reason: 'asked', waiting_since_ms: 1_700_000_000_000, ...extra });
const item = (seq, from, text, extra = {}) => ({ seq, from, text, ts: 1000 + seq, ...extra });
const ADA = { id: 'a1', name: 'Ada', role: 'agent', languages: ['en'], skills: [], capacity: 4, sites: ['demo'] };

/** Runs frames through the reducer, each at time `now`. */
const run = (frames, s = initial(), now = 5000) => frames.reduce((st, f) => reduce(st, f, now), s);
const welcome = (extra = {}) => ({ type: 'welcome', agent: ADA, queue: [], conversations: [], canned: [], ...extra });

describe('desk state', () => {
  it('starts from welcome: agent, queue, held conversations, canned replies', () => {
    const s = run([welcome({ queue: [card('c1', { position: 1 })], conversations: [card('c2', { state: 'assigned' })], canned: [{ shortcut: 'hi', text: 'Hello!' }] })]);
    assert.equal(s.agent.name, 'Ada');
    assert.deepEqual(
      s.queue.map((c) => c.conversation),
      ['c1'],
    );
    assert.equal(s.queue[0].seen_ms, 5000, 'cards remember when they arrived');
    assert.deepEqual(s.mine, ['c2']);
    assert.equal(s.selected, 'c2', 'the first held conversation is shown');
    assert.equal(s.convs.c2.items, null, 'no transcript yet: the desk asks with open');
    assert.equal(s.canned.length, 1);
  });

  it('replaces the queue on each queue frame, leaving the old state untouched', () => {
    const a = run([welcome({ queue: [card('c1')] })]);
    const b = reduce(a, { type: 'queue', items: [card('c1', { position: 1 }), card('c3', { position: 2 })] }, 6000);
    assert.equal(a.queue.length, 1, 'pure: the old state is not changed');
    assert.deepEqual(
      b.queue.map((c) => [c.conversation, c.position]),
      [
        ['c1', 1],
        ['c3', 2],
      ],
    );
    assert.equal(reduce(b, { type: 'pong', id: 'x' }), b, 'a frame that changes nothing gives the same object');
    assert.equal(reduce(b, { type: 'no_such_frame' }), b);
  });

  it('offers expire, and a decline or an assignment ends them', () => {
    let s = run([welcome({ queue: [card('c1')] }), { type: 'offer', conversation: 'c1', expires_in_ms: 3000 }], initial(), 1000);
    assert.equal(s.offers.c1.expiresAt, 4000);
    assert.equal(secondsLeft(s.offers.c1, 1001), 3);
    assert.equal(secondsLeft(s.offers.c1, 9000), 0);
    assert.equal(reduce(s, { type: '@expire' }, 3999), s, 'not yet');
    assert.deepEqual(reduce(s, { type: '@expire' }, 4000).offers, {});
    assert.deepEqual(reduce(s, { type: '@decline', conversation: 'c1' }).offers, {});
    s = reduce(s, { type: '@take', conversation: 'c1' });
    s = reduce(s, { type: 'assigned', ...card('c1', { state: 'assigned' }), items: [item(1, 'visitor', 'hi')] });
    assert.deepEqual(s.offers, {});
    assert.deepEqual(s.taking, []);
    assert.deepEqual(s.queue, [], 'taken: out of the queue at once');
  });

  it('selects a conversation the agent took, but not one assigned while reading another', () => {
    let s = run([welcome({ conversations: [card('c1', { state: 'assigned' })] })]);
    assert.equal(s.selected, 'c1');
    s = reduce(s, { type: 'assigned', ...card('c2'), items: [] });
    assert.equal(s.selected, 'c1', 'a transfer to me does not pull the agent away');
    assert.match(s.line.text, /assigned to you/);
    s = reduce(s, { type: '@take', conversation: 'c3' });
    s = reduce(s, { type: 'assigned', ...card('c3'), items: [item(1, 'visitor', 'help')] });
    assert.equal(s.selected, 'c3');
    assert.deepEqual(s.mine, ['c1', 'c2', 'c3']);
    assert.equal(s.convs.c3.card.type, undefined, 'the card, not the frame');
    assert.equal(s.convs.c3.items[0].text, 'help');
  });

  it('appends messages in seq order, once each, and counts unread ones elsewhere', () => {
    let s = run([welcome(), { type: '@take', conversation: 'c1' }, { type: 'assigned', ...card('c1'), items: [item(1, 'visitor', 'a'), item(2, 'ai', 'b')] }]);
    s = reduce(s, { type: 'message', conversation: 'c1', item: item(4, 'visitor', 'd') });
    s = reduce(s, { type: 'message', conversation: 'c1', item: item(3, 'agent', 'c', { name: 'Bea' }) });
    s = reduce(s, { type: 'message', conversation: 'c1', item: item(4, 'visitor', 'd') });
    assert.deepEqual(
      s.convs.c1.items.map((i) => i.seq),
      [1, 2, 3, 4],
    );
    assert.equal(s.convs.c1.card.preview, 'd', "the card previews the visitor's latest");
    assert.equal(s.convs.c1.unread, 0, 'the conversation on screen has nothing unread');
    s = reduce(s, { type: 'assigned', ...card('c2'), items: [] });
    s = reduce(s, { type: 'message', conversation: 'c2', item: item(1, 'visitor', 'x') });
    s = reduce(s, { type: 'message', conversation: 'c2', item: item(2, 'visitor', 'y') });
    assert.equal(s.convs.c2.unread, 2);
    s = reduce(s, { type: '@select', conversation: 'c2' });
    assert.equal(s.convs.c2.unread, 0);
    assert.equal(reduce(s, { type: 'message', conversation: 'zz', item: item(1, 'visitor', 'q') }), s, 'unknown conversations are ignored');
  });

  it('keeps a reply pending until its ack, then puts it in the transcript', () => {
    let s = run([welcome(), { type: '@take', conversation: 'c1' }, { type: 'assigned', ...card('c1'), items: [item(1, 'visitor', 'a')] }]);
    s = reduce(s, { type: '@send', conversation: 'c1', id: 'm1', text: 'On it' });
    s = reduce(s, { type: '@send', conversation: 'c1', id: 'm2', text: 'Bad' });
    assert.deepEqual(
      s.convs.c1.pending.map((p) => [p.id, p.state]),
      [
        ['m1', 'sending'],
        ['m2', 'sending'],
      ],
    );
    s = reduce(s, { type: 'ack', id: 'm1', conversation: 'c1', seq: 2 }, 7000);
    assert.deepEqual(
      s.convs.c1.pending.map((p) => p.id),
      ['m2'],
    );
    assert.deepEqual(s.convs.c1.items[1], { seq: 2, from: 'agent', name: 'Ada', text: 'On it', ts: 7000 });
    // The gateway may also send the agent's own item as a message: it is not shown twice.
    s = reduce(s, { type: 'message', conversation: 'c1', item: item(2, 'agent', 'On it', { name: 'Ada' }) });
    assert.equal(s.convs.c1.items.length, 2);
    s = reduce(s, { type: 'error', code: 'too_large', message: 'text too long', id: 'm2' });
    assert.deepEqual(s.convs.c1.pending[0], { id: 'm2', text: 'Bad', state: 'failed', why: 'text too long' });
    assert.deepEqual(s.line, { kind: 'error', text: 'text too long' });
    // An ack without a conversation still finds its message.
    s = reduce(s, { type: '@send', conversation: 'c1', id: 'm3', text: 'ok' });
    s = reduce(s, { type: 'ack', id: 'm3', seq: 3 });
    assert.equal(s.convs.c1.items.at(-1).text, 'ok');
  });

  it('shows the visitor typing for 4 s, until their message arrives', () => {
    let s = run([welcome(), { type: '@take', conversation: 'c1' }, { type: 'assigned', ...card('c1'), items: [] }]);
    s = reduce(s, { type: 'typing', conversation: 'c1' }, 10_000);
    assert.ok(isTyping(s.convs.c1, 13_999));
    assert.ok(!isTyping(s.convs.c1, 14_000));
    s = reduce(s, { type: 'message', conversation: 'c1', item: item(1, 'visitor', 'here') }, 11_000);
    assert.ok(!isTyping(s.convs.c1, 11_001));
  });

  it('lets go of a conversation released, resolved or transferred, and moves to the next', () => {
    let s = run([welcome({ conversations: [card('c1'), card('c2')] })]);
    assert.equal(s.selected, 'c1');
    s = reduce(s, { type: 'unassigned', conversation: 'c1', reason: 'resolved' });
    assert.deepEqual(s.mine, ['c2']);
    assert.equal(s.selected, 'c2');
    assert.equal(s.convs.c1, undefined);
    assert.match(s.line.text, /resolved/);
    const again = reduce(s, { type: 'ended', conversation: 'c1', reason: 'resolved' });
    assert.equal(again, s, 'an ended after the unassigned changes nothing');
    s = reduce(s, { type: 'ended', conversation: 'c2', reason: 'timeout' });
    assert.deepEqual(s.mine, []);
    assert.equal(s.selected, null);
  });

  it('reads a queued conversation with open, and forgets it when the agent looks elsewhere', () => {
    let s = run([welcome({ queue: [card('q1', { page: 'https://shop/p', position: 1 })], conversations: [card('c1')] })]);
    s = reduce(s, { type: '@select', conversation: 'q1' });
    assert.equal(s.convs.q1.card.page, 'https://shop/p', 'the card comes from the queue');
    assert.equal(s.convs.q1.held, false);
    s = reduce(s, { type: 'transcript', ...card('q1'), items: [item(1, 'visitor', 'hello')] });
    assert.equal(s.convs.q1.items.length, 1);
    s = reduce(s, { type: '@select', conversation: 'c1' });
    assert.equal(s.convs.q1, undefined);
    assert.ok(s.convs.c1, 'held ones stay');
  });

  it('after a reconnect, keeps the transcripts shown but marks them stale, and drops stale offers', () => {
    let s = run([welcome({ conversations: [card('c1')] }), { type: 'transcript', ...card('c1'), items: [item(1, 'visitor', 'a')] }, { type: 'offer', conversation: 'q9', expires_in_ms: 1000 }]);
    s = reduce(s, { type: '@send', conversation: 'c1', id: 'm1', text: 'unacked' });
    assert.equal(s.convs.c1.stale, false);
    s = reduce(s, welcome({ conversations: [card('c1')] }));
    assert.equal(s.convs.c1.stale, true);
    assert.equal(s.convs.c1.items.length, 1);
    assert.equal(s.convs.c1.pending.length, 1, 'unacked replies survive, to be resent under their ids');
    assert.deepEqual(s.offers, {});
  });

  it('clears offers and takes lost to another agent (conflict)', () => {
    let s = run([welcome(), { type: 'offer', conversation: 'q1', expires_in_ms: 20000 }, { type: '@take', conversation: 'q1' }]);
    s = reduce(s, { type: 'error', code: 'conflict', message: 'taken by another agent', conversation: 'q1' });
    assert.deepEqual(s.offers, {});
    assert.deepEqual(s.taking, []);
    assert.equal(s.line.kind, 'error');
  });

  it('keeps the agents list for transfers, for supervisors and admins only', () => {
    const s = run([welcome(), { type: 'agents', items: [{ id: 'a2', name: 'Bea', online: true, available: true, load: 1, capacity: 4 }] }]);
    assert.equal(s.agents[0].name, 'Bea');
    assert.ok(!canTransfer(ADA));
    assert.ok(canTransfer({ ...ADA, role: 'supervisor' }));
    assert.ok(canTransfer({ ...ADA, role: 'admin' }));
  });

  it('signs out to a blank state', () => {
    const s = run([welcome({ queue: [card('c1')] }), { type: '@reset' }]);
    assert.deepEqual(s, initial());
  });
});

describe('desk helpers', () => {
  it('draws an offered conversation above the queue, not in it nor in its count', () => {
    const now = 1000;
    let s = reduce(initial(), { type: 'queue', items: [{ conversation: 'c_a', position: 1, state: 'offered' }], total: 1 }, now);
    s = reduce(s, { type: 'offer', conversation: 'c_a', expires_in_ms: 20000 }, now);
    let l = lineup(s);
    assert.deepEqual(l.offered.map((c) => c.conversation), ['c_a']);
    assert.deepEqual(l.queue, [], 'the count says 0, as "No one is waiting." does');
    s = reduce(s, { type: 'queue', items: [{ conversation: 'c_a', position: 1 }, { conversation: 'c_b', position: 2 }], total: 2 }, now);
    l = lineup(s);
    assert.deepEqual(l.queue.map((c) => c.conversation), ['c_b']);
    // Declined or lapsed: back in the queue, counted there.
    s = reduce(s, { type: '@decline', conversation: 'c_a' }, now);
    assert.deepEqual(lineup(s).queue.map((c) => c.conversation), ['c_a', 'c_b']);
    assert.deepEqual(lineup(s).offered, []);
    // An offer whose card has not come yet still shows.
    s = reduce(s, { type: 'offer', conversation: 'c_z', expires_in_ms: 20000 }, now);
    assert.deepEqual(lineup(s).offered, [{ conversation: 'c_z' }]);
  });

  it('merges transcript items by seq', () => {
    const a = [item(1, 'visitor', 'a'), item(3, 'ai', 'c')];
    const b = mergeItems(a, [item(2, 'agent', 'b'), item(3, 'ai', 'c')]);
    assert.deepEqual(
      b.map((i) => i.seq),
      [1, 2, 3],
    );
    assert.equal(a.length, 2, 'the old list is not changed');
    assert.equal(mergeItems(a, [item(1, 'visitor', 'a')]), a, 'nothing new: the same list');
  });

  it('reads waiting_since_ms as an epoch time, or as a duration when too small to be one', () => {
    assert.equal(waitingSince({ waiting_since_ms: 1_700_000_000_000 }, 5), 1_700_000_000_000);
    assert.equal(waitingSince({ waiting_since_ms: 65_000, seen_ms: 1_700_000_100_000 }), 1_700_000_035_000);
    assert.equal(waitingSince({}), null);
  });

  it('writes durations for people', () => {
    assert.equal(duration(0), '0 s');
    assert.equal(duration(59_999), '59 s');
    assert.equal(duration(65_000), '1 min');
    assert.equal(duration(2 * 3600_000 + 5 * 60_000), '2 h 05');
    assert.equal(duration(-5), '0 s');
  });

  it('throttles typing to once per 2 s per conversation', () => {
    let t = 0;
    const sent = [];
    const gate = throttle(2000, () => t);
    for (const [at, c] of [
      [0, 'c1'],
      [500, 'c1'],
      [600, 'c2'],
      [1999, 'c1'],
      [2000, 'c1'],
      [2700, 'c2'],
    ]) {
      t = at;
      gate(c, () => sent.push(`${c}@${at}`));
    }
    assert.deepEqual(sent, ['c1@0', 'c2@600', 'c1@2000', 'c2@2700']);
  });
});

describe('canned replies', () => {
  const canned = [
    { shortcut: 'returns', text: 'You can return anything within 30 days.' },
    { shortcut: 'hello', text: 'Hi! How can I help?' },
    { shortcut: '/refund', text: 'Refunds take 3-5 days.' },
    { shortcut: 'shipping-returns', text: 'Return shipping is free.' },
  ];

  it('finds the "/word" before the caret, at the start or after a space', () => {
    assert.deepEqual(slashWord('/ret'), { start: 0, end: 4, query: 'ret' });
    assert.deepEqual(slashWord('Sure. /re'), { start: 6, end: 9, query: 're' });
    assert.deepEqual(slashWord('/'), { start: 0, end: 1, query: '' });
    assert.deepEqual(slashWord('/re and more', 3), { start: 0, end: 3, query: 're' });
    assert.equal(slashWord('and/or'), null, 'not inside a word');
    assert.equal(slashWord('http://x'), null);
    assert.equal(slashWord('/ret '), null, 'a space ends it');
    assert.equal(slashWord('plain'), null);
  });

  it('matches shortcuts that start with the query first, then those containing it', () => {
    assert.deepEqual(
      cannedMatches(canned, 're').map((c) => c.shortcut),
      ['/refund', 'returns', 'shipping-returns'],
    );
    assert.deepEqual(
      cannedMatches(canned, 'RET').map((c) => c.shortcut),
      ['returns', 'shipping-returns'],
      'case does not matter',
    );
    assert.equal(cannedMatches(canned, '').length, 4, 'a lone "/" lists them all');
    assert.equal(cannedMatches(canned, 'zzz').length, 0);
    assert.equal(cannedMatches(canned, '', 2).length, 2);
  });

  it('suggests for the text and caret, and replaces the "/word" with the chosen text', () => {
    const value = 'Hello. /hel';
    const sg = suggest(canned, value, value.length);
    assert.deepEqual(
      sg.items.map((c) => c.shortcut),
      ['hello'],
    );
    assert.deepEqual(insert(value, sg.range, sg.items[0].text), { value: 'Hello. Hi! How can I help?', caret: 26 });
    assert.deepEqual(insert('ab', { start: 1, end: 1 }, 'X'), { value: 'aXb', caret: 2 }, 'the picker inserts at the caret');
    assert.equal(suggest(canned, 'no slash', 8), null);
    assert.equal(suggest([], '/x', 2), null);
    assert.equal(suggest(canned, '/zzz', 4), null);
  });
});

describe('desk socket', () => {
  function fakeWS() {
    const made = [];
    class WS {
      constructor(url) {
        this.url = url;
        this.sent = [];
        made.push(this);
      }
      send(t) {
        this.sent.push(JSON.parse(t));
      }
      close() {
        this.closed = true;
      }
    }
    return { WS, made };
  }
  function timers() {
    let now = 0;
    let next = 1;
    const due = new Map();
    return {
      timer: (f, ms) => (due.set(next, { f, at: now + ms }), next++),
      untimer: (id) => due.delete(id),
      clock: () => now,
      advance(ms) {
        const end = now + ms;
        for (;;) {
          const [id, t] = [...due].sort((a, b) => a[1].at - b[1].at)[0] || [];
          if (!t || t.at > end) break;
          due.delete(id);
          now = t.at;
          t.f();
        }
        now = end;
      },
    };
  }

  it('connects, passes frames on, and reconnects with growing, jittered delays', async () => {
    const { WS, made } = fakeWS();
    const t = timers();
    const states = [];
    const got = [];
    const sock = createSocket({ url: 'ws://h/agent/ws', onMessage: (m) => got.push(m), onState: (s) => states.push(s), WS, random: () => 0, ...t });
    sock.start();
    assert.equal(made[0].url, 'ws://h/agent/ws');
    assert.equal(sock.send({ type: 'status' }), false, 'not before open');
    made[0].onopen();
    assert.ok(sock.send({ type: 'status', available: true }));
    made[0].onmessage({ data: '{"type":"welcome"}' });
    made[0].onmessage({ data: 'not json' });
    assert.deepEqual(got, [{ type: 'welcome' }]);
    made[0].onclose();
    assert.equal(sock.state, 'offline');
    t.advance(249);
    assert.equal(made.length, 1);
    t.advance(1);
    assert.equal(made.length, 2, 'first retry after 250-500 ms');
    // Fails again without opening (out of reach): the next wait is longer.
    made[1].onclose();
    await Promise.resolve();
    await Promise.resolve();
    t.advance(499);
    assert.equal(made.length, 2);
    t.advance(1);
    assert.equal(made.length, 3);
    assert.deepEqual(states.slice(0, 4), ['connecting', 'open', 'offline', 'connecting']);
  });

  it('stops for good when a refused upgrade turns out to be a finished sign-in', async () => {
    const { WS, made } = fakeWS();
    const t = timers();
    const states = [];
    const sock = createSocket({ url: 'ws://h/agent/ws', onMessage() {}, onState: (s) => states.push(s), stillSignedIn: async () => false, WS, ...t });
    sock.start();
    made[0].onclose();
    await new Promise((r) => setImmediate(r));
    assert.equal(sock.state, 'closed');
    t.advance(60000);
    assert.equal(made.length, 1, 'no more attempts');
  });

  it('pings a quiet line and gives up on one that does not answer', () => {
    const { WS, made } = fakeWS();
    const t = timers();
    const sock = createSocket({ url: 'ws://h/agent/ws', onMessage() {}, onState() {}, WS, random: () => 0, ...t });
    sock.start();
    made[0].onopen();
    t.advance(30000);
    assert.equal(made[0].sent.at(-1).type, 'ping');
    t.advance(10000);
    assert.equal(sock.state, 'open', 'the answer may still come');
    t.advance(5000);
    assert.equal(sock.state, 'offline');
    t.advance(1000);
    assert.equal(made.length, 2);
  });
});
