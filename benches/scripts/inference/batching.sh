#!/usr/bin/env bash
# Batching against max batch 1 at the same offered load (issue 3 closing figures).
# Build first: cargo build --release -p gateway -p loadgen -p inference-client --bins
S="--kv-capacity 256 --decode-step-ms 20 --batch-slowdown 0.005 --prefill-us-per-token 10"
for round in 1 2; do
 for cfg in "completions 16 2" "completions 16 10" "completions 1 2" "chat 16 2"; do
  set -- $cfg
  "$(dirname "$0")/run.sh" "r$round $1 batch$2 wait$3" "$S" "api = \"$1\"\nmax_batch = $2\nmax_wait_ms = $3\nmax_sequences = 256" "--sessions 600 --rate 80 --duration 20s --warmup 5s --seed $round"
 done
done
