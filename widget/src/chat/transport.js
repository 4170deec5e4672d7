// How the chat window reaches the gateway: a WebSocket, or long-polling when
// the upgrade fails (remembered for the tab's session, so later pages do not
// wait for a doomed upgrade), with reconnects spaced by backoffDelay. Every
// (re)connect starts with `hello`, so the gateway answers with `welcome` and
// the history. The browser APIs are parameters so Node tests can fake them.

import { backoffDelay } from './backoff.js';

const CONNECT_TIMEOUT_MS = 10000;
const QUIET_MS = 25000; // then ping...
const PONG_WAIT_MS = 10000; // ...and give up on a socket silent this long after it
const RECV_ABORT_MS = 60000; // longer than any sensible poll hold

export function createTransport({
  base,
  site,
  hello,
  onMessage,
  onState,
  session, // {get, set}: sessionStorage
  WS = globalThis.WebSocket,
  fetchFn = (...a) => globalThis.fetch(...a),
  timer = setTimeout,
  untimer = clearTimeout,
  random = Math.random,
  clock = Date.now,
}) {
  const q = '?site=' + encodeURIComponent(site);
  const modeKey = 'lc:transport:' + site;
  const cursorKey = 'lc:cursor:' + site;
  let kind = session.get(modeKey, 'ws');
  let state = '';
  let attempt = 0;
  let gen = 0; // bumped per connection: callbacks of a dead one are ignored
  let ws = null;
  let retry = null;
  let beat = null;
  let lastHeard = 0;
  let pingAt = 0;
  let recvAbort = null;
  let chain = Promise.resolve();

  const setState = (s) => {
    state = s;
    onState(s, kind);
  };

  function receive(text) {
    lastHeard = clock();
    let m;
    try {
      m = typeof text === 'string' ? JSON.parse(text) : text;
    } catch {
      return;
    }
    // The server answered: this connection works, so the next outage starts
    // its backoff from the beginning.
    attempt = 0;
    onMessage(m);
  }

  function cleanup() {
    untimer(beat);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close();
      } catch {}
      ws = null;
    }
    recvAbort?.abort();
  }

  function connect() {
    untimer(retry);
    const g = ++gen;
    cleanup();
    setState('connecting');
    if (kind === 'poll') openPoll(g, false);
    else openWs(g);
  }

  function lost(g) {
    if (g !== gen) return;
    gen++;
    cleanup();
    setState('offline');
    retry = timer(connect, backoffDelay(attempt++, random));
  }

  function openWs(g) {
    const s = (ws = new WS(base.replace(/^http/, 'ws') + '/ws' + q));
    let up = false;
    const t = timer(() => s.close(), CONNECT_TIMEOUT_MS);
    s.onopen = () => {
      untimer(t);
      if (g !== gen) return;
      up = true;
      lastHeard = clock();
      s.send(JSON.stringify(hello()));
      setState('open');
      heartbeat(g);
    };
    s.onmessage = (e) => g === gen && receive(e.data);
    s.onclose = () => {
      untimer(t);
      if (g !== gen) return;
      // Never opened: the upgrade failed. Long-polling tells a refused upgrade
      // (poll works) from a gateway out of reach (poll fails too).
      if (up) lost(g);
      else openPoll(g, true);
    };
  }

  function heartbeat(g) {
    beat = timer(function tick() {
      if (g !== gen) return;
      const now = clock();
      // Only a ping we sent and that went unanswered condemns the socket: a
      // throttled background tab may simply not have looked for a while.
      if (pingAt > lastHeard && now - pingAt > PONG_WAIT_MS) return lost(g);
      if (now - lastHeard > QUIET_MS && pingAt <= lastHeard) {
        pingAt = now;
        ws.send('{"type":"ping","id":"hb"}');
      }
      beat = timer(tick, 5000);
    }, 5000);
  }

  async function post(body) {
    const r = await fetchFn(base + '/poll/send' + q, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      cache: 'no-store',
    });
    if (!r.ok) throw r.status;
  }

  function openPoll(g, afterWs) {
    post([hello()]).then(
      () => {
        if (g !== gen) return;
        if (afterWs) {
          kind = 'poll';
          session.set(modeKey, 'poll');
        }
        setState('open');
        recvLoop(g);
      },
      (status) => (g === gen && isFatal(status) ? fail() : lost(g)),
    );
  }

  // 403 (origin not allowed) and 404 (unknown site) do not heal by retrying.
  const isFatal = (status) => status === 403 || status === 404;

  function fail() {
    gen++;
    cleanup();
    setState('failed');
  }

  async function recvLoop(g) {
    while (g === gen) {
      const started = clock();
      const ctl = (recvAbort = new AbortController());
      const t = timer(() => ctl.abort(), RECV_ABORT_MS);
      let body;
      try {
        const r = await fetchFn(`${base}/poll/recv${q}&cursor=${session.get(cursorKey, 0)}`, {
          signal: ctl.signal,
          cache: 'no-store',
        });
        if (!r.ok) throw r.status;
        body = await r.json();
      } catch (status) {
        untimer(t);
        return isFatal(status) && g === gen ? fail() : lost(g);
      }
      untimer(t);
      if (g !== gen) return;
      session.set(cursorKey, body.cursor);
      for (const m of body.messages) {
        receive(m);
        if (g !== gen) return;
      }
      // An empty answer at once means another tab's recv ended ours: pause,
      // or the two tabs would take turns ending each other without rest.
      if (!body.messages.length && clock() - started < 1000) {
        await new Promise((r) => timer(r, 1000));
      }
    }
  }

  return {
    start: connect,
    /** Sends one client message; false when not connected. */
    send(obj) {
      if (state !== 'open') return false;
      if (kind === 'ws') {
        ws.send(JSON.stringify(obj));
        return true;
      }
      // Poll sends are chained so they reach the gateway in order.
      const g = gen;
      chain = chain.then(() => g === gen && post([obj]).catch(() => lost(g)));
      return true;
    },
    /** The network is back (the browser says so): try now, not at the backoff's time. */
    retryNow() {
      if (state === 'offline') {
        attempt = 0;
        connect();
      }
    },
    get kind() {
      return kind;
    },
    get state() {
      return state;
    },
  };
}
