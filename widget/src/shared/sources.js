// Where a reply's sources may link. A source's `url` is the knowledge base's
// name for its document: a URL of the site's own (a Markdown file's front
// matter) or a path relative to the folder that was ingested. Relative paths
// are resolved against the site's `docs_base_url` (sent in `welcome`'s
// config); without one they stay plain titles. Only http(s) is ever linked,
// and never a host under `.example` or `.invalid`: those names cannot exist
// (RFC 2606), so a link there is dead by definition (the demo's help pages
// live at fernhill.example). The agent desk shows every chunk with its
// score and raw URL instead (agent/main.js).

const NOWHERE = /(^|\.)(example|invalid)\.?$/i;
const ABSOLUTE = /^[a-z][a-z\d+.-]*:/i;

/** The address a source may link to, or null when it should show as a title. */
export function sourceHref(url, base) {
  if (typeof url !== 'string' || !url) return null;
  try {
    const u = ABSOLUTE.test(url) ? new URL(url) : base && new URL(url, base);
    return u && /^https?:$/.test(u.protocol) && !NOWHERE.test(u.hostname) ? u.href : null;
  } catch {
    return null;
  }
}

/**
 * What the visitor is shown under a reply: one entry per document (the
 * sources are chunks, several may come from one page), best first, at most
 * `max`, each `{title, href}` (`href` null: show the title alone).
 */
export function sourceList(list, base, max = 3) {
  const seen = new Set();
  const out = [];
  for (const s of list || []) {
    const key = s?.url || s?.title;
    if (!key || seen.has(key)) continue;
    seen.add(key);
    out.push({ title: s.title || s.url, href: sourceHref(s.url, base) });
    if (out.length === max) break;
  }
  return out;
}
