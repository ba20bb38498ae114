#!/usr/bin/env bash
# Runs every ferroflow test. Creates .venv with tests/python/requirements.txt
# (TensorBoard, TensorFlow, safetensors, onnx and onnxruntime, for the interop tests) on first use,
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

# protoc: candle-onnx generates ONNX's protobuf types at build time (ferroflow-onnx).
if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing protoc (Debian's protobuf-compiler), which the ONNX exporter's build needs"
        apt-get update -qq && apt-get install -y -qq protobuf-compiler
    else
        echo "error: the ONNX exporter's build needs protoc: install protobuf-compiler (apt) or protobuf (brew), or set PROTOC" >&2
        exit 1
    fi
fi

echo "== cargo test (release profile for the numeric code; the CLI with ONNX export)"
cargo test --workspace --release --locked --features ferroflow-cli/onnx "$@"

if [ "$#" -eq 0 ]; then
    echo "== the default CLI (without the onnx feature) refuses --format onnx with the build command"
    cargo test --release --locked -p ferroflow-cli --test export onnx_export_without_the_feature
fi
