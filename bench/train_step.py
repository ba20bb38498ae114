"""Training step: `ferroflow bench train` vs TensorFlow and PyTorch doing the
same step on the same model, in one run on the same machine.

The step (DESIGN.md, benchmark 1): cifar_cnn on random 32x32x3 data, batch
64, training mode (batch statistics, dropout), sparse softmax cross-entropy
(mean over the batch), backward, SGD with momentum 0.9 (lr 0.01):

    conv3x3(32, no bias) -> BN -> ReLU -> conv3x3(32, no bias) -> BN -> ReLU -> maxpool2
    -> conv3x3(64, no bias) -> BN -> ReLU -> conv3x3(64, no bias) -> BN -> ReLU -> maxpool2
    -> flatten -> dense 256 -> ReLU -> dropout 0.5 -> dense 10

(SAME padding, BN momentum 0.99 / epsilon 1e-3 as TF's defaults, 1,117,162
trainable parameters on every side; the script checks the count.)

- ferroflow: `ferroflow bench train --model cifar_cnn --batch 64` (NCHW).
- TensorFlow 2.21: Keras layers, one `tf.function` with a GradientTape,
  `model(x, training=True)`, NHWC, keras SGD(momentum=0.9).
- PyTorch (CPU, torch.set_num_threads(os.cpu_count())): nn.Sequential,
  NCHW, model.train(), torch.optim.SGD(momentum=0.9), ReLU(inplace=True) as
  torchvision writes it.

Each side cycles 4 random batches made up front, runs `--warmup` untimed
steps, then times `--steps` steps, reading the loss back every step (so every
step has finished when its time is taken). Each side runs in its own process,
so its peak RSS (ru_maxrss from wait4) is its own. With `--repeats N` the
three sides run N times, interleaved, and the best of each is compared.

Usage (from the repository root, after bench/setup.sh and cargo build --release):
    bench/.venv/bin/python bench/train_step.py [--batch 64] [--steps 60] [--warmup 10] [--repeats 1]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMS = 1_117_162  # trainable parameters of cifar_cnn with 10 classes

_COMMON = r'''
import json, os, sys, time
batch, steps, warmup = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
import numpy as np
rng = np.random.default_rng(0)
data = [(rng.standard_normal((batch, 3, __SIZE__, __SIZE__), dtype=np.float32), rng.integers(0, __CLASSES__, batch))
        for _ in range(4)]

def timed(step, batches):
    times, loss = [], None
    for i in range(warmup + steps):
        x, y = batches[i % len(batches)]
        t = time.perf_counter()
        loss = step(x, y)  # a Python float: the step has finished
        if i >= warmup:
            times.append(time.perf_counter() - t)
    total = sum(times)
    return {"images_per_sec": batch * steps / total, "ms_median": 1e3 * sorted(times)[len(times) // 2],
            "loss": loss}
'''


def common_job(size=32, classes=10):
    """The peers' shared prologue: argv (batch, steps, warmup), 4 random NCHW batches of
    size x size x 3 with labels below `classes`, and `timed(step, batches)`."""
    return _COMMON.replace("__SIZE__", str(size)).replace("__CLASSES__", str(classes))


COMMON = common_job()

# A Keras `model`'s training step in one tf.function, timed; the result line (shared by the
# other bench scripts, whose jobs define `model`).
TF_STEP = r'''
opt = tf.keras.optimizers.SGD(0.01, momentum=0.9)

@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return loss

batches = [(tf.constant(x.transpose(0, 2, 3, 1)), tf.constant(y, dtype=tf.int32)) for x, y in data]  # NHWC
r = timed(lambda x, y: float(train_step(x, y)), batches)
r["params"] = int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))
r["version"] = "TensorFlow " + tf.__version__
r["threads"] = int(os.environ.get("TF_NUM_INTRAOP_THREADS", 0)) or os.cpu_count()
print(json.dumps(r))
'''

TF_JOB = COMMON + r'''
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
tf.keras.utils.set_random_seed(0)
L = tf.keras.layers

def block(f):
    return [L.Conv2D(f, 3, padding="same", use_bias=False), L.BatchNormalization(momentum=0.99, epsilon=1e-3),
            L.ReLU()]

model = tf.keras.Sequential([tf.keras.Input((32, 32, 3)), *block(32), *block(32), L.MaxPooling2D(2),
                             *block(64), *block(64), L.MaxPooling2D(2), L.Flatten(),
                             L.Dense(256, activation="relu"), L.Dropout(0.5), L.Dense(10)])
''' + TF_STEP

# The PyTorch model and optimizer, shared with bench/data_parallel.py.
TORCH_MODEL = r'''
import torch
from torch import nn
torch.manual_seed(0)

def block(cin, f):
    # PyTorch's BN momentum is 1 - TF's decay.
    return [nn.Conv2d(cin, f, 3, padding=1, bias=False), nn.BatchNorm2d(f, eps=1e-3, momentum=0.01),
            nn.ReLU(inplace=True)]

model = nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(inplace=True),
                      nn.Dropout(0.5), nn.Linear(256, 10))
model.train()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
'''

# A PyTorch `model`'s (with `opt`, `loss_fn`) training step, timed; the result line.
TORCH_STEP = r'''
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 0)) or os.cpu_count())

def train_step(x, y):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()

batches = [(torch.from_numpy(x), torch.from_numpy(y).long()) for x, y in data]  # NCHW
r = timed(train_step, batches)
r["params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
r["version"] = "PyTorch " + torch.__version__.split("+")[0]
r["threads"] = torch.get_num_threads()
print(json.dumps(r))
'''

TORCH_JOB = COMMON + TORCH_MODEL + TORCH_STEP


def run_child(cmd):
    """Runs cmd; returns (stdout, peak RSS of that process in MiB)."""
    with tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=errf, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        errf.seek(0)
        err = errf.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{err[-3000:]}")
    return out, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def set_threads(n):
    """Every side of the benchmarks this process starts from now on uses `n`
    compute threads: ferroflow's rayon pool (RAYON_NUM_THREADS), TF's intra-
    and inter-op pools (TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS, read
    when TF starts), PyTorch's `torch.set_num_threads` (BENCH_THREADS, read
    by TORCH_STEP) and OpenMP."""
    for var in ("RAYON_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "BENCH_THREADS",
                "OMP_NUM_THREADS"):
        os.environ[var] = str(n)


def run_ferroflow(binary, args):
    """`ferroflow bench train ARGS`: images/s, median ms, parameters, threads and peak RSS."""
    out, rss = run_child([binary, "bench", "train", *args])
    m = re.fullmatch(r"images/s: ([0-9.]+)", out.strip().splitlines()[-1])
    if not m:
        sys.exit(f"unexpected ferroflow output:\n{out}")
    median = float(re.search(r"median ([0-9.]+)", out).group(1))
    params = int(re.search(r"([0-9]+) parameters", out).group(1))
    return {"images_per_sec": float(m.group(1)), "ms_median": median, "params": params, "rss": rss,
            "version": "ferroflow", "threads": int(re.search(r"([0-9]+) threads", out).group(1))}


def run_python(job, args):
    """A peer's job (Python source) with ARGS: its JSON result line plus its peak RSS."""
    out, rss = run_child([sys.executable, "-c", job, *map(str, args)])
    r = json.loads(out.strip().splitlines()[-1])
    r["rss"] = rss
    return r


