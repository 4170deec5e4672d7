#!/usr/bin/env bash
# Surge admission on the embedded default (the in-process simulator, the demo
# site's knowledge base, MiniLM when its files are present): an open-model
# Poisson run of the eval set's shop questions at each RATE given, with
# admission on (`ttft_budget_ms = 1000`, the default) or off (a budget no
# request misses and a queue no surge fills), against a fresh gateway each.
# Prints per run: offered rate, share refused `busy`, admitted TTFT p50 / p99,
# good replies per second (done, TTFT within 1 s), and whether every `busy`
# came back before its ack would have.
#
# With RESEND=1 every `busy` message is sent once more after its
# retry_after_ms (loadgen --resend-busy, as the widget does), and the share of
# those resends that were acked is printed: how honest retry_after_ms is.
#
# usage: benches/scripts/surge.sh on|off RATE... (env SESSIONS=200 DURATION=20s RESEND=0)
# The sustainable rate is the highest RATE at which `off` keeps TTFT p99 under 1 s.
# Build first: cargo build --release -p gateway -p loadgen
set -euo pipefail
MODE=${1:?on or off}; shift
SESS=${SESSIONS:-200}; DUR=${DURATION:-20s}
EXTRA=(); [ "${RESEND:-0}" = 1 ] && EXTRA=(--resend-busy)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${GATEWAY_BIN:-$ROOT/target/release/gateway}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
d=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$d"' EXIT
grep '^text = ' "$ROOT/knowledge/eval/questions.toml" | sed 's/^text = "//; s/"$//' > "$d/questions.txt"
case $MODE in
  on) printf '[inference]\nttft_budget_ms = 1000\n' > "$d/gw.toml" ;;
  off) printf '[inference]\nttft_budget_ms = 600000\nqueue_capacity = 1000000\ndeadline_ms = 600000\n' > "$d/gw.toml" ;;
  *) echo "usage: $0 on|off RATE..." >&2; exit 2 ;;
esac
for RATE in "$@"; do
  rm -rf "$d/data"
  "$BIN" --listen 127.0.0.1:0 --data-dir "$d/data" --config "$d/gw.toml" --log warn > "$d/out" 2> "$d/err" &
  pid=$!
  for _ in $(seq 1200); do grep -q LISTENING "$d/out" && break; sleep 0.05; done
  addr=$(grep LISTENING "$d/out" | awk '{print $2}')
  "$LOADGEN" --url "ws://$addr/ws?site=demo" --sessions "$SESS" --rate "$RATE" --duration "$DUR" \
    --warmup 5s --timeout 60s --texts-file "$d/questions.txt" --seed 7 --slo ttft:1s --quiet "${EXTRA[@]}" \
    --json "$d/r.json" > /dev/null 2>&1 || true
  kill "$pid"; wait "$pid" 2> /dev/null || true
  pid=
  python3 - "$d/r.json" "$MODE" "$RATE" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); m = r['messages']; t = r['metrics']['ttft']
sent = max(m['sent'], 1); secs = r['measured_s'] or 1
resent = m.get('resent', 0)
honest = '  resends acked %d/%d (%.0f%%)' % (m['resent_acked'], resent, 100.0 * m['resent_acked'] / resent) if resent else ''
print('%-3s offered %6.1f/s  busy %5.1f%%  admitted ttft p50 %7.1f ms  p99 %7.1f ms  good replies %6.2f/s  replies %6.2f/s  errors %d%s' % (
    sys.argv[2], m['rate_per_s'], 100.0 * m['busy'] / sent, t['p50_us'] / 1000, t['p99_us'] / 1000,
    m['good'] / secs, m['replied'] / secs, m['errors'], honest))
PY
done
