// The agent desk (served by the gateway at /agent): signs in, keeps one
// WebSocket to /agent/ws, folds its frames into the state (state.js) and
// draws that state. Drawing compares the new state with the last one drawn
// and redraws only the parts whose objects changed. Text only ever enters
// the page as text nodes, never as HTML.

import { randomPrefix } from '../chat/outbox.js';
import { insert, suggest } from './canned.js';
import { createSocket } from './socket.js';
import { canTransfer, duration, initial, isTyping, label, lineup, reduce, secondsLeft, throttle, waitingSince } from './state.js';

const d = document;
const $ = (id) => d.getElementById(id);
const root = d.documentElement;
const input = $('input');
const log = $('log');

function el(tag, cls, text) {
  const e = d.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}
function button(text, act, key, cls = 'btn') {
  const b = el('button', cls, text);
  b.type = 'button';
  b.dataset.act = act;
  b.dataset.key = key;
  return b;
}
const clock = (ts) => {
  const t = el('time', '', new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  t.dateTime = new Date(ts).toISOString();
  return t;
};
const shortcut = (c) => '/' + String(c.shortcut).replace(/^\//, '');
const isUrl = (u) => /^https?:\/\//i.test(u || '');

let s = initial();
let drawn = initial();
let queued = false; // a redraw is due
let socket = null;
let ticker = null;
let focusNext = null; // an element id to focus after the next redraw
const msgIds = randomPrefix();
let msgN = 0;
const typingGate = throttle(2000);
const drafts = new Map(); // conversation -> unsent reply text

function dispatch(action) {
  s = reduce(s, action, Date.now());
  if (!queued) {
    queued = true;
    queueMicrotask(draw);
  }
}

/** Sends a frame; says so in the status line when the desk is offline. */
function send(frame, quiet) {
  const ok = !!socket?.send(frame);
  if (!ok && !quiet) dispatch({ type: '@line', line: { kind: 'error', text: 'Not connected: try again once the desk is back online.' } });
  return ok;
}

const say = (text) => {
  $('say').textContent = '';
  setTimeout(() => ($('say').textContent = text), 50);
};

// ---- signing in and out ----

const availKey = () => `lc:agent:available:${s.agent?.id}`;
function storedAvailable() {
  try {
    const v = localStorage.getItem(availKey());
    return v == null ? null : v === '1';
  } catch {
    return null;
  }
}

async function boot() {
  try {
    const r = await fetch('/agent/me', { cache: 'no-store' });
    if (r.ok) return start(await r.json(), false);
    if (r.status !== 401) dispatch({ type: '@line', line: { kind: 'error', text: `The desk could not check your sign-in (HTTP ${r.status}).` } });
  } catch {
    dispatch({ type: '@line', line: { kind: 'error', text: 'The gateway is out of reach.' } });
  }
  showSignin();
}

function showSignin() {
  $('desk').hidden = $('me').hidden = true;
  $('signin').hidden = false;
  root.dataset.conn = '';
  $('conn').textContent = '';
  $('token').focus();
}

$('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const tok = $('token');
  const btn = e.target.querySelector('button');
  const err = $('login-err');
  err.textContent = '';
  btn.disabled = true;
  try {
    const r = await fetch('/agent/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: tok.value.trim() }),
      cache: 'no-store',
    });
    if (r.ok) {
      tok.value = '';
      const j = await r.json();
      start(j.agent || j, true);
    } else {
      err.textContent = r.status === 401 ? 'That token was not accepted.' : `Sign-in failed (HTTP ${r.status}).`;
      tok.select();
    }
  } catch {
    err.textContent = 'The gateway is out of reach. Try again in a moment.';
  } finally {
    btn.disabled = false;
  }
});

