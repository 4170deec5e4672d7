#!/usr/bin/env bash
# loadgen side by side with Artillery (npm) and Tsung (Debian) on one chat scenario, against the
# real gateway, interleaved; prints a table of medians. A measurement script, not a test.
#
# The scenario (one definition, three tools): N sessions arrive evenly over RAMP s; each one
# connects, sends hello and waits for welcome, then MESSAGES times sends a message with a
# session-unique id and waits for its ack, then thinks THINK s; replies (tokens, done) stream in
# the background. Offered load: N/THINK messages/s while all sessions are open.
#   loadgen:   open model, constant arrivals at N/THINK per s round-robin over N sessions (each
#              session gets a message every THINK s), sessions opened at N/RAMP per s.
#   Artillery: artillery.yml + chat-processor.js (ws engine, function hooks match acks by id).
#   Tsung:     tsung.xml (websocket plugin, <match> checks the ack's id, transaction tr_rtt).
#
# Usage: run.sh [sizes|ramp|ceiling|limits|all|table]   (default all: sizes, ramp, ceiling, limits)
#   sizes: N in $SIZES (default "100 1000 5000"), THINK=2 s, MESSAGES=10, RAMP=10 s
#   ramp:  N=$RAMP_SESSIONS (default 1000), THINK in $RAMP_THINKS (default "1 0.5 0.25"),
#          10 s of messages each, with a faster answer (first token 20 ms, 2 ms apart) so that a
#          reply ends before the session's next message (Tsung takes the next frame as the ack)
#   ceiling: N=$CEIL_SESSIONS (default 15000) sessions arriving at 500/s, THINK=10 s, 6 messages
#          each (the sessions overlap for about 30 s); RUNS=$CEIL_RUNS (default 1). Tsung's
#          arrival phase is twice as long with maxnumber N: its launcher falls behind its rate
#          (below), and this lets it still reach N.
#   limits: loadgen alone: its floor (rtt against the zero-work loadgen-testserver and against the
#          gateway at a light load), the most sessions held against the gateway (19,000: one
#          process, open-files limit 20,000) with memory per session, and the message-rate ceiling
#          against the gateway; prints loadgen's summaries (in $OUT/limits/)
#   table: print the table of what $OUT/results.jsonl holds
# Environment: RUNS (3), RUN_FROM (1), TOOLS ("loadgen artillery tsung"), OUT (/tmp/loadgen-compare),
#   BIN (a folder with gateway, loadgen and loadgen-testserver; default: build them with cargo and copy them to
#   $OUT/bin so that rebuilds elsewhere do not change them under the measurement).
# Runs are interleaved: for each size, run 1 of every tool, then run 2 of every tool, ...
# Every run gets a fresh gateway (fresh data dir) and is bounded by `timeout`.
# Load goes to 127.0.0.1 only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
OUT=${OUT:-/tmp/loadgen-compare}
RUNS=${RUNS:-3}
RUN_FROM=${RUN_FROM:-1} # to redo runs RUN_FROM..RUNS only
TOOLS=${TOOLS:-"loadgen artillery tsung"}
SIZES=${SIZES:-"100 1000 5000"}
THINK=${THINK:-2}
MESSAGES=${MESSAGES:-10}
RAMP=${RAMP:-10}
RAMP_SESSIONS=${RAMP_SESSIONS:-1000}
RAMP_THINKS=${RAMP_THINKS:-"1 0.5 0.25"}
TEXT="What are your opening hours?"
ARTILLERY_VERSION=2.0.21 # the last release whose engines allow Node 18/20 (2.0.22+ need Node 22)
mkdir -p "$OUT"

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

# ---------------------------------------------------------------- install what is missing
install() {
  local need=()
  command -v tsung > /dev/null || need+=(tsung)
  [ -x /usr/bin/time ] || need+=(time)
  command -v curl > /dev/null || need+=(curl)
  command -v python3 > /dev/null || need+=(python3)
  command -v node > /dev/null || need+=(nodejs)
  command -v npm > /dev/null || need+=(npm)
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
  fi
  if [ ! -x "$HERE/node_modules/.bin/artillery" ]; then
    log "npm ci (artillery $ARTILLERY_VERSION, pinned in package-lock.json)"
    # --ignore-scripts: no post-install downloads (Artillery's Playwright engine is not used)
    (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts > /dev/null)
  fi
  if [ -z "${BIN:-}" ]; then
    log "cargo build --release -p gateway -p loadgen"
    (cd "$ROOT" && cargo build --release -p gateway -p loadgen)
    local target=${CARGO_TARGET_DIR:-$ROOT/target}
    mkdir -p "$OUT/bin"
    cp "$target/release/gateway" "$target/release/loadgen" "$target/release/loadgen-testserver" "$OUT/bin/"
    BIN=$OUT/bin
  fi
}

