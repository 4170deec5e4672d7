#!/usr/bin/env bash
# Surge admission on and off at ~10x the sustainable load, then the gateway's
# addition to TTFT at 1,000 concurrent conversations (issue 3 closing figures).
S="--kv-capacity 16"
for round in 1 2; do
  "$(dirname "$0")/run.sh" "r$round admission on" "$S" 'api = "chat"\nmax_sequences = 16\nttft_budget_ms = 1000' "--sessions 1000 --rate 150 --duration 20s --warmup 5s --timeout 60s --seed $round"
  "$(dirname "$0")/run.sh" "r$round admission off" "$S" 'api = "chat"\nmax_sequences = 16\nttft_budget_ms = 600000\nqueue_capacity = 100000' "--sessions 1000 --rate 150 --duration 20s --warmup 5s --timeout 60s --seed $round"
done
for round in 1 2; do
  "$(dirname "$0")/run.sh" "r$round 1000conv" "--kv-capacity 2048 --batch-slowdown 0 --prefill-us-per-token 10" 'api = "chat"\nmax_sequences = 2048\nttft_budget_ms = 60000' "--sessions 1000 --think 5s --duration 30s --warmup 10s --seed $round"
done
