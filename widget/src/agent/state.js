// The agent desk's state, as a pure reducer: `reduce(state, action, now)`
// returns a new state (the old one is never changed), so the DOM code can
// tell what changed by comparing references, and Node tests drive it with
// plain objects. Actions are the gateway's frames (see docs/protocol.md,
// "Agent desk") and the desk's own, whose types start with '@'.
//
// A conversation the desk knows: {id, card, items (null until a transcript
// came), pending: [{id, text, state}], held, unread, typingUntil}.

export const TYPING_MS = 4000;

export const initial = () => ({
  agent: null,
  available: true,
  queue: [], // cards, oldest first
  offers: {}, // conversation -> {expiresAt}
  convs: {}, // conversation -> see above
  mine: [], // ids of the conversations held, in the order taken
  taking: [], // ids asked for with `take`, not yet assigned
  selected: null,
  agents: [], // supervisors and admins: [{id, name, online, available, load, capacity}]
  canned: [],
  line: null, // {kind: 'error' | 'info', text}: the status line
});

const without = (list, x) => (list.includes(x) ? list.filter((y) => y !== x) : list);
const withOut = (obj, key) => {
  if (!(key in obj)) return obj;
  const o = { ...obj };
  delete o[key];
  return o;
};
const conv = (s, id) => s.convs[id] || { id, card: { conversation: id }, items: null, pending: [], held: false, unread: 0, typingUntil: 0 };
const put = (s, c) => ({ ...s, convs: { ...s.convs, [c.id]: c } });
// Cards remember when they arrived, for waitingSince().
const stamp = (cards, now) => (cards || []).map((c) => ({ ...c, seen_ms: now }));

/** Adds transcript items, keeping ascending `seq` and each seq once. */
export function mergeItems(items, more) {
  let out = items || [];
  let copied = false;
  for (const it of more) {
    if (out.some((x) => x.seq === it.seq)) continue;
    if (!copied) (out = [...out]), (copied = true);
    let i = out.length;
    while (i > 0 && out[i - 1].seq > it.seq) i--;
    out.splice(i, 0, it);
  }
  return out;
}

/** A conversation the agent no longer holds: gone from the lists and from memory. */
function letGo(s, id, text) {
  const n = { ...s, mine: without(s.mine, id), offers: withOut(s.offers, id), taking: without(s.taking, id), convs: withOut(s.convs, id) };
  if (s.selected === id) n.selected = n.mine[0] || null;
  if (text) n.line = { kind: 'info', text };
  return n;
}

const GONE = {
  released: 'handed back to the assistant',
  resolved: 'resolved',
  transferred: 'transferred',
  timeout: 'timed out',
  disconnected: 'back in the queue (you were disconnected)',
};

export const label = (id) => 'Visitor ' + String(id).replace(/^c_/, '').slice(0, 6);