function start(agent, interactive) {
  dispatch({ type: '@agent', agent });
  dispatch({ type: '@line', line: null });
  $('signin').hidden = true;
  $('desk').hidden = $('me').hidden = false;
  socket = createSocket({
    url: (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/agent/ws',
    onMessage,
    onState,
    stillSignedIn: async () => {
      const r = await fetch('/agent/me', { cache: 'no-store' });
      if (r.status !== 401) return true;
      signedOut('Your sign-in has ended. Please sign in again.');
      return false;
    },
  });
  socket.start();
  ticker = setInterval(tick, 1000);
  if (interactive) focusNext = 'queue-h';
}

function signedOut(text) {
  const sock = socket;
  socket = null;
  sock?.stop();
  clearInterval(ticker);
  drafts.clear();
  dispatch({ type: '@reset' });
  dispatch({ type: '@line', line: text && { kind: 'info', text } });
  showSignin();
}

$('logout').addEventListener('click', async () => {
  try {
    await fetch('/agent/logout', { method: 'POST', cache: 'no-store' });
  } catch {}
  signedOut('You signed out.');
});

const CONN = { connecting: 'Connecting…', open: 'Online', offline: 'Offline: reconnecting…', closed: '' };
function onState(st) {
  root.dataset.conn = st;
  $('conn').textContent = CONN[st];
}

// ---- frames from the gateway ----

function onMessage(m) {
  const before = s;
  dispatch(m);
  const id = m.conversation;
  switch (m.type) {
    case 'welcome': {
      const pref = storedAvailable() ?? (typeof m.agent?.available === 'boolean' ? m.agent.available : true);
      dispatch({ type: '@available', available: pref });
      send({ type: 'status', available: pref }, true);
      // Replies not acked before the connection dropped go again, under the same ids.
      for (const c of Object.values(s.convs)) {
        for (const p of c.pending) if (p.state === 'sending') send({ type: 'message', conversation: c.id, id: p.id, text: p.text }, true);
      }
      openIfNeeded();
      break;
    }
    case 'offer':
      say(`${label(id)} is offered to you: take it within ${Math.round(m.expires_in_ms / 1000)} seconds.`);
      break;
    case 'assigned':
      if (before.taking.includes(id)) focusNext = 'input';
      else say(`${label(id)} was assigned to you.`);
      break;
    case 'unassigned':
    case 'ended':
      if (before.selected === id && (d.activeElement === d.body || $('pane').contains(d.activeElement))) {
        focusNext = s.selected ? 'input' : 'mine-h';
      }
      openIfNeeded();
      break;
  }
}

/** Asks for the selected conversation's transcript when the desk has none, or an old one. */
function openIfNeeded() {
  const c = s.convs[s.selected];
  if (c && (!c.items || c.stale)) send({ type: 'open', conversation: c.id }, true);
}

// ---- what the agent does ----

function select(id) {
  if (s.selected === id) return;
  if (s.selected) drafts.set(s.selected, input.value);
  dispatch({ type: '@select', conversation: id });
  input.value = drafts.get(id) || '';
  closeComplete();
  openIfNeeded();
  if (s.convs[id]?.held) focusNext = 'input';
}

function take(id) {
  if (send({ type: 'take', conversation: id })) dispatch({ type: '@take', conversation: id });
}

const acts = {
  select,
  take,
  decline(id) {
    send({ type: 'decline', conversation: id });
    dispatch({ type: '@decline', conversation: id });
    focusNext = 'queue-h';
  },
};
$('desk').addEventListener('click', (e) => {
  const b = e.target.closest('[data-act]');
  const id = b?.closest('[data-conversation]')?.dataset.conversation;
  if (b && id && acts[b.dataset.act]) acts[b.dataset.act](id);
});
$('take').addEventListener('click', () => take(s.selected));
$('resolve').addEventListener('click', () => send({ type: 'resolve', conversation: s.selected }));
$('release').addEventListener('click', () => send({ type: 'release', conversation: s.selected }));
$('xfer-go').addEventListener('click', () => {
  const to = $('xfer').value;
  if (to) send({ type: 'transfer', conversation: s.selected, to });
});
$('avail').addEventListener('change', (e) => {
  const on = e.target.checked;
  dispatch({ type: '@available', available: on });
  try {
    localStorage.setItem(availKey(), on ? '1' : '0');
  } catch {}
  send({ type: 'status', available: on });
});

// The reply box: Enter sends, Shift+Enter breaks the line, "/" completes canned replies.
let comp = null; // {range, items, active}

function closeComplete() {
  comp = null;
  drawComplete();
}
function drawComplete() {
  const ul = $('complete');
  ul.hidden = !comp;
  if (!comp) {
    ul.replaceChildren();
    input.removeAttribute('aria-activedescendant');
    return;
  }
  ul.replaceChildren(
    ...comp.items.map((c, i) => {
      const li = el('li', '');
      li.id = 'cc' + i;
      li.setAttribute('role', 'option');
      li.setAttribute('aria-selected', String(i === comp.active));
      li.append(el('b', '', shortcut(c)), el('span', '', c.text));
      // mousedown, not click: the field keeps its focus.
      li.addEventListener('mousedown', (e) => {
        e.preventDefault();
        accept(i);
      });
      return li;
    }),
  );
  input.setAttribute('aria-activedescendant', 'cc' + comp.active);
}
function accept(i) {
  const r = insert(input.value, comp.range, comp.items[i].text);
  input.value = r.value;
  input.setSelectionRange(r.caret, r.caret);
  closeComplete();
  input.focus();
}

input.addEventListener('keydown', (e) => {
  if (comp) {
    const n = comp.items.length;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      comp.active = (comp.active + (e.key === 'ArrowDown' ? 1 : n - 1)) % n;
      return drawComplete();
    }
    if (e.key === 'Enter' || e.key === 'Tab') {
      e.preventDefault();
      return accept(comp.active);
    }
    if (e.key === 'Escape') {
      e.preventDefault();
      return closeComplete();
    }
  }
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('reply').requestSubmit();
  }
});
input.addEventListener('input', () => {
  const sg = suggest(s.canned, input.value, input.selectionStart);
  comp = sg && { ...sg, active: 0 };
  drawComplete();
  const id = s.selected;
  if (input.value.trim() && s.convs[id]?.held) typingGate(id, () => send({ type: 'typing', conversation: id }, true));
});
input.addEventListener('blur', closeComplete);