def interleaved_best(sides, repeats, expected_params):
    """Runs every side `repeats` times, interleaved, checking each side's trainable
    parameter count (`expected_params(name)`); returns (all runs, the best run) by side."""
    runs = {name: [] for name in sides}
    for rep in range(repeats):
        for name, run in sides.items():
            r = run()
            if r["params"] != expected_params(name):
                sys.exit(f"{name} built {r['params']} trainable parameters, expected {expected_params(name)}")
            runs[name].append(r)
            print(f"run {rep + 1} {name:<10} {r['images_per_sec']:8.2f} images/s  median {r['ms_median']:7.1f} ms"
                  f"  peak RSS {r['rss']:6.0f} MiB", file=sys.stderr)
    return runs, {name: max(rs, key=lambda r: r["images_per_sec"]) for name, rs in runs.items()}


def ferroflow(binary, batch, steps, warmup):
    return run_ferroflow(binary, ["--model", "cifar_cnn", "--batch", str(batch), "--steps", str(steps),
                                  "--warmup", str(warmup)])


def python_peer(job, batch, steps, warmup):
    return run_python(job, [batch, steps, warmup])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1, help="run every side this many times, interleaved; keep the best")
    ap.add_argument("--ferroflow", default=os.path.join(ROOT, "target/release/ferroflow"))
    ap.add_argument("--sides", default="ferroflow,tensorflow,pytorch",
                    help="comma-separated subset of ferroflow,tensorflow,pytorch (e.g. where TF is not installed)")
    args = ap.parse_args()
    if not os.path.exists(args.ferroflow):
        sys.exit(f"{args.ferroflow} is missing: run `cargo build --release` first")
    sides = {
        "ferroflow": lambda: ferroflow(args.ferroflow, args.batch, args.steps, args.warmup),
        "tensorflow": lambda: python_peer(TF_JOB, args.batch, args.steps, args.warmup),
        "pytorch": lambda: python_peer(TORCH_JOB, args.batch, args.steps, args.warmup),
    }
    chosen = args.sides.split(",")
    unknown = [s for s in chosen if s not in sides]
    if unknown or "ferroflow" not in chosen:
        sys.exit(f"--sides: expected ferroflow plus any of tensorflow,pytorch, got {args.sides}")
    sides = {name: run for name, run in sides.items() if name in chosen}
    load_before = os.getloadavg()[0]
    runs, best = interleaved_best(sides, args.repeats, lambda _: PARAMS)
    print(f"training step: cifar_cnn, batch {args.batch}, 32x32x3 random data, momentum SGD 0.9, "
          f"{args.steps} timed steps after {args.warmup} warm-up; {os.cpu_count()} CPUs; "
          f"best of {args.repeats}; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"{'':<20}{'images/s':>10}{'range':>17}{'median ms/step':>16}{'peak RSS MiB':>14}{'threads':>9}")
    for name, r in best.items():
        rates = [x["images_per_sec"] for x in runs[name]]
        span = f"{min(rates):.0f}-{max(rates):.0f}"
        print(f"{r['version']:<20}{r['images_per_sec']:>10.1f}{span:>17}{r['ms_median']:>16.1f}"
              f"{r['rss']:>14.0f}{r['threads']:>9}")
    ff = best["ferroflow"]
    for name, label in [("tensorflow", "TF"), ("pytorch", "PyTorch")]:
        if name not in best:
            continue
        p = best[name]
        print(f"ferroflow / {label}: {ff['images_per_sec'] / p['images_per_sec']:.2f}x images/s, "
              f"{ff['rss'] / p['rss']:.2f}x peak RSS")


if __name__ == "__main__":
    main()
