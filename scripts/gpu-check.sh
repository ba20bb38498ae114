#!/usr/bin/env bash
# The GPU check (issue 15), for a machine with an NVIDIA GPU and PyTorch but
# no Rust toolchain and no network. Build here first, on any machine:
#
#   scripts/build-cuda.sh          # target/cuda/gpu-check.tar.xz: the binary and the golden suites
#
# then, on the GPU machine, from the repository root with that archive carried
# (the device tool: carry ["target/cuda/gpu-check.tar.xz"]):
#
#   scripts/gpu-check.sh           # about 5 minutes; prints one summary table
#   scripts/gpu-check.sh --rehearse   # the same steps on the CPU with target/release/ferroflow,
#                                     # to try the script where there is no GPU
#
# Steps: the device (name, memory); the golden suites (nn ops and optimizers)
# on the GPU at the CPU's tolerances; mnist5k trained on the CPU and on the
# GPU to the same accuracy; the CPU-written checkpoint evaluated on the GPU;
# `bench train` of cifar_cnn and resnet20 on the GPU against the same models
# in PyTorch on the same GPU (bench/torch_step.py). Every step runs even when
# an earlier one failed; the exit code is 1 if any failed.
#
# The CUDA libraries the binary links (libcublas.so.13 with libcublasLt.so.13,
# libcurand.so.10, libcudart.so.13, libcudnn.so.9) come from the machine's
# PyTorch installation (its nvidia-* wheels); the driver gives libcuda.so.1.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
BIN=target/cuda/ferroflow
GOLDEN_DIR=target/cuda
if [ "${1:-}" = "--rehearse" ]; then
    DEVICE=cpu
    BIN=target/release/ferroflow
    GOLDEN_DIR=target/cuda-rehearsal
    # The CPU build's golden test binaries, where scripts/build-cuda.sh puts the GPU ones.
    mkdir -p "$GOLDEN_DIR"
    for spec in "ferroflow-nn golden-nn" "ferroflow-train golden-train"; do
        set -- $spec
        exe="$(cargo test --release --no-run -p "$1" --test golden --message-format=json 2>/dev/null \
               | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
        [ -n "$exe" ] && cp "$exe" "$GOLDEN_DIR/$2"
    done
fi
# The carried archive (scripts/build-cuda.sh), unpacked every time: a warm device
# machine keeps the previous run's binaries, which must not be the ones tested.
if [ "$DEVICE" = cuda ] && [ -f target/cuda/gpu-check.tar.xz ]; then
    tar -xJf target/cuda/gpu-check.tar.xz -C target/cuda
fi
PY="${PYTHON:-python3}"
[ -x bench/.venv/bin/python ] && [ "$DEVICE" = cpu ] && PY=bench/.venv/bin/python
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
declare -a ROWS=()
FAILED=0
row() { ROWS+=("$(printf '%-44s %-8s %s' "$1" "$2" "$3")"); [ "$2" = "ok" ] || [ "$2" = "info" ] || FAILED=1; }
elapsed() { echo "$(( $(date +%s) - START ))s"; }
START=$(date +%s)

# The CUDA libraries: every nvidia/*/lib directory of the Python installation.
if [ "$DEVICE" = cuda ]; then
    LIBS="$("$PY" - <<'PY'
import glob, os, sys
dirs = set()
for base in sys.path:
    for d in glob.glob(os.path.join(base, "nvidia", "*", "lib")) + glob.glob(os.path.join(base, "nvidia", "cu*", "lib")):
        dirs.add(d)
print(":".join(sorted(dirs)))
PY
)"
    # No empty entry: an empty one would search the current directory.
    export LD_LIBRARY_PATH="${LIBS}${LIBS:+${LD_LIBRARY_PATH:+:}}${LD_LIBRARY_PATH:-}"
    missing=""
    for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13 libnvrtc.so.13 libcudnn.so.9; do
        found=0
        IFS=: read -ra dirs <<< "$LD_LIBRARY_PATH"
        for d in "${dirs[@]}"; do [ -e "$d/$lib" ] && found=1 && break; done
        [ "$found" = 1 ] || missing="$missing $lib"
    done
    if [ -n "$missing" ]; then
        echo "error: the CUDA 13 libraries$missing are not in this Python's nvidia-* packages" \
             "(a PyTorch built for another CUDA?); put them on LD_LIBRARY_PATH" >&2
    fi
fi
[ -x "$BIN" ] || { echo "error: $BIN is missing: build it with scripts/build-cuda.sh (or cargo build --release for --rehearse)" >&2; exit 1; }

# 1. The device.
if out="$("$BIN" bench train --device "$DEVICE" --model lenet --batch 8 --steps 1 --warmup 0 2>&1)"; then
    row "device" info "$(sed -n 's/.*warm-up, [0-9]* threads, \(.*\): [0-9.]*s,.*/\1/p' <<< "$out" | head -1)"
