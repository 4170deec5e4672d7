#!/usr/bin/env bash
# Installs Debian's chromium unless a `chromium` is already on PATH: the
# widget's browser tests and loadgen's HTML report test both drive it
# headless. Idempotent and quick when it is installed.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "== installing chromium (Debian package)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
