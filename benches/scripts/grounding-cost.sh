#!/usr/bin/env bash
# What grounding adds to time to first token: the same open-model load of the
# eval set's shop questions against the demo site, with its knowledge base
# searched by MiniLM + BM25, by BM25 alone, and with no knowledge base.
# usage: [PREFILL_US=10] benches/scripts/grounding-cost.sh [RATE] [SESSIONS] [DURATION]
# PREFILL_US is the simulated server's prefill cost per prompt token (the sources
# make prompts about 1,100 tokens longer; 100 us is the simulator's default).
# Build first: cargo build --release -p gateway -p loadgen
set -euo pipefail
RATE=${1:-20}; SESS=${2:-200}; DUR=${3:-20s}; PREFILL=${PREFILL_US:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${GATEWAY_BIN:-$ROOT/target/release/gateway}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
grep '^text = ' "$ROOT/knowledge/eval/questions.toml" | sed 's/^text = "//; s/"$//' > "$d/questions.txt"
run() {
  local name=$1 knowledge=$2
  printf '[knowledge]\n%s\n[inference]\nttft_budget_ms = 600000\n[inference.sim]\nkv_capacity = 100000\nbatch_slowdown = 0.0\nprefill_us_per_token = %s\n' "$knowledge" "$PREFILL" > "$d/$name.toml"
  "$BIN" --listen 127.0.0.1:0 --data-dir "$d/data-$name" --config "$d/$name.toml" --log warn > "$d/out" 2> "$d/err" &
  local pid=$!
  for _ in $(seq 600); do grep -q LISTENING "$d/out" && break; sleep 0.05; done
  local addr
  addr=$(awk '/^LISTENING/{print $2}' "$d/out")
  "$LOADGEN" --url "ws://$addr/ws?site=demo" --sessions "$SESS" --rate "$RATE" --duration "$DUR" \
    --warmup 3s --texts-file "$d/questions.txt" --seed 7 --quiet --json "$d/$name.json" > /dev/null 2>&1 || true
  local cpu
  cpu=$(awk '{print ($14+$15)/100}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2> /dev/null || true
  python3 - "$d/$name.json" "$name" "$cpu" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); m = r['metrics']
t = m['ttft']
print('%-8s replies %5d  ttft p50 %6.1f ms  p90 %6.1f ms  p99 %6.1f ms   gateway cpu %5.1f s' % (
    sys.argv[2], t['count'], t['p50_us'] / 1000, t['p90_us'] / 1000, t['p99_us'] / 1000, float(sys.argv[3])))
PY
}
run none   'demo = false'
run bm25   'embedder = "lexical"'
run minilm 'embedder = "minilm"'
