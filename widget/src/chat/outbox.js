// The visitor's unsent messages: kept in storage so they survive a reload,
// each with the id it will be sent (and resent) under, in the order typed.
// Every operation re-reads storage, so two tabs of one site never overwrite
// each other's queue.

/** A short random string for message ids (unique per session with a counter). */
export function randomPrefix(crypto = globalThis.crypto) {
  const b = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(b, (x) => (x % 36).toString(36)).join('');
}

/** Queue of {id, text, ts} under `key` in `store` ({get, set}). */
export function createOutbox(store, key, prefix = randomPrefix()) {
  let n = 0;
  const list = () => store.get(key, []);
  return {
    list,
    has: (id) => list().some((m) => m.id === id),
    add(text, ts = Date.now()) {
      const m = { id: `${prefix}-${(++n).toString(36)}`, text, ts };
      store.set(key, [...list(), m]);
      return m;
    },
    /** Removes these ids; returns how many were queued. */
    remove(...ids) {
      const all = list();
      const left = all.filter((m) => !ids.includes(m.id));
      if (left.length !== all.length) store.set(key, left);
      return all.length - left.length;
    },
  };
}
