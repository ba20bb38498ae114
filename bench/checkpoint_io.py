"""Checkpoint save and restore time: ferroflow vs TensorFlow's Saver on the
same variables, in one run on the same machine and disk.

For each model (cifar_cnn, resnet20): `ferroflow bench checkpoint` saves and
restores a training checkpoint (every variable, its Momentum slot and
global_step) REPEATS times into bench/out/; then TensorFlow 2.21 builds a
TF1 graph with variables of the same names, shapes (conv kernels in TF's
HWIO) and values (read from ferroflow's file with safetensors), and times
`tf.compat.v1.train.Saver.save` (max_to_keep=2, writing the `checkpoint`
state file) and `Saver.restore` into the same directory tree. Medians.

Note: ferroflow's save fsyncs the file and the directory before listing it
(crash safety); TF's Saver does not fsync. Both sides' times include that
difference.

Each model is also run with `--format tf-checkpoint`: ferroflow writing and
reading TF bundles (what `ferroflow export` writes) against the same Saver.

Usage (from the repository root, after bench/setup.sh and cargo build --release):
    bench/.venv/bin/python bench/checkpoint_io.py [--repeats 10]
"""

import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")


def ferroflow(model, repeats):
    d = os.path.join(OUT, f"checkpoint-ferroflow-{model}")
    out = subprocess.run(
        [os.path.join(ROOT, "target/release/ferroflow"), "bench", "checkpoint", "--model", model,
         "--repeats", str(repeats), "--dir", d],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    m = re.search(r"save_ms: ([0-9.]+) restore_ms: ([0-9.]+)", out)
    latest = sorted(glob.glob(os.path.join(d, "model.ckpt-*.safetensors")),
                    key=lambda p: int(re.search(r"ckpt-(\d+)", p).group(1)))[-1]
    return float(m.group(1)), float(m.group(2)), latest, out.splitlines()[0]


def ferroflow_tf_bundle(model, repeats):
    """`bench checkpoint --format tf-checkpoint`: ferroflow writing and reading TF bundles."""
    d = os.path.join(OUT, f"checkpoint-ferroflow-tf-{model}")
    out = subprocess.run(
        [os.path.join(ROOT, "target/release/ferroflow"), "bench", "checkpoint", "--model", model,
         "--repeats", str(repeats), "--dir", d, "--format", "tf-checkpoint"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    m = re.search(r"save_ms: ([0-9.]+) restore_ms: ([0-9.]+)", out)
    return float(m.group(1)), float(m.group(2))


def tensorflow(safetensors_path, model, repeats):
    import numpy as np
    import tensorflow as tf
    from safetensors.numpy import load_file

    tf1 = tf.compat.v1
    values = load_file(safetensors_path)
    d = os.path.join(OUT, f"checkpoint-tf-{model}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    g = tf.Graph()
    with g.as_default():
        variables = []
        for name, v in sorted(values.items()):
            if v.ndim == 4:  # ferroflow's OIHW -> TF's HWIO
                v = np.transpose(v, (2, 3, 1, 0))
            variables.append(tf1.Variable(v, name=name, trainable=not name.endswith("Momentum")))
        saver = tf1.train.Saver(variables, max_to_keep=2)
        save, restore = [], []
        with tf1.Session(graph=g) as sess:
            sess.run(tf1.global_variables_initializer())
            for step in range(1, repeats + 1):
                t = time.perf_counter()
                path = saver.save(sess, os.path.join(d, "model.ckpt"), global_step=step)
                save.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                saver.restore(sess, path)
                restore.append((time.perf_counter() - t) * 1e3)
    size = sum(os.path.getsize(p) for p in glob.glob(path + ".data-*")) + os.path.getsize(path + ".index")
    return statistics.median(save), statistics.median(restore), size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--models", default="cifar_cnn,resnet20")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for model in args.models.split(","):
        f_save, f_restore, latest, desc = ferroflow(model, args.repeats)
        print(desc)
        b_save, b_restore = ferroflow_tf_bundle(model, args.repeats)
        t_save, t_restore, size = tensorflow(latest, model, args.repeats)
        print(f"{model}: TF checkpoint {size / 1e6:.1f} MB (index + data)")
        rows.append((model, "safetensors", f_save, t_save, f_restore, t_restore))
        rows.append((model, "TF bundle", b_save, t_save, b_restore, t_restore))
    print()
    print(f"{'model':<10} {'ferroflow format':<17} {'ferroflow save':>15} {'TF Saver save':>14} {'ratio':>6} "
          f"{'ferroflow restore':>18} {'TF restore':>11} {'ratio':>6}")
    for model, fmt, fs, ts, fr, tr in rows:
        print(f"{model:<10} {fmt:<17} {fs:>12.2f} ms {ts:>11.2f} ms {ts / fs:>5.2f}x "
              f"{fr:>15.2f} ms {tr:>8.2f} ms {tr / fr:>5.2f}x")
    print("(ratio = TF time / ferroflow time; above 1 means ferroflow is faster)")


if __name__ == "__main__":
    main()
