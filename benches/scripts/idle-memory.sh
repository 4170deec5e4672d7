#!/usr/bin/env bash
# Resident memory per idle session: the gateway's RSS before, and while, N
# sessions (connected, hello sent, welcome received) sit idle, held by loadgen
# at a near-zero message rate. Build first:
#   cargo build --release -p gateway -p loadgen
# usage: benches/scripts/idle-memory.sh N [uring|epoll]
# The delta includes what the store keeps as sessions are recorded (SQLite's
# page cache, the WAL index), which is part of what a session costs.
set -euo pipefail
N=$1; DRIVER=${2:-uring}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
GW=${GATEWAY_BIN:-$ROOT/target/release/gateway}
LG=${LOADGEN_BIN:-$ROOT/target/release/loadgen}
d=$(mktemp -d)
$GW --listen 127.0.0.1:0 --io-driver "$DRIVER" --data-dir "$d" --log warn > "$d/out" 2>"$d/err" &
gpid=$!
trap 'kill $gpid 2>/dev/null; rm -rf "$d"' EXIT
for _ in $(seq 100); do grep -q LISTENING "$d/out" && break; sleep 0.1; done
addr=$(awk '/^LISTENING/{print $2}' "$d/out")
# Warm up the allocator and the workers' structures.
$LG --url "ws://$addr/ws?site=demo" --sessions 50 --rate 0.01 --duration 2s --quiet >/dev/null 2>&1 || true
rss0=$(awk '/VmRSS/{print $2}' /proc/$gpid/status)
$LG --url "ws://$addr/ws?site=demo" --sessions "$N" --rate 0.01 --duration 25s --connect-rate 5000 --quiet > "$d/lg.out" 2>&1 &
lpid=$!
# Wait (bounded) until every session is open, then let it settle.
for _ in $(seq 300); do
  open=$(curl -s "http://$addr/metrics" | awk '/^lc_websockets_open /{print $2}')
  [ "${open:-0}" -ge "$N" ] && break; sleep 0.1
done
sleep 2
rss1=$(awk '/VmRSS/{print $2}' /proc/$gpid/status)
open=$(curl -s "http://$addr/metrics" | awk '/^lc_websockets_open /{print $2}')
[ "${open:-0}" -gt 0 ] || { cat "$d/lg.out"; exit 1; }
echo "driver=$DRIVER sessions_open=$open rss_before_kb=$rss0 rss_with_kb=$rss1 per_session_bytes=$(( (rss1-rss0)*1024/open ))"
wait $lpid || true