$('reply').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = input.value.trim();
  const conv = s.selected;
  if (!text || !s.convs[conv]?.held) return;
  const id = `${msgIds}-${(++msgN).toString(36)}`;
  dispatch({ type: '@send', conversation: conv, id, text });
  // Offline, it waits as pending and goes once the desk reconnects.
  send({ type: 'message', conversation: conv, id, text }, true);
  input.value = '';
  drafts.delete(conv);
  closeComplete();
});

$('picker').addEventListener('change', (e) => {
  const c = s.canned[+e.target.value];
  e.target.value = '';
  if (!c) return;
  const r = insert(input.value, { start: input.selectionStart, end: input.selectionEnd }, c.text);
  input.value = r.value;
  input.focus();
  input.setSelectionRange(r.caret, r.caret);
});

addEventListener('online', () => socket?.retryNow());
d.addEventListener('visibilitychange', () => d.hidden || socket?.retryNow());

// ---- drawing ----

/** Replaces a list's items, keeping the keyboard focus on the same control when it is redrawn. */
function fill(list, items) {
  const key = list.contains(d.activeElement) && d.activeElement.dataset.key;
  list.replaceChildren(...items);
  if (key) list.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus();
}

function card(c, kind) {
  const id = c.conversation;
  const li = el('li', 'card ' + kind);
  li.dataset.conversation = id;
  const pick = li.appendChild(button('', 'select', kind + ':' + id, 'pick'));
  if (id === s.selected) pick.setAttribute('aria-current', 'true');
  const top = pick.appendChild(el('span', 'row'));
  top.append(el('b', '', label(id)));
  if (c.position && kind !== 'mine') top.append(el('span', 'tag', `#${c.position}`));
  const conv = s.convs[id];
  if (kind === 'mine' && conv?.unread) top.append(el('span', 'tag unread', `${conv.unread} new`));
  if (kind === 'mine' && isTyping(conv, Date.now())) top.append(el('span', 'tag', 'typing'));
  const meta = pick.appendChild(el('span', 'row meta'));
  meta.append(el('span', '', c.site || ''));
  if (c.lang) meta.append(el('span', '', c.lang));
  const since = waitingSince(c);
  if (since != null && kind !== 'mine') {
    const w = meta.appendChild(el('span', 'since', duration(Date.now() - since)));
    w.dataset.since = since;
  }
  if (c.page) pick.append(el('span', 'page', c.page.replace(/^https?:\/\//, '')));
  if (c.preview) pick.append(el('span', 'pv', c.preview));
  if (c.reason && kind !== 'mine') pick.append(el('span', 'why', c.reason));
  if (kind !== 'mine') {
    const row = li.appendChild(el('div', 'acts'));
    const t = row.appendChild(button('Take', 'take', 'take:' + id, 'btn primary'));
    t.setAttribute('aria-label', `Take ${label(id)}`);
    if (s.taking.includes(id)) t.disabled = true;
    if (kind === 'offer') {
      row.appendChild(button('Decline', 'decline', 'decline:' + id)).setAttribute('aria-label', `Decline ${label(id)}`);
      const left = row.appendChild(el('span', 'left', `${secondsLeft(s.offers[id], Date.now())} s left`));
      left.dataset.until = s.offers[id].expiresAt;
    }
  }
  return li;
}

function drawLists() {
  const { offered, queue } = lineup(s);
  $('offers-s').hidden = !offered.length;
  fill($('offers'), offered.map((c) => card(c, 'offer')));
  fill($('queue'), queue.map((c) => card(c, 'queue')));
  // The count is of the cards shown under it: an offer is drawn above, not twice.
  $('queue-n').textContent = queue.length ? `(${queue.length})` : '';
  $('queue-empty').hidden = queue.length > 0;
  fill($('mine'), s.mine.map((id) => card(s.convs[id]?.card || { conversation: id }, 'mine')));
  $('mine-n').textContent = s.mine.length ? `(${s.mine.length})` : '';
  $('mine-empty').hidden = s.mine.length > 0;
  const waiting = offered.length + queue.length;
  d.title = (waiting ? `(${waiting}) ` : '') + 'Agent desk';
}

function sourcesOf(list) {
  const ul = el('ul', 'src');
  ul.setAttribute('aria-label', 'Sources');
  for (const x of list.slice(0, 5)) {
    const li = ul.appendChild(el('li'));
    const t = x.title || x.url || x.chunk;
    if (isUrl(x.url)) {
      const a = li.appendChild(el('a', '', t));
      a.href = x.url;
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
    } else li.append(t);
    if (typeof x.score === 'number') li.append(` (${x.score.toFixed(2)})`);
  }
  return ul;
}

const WHO = { visitor: 'Visitor', ai: 'Assistant' };
function item(it) {
  const li = el('li', 'm ' + it.from);
  li.dataset.from = it.from;
  if (it.seq != null) li.dataset.seq = it.seq;
  const meta = li.appendChild(el('div', 'meta'));
  meta.append(el('span', 'who', WHO[it.from] || it.name || 'Agent'));
  if (it.ts) meta.append(' ', clock(it.ts));
  li.append(el('div', 'b', it.text));
  if (it.from === 'ai' && it.sources?.length) li.append(sourcesOf(it.sources));
  return li;
}
function pendingItem(p) {
  const li = item({ from: 'agent', name: s.agent?.name, text: p.text });
  li.classList.add('pending');
  li.dataset.id = p.id;
  li.dataset.state = p.state;
  li.append(el('span', 'st', p.state === 'failed' ? `Not sent: ${p.why}` : 'Sending…'));
  return li;
}

let logFor = null; // the conversation the log shows...
let logItems = null; // ...and the items drawn
function drawLog(c) {
  const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 60;
  const same = logFor === c.id && logItems && c.items && logItems.length <= c.items.length && logItems.every((x, i) => x === c.items[i]);
  if (!same) {
    log.replaceChildren();
    logFor = c.id;
    logItems = c.items && [];
    if (!c.items) log.append(el('li', 'note', 'Loading the transcript…'));
  }
  for (const p of log.querySelectorAll('.pending')) p.remove();
  if (c.items) {
    log.append(...c.items.slice(logItems.length).map(item));
    logItems = c.items;
  }
  log.append(...c.pending.map(pendingItem));
  if (stick || !same) log.scrollTop = log.scrollHeight;
}

function drawInfo(c) {
  const k = c.card;
  const facts = [
    ['Site', k.site],
    ['Language', k.lang],
    ['Page', k.page],
    ['Referrer', k.referrer],
    ['Needs a person because', k.reason],
    ['Waiting since', waitingSince(k) && new Date(waitingSince(k)).toLocaleTimeString()],
    ['Agent', k.agent],
  ];
  const dl = $('facts');
  dl.replaceChildren();
  for (const [name, v] of facts) {
    if (!v) continue;
    const dd = el('dd');
    if (isUrl(v)) {
      const a = dd.appendChild(el('a', '', v));
      a.href = v;
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
    } else dd.textContent = v;
    dl.append(el('dt', '', name), dd);
  }
  const off = k.offline || [];
  $('left-s').hidden = !off.length;
  $('left').replaceChildren(
    ...off.map((o) => {
      const li = el('li');
      const a = li.appendChild(el('a', '', o.email));
      a.href = 'mailto:' + o.email;
      if (o.at_ms) li.append(' ', clock(o.at_ms));
      li.append(el('p', '', o.text));
      return li;
    }),
  );
}

function drawTransfer() {
  const me = s.agent?.id;
  const others = s.agents.filter((a) => a.id !== me);
  const sel = $('xfer');
  const was = sel.value;
  sel.replaceChildren(
    ...others.map((a) => {
      const state = !a.online ? ', offline' : a.available === false ? ', away' : '';
      const o = el('option', '', `${a.name} (${a.load ?? 0}/${a.capacity ?? '?'}${state})`);
      o.value = a.id;
      o.disabled = !a.online;
      return o;
    }),
  );
  if (!others.length) sel.append(el('option', '', 'No other agents'));
  if (others.some((a) => a.id === was)) sel.value = was;
  sel.disabled = $('xfer-go').disabled = !others.some((a) => a.online);
}

function drawPane() {
  const c = s.convs[s.selected];
  $('none').hidden = !!c;
  $('pane').hidden = $('info').hidden = !c;
  if (!c) {
    logFor = logItems = null;
    return;
  }
  const held = c.held;
  const waiting = !held && s.queue.some((q) => q.conversation === c.id);
  $('conv-h').textContent = label(c.id) + (held ? '' : waiting ? ' (waiting)' : ' (read only)');
  $('take').hidden = !waiting;
  $('take').disabled = s.taking.includes(c.id);
  $('resolve').hidden = $('release').hidden = $('reply').hidden = !held;
  $('xfer-box').hidden = !held || !canTransfer(s.agent);
  drawLog(c);
  drawInfo(c);
  drawTyping();
}

function drawTyping() {
  const on = isTyping(s.convs[s.selected], Date.now());
  const t = $('vtyping');
  if (on !== !!t.textContent) t.textContent = on ? 'Visitor is typing…' : '';
}

function drawPicker() {
  const p = $('picker');
  p.replaceChildren(el('option', '', s.canned.length ? 'Canned replies…' : 'No canned replies'));
  p.firstChild.value = '';
  s.canned.forEach((c, i) => {
    const o = p.appendChild(el('option', '', `${shortcut(c)}: ${c.text.length > 60 ? c.text.slice(0, 59) + '…' : c.text}`));
    o.value = i;
  });
  p.disabled = !s.canned.length;
}

function draw() {
  queued = false;
  const p = drawn;
  drawn = s;
  if (s.agent !== p.agent) $('who').textContent = s.agent ? `${s.agent.name} (${s.agent.role})` : '';
  $('avail').checked = s.available;
  if (s.queue !== p.queue || s.offers !== p.offers || s.taking !== p.taking || s.mine !== p.mine || s.convs !== p.convs || s.selected !== p.selected) drawLists();
  if (s.selected !== p.selected || s.convs[s.selected] !== p.convs[p.selected] || s.queue !== p.queue || s.taking !== p.taking || s.agent !== p.agent) drawPane();
  if (s.agents !== p.agents || s.agent !== p.agent) drawTransfer();
  if (s.canned !== p.canned) drawPicker();
  if (s.line !== p.line) {
    const l = $('line');
    l.textContent = s.line?.text || '';
    l.dataset.kind = s.line?.kind || '';
  }
  if (focusNext) {
    const e = $(focusNext);
    focusNext = null;
    if (e && e.offsetParent) e.focus();
  }
}

function tick() {
  const now = Date.now();
  if (Object.values(s.offers).some((o) => o.expiresAt <= now)) dispatch({ type: '@expire' });
  for (const e of d.querySelectorAll('[data-since]')) e.textContent = duration(now - +e.dataset.since);
  for (const e of d.querySelectorAll('[data-until]')) e.textContent = `${secondsLeft({ expiresAt: +e.dataset.until }, now)} s left`;
  drawTyping();
  // The "typing" tag on a card of my conversations.
  if (s.mine.some((id) => s.convs[id]?.typingUntil > now - 1500 && s.convs[id].typingUntil <= now)) drawLists();
}

boot();
