#!/usr/bin/env bash
# Runs every ferroflow test. Creates .venv (tensorboard==2.21.0, for the test
# that reads ferroflow's event files with TensorBoard's own reader) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c "import tensorboard" 2>/dev/null; then
    echo "== creating .venv with tensorboard==2.21.0"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -r tests/python/requirements.txt
fi

echo "== cargo test (release profile for the numeric code)"
cargo test --workspace --release --locked "$@"
