// JSON over Web Storage, falling back to memory where storage is blocked
// (third-party storage off, private modes): the widget still works, it just
// forgets on reload.

/** A {get, set} store over `backing` (localStorage or sessionStorage, or a stub in tests). */
export function jsonStore(getBacking) {
  const mem = new Map();
  let s;
  try {
    // Accessing the property itself throws where storage is denied.
    s = getBacking();
    s.setItem('lc:probe', '1');
    s.removeItem('lc:probe');
  } catch {
    s = null;
  }
  return {
    get(key, fallback) {
      try {
        const raw = s ? s.getItem(key) : mem.get(key);
        return raw == null ? fallback : JSON.parse(raw);
      } catch {
        return fallback;
      }
    },
    set(key, value) {
      const raw = JSON.stringify(value);
      try {
        if (s) return s.setItem(key, raw);
      } catch {
        // Quota full: keep it for this page at least.
      }
      mem.set(key, raw);
    },
  };
}