else
    row "device" FAIL "$(tail -1 <<< "$out")"
fi

# 2. The golden suites on the device, fast path and generic path (the same on a GPU).
for suite in golden-nn golden-train; do
    exe="$GOLDEN_DIR/$suite"
    if [ ! -x "$exe" ]; then
        row "golden suite $suite" FAIL "$exe missing (scripts/build-cuda.sh builds it)"
        continue
    fi
    if out="$(FERROFLOW_TEST_DEVICE=$DEVICE FERROFLOW_REPO_ROOT="$PWD" FERROFLOW_GOLDEN_DIR="" "$exe" --test-threads 1 2>&1)"; then
        row "golden suite $suite on $DEVICE" ok "$(grep -o 'checked [0-9]* cases' <<< "$out" | head -1)"
    else
        row "golden suite $suite on $DEVICE" FAIL "$(grep -m1 -E 'FAIL|panicked|error' <<< "$out")"
        echo "$out" | tail -40 > "$WORK/$suite.log"; cat "$WORK/$suite.log" >&2
    fi
done

# 3. mnist5k on the CPU and on the device, same settings; 4. the CPU checkpoint on the device.
TRAIN=(train --data testdata/data/mnist5k --model lenet --batch-size 64 --epochs 2 --optimizer momentum
       --learning-rate 0.01 --set summary.histograms_every=0 --set summary.images_every=0)
accuracy() { sed -n 's/^validation accuracy: \([0-9.]*\).*/\1/p; s/^accuracy: \([0-9.]*\).*/\1/p' | tail -1; }
cpu_acc="$("$BIN" "${TRAIN[@]}" --device cpu --train-dir "$WORK/cpu" 2>&1 | accuracy)"
dev_acc="$("$BIN" "${TRAIN[@]}" --device "$DEVICE" --train-dir "$WORK/dev" 2>&1 | accuracy)"
if [ -n "$cpu_acc" ] && [ -n "$dev_acc" ] && "$PY" -c "import sys; sys.exit(abs($cpu_acc - $dev_acc) > 0.01 or $dev_acc < 0.9)"; then
    row "mnist5k lenet, 2 epochs: $DEVICE vs cpu" ok "accuracy $dev_acc vs $cpu_acc"
else
    row "mnist5k lenet, 2 epochs: $DEVICE vs cpu" FAIL "accuracy '${dev_acc}' vs '${cpu_acc}' (must be within 0.01, above 0.9)"
fi
cpu_eval="$("$BIN" eval --train-dir "$WORK/cpu" --device cpu 2>&1 | accuracy)"
dev_eval="$("$BIN" eval --train-dir "$WORK/cpu" --device "$DEVICE" 2>&1 | accuracy)"
if [ -n "$cpu_eval" ] && [ -n "$dev_eval" ] && "$PY" -c "import sys; sys.exit(abs($cpu_eval - $dev_eval) > 0.002)"; then
    row "CPU checkpoint evaluated on $DEVICE" ok "accuracy $dev_eval vs $cpu_eval on cpu"
else
    row "CPU checkpoint evaluated on $DEVICE" FAIL "accuracy '${dev_eval}' vs '${cpu_eval}' on cpu"
fi

# 5. bench train against PyTorch on the same device.
BATCH="${BATCH:-128}"
STEPS="${STEPS:-50}"
[ "$DEVICE" = cpu ] && STEPS=5
for model in cifar_cnn resnet20; do
    ff="$("$BIN" bench train --device "$DEVICE" --model "$model" --batch "$BATCH" --steps "$STEPS" --warmup 10 2>&1 | sed -n 's/^images\/s: //p')"
    pt="$("$PY" bench/torch_step.py --device "$DEVICE" --model "$model" --batch "$BATCH" --steps "$STEPS" --warmup 10 2>/dev/null \
          | "$PY" -c 'import json, sys; print(round(json.loads(sys.stdin.read().strip().splitlines()[-1])["images_per_sec"], 1))' 2>/dev/null)"
    if [ -n "$ff" ] && [ -n "$pt" ]; then
        ratio="$("$PY" -c "print(f'{$ff / $pt:.2f}')")"
        row "bench train $model, batch $BATCH, $DEVICE" info "ferroflow $ff images/s, PyTorch $pt: ${ratio}x"
    else
        row "bench train $model, batch $BATCH, $DEVICE" FAIL "ferroflow '${ff}', PyTorch '${pt}'"
    fi
done

echo
echo "ferroflow GPU check, $(date -u +%Y-%m-%d), device $DEVICE, $(elapsed)"
printf '%-44s %-8s %s\n' "check" "result" "detail"
for r in "${ROWS[@]}"; do echo "$r"; done
exit "$FAILED"
