// Canned replies in the reply box: "/" and the start of a shortcut, at the
// start of the text or after a space, offers the replies whose shortcut
// fits; choosing one puts its text in place of the "/word". Pure functions
// over the text and the caret, so Node tests need no DOM.

const norm = (s) => String(s || '').replace(/^\//, '').toLowerCase();

/** The "/word" that ends at `caret`, as {start, end, query}; null when there is none. */
export function slashWord(value, caret = value.length) {
  const m = /(^|\s)\/([^\s/]*)$/.exec(value.slice(0, caret));
  if (!m) return null;
  return { start: caret - m[2].length - 1, end: caret, query: m[2] };
}

/** Canned replies for `query`: shortcuts starting with it first, then those containing it, each group alphabetical. */
export function cannedMatches(canned, query, limit = 8) {
  const q = norm(query);
  const by = (a, b) => norm(a.shortcut).localeCompare(norm(b.shortcut));
  const starts = canned.filter((c) => norm(c.shortcut).startsWith(q)).sort(by);
  const inside = q ? canned.filter((c) => !norm(c.shortcut).startsWith(q) && norm(c.shortcut).includes(q)).sort(by) : [];
  return [...starts, ...inside].slice(0, limit);
}

/** What the completion list shows for this text and caret: {range, items}, or null. */
export function suggest(canned, value, caret) {
  const range = slashWord(value, caret);
  if (!range || !canned.length) return null;
  const items = cannedMatches(canned, range.query);
  return items.length ? { range, items } : null;
}

/** `value` with `range` replaced by `text`: {value, caret}. */
export function insert(value, range, text) {
  const before = value.slice(0, range.start);
  const after = value.slice(range.end);
  return { value: before + text + after, caret: before.length + text.length };
}
