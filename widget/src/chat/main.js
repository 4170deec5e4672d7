// The chat window (the document the loader frames from the gateway's origin):
// wires storage, the transport, the conversation and the view together, and
// speaks to the loader on the host page through postMessage. What the host
// page told us comes in the URL fragment, which never reaches a server.

import { applyTheme, mergeThemes } from '../shared/theme.js';
import { createConversation } from './conversation.js';
import { createOutbox } from './outbox.js';
import { jsonStore } from './storage.js';
import { createTransport } from './transport.js';
import { createView } from './view.js';

const d = document;
const $ = (id) => d.getElementById(id);
const root = d.documentElement;
const site = new URLSearchParams(location.search).get('site') || 'demo';
let init = {};
try {
  init = JSON.parse(decodeURIComponent(location.hash.slice(1)) || '{}');
} catch {}
const framed = parent !== window;
// The embedding page's origin, as the browser reports it where it can.
const host = location.ancestorOrigins?.[0] || init.origin || '*';
const post = (m) => framed && parent.postMessage({ lc: 1, ...m }, host);
applyTheme(root.style, mergeThemes(init.theme));

const local = jsonStore(() => localStorage);
const session = jsonStore(() => sessionStorage);
const key = (k) => `lc:${k}:${site}`;

let open = !framed;
let unread = 0;
const setUnread = (n) => {
  unread = n;
  post({ t: 'unread', n });
};

function configure(cfg) {
  applyTheme(root.style, mergeThemes(cfg.theme, init.theme));
  $('title').textContent = cfg.title || 'Chat';
  d.title = cfg.title || 'Chat';
}

// Triggers fired in this session, with what they said: {conv, list: [{i, text, ts}]}.
let fired = local.get(key('fired'), { conv: '', list: [] });

const view = createView({
  log: $('log'),
  typing: $('typing'),
  human: $('human'),
  input: $('input'),
  onScore: (n) => conv.csat(n),
  onLeave: (email, text) => conv.leave(email, text),
  onIncoming: () => open || setUnread(unread + 1),
});
view.restore(fired.list);

const outbox = createOutbox(local, key('outbox'));
let transport;
const conv = createConversation({
  outbox,
  view,
  send: (m) => transport.send(m),
});

const STATUS = {
  connecting: 'Connecting…',
  open: 'Online',
  offline: 'Offline: reconnecting. Your messages will be sent when the connection is back.',
  failed: 'Chat is not available on this page.',
};

transport = createTransport({
  base: location.origin,
  site,
  session,
  hello: () => ({
    type: 'hello',
    lang: init.lang || navigator.language,
    page: (init.page || location.href).slice(0, 2000),
    referrer: (init.ref || '').slice(0, 2000),
  }),
  onState(state, kind) {
    root.dataset.conn = state;
    root.dataset.transport = kind;
    $('status').textContent = STATUS[state];
    if (state !== 'open') conv.offline();
  },
  onMessage(m) {
    if (m.type === 'welcome') {
      const cfg = m.config || {};
      local.set(key('config'), cfg);
      if (fired.conv && fired.conv !== m.conversation) {
        // A new session: its triggers may fire again.
        fired = { conv: '', list: [] };
        view.restore([]);
      }
      fired.conv = m.conversation;
      local.set(key('fired'), fired);
      configure(cfg);
      const done = fired.list.map((f) => f.i);
      const triggers = (cfg.triggers || []).map((t, i) => ({ ...t, i })).filter((t) => !done.includes(t.i));
      post({ t: 'config', theme: cfg.theme, title: cfg.title, triggers });
    }
    conv.receive(m);
  },
});

// A returning visitor's theme before the gateway answers, so the launcher
// can show at once in the right colours.
const cached = local.get(key('config'));
if (cached) {
  configure(cached);
  post({ t: 'config', theme: cached.theme, title: cached.title });
}
// Until the gateway answers (it may be out of reach), the greeting and what
// is still queued from earlier pages.
view.welcome({ history: [], config: cached }, outbox.list());
if (!framed) $('close').hidden = true;

addEventListener('message', (e) => {
  if (e.source !== parent || (host !== '*' && e.origin !== host)) return;
  const m = e.data || {};
  if (m.t === 'open') {
    open = true;
    setUnread(0);
    $('input').focus();
    $('log').scrollTop = 1e9;
  } else if (m.t === 'close') {
    open = false;
  } else if (m.t === 'trigger') {
    const t = (local.get(key('config'))?.triggers || [])[m.i];
    if (!t || fired.list.some((f) => f.i === m.i)) return;
    const f = { i: m.i, text: t.message, ts: Date.now() };
    fired.list.push(f);
    local.set(key('fired'), fired);
    view.proactive(f.text, f.ts);
  }
});

const input = $('input');
const grow = () => {
  input.style.height = 'auto';
  input.style.height = Math.min(input.scrollHeight, 120) + 'px';
};
$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  input.value = '';
  grow();
  conv.submit(text);
});
input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('form').requestSubmit();
  }
});
input.addEventListener('input', () => {
  grow();
  conv.typing();
});
$('human').addEventListener('click', () => view.notice(conv.human() ? 'asked' : 'offline'));
$('close').addEventListener('click', () => post({ t: 'close' }));
addEventListener('keydown', (e) => e.key === 'Escape' && post({ t: 'close' }));
addEventListener('online', () => transport.retryNow());
d.addEventListener('visibilitychange', () => d.hidden || transport.retryNow());

transport.start();
