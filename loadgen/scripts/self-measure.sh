#!/usr/bin/env bash
# Measures loadgen itself against loadgen-testserver on this machine:
#   floor    rtt p50/p99 against a zero-delay server at a light constant load
#   rate     the highest message rate generated (sent and acked per second)
#   sessions the most sessions one process holds, and resident memory per session
# Usage: loadgen/scripts/self-measure.sh [floor|rate|sessions|all]   (release build first:
#   cargo build --release -p loadgen). Each run is bounded; load goes to 127.0.0.1 only.
set -euo pipefail
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
OUT=${OUT:-/tmp/loadgen-self}
mkdir -p "$OUT"

start_server() { # args: testserver flags; sets PORT and SERVER
  "$BIN/loadgen-testserver" --max-duration 300s "$@" > "$OUT/server.out" 2>&1 &
  SERVER=$!
  for _ in $(seq 50); do grep -q listening "$OUT/server.out" 2>/dev/null && break; sleep 0.1; done
  PORT=$(sed -n 's/listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$OUT/server.out")
}
stop_server() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }

floor() {
  start_server --threads 1
  for i in 1 2 3; do
    "$BIN/loadgen" --url "ws://127.0.0.1:$PORT/ws" --sessions 100 --rate 1000 --arrivals constant \
      --duration 10s --warmup 2s --no-replies --threads 1 --quiet --json "$OUT/floor-$i.json" | grep -E '^rtt'
  done
  stop_server
}

rate() {
  start_server --threads 1
  for r in 20000 50000 100000; do
    echo "offered $r/s:"
    "$BIN/loadgen" --url "ws://127.0.0.1:$PORT/ws" --sessions 1000 --rate "$r" --arrivals constant \
      --duration 10s --warmup 2s --no-replies --threads 1 --quiet --timeout 5s --json "$OUT/rate-$r.json" \
      | grep -E '^(messages|errors|rtt)'
  done
  stop_server
}

sessions() {
  start_server --threads 2
  /usr/bin/time -v "$BIN/loadgen" --url "ws://127.0.0.1:$PORT/ws" --sessions 19000 --rate 2000 \
    --duration 15s --no-replies --quiet --budget 'sessions>=19000' --json "$OUT/sessions.json" \
    2> "$OUT/sessions.time" | grep -E '^(sessions|messages|errors|connect|rtt|verdict)'
  grep -E 'Maximum resident' "$OUT/sessions.time"
  stop_server
}

case "${1:-all}" in
  floor) floor ;;
  rate) rate ;;
  sessions) sessions ;;
  all) floor; rate; sessions ;;
  *) echo "usage: $0 [floor|rate|sessions|all]" >&2; exit 2 ;;
esac
