// The visitor's side of the agent desk: leave_message after none_available,
// and the events the view is told about.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createConversation } from '../../src/chat/conversation.js';
import { createOutbox } from '../../src/chat/outbox.js';
import { jsonStore } from '../../src/chat/storage.js';

function setup() {
  const mem = new Map();
  const store = jsonStore(() => ({ getItem: (k) => mem.get(k) ?? null, setItem: (k, v) => mem.set(k, v), removeItem: (k) => mem.delete(k) }));
  const sent = [];
  const calls = [];
  const view = new Proxy(
    { state() {}, visitor() {} },
    { get: (o, name) => o[name] || ((...a) => calls.push([name, ...a])) },
  );
  const conv = createConversation({ outbox: createOutbox(store, 'q', 'p'), view, send: (m) => (sent.push(m), true) });
  return { conv, sent, calls };
}
const welcome = { type: 'welcome', conversation: 'c1', resumed: false, history: [], config: {} };

describe('leave a message', () => {
  it('is sent only when connected, as leave_message with email and text', () => {
    const { conv, sent } = setup();
    assert.equal(conv.leave('a@b.example', 'Call me'), false);
    conv.receive(welcome);
    assert.equal(conv.leave('a@b.example', 'Call me'), true);
    assert.deepEqual(sent.at(-1), { type: 'leave_message', email: 'a@b.example', text: 'Call me' });
  });

  it('passes none_available and message_left to the view, and id-less refusals too', () => {
    const { conv, calls } = setup();
    conv.receive(welcome);
    conv.receive({ type: 'agent', event: 'none_available' });
    conv.receive({ type: 'agent', event: 'message_left' });
    conv.receive({ type: 'error', code: 'bad_request', message: 'email: not an address' });
    assert.deepEqual(
      calls.filter((c) => c[0] === 'handoff' || c[0] === 'refused').map((c) => [c[0], c[1].event || c[1].code]),
      [
        ['handoff', 'none_available'],
        ['handoff', 'message_left'],
        ['refused', 'bad_request'],
      ],
    );
  });
});