const frames = {
  welcome(s, m, now) {
    const held = (m.conversations || []).map((c) => c.conversation);
    const convs = {};
    // Transcripts already shown stay, marked stale: the desk asks for them again.
    for (const c of m.conversations || []) {
      const old = s.convs[c.conversation];
      convs[c.conversation] = { ...conv(s, c.conversation), card: c, held: true, stale: !!old?.items };
    }
    if (s.selected && !convs[s.selected] && s.convs[s.selected]) convs[s.selected] = { ...s.convs[s.selected], held: false, stale: true };
    return {
      ...s,
      agent: m.agent || s.agent,
      queue: stamp(m.queue, now),
      canned: m.canned || [],
      offers: {},
      taking: [],
      convs,
      mine: held,
      selected: convs[s.selected] ? s.selected : held[0] || null,
    };
  },
  queue: (s, m, now) => ({ ...s, queue: stamp(m.items, now) }),
  offer: (s, m, now) => ({ ...s, offers: { ...s.offers, [m.conversation]: { expiresAt: now + (m.expires_in_ms ?? 20000) } } }),
  assigned(s, m) {
    const id = m.conversation;
    const mine = s.mine.includes(id) ? s.mine : [...s.mine, id];
    const ours = s.taking.includes(id);
    const n = {
      ...s,
      mine,
      taking: without(s.taking, id),
      offers: withOut(s.offers, id),
      queue: s.queue.filter((c) => c.conversation !== id),
      selected: ours || !s.selected ? id : s.selected,
      line: ours ? null : { kind: 'info', text: `${label(id)} was assigned to you.` },
    };
    const { items, type, ...card } = m;
    return put(n, { ...conv(s, id), card, items: mergeItems([], items || []), held: true, stale: false });
  },
  unassigned: (s, m) => letGo(s, m.conversation, `${label(m.conversation)}: ${GONE[m.reason] || m.reason || 'no longer yours'}.`),
  transcript(s, m) {
    const { items, type, ...card } = m;
    const c = conv(s, m.conversation);
    return put(s, { ...c, card: { ...c.card, ...card }, items: mergeItems([], items || []), stale: false });
  },
  message(s, m) {
    const c = s.convs[m.conversation];
    if (!c || !m.item) return s;
    const it = m.item;
    const visitor = it.from === 'visitor';
    return put(s, {
      ...c,
      items: c.items && mergeItems(c.items, [it]),
      card: visitor ? { ...c.card, preview: String(it.text).slice(0, 200) } : c.card,
      unread: s.selected === m.conversation ? 0 : c.unread + 1,
      typingUntil: visitor ? 0 : c.typingUntil,
    });
  },
  typing(s, m, now) {
    const c = s.convs[m.conversation];
    return c ? put(s, { ...c, typingUntil: now + TYPING_MS }) : s;
  },
  ack(s, m, now) {
    const id = m.conversation || Object.values(s.convs).find((c) => c.pending.some((p) => p.id === m.id))?.id;
    const c = s.convs[id];
    const p = c?.pending.find((x) => x.id === m.id);
    if (!p) return s;
    const item = { seq: m.seq, from: 'agent', name: s.agent?.name, text: p.text, ts: now };
    return put(s, { ...c, pending: c.pending.filter((x) => x !== p), items: c.items && mergeItems(c.items, [item]) });
  },
  ended: (s, m) => (s.mine.includes(m.conversation) || s.convs[m.conversation] ? letGo(s, m.conversation, `${label(m.conversation)} ended (${m.reason}).`) : s),
  agents: (s, m) => ({ ...s, agents: m.items || [] }),
  error(s, m) {
    let n = { ...s, line: { kind: 'error', text: m.message || m.code || 'error' } };
    for (const c of Object.values(s.convs)) {
      if (m.id && c.pending.some((p) => p.id === m.id)) {
        n = put(n, { ...c, pending: c.pending.map((p) => (p.id === m.id ? { ...p, state: 'failed', why: m.message || m.code } : p)) });
      }
    }
    // A take that lost (conflict) or a conversation that vanished.
    if (m.conversation && (m.code === 'conflict' || m.code === 'not_found')) {
      n = { ...n, offers: withOut(n.offers, m.conversation), taking: without(n.taking, m.conversation) };
    }
    return n;
  },
  pong: (s) => s,

  // The desk's own actions.
  '@agent': (s, m) => ({ ...s, agent: m.agent }),
  '@available': (s, m) => ({ ...s, available: !!m.available }),
  '@select'(s, m) {
    const id = m.conversation;
    const c = conv(s, id);
    const card = s.queue.find((q) => q.conversation === id);
    const prev = s.convs[s.selected];
    // A queued conversation looked at and left is forgotten.
    const convs = prev && !prev.held && prev.id !== id ? withOut(s.convs, prev.id) : s.convs;
    return put({ ...s, convs, selected: id }, { ...c, card: card ? { ...c.card, ...card } : c.card, unread: 0 });
  },
  '@take': (s, m) => ({ ...s, taking: s.taking.includes(m.conversation) ? s.taking : [...s.taking, m.conversation] }),
  '@decline': (s, m) => ({ ...s, offers: withOut(s.offers, m.conversation) }),
  '@send'(s, m) {
    const c = conv(s, m.conversation);
    return put(s, { ...c, pending: [...c.pending, { id: m.id, text: m.text, state: 'sending' }] });
  },
  '@expire'(s, m, now) {
    const gone = Object.keys(s.offers).filter((k) => s.offers[k].expiresAt <= now);
    if (!gone.length) return s;
    let offers = s.offers;
    for (const k of gone) offers = withOut(offers, k);
    return { ...s, offers };
  },
  '@line': (s, m) => ({ ...s, line: m.line }),
  '@reset': () => initial(),
};

/** The next state after `action` (a frame from the gateway, or a desk action). Unknown actions change nothing. */
export function reduce(s, action, now = Date.now()) {
  const f = frames[action.type];
  return f ? f(s, action, now) : s;
}

/**
 * The line as the desk draws it: the conversations offered to this agent
 * (highlighted above the queue, their card when the queue has it) and the
 * rest of the queue. An offered conversation is in one list, never both.
 */
export function lineup(s) {
  const ids = Object.keys(s.offers);
  return {
    offered: ids.map((id) => s.queue.find((c) => c.conversation === id) || { conversation: id }),
    queue: s.queue.filter((c) => !ids.includes(c.conversation)),
  };
}

/**
 * When the card's conversation started waiting, in epoch milliseconds.
 * `waiting_since_ms` is read as an epoch time; a value too small to be one
 * (before 1973) is taken as "waiting this long" at the time it arrived.
 */
export const waitingSince = (card, receivedAt = card?.seen_ms) => {
  const v = card?.waiting_since_ms;
  if (typeof v !== 'number') return null;
  return v > 1e11 ? v : receivedAt - v;
};

/** "45 s", "3 min", "2 h 05". */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')}`;
}

/** Whole seconds left on an offer. */
export const secondsLeft = (offer, now) => Math.max(0, Math.ceil((offer.expiresAt - now) / 1000));

export const isTyping = (c, now) => !!c && c.typingUntil > now;

/** May this agent transfer conversations? */
export const canTransfer = (agent) => agent?.role === 'supervisor' || agent?.role === 'admin';

/** Calls `send()` at most once per `gap` ms per key; says whether it did. */
export function throttle(gap, clock = Date.now) {
  const last = new Map();
  return (key, send) => {
    const t = clock();
    if (t - (last.get(key) ?? -Infinity) < gap) return false;
    last.set(key, t);
    send();
    return true;
  };
}
