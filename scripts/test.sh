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
# OpenMPI (mpicc, mpirun) and libclang: rsmpi's bindings and the multi-rank tests (the mpi feature).
missing=()
if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null 2>&1; then missing+=(protobuf-compiler); fi
if ! command -v mpicc >/dev/null 2>&1 || ! command -v mpirun >/dev/null 2>&1; then missing+=(openmpi-bin libopenmpi-dev); fi
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && [ -z "${LIBCLANG_PATH:-}" ]; then missing+=(libclang-dev); fi
# nasm: libjpeg-turbo's x86 SIMD (without it the JPEG decoder builds as plain C,
# the input pipeline 26% slower; the decode test then fails if nasm appears later without a rebuild).
if ! command -v nasm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        missing+=(nasm)
    else
        echo "warning: no nasm: the JPEG decoder builds without SIMD (install nasm: the input pipeline is 26% slower without)" >&2
    fi
fi
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing ${missing[*]} (the ONNX exporter's and MPI's builds need them)"
        apt-get update -qq && apt-get install -y -qq "${missing[@]}"
    else
        echo "error: the tests need ${missing[*]}: install them (apt), or set PROTOC / LIBCLANG_PATH" >&2
        exit 1
    fi
fi

echo "== cargo test (release profile for the numeric code; the CLI with ONNX export and MPI ranks)"
cargo test --workspace --release --locked --features ferroflow-cli/onnx,ferroflow-cli/mpi "$@"

if [ "$#" -eq 0 ]; then
    echo "== the default CLI (without the onnx and mpi features) refuses --format onnx and mpirun's ranks with the build command"
    # --workspace: the same feature resolution as above for every other crate
    # (MPI and ONNX live in crates of their own that only the CLI's features
    # pull in), so only the CLI is compiled again.
    cargo test --release --locked --workspace --test export onnx_export_without_the_feature
    cargo test --release --locked --workspace --test distributed
fi
