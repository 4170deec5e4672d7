'use strict';
// Artillery function hooks speaking chat protocol v1 (shared/PROTOCOL.md) over the ws engine's
// socket (context.ws). Every ack/token/done/error is attributed to its message by id, as loadgen
// does, so the figures mean what PROTOCOL.md says:
//   chat.rtt    message sent -> its ack        (ms; from the ACTUAL send: a closed loop, so it has
//   chat.ttft   message sent -> its 1st token   coordinated omission like any closed loop)
//   chat.reply  message sent -> its done
//   chat.welcome hello sent -> welcome
// Errors are counters chat.error.<code>; a message with no ack in TIMEOUT_MS is chat.error.timeout.
const { performance } = require('perf_hooks');

const TEXT = process.env.CHAT_TEXT || 'What are your opening hours?';
const TIMEOUT_MS = Number(process.env.CHAT_TIMEOUT_MS || 10000);

function state(context, events) {
  if (context.chat) return context.chat;
  const st = { n: 0, inflight: new Map(), onWelcome: null, drainWaiter: null };
  context.chat = st;
  context.ws.on('message', (data) => {
    let f;
    try {
      f = JSON.parse(data);
    } catch (e) {
      events.emit('counter', 'chat.error.protocol', 1);
      return;
    }
    const t = performance.now();
    switch (f.type) {
      case 'welcome':
        if (st.onWelcome) st.onWelcome(t);
        break;
      case 'ack': {
        const m = st.inflight.get(f.id);
        if (m && m.rtt === undefined) {
          m.rtt = t - m.t0;
          events.emit('histogram', 'chat.rtt', m.rtt);
          events.emit('counter', 'chat.acked', 1);
          release(m);
        } else events.emit('counter', 'chat.late', 1);
        break;
      }
      case 'token': {
        const m = st.inflight.get(f.in_reply_to);
        if (m && m.ttft === undefined) {
          m.ttft = t - m.t0;
          events.emit('histogram', 'chat.ttft', m.ttft);
        }
        break;
      }
      case 'done': {
        const m = st.inflight.get(f.in_reply_to);
        if (m) {
          events.emit('histogram', 'chat.reply', t - m.t0);
          events.emit('counter', 'chat.replied', 1);
          st.inflight.delete(f.in_reply_to);
          clearTimeout(m.timer);
          if (st.inflight.size === 0 && st.drainWaiter) st.drainWaiter();
        }
        break;
      }
      case 'error': {
        events.emit('counter', 'chat.error.' + (f.code || 'unknown'), 1);
        const m = f.id !== undefined ? st.inflight.get(f.id) : undefined;
        if (m) {
          st.inflight.delete(f.id);
          clearTimeout(m.timer);
          release(m);
        }
        break;
      }
      default:
        break;
    }
  });
  return st;
}

function release(m) {
  const w = m.waiter;
  m.waiter = null;
  if (w) w();
}

// hello -> welcome
function hello(context, events, done) {
  const st = state(context, events);
  const t0 = performance.now();
  const timer = setTimeout(() => {
    st.onWelcome = null;
    events.emit('counter', 'chat.error.timeout', 1);
    done();
  }, TIMEOUT_MS);
  st.onWelcome = (t) => {
    st.onWelcome = null;
    clearTimeout(timer);
    events.emit('histogram', 'chat.welcome', t - t0);
    done();
  };
  context.ws.send('{"type":"hello"}');
}

// message -> its ack (tokens and done are recorded as they come, without waiting for them)
function sendMessage(context, events, done) {
  const st = state(context, events);
  st.n += 1;
  const id = 'm' + st.n;
  const m = { t0: 0, rtt: undefined, ttft: undefined, waiter: done, timer: null };
  m.timer = setTimeout(() => {
    if (st.inflight.get(id) === m) st.inflight.delete(id);
    if (m.rtt === undefined) events.emit('counter', 'chat.error.timeout', 1);
    release(m);
  }, TIMEOUT_MS);
  st.inflight.set(id, m);
  events.emit('counter', 'chat.sent', 1);
  m.t0 = performance.now();
  context.ws.send(JSON.stringify({ type: 'message', id, text: TEXT }));
}

// before the engine closes the socket: wait (bounded) for replies still streaming
function drain(context, events, done) {
  const st = state(context, events);
  if (st.inflight.size === 0) return done();
  const timer = setTimeout(() => {
    st.drainWaiter = null;
    done();
  }, TIMEOUT_MS);
  st.drainWaiter = () => {
    st.drainWaiter = null;
    clearTimeout(timer);
    done();
  };
}

module.exports = { hello, sendMessage, drain };
