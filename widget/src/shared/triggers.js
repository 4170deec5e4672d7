// Proactive triggers: which of a site's triggers are due, given what the host
// page shows now. Pure, so the rules are tested without a browser; the loader
// feeds it the page's time, scroll depth and URL.

/** How far down the page the visitor has seen, 0-100. */
export function scrollPercent(scrollTop, viewportHeight, pageHeight) {
  if (pageHeight <= 0) return 100;
  return Math.min(100, Math.round(((scrollTop + viewportHeight) / pageHeight) * 100));
}

function matches(pattern, url) {
  try {
    return new RegExp(pattern).test(url);
  } catch {
    // A site owner's typo must not break the page: such a trigger never fires.
    return false;
  }
}

/**
 * The triggers whose every condition holds. A trigger is
 * {i, message, after_seconds?, scroll_percent?, url_pattern?}.
 */
export function dueTriggers(triggers, { seconds, scroll, url }) {
  return triggers.filter(
    (t) =>
      (t.after_seconds == null || seconds >= t.after_seconds) &&
      (t.scroll_percent == null || scroll >= t.scroll_percent) &&
      (t.url_pattern == null || matches(t.url_pattern, url)),
  );
}
