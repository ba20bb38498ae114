"""Attributes the CPU samples of a `ferroflow bench train` profile to the
parts of the training step (the breakdown in docs/PERFORMANCE.md, issue 5).

Each sample goes to the innermost ferroflow kernel or op on its stack,
inlined frames included (conv forward / input gradient / weight gradient,
batch norm, pooling, ReLU, candle's autograd, the optimizer, ...); samples
that fault in or zero-fill fresh memory, or run the allocator, are also
counted as allocation, whoever owns them.

Usage (from the repository root, after cargo build --release):
    perf record -F 999 -g --call-graph dwarf -o /tmp/step.data target/release/ferroflow bench train
    perf script -i /tmp/step.data -F tid,ip,sym --inline | python3 bench/step_profile.py
"""

import collections
import re
import sys

# (category, pattern): the first frame, innermost first, that matches any pattern names the owner.
OWNERS = [
    # The fused conv + BN + ReLU op (kernels::conv_bn): its batch-norm parts first (they
    # are the innermost frames when they run), then its gemms by pass.
    ("batch norm (fwd+bwd)", r"kernels::batch_norm|BatchNormTrain|layers::batch_norm|conv_bn::(plane_moments|merge_moments)"),
    ("conv forward", r"kernels::conv2d::forward|Conv2dOp as |conv_bn::forward_conv|ConvBnOp as "),
    ("conv input grad", r"kernels::conv2d::backward_input|Conv2dBackwardInput"),
    ("conv weight grad", r"kernels::conv2d::backward_filter|Conv2dBackwardFilter"),
    ("conv backward, fused (input + weight grad gemms, im2col, col2im)", r"conv_bn::backward_chunk|ConvBnBackward"),
    ("ReLU (kernel, fwd+bwd)", r"kernels::relu"),
    ("max pool (fwd+bwd)", r"kernels::pool|MaxPool2d"),
    ("bias add (fwd+bwd)", r"kernels::bias"),
    ("dense matmul (candle gemm)", r"cpu_backend::MatMul|Tensor::matmul|broadcast_matmul"),
    ("ReLU forward (where_cond)", r"ops::activation::relu"),
    ("dropout", r"layers::dropout"),
    ("optimizer (momentum update)", r"ferroflow_train::optimizer"),
    ("loss (softmax CE)", r"ops::loss"),
    ("backprop: ReLU backward (where_cond)", r"Tensor::where_cond"),
    ("backprop: gradient accumulation (zeros + add)", r"GradStore::or_insert|Tensor::add"),
    ("backprop: other", r"backprop"),
    ("weights digest / setup", r"weights_digest|random_batches|spec::build|init::"),
]
ALLOCATOR = r"_mi_malloc|mi_theap_malloc|mi_free|_mi_free|_mi_page|mi_page_|mi_arena|__rust_dealloc|__rust_alloc|munmap|madvise"


def samples(lines):
    """Yields the frames (innermost first) of each sample of `perf script -F tid,ip,sym`."""
    frames = None
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                yield frames
            frames = None
        elif not line.startswith("\t"):
            frames = []
        elif frames is not None:
            parts = line.strip().split(" ", 1)
            frames.append(parts[1] if len(parts) > 1 else parts[0])
    if frames:
        yield frames


def classify(frames):
    """(owner, allocation kind or None) of one sample."""
    joined = "\n".join(frames)
    if "exc_page_fault" in joined:
        alloc = "page faults (fresh pages zeroed by the kernel)"
    elif "malloc_zero" in joined and frames[0].startswith("__memset"):
        alloc = "zero-filling new buffers (calloc / zeros_like)"
    elif re.search(ALLOCATOR, joined):
        alloc = "malloc/free"
    else:
        alloc = None
    for frame in frames:
        for name, pattern in OWNERS:
            if re.search(pattern, frame):
                return name, alloc
    if re.search(r"binary_map_vec_par|unary_map_vec_par|execute_chunked|call_trampoline", joined):
        return "candle element-wise on candle's pool thread (caller not on stack)", alloc
    if re.search(r"__rust_begin_short_backtrace<candle_core::utils", joined):
        return "idle: candle pool thread spinning", alloc
    if "gemm" in joined:
        return "gemm on a rayon worker (caller not on stack)", alloc
    if re.search(r"rayon_core::(registry|sleep)|sched_yield|futex|WorkerThread::wait", joined):
        return "idle: rayon threads waiting", alloc
    return "rest", alloc


def main():
    owners, allocs = collections.Counter(), collections.Counter()
    n = 0
    for frames in samples(sys.stdin):
        n += 1
        owner, alloc = classify(frames)
        owners[owner] += 1
        if alloc:
            allocs[alloc] += 1
    if n == 0:
        sys.exit("no samples on stdin (pipe in `perf script -F tid,ip,sym --inline`)")
    print(f"{n} samples; share of CPU time by owner (allocation included in its owner):")
    for name, count in owners.most_common():
        print(f"{100 * count / n:6.1f}%  {name}")
    print("allocation, all owners:")
    for name, count in allocs.most_common():
        print(f"{100 * count / n:6.1f}%  {name}")


if __name__ == "__main__":
    main()
