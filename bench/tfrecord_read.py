"""TFRecord read throughput: ferroflow vs tf.data.TFRecordDataset vs cat.

Usage (from the repository root, after bench/setup.sh and cargo build --release):
    bench/.venv/bin/python bench/tfrecord_read.py [--size-mb 1024] [--record-kb 100] [--repeats 3]

Writes bench/out/read_bench.tfrecord (with TensorFlow's own writer) once, warms
the page cache, then times, in one run on the same file:
  - `cat FILE > /dev/null` (the I/O ceiling),
  - `ferroflow records FILE --count` (reads every record, verifies both CRCs),
  - tf.data.TFRecordDataset(FILE), which also verifies both CRCs, iterated two
    ways: a Python for-loop (eager) and Dataset.reduce (in-graph, no Python per
    record). The faster TF figure is the one ratios are taken against.
Each timing is the best of --repeats runs. ferroflow's time is the whole
process (start-up included); TF's excludes the import and dataset creation.
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--record-kb", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ferroflow", default=os.path.join(ROOT, "target/release/ferroflow"))
    args = ap.parse_args()

    import tensorflow as tf

    out_dir = os.path.join(ROOT, "bench/out")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "read_bench.tfrecord")
    n = args.size_mb * 1024 // args.record_kb
    if not os.path.exists(path) or os.path.getsize(path) < args.size_mb * 1024 * 1024 * 0.95:
        print(f"writing {n} records of {args.record_kb} KB with tf.io.TFRecordWriter ...", flush=True)
        payload = os.urandom(args.record_kb * 1024)
        with tf.io.TFRecordWriter(path) as w:
            for i in range(n):
                ex = tf.train.Example(features=tf.train.Features(feature={
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload[i % 7:] + payload[:i % 7]])),
                    "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 10])),
                }))
                w.write(ex.SerializeToString())
    size = os.path.getsize(path)
    mb = size / 1e6
    subprocess.run(f"cat {path} > /dev/null", shell=True, check=True)  # warm the page cache

    def run_cat():
        subprocess.run(f"cat {path} > /dev/null", shell=True, check=True)

    count_out = []

    def run_ferroflow():
        r = subprocess.run([args.ferroflow, "records", path, "--count"], check=True, capture_output=True, text=True)
        count_out.append(r.stdout)

    ds = tf.data.TFRecordDataset(path)

    def run_tf_loop():
        k = 0
        for _ in ds:
            k += 1
        assert k == n, k

    def run_tf_reduce():
        k = int(ds.reduce(tf.constant(0, tf.int64), lambda s, _: s + 1))
        assert k == n, k

    t_cat = best_of(args.repeats, run_cat)
    t_ff = best_of(args.repeats, run_ferroflow)
    assert f"records: {n}" in count_out[-1], count_out[-1]
    t_loop = best_of(args.repeats, run_tf_loop)
    t_reduce = best_of(args.repeats, run_tf_reduce)
    t_tf = min(t_loop, t_reduce)

    print(f"file: {size} bytes, {n} records of {args.record_kb} KB (page cache warm)")
    print(f"{'reader':<34}{'seconds':>10}{'MB/s':>10}")
    for name, t in [("cat > /dev/null", t_cat), ("ferroflow records --count", t_ff),
                    ("tf.data TFRecordDataset (for loop)", t_loop), ("tf.data TFRecordDataset (reduce)", t_reduce)]:
        print(f"{name:<34}{t:>10.3f}{mb / t:>10.0f}")
    print(f"ratio ferroflow / best TF: {t_tf / t_ff:.2f}x")
    print(f"ratio ferroflow / cat:     {t_cat / t_ff:.2f}x")
    print(f"tensorflow {tf.__version__}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