# ---------------------------------------------------------------- one gateway per run
gateway_config() { # $1: milliseconds per streamed token (the simulated model's decode step)
  # Limits and admission opened up, and a simulated GPU that never queues, so
  # that the comparison measures the tools, not the gateway's protection.
  cat <<EOF
[limits]
message_rate = { per_sec = 1000.0, burst = 1000.0 }
frame_rate = { per_sec = 1000.0, burst = 1000.0 }
[inference]
ttft_budget_ms = 600000
[inference.sim]
decode_step_ms = $1
kv_capacity = 1000000
batch_slowdown = 0.0
EOF
}

start_gateway() { # $1: run dir, $2: config file; sets PORT GW
  local dir=$1
  mkdir -p "$dir/gw-data"
  : > "$dir/gateway.out"
  "$BIN/gateway" --listen 127.0.0.1:0 --data-dir "$dir/gw-data" --config "$2" --log warn \
    > "$dir/gateway.out" 2>&1 &
  GW=$!
  PORT=
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^LISTENING 127.0.0.1:\([0-9]*\).*/\1/p' "$dir/gateway.out")
    [ -n "$PORT" ] && break
    sleep 0.1
  done
  [ -n "$PORT" ] || { log "gateway did not start"; cat "$dir/gateway.out" >&2; exit 1; }
}

