// Reconnect delays: exponential with jitter, so that thousands of widgets cut
// off by the same outage do not all knock again at the same instant.

/**
 * Delay before reconnect attempt `attempt` (0-based): half of min(cap,
 * base*2^attempt) plus a random part of the other half ("equal jitter"), so
 * it never collapses to zero yet spreads the herd.
 */
export function backoffDelay(attempt, random = Math.random, base = 500, cap = 15000) {
  const d = Math.min(cap, base * 2 ** Math.min(attempt, 20));
  return Math.round(d / 2 + random() * (d / 2));
}
