#!/usr/bin/env bash
# rtt (message -> ack) against a gateway binary, sync mode optional; prints p50/p99 in us.
# usage: benches/scripts/ack-cost.sh GATEWAY_BIN [normal|full] [RATE] [SESSIONS]
# EMBEDDER=lexical (or pool, minilm) sets [knowledge] embedder, so the run does
# not depend on whether the MiniLM model is on this machine.
# Replies stream (the in-process simulator with unlimited capacity), the ack is timed.
# The issue 3 figures compared a build of f2fe0b9 (in-memory log) with one of the store.
set -euo pipefail
BIN=$1; SYNC=${2:-normal}; RATE=${3:-1000}; SESS=${4:-200}
d=$(mktemp -d)
cfg=$d/g.toml
printf '[limits]\nmessage_rate = { per_sec = 10000.0, burst = 10000.0 }\nframe_rate = { per_sec = 10000.0, burst = 10000.0 }\n' > $cfg
if $BIN --config $cfg print-config 2>/dev/null | grep -q '^\[store\]'; then printf '[store]\nsync = "%s"\n[inference]\nttft_budget_ms = 600000\n[inference.sim]\nkv_capacity = 1000000\nbatch_slowdown = 0.0\n' $SYNC >> $cfg; fi
if [ -n "${EMBEDDER:-}" ]; then printf '[knowledge]\nembedder = "%s"\n' "$EMBEDDER" >> $cfg; fi
$BIN --listen 127.0.0.1:0 --data-dir $d/data --config $cfg --log warn > $d/out 2>$d/err &
pid=$!
for i in $(seq 100); do grep -q LISTENING $d/out && break; sleep 0.05; done
addr=$(awk '/^LISTENING/{print $2}' $d/out)
"${LOADGEN_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/loadgen}" --url "ws://$addr/ws?site=demo" --sessions $SESS --rate $RATE --duration 10s --warmup 2s --no-replies --quiet --json $d/r.json >/dev/null 2>&1 || true
kill $pid; wait $pid 2>/dev/null || true
python3 -c "
import json;r=json.load(open('$d/r.json'));m=r['metrics']['rtt']
print('%-16s sync=%-6s rate=%5s rtt count=%6d p50=%6dus p90=%6dus p99=%6dus p999=%6dus' % ('$(basename $BIN)','$SYNC',$RATE,m['count'],m['p50_us'],m['p90_us'],m['p99_us'],m['p999_us']))"
rm -rf $d
