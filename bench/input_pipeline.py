"""Input pipeline throughput: `ferroflow bench input` vs tf.data doing the
identical work, in one run on the same file:

    TFRecord of JPEG photos -> decode -> resize 224x224 bilinear -> random
    left-right flip -> subtract the per-channel mean -> batch 64

tf.data uses num_parallel_calls=AUTOTUNE and prefetch(AUTOTUNE). Both time
`--batches` batches after `--warmup` batches, repeating the file as needed.

Usage (from the repository root, after bench/setup.sh and cargo build --release):
    bench/.venv/bin/python bench/input_pipeline.py [--batches 60] [--warmup 5]
"""

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN = [123.68, 116.78, 103.94]


def tf_images_per_sec(path, batch, batches, warmup, size):
    import tensorflow as tf

    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        image = tf.io.decode_jpeg(ex["image/encoded"], channels=3)
        image = tf.image.resize(image, [size, size], method="bilinear")
        image = tf.image.random_flip_left_right(image)
        image = image - tf.constant(MEAN)
        return image, ex["image/class/label"]

    ds = (tf.data.TFRecordDataset(path).repeat()
          .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch).prefetch(tf.data.AUTOTUNE))
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        images, _ = next(it)
    _ = float(images[0, 0, 0, 0])
    return batches * batch / (time.perf_counter() - t)


def ferroflow_images_per_sec(binary, path, batch, batches, warmup, fast):
    cmd = [binary, "bench", "input", path, "--batch", str(batch), "--batches", str(batches), "--warmup", str(warmup)]
    if fast:
        cmd.append("--fast-jpeg")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(re.search(r"images/s: ([0-9.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ferroflow", default=os.path.join(ROOT, "target/release/ferroflow"))
    args = ap.parse_args()
    path = os.path.join(ROOT, "bench/out/photos.tfrecord")
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(ROOT, "bench/make_photo_records.py")], check=True)
    ff_exact = ferroflow_images_per_sec(args.ferroflow, path, args.batch, args.batches, args.warmup, False)
    ff_fast = ferroflow_images_per_sec(args.ferroflow, path, args.batch, args.batches, args.warmup, True)
    tf_rate = tf_images_per_sec(path, args.batch, args.batches, args.warmup, 224)
    import tensorflow as tf
    print(f"{'pipeline':<40}{'images/s':>10}")
    print(f"{'tf.data (AUTOTUNE)':<40}{tf_rate:>10.1f}")
    print(f"{'ferroflow bench input (exact decode)':<40}{ff_exact:>10.1f}")
    print(f"{'ferroflow bench input --fast-jpeg':<40}{ff_fast:>10.1f}")
    print(f"ratio exact / tf.data: {ff_exact / tf_rate:.2f}x")
    print(f"ratio fast  / tf.data: {ff_fast / tf_rate:.2f}x")
    print(f"tensorflow {tf.__version__}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
