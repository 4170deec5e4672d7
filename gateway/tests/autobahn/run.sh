#!/usr/bin/env bash
# Autobahn testsuite (RFC 6455 conformance) against the gateway's /echo route,
# driven by kosoku in fuzzingclient mode. See README.md in this folder.
#
#   gateway/tests/autobahn/run.sh --driver uring|epoll [--gateway PATH] [--out DIR]
#   gateway/tests/autobahn/run.sh --reference            # websockets reference server
#   gateway/tests/autobahn/run.sh --gateway-cmd 'CMD'    # any server; CMD sees $PORT
#
# Exit status: 0 all cases passed; non-zero otherwise (see check_report.py).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null || (cd "$SCRIPT_DIR/../../.." && pwd))
VENV="${AUTOBAHN_VENV:-$REPO_ROOT/.venv}"
REQUIREMENTS="$SCRIPT_DIR/requirements.txt"

usage() {
  cat <<EOF
usage: $0 --driver uring|epoll [options] [-- extra kosoku args]
       $0 --reference [options]
       $0 --gateway-cmd 'CMD' [options]

  --driver D          gateway I/O driver (uring|epoll); names the report dir
  --gateway PATH      gateway binary (env GATEWAY_BIN; default
                      \${CARGO_TARGET_DIR:-<repo>/target}/release/gateway)
  --gateway-cmd CMD   run this shell command as the server instead of the gateway
                      (env AUTOBAHN_GATEWAY_CMD). It sees \$PORT, \$DRIVER,
                      \$DATA_DIR, \$VENV_PYTHON and \$SCRIPT_DIR in its environment
                      and must serve ws://127.0.0.1:\$PORT/echo and GET /healthz.
  --reference         shorthand for --gateway-cmd running reference_echo.py
  --out DIR           report directory (default <repo>/reports/autobahn-<driver>,
                      or autobahn-reference / autobahn-custom)
  --timeout SECS      bound on the whole kosoku run (env AUTOBAHN_TIMEOUT; default 900)
  --parallelism N     kosoku -p: cases run concurrently (env AUTOBAHN_PARALLELISM;
                      default 1)
  --min-cases N       fail if fewer cases ran (default 200; lower it when
                      selecting cases with -- -i ...)
  -- ARGS             passed to kosoku as is (e.g. -- -i '9.*')
EOF
}

DRIVER=""
GATEWAY="${GATEWAY_BIN:-}"
GATEWAY_CMD="${AUTOBAHN_GATEWAY_CMD:-}"
OUT=""
LABEL=""
TIMEOUT_SECS="${AUTOBAHN_TIMEOUT:-900}"
PARALLELISM="${AUTOBAHN_PARALLELISM:-1}"
MIN_CASES=200
EXTRA_ARGS=()
REFERENCE=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --driver) DRIVER="${2:?--driver needs a value}"; shift 2 ;;
    --driver=*) DRIVER="${1#*=}"; shift ;;
    --gateway) GATEWAY="${2:?--gateway needs a value}"; shift 2 ;;
    --gateway=*) GATEWAY="${1#*=}"; shift ;;
    --gateway-cmd) GATEWAY_CMD="${2:?--gateway-cmd needs a value}"; shift 2 ;;
    --gateway-cmd=*) GATEWAY_CMD="${1#*=}"; shift ;;
    --reference) REFERENCE=1; shift ;;
    --out) OUT="${2:?--out needs a value}"; shift 2 ;;
    --out=*) OUT="${1#*=}"; shift ;;
    --timeout) TIMEOUT_SECS="${2:?--timeout needs a value}"; shift 2 ;;
    --timeout=*) TIMEOUT_SECS="${1#*=}"; shift ;;
    --parallelism|-p) PARALLELISM="${2:?--parallelism needs a value}"; shift 2 ;;
    --parallelism=*) PARALLELISM="${1#*=}"; shift ;;
    --min-cases) MIN_CASES="${2:?--min-cases needs a value}"; shift 2 ;;
    --min-cases=*) MIN_CASES="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA_ARGS=("$@"); break ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ $REFERENCE -eq 1 ]]; then
  GATEWAY_CMD='exec "$VENV_PYTHON" "$SCRIPT_DIR/reference_echo.py" --host 127.0.0.1 --port "$PORT"'
  LABEL="reference"
