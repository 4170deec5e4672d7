#!/usr/bin/env bash
# ci/load-test.sh of docs/load-testing.md, as `make test` runs it: the default
# gateway (embedded simulator, the demo site's knowledge base), loadgen with
# the brief's budgets at a rate the default gateway sustains, JUnit and plot
# kept whatever the verdict. About 40 s once built.
# usage: loadgen/scripts/ci-load-test.sh [ARTIFACTS_DIR]   (env RATE, SESSIONS, DURATION)
set -euo pipefail
cd "$(dirname "$0")/../.."
ART=${1:-artifacts}
RATE=${RATE:-6}; SESSIONS=${SESSIONS:-200}; DURATION=${DURATION:-20s}
cargo build --release -p gateway -p loadgen
mkdir -p "$ART"
rm -rf "$ART/data"
target/release/gateway --listen 127.0.0.1:0 --data-dir "$ART/data" > "$ART/gateway.out" 2> "$ART/gateway.log" &
GATEWAY=$!
trap 'kill $GATEWAY 2>/dev/null || true; wait $GATEWAY 2>/dev/null || true' EXIT
ADDR=
for _ in $(seq 600); do                      # wait up to 60 s for its address
  ADDR=$(sed -n 's/^LISTENING //p' "$ART/gateway.out")
  [ -n "$ADDR" ] && break
  kill -0 $GATEWAY 2>/dev/null || { echo "load test: the gateway did not start"; cat "$ART/gateway.log"; exit 2; }
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "load test: the gateway did not start within 60 s"; exit 2; }
set +e
target/release/loadgen --url "ws://$ADDR/ws?site=demo" \
  --sessions "$SESSIONS" --rate "$RATE" --duration "$DURATION" --warmup 5s \
  --slo ttft:1s --slo rtt:80ms \
  --budget 'rtt.p99<80ms' --budget 'ttft.p99<1s' --budget 'errors<0.1%' --budget 'goodput>99%' \
  --json "$ART/loadgen.json" --junit "$ART/loadgen-junit.xml" \
  --plot "$ART/latency.svg" --hdr-log "$ART/latency.hlog"
status=$?
set -e
case $status in
  0) echo "load test: every budget holds" ;;
  1) echo "load test: a budget was missed (see $ART/loadgen-junit.xml)" ;;
  *) echo "load test: could not run (usage or connection failure)" ;;
esac
exit $status
