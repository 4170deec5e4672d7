// The desk's WebSocket to /agent/ws: reconnects spaced by the widget's own
// backoffDelay (exponential, with jitter), a ping when the line goes quiet,
// and a check of the sign-in when an upgrade is refused or a socket closes
// before its first frame (the browser does not say why; a 401 is told apart
// by asking /agent/me). The browser APIs
// are parameters so Node tests can fake them.

import { backoffDelay } from '../chat/backoff.js';

const CONNECT_TIMEOUT_MS = 10000;
const QUIET_MS = 25000; // then ping...
const PONG_WAIT_MS = 10000; // ...and give up on a socket silent this long after it

export function createSocket({
  url,
  onMessage,
  onState, // 'connecting' | 'open' | 'offline' | 'closed'
  stillSignedIn = async () => true, // after a refused upgrade: false stops for good
  WS = globalThis.WebSocket,
  timer = setTimeout,
  untimer = clearTimeout,
  random = Math.random,
  clock = Date.now,
}) {
  let ws = null;
  let gen = 0; // bumped per connection: callbacks of a dead one are ignored
  let attempt = 0;
  let state = '';
  let retry = null;
  let beat = null;
  let lastHeard = 0;
  let pingAt = 0;
  let pings = 0;

  const setState = (s) => onState((state = s));

  function cleanup() {
    untimer(beat);
    untimer(retry);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close();
      } catch {}
      ws = null;
    }
  }

  function connect() {
    const g = ++gen;
    cleanup();
    setState('connecting');
    const s = (ws = new WS(url));
    let heard = false;
    const t = timer(() => s.close(), CONNECT_TIMEOUT_MS);
    s.onopen = () => {
      untimer(t);
      if (g !== gen) return;
      lastHeard = clock();
      setState('open');
      heartbeat(g);
    };
    s.onmessage = (e) => {
      if (g !== gen) return;
      lastHeard = clock();
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      // The gateway answered: the next outage starts its backoff afresh.
      attempt = 0;
      heard = true;
      onMessage(m);
    };
    s.onclose = () => {
      untimer(t);
      if (g !== gen) return;
      if (heard) return lost(g);
      // Never opened, or closed before a word: out of reach, or refused because the sign-in is gone.
      stillSignedIn().then(
        (ok) => g === gen && (ok ? lost(g) : stop()),
        () => lost(g),
      );
    };
  }

  function lost(g) {
    if (g !== gen) return;
    gen++;
    cleanup();
    setState('offline');
    retry = timer(connect, backoffDelay(attempt++, random));
  }

  function heartbeat(g) {
    beat = timer(function tick() {
      if (g !== gen) return;
      const now = clock();
      if (pingAt > lastHeard && now - pingAt > PONG_WAIT_MS) return lost(g);
      if (now - lastHeard > QUIET_MS && pingAt <= lastHeard) {
        pingAt = now;
        ws.send(JSON.stringify({ type: 'ping', id: `hb${++pings}` }));
      }
      beat = timer(tick, 5000);
    }, 5000);
  }

  function stop() {
    gen++;
    cleanup();
    setState('closed');
  }

  return {
    start: connect,
    stop,
    /** Sends one frame; false when not connected. */
    send(obj) {
      if (state !== 'open') return false;
      ws.send(JSON.stringify(obj));
      return true;
    },
    /** The network is back: try now rather than at the backoff's time. */
    retryNow() {
      if (state === 'offline') {
        attempt = 0;
        connect();
      }
    },
    get state() {
      return state;
    },
  };
}