fi
if [[ -n "$DRIVER" ]]; then
  case "$DRIVER" in
    uring|epoll) ;;
    *) echo "run.sh: --driver must be uring or epoll, got '$DRIVER'" >&2; exit 2 ;;
  esac
  LABEL="$DRIVER"
elif [[ -z "$GATEWAY_CMD" ]]; then
  echo "run.sh: --driver uring|epoll is required (or --reference / --gateway-cmd)" >&2
  usage >&2
  exit 2
fi
LABEL="${LABEL:-custom}"
OUT="${OUT:-$REPO_ROOT/reports/autobahn-$LABEL}"

if [[ -z "$GATEWAY_CMD" ]]; then
  GATEWAY="${GATEWAY:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/gateway}"
  if [[ ! -x "$GATEWAY" ]]; then
    echo "run.sh: gateway binary not found or not executable: $GATEWAY" >&2
    echo "run.sh: build it first (cargo build --release -p gateway) or pass --gateway PATH" >&2
    exit 2
  fi
fi

log() { printf 'autobahn[%s]: %s\n' "$LABEL" "$*" >&2; }

# --- 1. virtualenv with the pinned kosoku + websockets (idempotent) ---------
ensure_venv() {
  local stamp="$VENV/.autobahn-requirements.sha256" want
  want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
  if [[ -x "$VENV/bin/python" && -x "$VENV/bin/kosoku" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  # Serialise concurrent runs (e.g. both drivers started at once).
  local lock="${TMPDIR:-/tmp}/autobahn-venv-$(printf '%s' "$VENV" | sha256sum | cut -c1-16).lock"
  exec 9>"$lock"
  flock -w 600 9
  if [[ -x "$VENV/bin/python" && -x "$VENV/bin/kosoku" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exec 9>&-
    return 0
  fi
  log "setting up $VENV"
  if [[ ! -x "$VENV/bin/python" ]]; then
    timeout 300 "${PYTHON:-python3}" -m venv "$VENV"
  fi
  timeout 600 "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS"
  printf '%s\n' "$want" >"$stamp"
  exec 9>&-
}
ensure_venv
VENV_PYTHON="$VENV/bin/python"

# --- 2. fresh report directory (stale reports must never be judged) ---------
mkdir -p "$OUT"
rm -f "$OUT"/index.json "$OUT"/index.html "$OUT"/*_case_*.json "$OUT"/*_case_*.html \
      "$OUT"/server.log "$OUT"/kosoku.log
SERVER_LOG="$OUT/server.log"
KOSOKU_LOG="$OUT/kosoku.log"

# --- 3. start the server under test -------------------------------------------
SERVER_PID=""
KOSOKU_PID=""
DATA_DIR=""

# True while PID runs. `kill -0` alone also succeeds for an exited child that
# has not been reaped yet (a zombie), so look at its state too.
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ "$state" != "Z" && "$state" != "X" ]]
}

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  if alive "$SERVER_PID"; then
    # The server runs in its own session/process group (setsid): signal the group.
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 5))
    while alive "$SERVER_PID" && ((SECONDS < deadline)); do sleep 0.1; done
    if alive "$SERVER_PID"; then
      log "server did not exit within 5 s of SIGTERM; sending SIGKILL"
      kill -KILL -- "-$SERVER_PID" 2>/dev/null || kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

cleanup() {
  local rc=$?
  # A second INT/TERM (timeout(1) signals its whole process group, for one)
  # must not cut the cleanup short.
  trap '' INT TERM
  if [[ -n "$KOSOKU_PID" ]] && alive "$KOSOKU_PID"; then
    kill -TERM "$KOSOKU_PID" 2>/dev/null || true   # timeout(1) forwards it to kosoku
    wait "$KOSOKU_PID" 2>/dev/null || true
  fi
  stop_server
  [[ -n "$DATA_DIR" ]] && rm -rf "$DATA_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  "$VENV_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

healthy() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/healthz" 2>/dev/null
  else
    "$VENV_PYTHON" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$PORT/healthz" 2>/dev/null
  fi
}

start_server() {
  DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/autobahn-data.XXXXXX")
  export PORT DRIVER DATA_DIR VENV_PYTHON SCRIPT_DIR
  if [[ -n "$GATEWAY_CMD" ]]; then
    log "server: $GATEWAY_CMD  (PORT=$PORT)"
    setsid bash -c "$GATEWAY_CMD" >"$SERVER_LOG" 2>&1 </dev/null &
  else
    local cmd=("$GATEWAY" --listen "127.0.0.1:$PORT" --echo --io-driver "$DRIVER" --workers 2 --data-dir "$DATA_DIR")
    log "server: ${cmd[*]}"
    setsid "${cmd[@]}" >"$SERVER_LOG" 2>&1 </dev/null &
  fi
  SERVER_PID=$!
}

READY=0
for attempt in 1 2 3; do
  PORT=$(free_port)
  start_server
  deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    if ! alive "$SERVER_PID"; then break; fi
    if healthy; then READY=1; break; fi
    sleep 0.1
  done
  [[ $READY -eq 1 ]] && break
  if alive "$SERVER_PID"; then
    log "server did not answer http://127.0.0.1:$PORT/healthz within 30 s"
    break
  fi
  wait "$SERVER_PID" 2>/dev/null && code=0 || code=$?
  SERVER_PID=""
  rm -rf "$DATA_DIR"; DATA_DIR=""
  if grep -qi 'in use' "$SERVER_LOG" 2>/dev/null && ((attempt < 3)); then
    log "port $PORT was taken meanwhile; retrying with another port"
    continue
  fi
  log "server exited with status $code before becoming ready"
  break
done
if [[ $READY -ne 1 ]]; then
  log "---- last lines of $SERVER_LOG ----"
  tail -n 40 "$SERVER_LOG" >&2 || true
  exit 1
fi
log "server ready on 127.0.0.1:$PORT (pid $SERVER_PID)"

# --- 4. run the Autobahn cases ----------------------------------------------------
URL="ws://127.0.0.1:$PORT/echo"
KOSOKU=("$VENV/bin/kosoku" --mode fuzzingclient -x '12.*' -x '13.*' -p "$PARALLELISM" -o "$OUT" "${EXTRA_ARGS[@]}" "$URL")
log "running: timeout $TIMEOUT_SECS ${KOSOKU[*]}"
START=$SECONDS
# Background + wait, so that INT/TERM traps run at once and cleanup stops kosoku.
timeout --kill-after=10 "$TIMEOUT_SECS" "${KOSOKU[@]}" >"$KOSOKU_LOG" 2>&1 </dev/null &
KOSOKU_PID=$!
KOSOKU_RC=0
wait "$KOSOKU_PID" || KOSOKU_RC=$?
KOSOKU_PID=""
ELAPSED=$((SECONDS - START))
log "kosoku exited with status $KOSOKU_RC after ${ELAPSED} s (log: $KOSOKU_LOG)"

SERVER_DIED=0
if ! alive "$SERVER_PID"; then
  wait "$SERVER_PID" 2>/dev/null && code=0 || code=$?
  SERVER_PID=""
  log "FAIL: the server exited during the run (status $code); see $SERVER_LOG"
  SERVER_DIED=1
fi
stop_server

# --- 5. judge the report -------------------------------------------------------------
CHECK_RC=0
"$VENV_PYTHON" "$SCRIPT_DIR/check_report.py" --min-cases "$MIN_CASES" "$OUT" || CHECK_RC=$?

RC=0
if [[ $KOSOKU_RC -eq 124 || $KOSOKU_RC -eq 137 ]]; then
  log "FAIL: kosoku hit the ${TIMEOUT_SECS} s timeout (kosoku writes its report only at the end)"
  RC=1
elif [[ $KOSOKU_RC -ne 0 && $KOSOKU_RC -ne 1 ]]; then
  log "FAIL: kosoku failed with status $KOSOKU_RC"
  RC=1
elif [[ $KOSOKU_RC -eq 1 && $CHECK_RC -eq 0 ]]; then
  log "note: kosoku reported a failing case that check_report.py tolerates (UNIMPLEMENTED in 12.*/13.*)"
fi
if [[ $CHECK_RC -ne 0 || $SERVER_DIED -ne 0 ]]; then RC=1; fi
if [[ $RC -ne 0 ]]; then
  log "---- last lines of $KOSOKU_LOG ----"
  tail -n 20 "$KOSOKU_LOG" >&2 || true
  log "---- last lines of $SERVER_LOG ----"
  tail -n 20 "$SERVER_LOG" >&2 || true
  log "FAILED; reports kept in $OUT$([[ -f $OUT/index.html ]] && echo ' (open index.html)')"
else
  log "PASSED; reports kept in $OUT (open index.html)"
fi
exit "$RC"
