"""Training step of cifar_cnn, resnet20 and vgg_small (issue 19): `ferroflow bench
train` against TensorFlow 2.21 (Keras, one `tf.function`) and PyTorch with the
same layers, in one run on the same machine, batch 64, random 32x32x3 data,
10 classes, training mode, mean sparse softmax cross-entropy, SGD momentum 0.9.

The models, as ferroflow's zoo declares them (crates/nn/src/zoo.rs); the
script checks every side's trainable parameter count:
- cifar_cnn (1,117,162): bench/train_step.py's model.
- resnet20 (272,474): conv3x3(16, no bias) + BN + ReLU; three stages of three
  basic blocks (16, 32, 64 filters; conv3x3 + BN + ReLU, conv3x3 + BN; a 1x1
  conv + BN projection where the shape changes; stride 2 entering stages 2 and
  3), ReLU after the sum; 8x8 average pool; dense 10.
- vgg_small (3,249,098): [conv3x3 (no bias) + BN + ReLU] x2 and a 2x2 max-pool
  at 64, 128 and 256 filters; dense 512 + ReLU; dropout 0.5; dense 10.
SAME padding: TF pads a strided conv asymmetrically, PyTorch symmetrically
(padding=1); the work is the same. BN: TF's momentum 0.99 / epsilon 1e-3
(PyTorch momentum 0.01).

Each side runs in its own process (its peak RSS is its own), `--warmup`
untimed steps, then `--steps` timed steps reading the loss back every step.
With `--repeats N` every (model, side) runs N times; the order of the sides
rotates between repeats, so no side always runs first. The best run of each is
compared.

Usage (from the repository root, after bench/setup.sh and cargo build --release):
    bench/.venv/bin/python bench/zoo_step.py [--models cifar_cnn,resnet20,vgg_small] [--repeats 3] [--threads N]

`--with-gemm` adds a fourth side: ferroflow with `FERROFLOW_KERNELS=gemm` (every
convolution through im2col + gemm, none through the direct AVX-512 kernels), to
measure what those kernels bring in the same run.

`--threads N` gives every side N compute threads (ferroflow's rayon pool,
TF's intra- and inter-op pools, torch.set_num_threads): the thread-scaling
measurement of docs/PERFORMANCE.md runs it with 1 and with 2.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import COMMON, ROOT, TF_STEP, TORCH_STEP, run_ferroflow, run_python, set_threads  # noqa: E402

PARAMS = {"cifar_cnn": 1_117_162, "resnet20": 272_474, "vgg_small": 3_249_098}

TF_JOB = COMMON + r'''
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
tf.keras.utils.set_random_seed(0)
L = tf.keras.layers
name = sys.argv[4]

def conv_bn(x, f, k=3, stride=1, relu=True):
    x = L.Conv2D(f, k, strides=stride, padding="same", use_bias=False)(x)
    x = L.BatchNormalization(momentum=0.99, epsilon=1e-3)(x)
    return L.ReLU()(x) if relu else x

inp = tf.keras.Input((32, 32, 3))
if name == "cifar_cnn":
    x = conv_bn(conv_bn(inp, 32), 32)
    x = L.MaxPooling2D(2)(x)
    x = L.MaxPooling2D(2)(conv_bn(conv_bn(x, 64), 64))
    x = L.Dropout(0.5)(L.Dense(256, activation="relu")(L.Flatten()(x)))
elif name == "resnet20":
    x = conv_bn(inp, 16)
    cin = 16
    for stage, f in enumerate([16, 32, 64]):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            y = conv_bn(conv_bn(x, f, stride=stride), f, relu=False)
            s = conv_bn(x, f, k=1, stride=stride, relu=False) if stride != 1 or cin != f else x
            x = L.ReLU()(L.Add()([y, s]))
            cin = f
    x = L.Flatten()(L.AveragePooling2D(8)(x))
else:  # vgg_small
    x = inp
    for f in [64, 128, 256]:
        x = L.MaxPooling2D(2)(conv_bn(conv_bn(x, f), f))
    x = L.Dropout(0.5)(L.Dense(512, activation="relu")(L.Flatten()(x)))
model = tf.keras.Model(inp, L.Dense(10)(x))
''' + TF_STEP

TORCH_JOB = COMMON + r'''
import torch
from torch import nn
torch.manual_seed(0)
name = sys.argv[4]

def conv_bn(cin, f, k=3, stride=1, relu=True):
    layers = [nn.Conv2d(cin, f, k, stride, k // 2, bias=False), nn.BatchNorm2d(f, eps=1e-3, momentum=0.01)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers

class Basic(nn.Module):
    def __init__(self, cin, f, stride):
        super().__init__()
        self.branch = nn.Sequential(*conv_bn(cin, f, stride=stride), *conv_bn(f, f, relu=False))
        self.shortcut = (nn.Sequential(*conv_bn(cin, f, k=1, stride=stride, relu=False))
                         if stride != 1 or cin != f else nn.Identity())

    def forward(self, x):
        return torch.relu(self.branch(x) + self.shortcut(x))

if name == "cifar_cnn":
    model = nn.Sequential(*conv_bn(3, 32), *conv_bn(32, 32), nn.MaxPool2d(2), *conv_bn(32, 64), *conv_bn(64, 64),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(inplace=True),
                          nn.Dropout(0.5), nn.Linear(256, 10))
elif name == "resnet20":
    blocks, cin = [], 16
    for stage, f in enumerate([16, 32, 64]):
        for block in range(3):
            blocks.append(Basic(cin, f, 2 if stage > 0 and block == 0 else 1))
            cin = f
    model = nn.Sequential(*conv_bn(3, 16), *blocks, nn.AvgPool2d(8), nn.Flatten(), nn.Linear(64, 10))
else:  # vgg_small
    layers, cin = [], 3
    for f in [64, 128, 256]:
        layers += conv_bn(cin, f) + conv_bn(f, f) + [nn.MaxPool2d(2)]
        cin = f
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(256 * 4 * 4, 512), nn.ReLU(inplace=True),
                          nn.Dropout(0.5), nn.Linear(512, 10))
model.train()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()

''' + TORCH_STEP


def ferroflow(binary, model, batch, steps, warmup, kernels=None):
    """`ferroflow bench train`; `kernels` sets FERROFLOW_KERNELS for the child."""
    before = os.environ.get("FERROFLOW_KERNELS")
    if kernels:
        os.environ["FERROFLOW_KERNELS"] = kernels
    try:
        r = run_ferroflow(binary, ["--model", model, "--batch", str(batch), "--steps", str(steps),
                                   "--warmup", str(warmup)])
    finally:
        if before is None:
            os.environ.pop("FERROFLOW_KERNELS", None)
        else:
            os.environ["FERROFLOW_KERNELS"] = before
    if kernels:
        r["version"] = f"ferroflow ({kernels})"
    return r


def python_peer(job, model, batch, steps, warmup):
    return run_python(job, [batch, steps, warmup, model])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cifar_cnn,resnet20,vgg_small")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ferroflow", default=os.path.join(ROOT, "target/release/ferroflow"))
    ap.add_argument("--with-gemm", action="store_true",
                    help="also run ferroflow with FERROFLOW_KERNELS=gemm (no direct convolutions)")
    ap.add_argument("--threads", type=int, default=0,
                    help="compute threads for every side (0: each side's default, every core)")
    args = ap.parse_args()
    if args.threads:
        set_threads(args.threads)
    if not os.path.exists(args.ferroflow):
        sys.exit(f"{args.ferroflow} is missing: run `cargo build --release` first")
    models = args.models.split(",")
    unknown = [m for m in models if m not in PARAMS]
    if unknown:
        sys.exit(f"--models: unknown {unknown}; expected any of {', '.join(PARAMS)}")
    sides = {
        "ferroflow": lambda m: ferroflow(args.ferroflow, m, args.batch, args.steps, args.warmup),
        "tensorflow": lambda m: python_peer(TF_JOB, m, args.batch, args.steps, args.warmup),
        "pytorch": lambda m: python_peer(TORCH_JOB, m, args.batch, args.steps, args.warmup),
    }
    if args.with_gemm:
        sides["ferroflow-gemm"] = lambda m: ferroflow(args.ferroflow, m, args.batch, args.steps, args.warmup, "gemm")
    order = list(sides)
    load_before = os.getloadavg()[0]
    runs = {(m, s): [] for m in models for s in sides}
    for rep in range(args.repeats):
        rotated = order[rep % len(order):] + order[:rep % len(order)]
        for m in models:
            for s in rotated:
                r = sides[s](m)
                if r["params"] != PARAMS[m]:
                    sys.exit(f"{s} built {r['params']} trainable parameters for {m}, expected {PARAMS[m]}")
                runs[(m, s)].append(r)
                print(f"run {rep + 1} {m:<10} {s:<10} {r['images_per_sec']:8.1f} images/s  peak RSS "
                      f"{r['rss']:6.0f} MiB", file=sys.stderr)
    print(f"training step, batch {args.batch}, 32x32x3 random data, momentum SGD 0.9, {args.steps} timed steps after "
          f"{args.warmup} warm-up; {os.cpu_count()} CPUs, {args.threads or 'all'} threads per side; best of {args.repeats}; load average {load_before:.2f} "
          f"before, {os.getloadavg()[0]:.2f} after")
    print(f"{'model':<11}{'side':<20}{'images/s':>10}{'range':>15}{'peak RSS MiB':>14}")
    for m in models:
        best = {s: max(runs[(m, s)], key=lambda r: r["images_per_sec"]) for s in sides}
        for s, r in best.items():
            rates = [x["images_per_sec"] for x in runs[(m, s)]]
            print(f"{m:<11}{r['version']:<20}{r['images_per_sec']:>10.1f}{f'{min(rates):.0f}-{max(rates):.0f}':>15}"
                  f"{r['rss']:>14.0f}")
        ff = best["ferroflow"]
        print(f"{m:<11}ferroflow / TF {ff['images_per_sec'] / best['tensorflow']['images_per_sec']:.2f}x, "
              f"/ PyTorch {ff['images_per_sec'] / best['pytorch']['images_per_sec']:.2f}x images/s; peak RSS "
              f"{ff['rss'] / best['tensorflow']['rss']:.2f}x TF's")
        if "ferroflow-gemm" in best:
            print(f"{m:<11}direct convolutions: {ff['images_per_sec'] / best['ferroflow-gemm']['images_per_sec']:.2f}x "
                  f"ferroflow's im2col + gemm path")
        # On a VM whose neighbours come and go, one side's best can fall in a quiet
        # minute and another's not: the ratio within each round (the sides ran
        # back to back) is the steadier measure, so print those and their median too.
        for peer, name in (("tensorflow", "TF"), ("pytorch", "PyTorch")):
            ratios = [a["images_per_sec"] / b["images_per_sec"] for a, b in zip(runs[(m, "ferroflow")], runs[(m, peer)])]
            print(f"{m:<11}per round ferroflow / {name}: {', '.join(f'{r:.2f}' for r in ratios)} "
                  f"(median {statistics.median(ratios):.2f}x)")
        spread = max(max(x["images_per_sec"] for x in runs[(m, s)]) / min(x["images_per_sec"] for x in runs[(m, s)])
                     for s in sides)
        if spread > 1.2:
            print(f"{m:<11}noisy machine: one side's runs differ by {100 * (spread - 1):.0f}%; "
                  f"the per-round medians are the steadier ratios")


if __name__ == "__main__":
    main()
