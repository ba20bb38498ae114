"""Data-parallel training on one machine: 2 ranks x 1 thread against
1 process x 2 threads, for ferroflow and for PyTorch, in one run; then the
per-step all-reduce cost against the model size, ferroflow's against
PyTorch's (gloo). Issue 14's benchmark.

The step is bench/train_step.py's (cifar_cnn, random 32x32x3 data, global
batch 64, training mode, sparse softmax cross-entropy, momentum SGD 0.9):

- ferroflow, 1 process x 2 threads: `RAYON_NUM_THREADS=2 ferroflow bench train`.
- ferroflow, 2 ranks x 1 thread: `mpirun -np 2 ferroflow bench train` (each
  rank trains 32 of the 64 images and all-reduces the mean gradient in
  25 MiB buckets, then the moving statistics and the loss; the ranks share
  the cores, 1 thread each). Needs a build with `--features mpi`.
- PyTorch, 1 process x 2 threads: `torch.set_num_threads(2)`.
- PyTorch, 2 ranks x 1 thread: DistributedDataParallel over gloo (its
  default 25 MiB buckets, all-reduce overlapped with the backward pass),
  each rank 32 images.

Then `mpirun -np 2 ferroflow bench allreduce` (the trainer's exchange per
step, copies and synchronisation included) against gloo's `all_reduce` of
the same bytes in the same 25 MiB buckets (the transfer alone), for the zoo
models and made-up 25.6 M (ResNet-50) and 138 M (VGG-16) parameter models.

Every side runs in its own processes, `--repeats` times interleaved, and the
best of each is compared; the peer is re-measured in every run.

Usage (from the repository root, after bench/setup.sh, OpenMPI installed,
and `cargo build --release --features mpi`):
    bench/.venv/bin/python bench/data_parallel.py [--steps 40] [--repeats 3]
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import COMMON, PARAMS, ROOT, TORCH_MODEL  # noqa: E402

BATCH = 64

TORCH_DDP_JOB = COMMON + TORCH_MODEL + r'''
import torch.distributed as dist
threads, rank, world = int(sys.argv[4]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
torch.set_num_threads(threads)
if world > 1:
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = nn.parallel.DistributedDataParallel(model)  # bucket_cap_mb=25 by default
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
per = batch // world

def train_step(x, y):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()

batches = [(torch.from_numpy(x[rank * per:(rank + 1) * per]).contiguous(),
            torch.from_numpy(y[rank * per:(rank + 1) * per]).long()) for x, y in data]
r = timed(train_step, batches)
# timed() counts `batch` (the global batch) per step: the ranks' images together.
r["params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
if rank == 0:
    print(json.dumps(r))
if world > 1:
    dist.destroy_process_group()
'''

TORCH_ALLREDUCE_JOB = r'''
import json, os, sys, time
import torch, torch.distributed as dist
torch.set_num_threads(1)
sizes, steps, warmup = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo", rank=rank, world_size=world)
bucket = 25 * 1024 * 1024 // 4
out = {}
for name, n in sizes:
    buckets = [torch.ones(min(bucket, n - at)) for at in range(0, n, bucket)]
    times = []
    for i in range(warmup + steps):
        dist.barrier()
        t = time.perf_counter()
        for b in buckets:
            dist.all_reduce(b)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    out[name] = 1e3 * sorted(times)[len(times) // 2]
if rank == 0:
    print(json.dumps(out))
dist.destroy_process_group()
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_ranks(job, world, args):
    """Runs `job` as `world` gloo ranks on this machine; returns rank 0's JSON line."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world),
               OMP_NUM_THREADS="1" if world > 1 else "2")
    procs = [subprocess.Popen([sys.executable, "-c", job, *args], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(env, RANK=str(r)))
             for r in range(world)]
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            sys.exit(f"PyTorch rank failed ({p.returncode}):\n{err[-3000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def mpirun(world):
    env_ok = ["-x", "OMPI_MCA_btl_vader_single_copy_mechanism=none"]
    return ["mpirun", "--oversubscribe", *env_ok, "-np", str(world)]


def ferroflow_env():
    # As root (CI, containers) OpenMPI wants these; harmless otherwise.
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OMPI_MCA_btl_vader_single_copy_mechanism="none")


def run(cmd, env):
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd[:6])} … failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
    return p.stdout