stop_gateway() {
  kill "$GW" 2> /dev/null || true
  wait "$GW" 2> /dev/null || true
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# the gateway's own view, the same for every tool: open WebSockets and messages, twice a second
poll_metrics() { # $1: port, $2: file
  while :; do
    curl -s --max-time 1 "http://127.0.0.1:$1/metrics" |
      awk -v t="$(date +%s.%N)" '/^lc_websockets_open /{o=$2} /^lc_messages_total /{m=$2}
        END{if (o != "") print t, o, m}' >> "$2" || true
    sleep 0.5
  done
}

# ---------------------------------------------------------------- the three tools
run_loadgen() { # dir N think messages ramp
  local dir=$1 n=$2 think=$3 k=$4 ramp=$5
  local rate dur crate
  rate=$(python3 -c "print(round($n / $think, 3))")
  dur=$(python3 -c "print(round($k * $think, 3))")
  crate=$(python3 -c "print(max(1, round($n / $ramp)))")
  echo "loadgen --url ws://127.0.0.1:PORT/ws?site=demo --sessions $n --rate $rate --arrivals constant" \
    "--duration ${dur}s --connect-rate $crate --timeout 10s --text '$TEXT' --seed 1 --quiet" > "$dir/command"
  timeout $((ramp + ${dur%.*} + 60)) /usr/bin/time -v -o "$dir/time.txt" \
    "$BIN/loadgen" --url "ws://127.0.0.1:$PORT/ws?site=demo" --sessions "$n" --rate "$rate" \
    --arrivals constant --duration "${dur}s" --connect-rate "$crate" --timeout 10s --text "$TEXT" \
    --seed 1 --quiet --json "$dir/loadgen.json" > "$dir/tool.out" 2>&1 || echo "exit $?" >> "$dir/tool.out"
}

run_artillery() { # dir N think messages ramp
  local dir=$1 n=$2 think=$3 k=$4 ramp=$5
  local think_ms over
  think_ms=$(python3 -c "print(round($think * 1000))")
  over="{\"config\":{\"phases\":[{\"duration\":$ramp,\"arrivalCount\":$n}],\"variables\":{\"messages\":$k,\"think\":\"${think_ms}ms\"}}}"
  echo "artillery run -t ws://127.0.0.1:PORT/ws?site=demo --overrides '$over' -o artillery.json artillery.yml" > "$dir/command"
  (cd "$HERE" && CHAT_TEXT="$TEXT" ARTILLERY_DISABLE_TELEMETRY=true \
    timeout $((ramp + k * ${think%.*} + 120)) /usr/bin/time -v -o "$dir/time.txt" \
    node node_modules/artillery/bin/run run -t "ws://127.0.0.1:$PORT/ws?site=demo" \
    --overrides "$over" -o "$dir/artillery.json" artillery.yml) > "$dir/tool.out" 2>&1 ||
    echo "exit $?" >> "$dir/tool.out"
}

run_tsung() { # dir N think messages ramp
  local dir=$1 n=$2 think=$3 k=$4 ramp=$5
  local arate phase
  arate=$(python3 -c "print(round($n / $ramp, 3))")
  # Tsung starts at most maxnumber users and stops arriving at the phase's end; its launcher
  # truncates each wait to whole ms and its timers fire late, so it starts fewer than rate x
  # duration (87% at 100/s, 66% at 500/s here). TSUNG_PHASE_FACTOR > 1 lengthens the phase.
  phase=$(python3 -c "print(round($ramp * ${TSUNG_PHASE_FACTOR:-1}))")
  sed -e "s/@PORT@/$PORT/g; s/@SESSIONS@/$n/; s/@RAMP@/$phase/; s/@ARRIVAL_RATE@/$arate/" \
    -e "s/@MESSAGES@/$k/; s/@THINK@/$think/; s/@TEXT@/$TEXT/" "$HERE/tsung.xml" > "$dir/tsung.xml"
  echo "tsung -f tsung.xml -l tsung-log -n start   (tsung.xml: users $n over ${ramp}s, $k x (message, ack, think ${think}s))" > "$dir/command"
  mkdir -p "$dir/tsung-log"
  timeout $((ramp + k * ${think%.*} + 120)) /usr/bin/time -v -o "$dir/time.txt" \
    tsung -f "$dir/tsung.xml" -l "$dir/tsung-log" -n start > "$dir/tool.out" 2>&1 ||
    echo "exit $?" >> "$dir/tool.out"
}

run_one() { # mode tool N think messages ramp run config
  local mode=$1 tool=$2 n=$3 think=$4 k=$5 ramp=$6 i=$7 config=$8
  local dir="$OUT/runs/$mode-n$n-t$think/$tool-$i"
  rm -rf "$dir"
  mkdir -p "$dir"
  printf '{"mode":"%s","tool":"%s","sessions":%s,"think_s":%s,"messages":%s,"ramp_s":%s,"run":%s}\n' \
    "$mode" "$tool" "$n" "$think" "$k" "$ramp" "$i" > "$dir/params.json"
  start_gateway "$dir" "$config"
  poll_metrics "$PORT" "$dir/metrics.tsv" &
  local poller=$! c0 c1
  c0=$(cpu_ticks "$GW")
  log "$mode n=$n think=${think}s $tool run $i (gateway :$PORT)"
  "run_$tool" "$dir" "$n" "$think" "$k" "$ramp"
  c1=$(cpu_ticks "$GW")
  kill "$poller" 2> /dev/null || true
  wait "$poller" 2> /dev/null || true
  printf '{"cpu_s":%s,"rss_peak_kb":%s}\n' "$(python3 -c "print(($c1 - $c0) / $(getconf CLK_TCK))")" \
    "$(awk '/VmHWM/{print $2}' "/proc/$GW/status")" > "$dir/gateway.json"
  stop_gateway
  python3 "$HERE/summarize.py" run "$dir" | tee -a "$OUT/results.jsonl" > /dev/null
}

sizes() {
  gateway_config 20 > "$OUT/gateway-sizes.toml"
  for n in $SIZES; do
    for i in $(seq "$RUN_FROM" "$RUNS"); do
      for tool in $TOOLS; do
        run_one sizes "$tool" "$n" "$THINK" "$MESSAGES" "$RAMP" "$i" "$OUT/gateway-sizes.toml"
      done
    done
  done
}

ramp() {
  gateway_config 2 > "$OUT/gateway-ramp.toml"
  for think in $RAMP_THINKS; do
    local k
    k=$(python3 -c "print(max(1, round(10 / $think)))")
    for i in $(seq "$RUN_FROM" "$RUNS"); do
      for tool in $TOOLS; do
        run_one ramp "$tool" "$RAMP_SESSIONS" "$think" "$k" 5 "$i" "$OUT/gateway-ramp.toml"
      done
    done
  done
}

ceiling() {
  gateway_config 20 > "$OUT/gateway-sizes.toml"
  local n=${CEIL_SESSIONS:-15000}
  for i in $(seq "${CEIL_RUNS:-1}"); do
    for tool in $TOOLS; do
      TSUNG_PHASE_FACTOR=2 run_one ceiling "$tool" "$n" 10 6 $((n / 500)) "$i" "$OUT/gateway-sizes.toml"
    done
  done
}

# ---------------------------------------------------------------- loadgen alone
limits() {
  local dir="$OUT/limits"
  mkdir -p "$dir"
  lg() { # name, loadgen args...: one loadgen run under /usr/bin/time, its summary lines printed
    local name=$1
    shift
    timeout 120 /usr/bin/time -v -o "$dir/$name.time" "$BIN/loadgen" --quiet --json "$dir/$name.json" "$@" \
      > "$dir/$name.out" 2>&1 || true
    echo "== $name: loadgen $*"
    grep -E '^(sessions|messages|errors|rtt|ttft|send lag) ' "$dir/$name.out" || tail -3 "$dir/$name.out"
    awk -F': ' '/User time|System time|Maximum resident|Elapsed/{printf "   %s: %s\n", $1, $2}' "$dir/$name.time"
  }
  # floor: zero-work server (acks at once), 100 sessions, 1,000 messages/s constant, 1 thread each
  "$BIN/loadgen-testserver" --threads 1 --max-duration 300s > "$dir/testserver.out" 2>&1 &
  local ts=$! tport=
  for _ in $(seq 50); do
    tport=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$dir/testserver.out")
    [ -n "$tport" ] && break
    sleep 0.1
  done
  for i in 1 2 3; do
    lg "floor-testserver-$i" --url "ws://127.0.0.1:$tport/ws" --sessions 100 --rate 1000 \
      --arrivals constant --duration 10s --warmup 2s --no-replies --threads 1
  done
  kill "$ts" 2> /dev/null || true
  wait "$ts" 2> /dev/null || true
  gateway_config 20 > "$OUT/gateway-sizes.toml"
  # the same light load against the gateway (its own share included: parse, SQLite commit, ack)
  for i in 1 2 3; do
    start_gateway "$dir/gw-floor-$i" "$OUT/gateway-sizes.toml"
    lg "floor-gateway-$i" --url "ws://127.0.0.1:$PORT/ws?site=demo" --sessions 100 --rate 1000 \
      --arrivals constant --duration 10s --warmup 2s --threads 1
    stop_gateway
  done
  # most sessions: 19,000 held (gateway: max_connections 19,872 under the same limit)
  start_gateway "$dir/gw-sessions" "$OUT/gateway-sizes.toml"
  local rss0
  rss0=$(awk '/VmRSS/{print $2}' "/proc/$GW/status")
  lg sessions-19000 --url "ws://127.0.0.1:$PORT/ws?site=demo" --sessions 19000 --rate 1000 \
    --arrivals constant --duration 20s --connect-rate 5000 --budget 'sessions>=19000'
  echo "   gateway resident: $rss0 KB idle, $(awk '/VmHWM/{print $2}' "/proc/$GW/status") KB peak"
  stop_gateway
  # message rate: 1,000 sessions, offered rates up to where the gateway saturates
  for r in ${LIMIT_RATES:-3000 5000 8000}; do
    start_gateway "$dir/gw-rate-$r" "$OUT/gateway-sizes.toml"
    lg "rate-$r" --url "ws://127.0.0.1:$PORT/ws?site=demo" --sessions 1000 --rate "$r" \
      --arrivals constant --duration 10s --warmup 2s --timeout 5s
    stop_gateway
  done
}

case "${1:-all}" in
  sizes) install; sizes ;;
  ramp) install; ramp ;;
  ceiling) install; ceiling ;;
  limits) install; limits; exit 0 ;;
  all) install; sizes; ramp; ceiling; limits ;;
  table) ;;
  *) echo "usage: $0 [sizes|ramp|ceiling|limits|all|table]" >&2; exit 2 ;;
esac
python3 "$HERE/summarize.py" table "$OUT/results.jsonl"
