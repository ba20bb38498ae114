#!/usr/bin/env bash
# Runs every ferroflow test. Creates .venv with tests/python/requirements.txt
# (TensorBoard, TensorFlow and safetensors, for the interop tests) on first use,
# and updates it when that file changes.
set -euo pipefail
cd "$(dirname "$0")/.."

want="$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]; then
    echo "== setting up .venv from tests/python/requirements.txt"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -r tests/python/requirements.txt
    echo "$want" > .venv/.requirements.sha256
fi

echo "== cargo test (release profile for the numeric code)"
cargo test --workspace --release --locked "$@"