def ferroflow_train(binary, world, steps, warmup):
    cmd = [binary, "bench", "train", "--model", "cifar_cnn", "--batch", str(BATCH), "--steps", str(steps),
           "--warmup", str(warmup)]
    env = ferroflow_env()
    if world > 1:
        cmd = mpirun(world) + cmd
        env.pop("RAYON_NUM_THREADS", None)  # the ranks split the cores themselves
    else:
        env["RAYON_NUM_THREADS"] = "2"
    out = run(cmd, env)
    if world > 1 and f"{world} ranks (MPI" not in out:
        sys.exit(f"ferroflow did not run as {world} MPI ranks (a build without --features mpi?):\n{out}")
    params = int(re.search(r"([0-9]+) parameters", out).group(1))
    rate = float(re.search(r"^images/s: ([0-9.]+)$", out, re.M).group(1))
    median = float(re.search(r"median ([0-9.]+)", out).group(1))
    return {"images_per_sec": rate, "ms_median": median, "params": params}


def ferroflow_allreduce(binary, world, steps, warmup):
    out = run(mpirun(world) + [binary, "bench", "allreduce", "--parameters", "25.6M,138M", "--steps", str(steps),
                                "--warmup", str(warmup)], ferroflow_env())
    rows = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 8 and f[1].isdigit():
            rows[f[0]] = {"params": int(f[1]), "mib": float(f[2]), "ms": float(f[4])}
    if not rows:
        sys.exit(f"unexpected bench allreduce output:\n{out}")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ferroflow", default=os.path.join(ROOT, "target/release/ferroflow"))
    args = ap.parse_args()
    if not os.path.exists(args.ferroflow):
        sys.exit(f"{args.ferroflow} is missing: run `cargo build --release --features mpi` first")
    step_args = [str(BATCH), str(args.steps), str(args.warmup)]
    sides = {
        ("ferroflow", 1): lambda: ferroflow_train(args.ferroflow, 1, args.steps, args.warmup),
        ("ferroflow", 2): lambda: ferroflow_train(args.ferroflow, 2, args.steps, args.warmup),
        ("PyTorch", 1): lambda: torch_ranks(TORCH_DDP_JOB, 1, step_args + ["2"]),
        ("PyTorch", 2): lambda: torch_ranks(TORCH_DDP_JOB, 2, step_args + ["1"]),
    }
    load_before = os.getloadavg()[0]
    runs = {k: [] for k in sides}
    for rep in range(args.repeats):
        for key, side in sides.items():
            r = side()
            if r["params"] != PARAMS:
                sys.exit(f"{key} built {r['params']} parameters, not cifar_cnn's {PARAMS}")
            runs[key].append(r)
            print(f"run {rep + 1} {key[0]:<9} {key[1]} rank(s): {r['images_per_sec']:7.1f} images/s", file=sys.stderr)
    best = {k: max(rs, key=lambda r: r["images_per_sec"]) for k, rs in runs.items()}
    print(f"data-parallel step: cifar_cnn, global batch {BATCH}, momentum SGD 0.9, {args.steps} timed steps after "
          f"{args.warmup}; {os.cpu_count()} CPUs; best of {args.repeats}; load {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"{'':<12}{'1 proc x 2 thr':>16}{'2 ranks x 1 thr':>17}{'2 ranks / 1 proc':>18}")
    for name in ["ferroflow", "PyTorch"]:
        one, two = best[(name, 1)]["images_per_sec"], best[(name, 2)]["images_per_sec"]
        print(f"{name:<12}{one:>12.1f} i/s{two:>13.1f} i/s{two / one:>17.2f}x")
    for w, label in [(1, "1 process x 2 threads"), (2, "2 ranks x 1 thread")]:
        print(f"ferroflow / PyTorch, {label}: "
              f"{best[('ferroflow', w)]['images_per_sec'] / best[('PyTorch', w)]['images_per_sec']:.2f}x images/s")

    # All-reduce per step against the model size.
    ff = ferroflow_allreduce(args.ferroflow, 2, 20, 3)
    sizes = [[name, row["params"]] for name, row in ff.items()]
    gloo = torch_ranks(TORCH_ALLREDUCE_JOB, 2, [json.dumps(sizes), "20", "3"])
    print("all-reduce per step, 2 ranks on this machine (median of 20 steps): ferroflow's whole exchange "
          "(sync, copies, buckets, moving statistics) vs gloo's all_reduce of the same buckets")
    print(f"{'model':<12}{'parameters':>12}{'MiB':>9}{'ferroflow ms':>14}{'gloo ms':>10}{'ratio':>8}{'ff MB/s':>10}")
    for name, row in ff.items():
        g = gloo[name]
        print(f"{name:<12}{row['params']:>12}{row['mib']:>9.2f}{row['ms']:>14.3f}{g:>10.3f}{row['ms'] / g:>8.2f}"
              f"{row['mib'] * 1.048576 / (row['ms'] / 1e3):>10.0f}")


if __name__ == "__main__":
    main()
