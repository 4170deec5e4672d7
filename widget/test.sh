#!/usr/bin/env bash
# The widget's whole check, as the project's test command calls it: installs
# what it needs (Debian's chromium, the npm packages), checks that the
# committed dist/ is what the sources build to and that it fits the size
# budget, then runs the unit tests and the browser tests against a gateway
# binary ($GATEWAY_BIN, default <repo>/target/release/gateway). Idempotent;
# quick when everything is already installed.
set -euo pipefail
cd "$(dirname "$0")"
WIDGET=$(pwd)
REPO=$(cd .. && pwd)

"$REPO/scripts/ensure-chromium.sh"

# npm ci again only when the lock file changed since the last install.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat node_modules/.lock-sum 2>/dev/null)" != "$lock_sum" ]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >node_modules/.lock-sum
fi

echo "== dist/ is a fresh build of src/"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node build.mjs "$tmp/dist" >/dev/null
if ! diff -r "$tmp/dist" dist >/dev/null; then
  echo "widget/dist is stale: it differs from a fresh build of widget/src:" >&2
  diff -rq "$tmp/dist" dist >&2 || true
  echo "run 'npm run build' in widget/, then rebuild the gateway, and commit widget/dist" >&2
  exit 1
fi

echo "== size budget"
node check-size.mjs

echo "== unit tests"
node --test test/unit/

GATEWAY_BIN=${GATEWAY_BIN:-$REPO/target/release/gateway}
if [ ! -x "$GATEWAY_BIN" ]; then
  echo "== building the gateway ($GATEWAY_BIN is missing)"
  (cd "$REPO" && cargo build --release -p gateway)
fi
echo "== browser tests (Chromium $(chromium --version 2>/dev/null | awk '{print $2}'), gateway $GATEWAY_BIN)"
mkdir -p "$REPO/artifacts/widget"
GATEWAY_BIN=$GATEWAY_BIN node --test --test-concurrency=1 --test-timeout=120000 test/browser/
echo "screenshots: $REPO/artifacts/widget/"
