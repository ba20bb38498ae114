"""Streaming an image folder: `ferroflow bench input --data FOLDER` (files
read and decoded per batch, as `train` does with data.in_memory = false)
against tf.data's `list_files` + `read_file` + `decode_image` pipeline on the
same folder, in one run, alternating the two, on folders of several kinds
that this script generates from the bundled images:

- digits-png: the bundled MNIST digits (4,000 28x28 grey PNGs), to 32x32;
- photos-jpeg: 1,200 JPEGs at quality 90, 320-640 px wide, to 224x224;
- photos-mixed: 1,200 files, JPEGs at quality 75 and 95 up to 1,024 px wide,
  grey JPEGs and PNGs, to 224x224.

Both: decode to RGB -> resize (bilinear, as tf.image.resize) -> random
left-right flip -> subtract the per-channel mean -> batch 64; tf.data with
num_parallel_calls=AUTOTUNE and prefetch(AUTOTUNE), both on every core.

Usage (from the repository root, after cargo build --release and with a
Python that has tensorflow, e.g. bench/.venv or .venv):
    .venv/bin/python bench/folder_input.py [--rounds 3] [--batches 40]
"""

import argparse
import os
import re
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench/out/folders")
MEAN = [123.68, 116.78, 103.94]


def make_folders():
    import numpy as np
    import tensorflow as tf

    made = {}
    made["digits-png"] = (os.path.join(ROOT, "testdata/data/mnist5k/train"), 32)
    src = os.path.join(ROOT, "testdata/data/photos-mini")
    photos = []
    for c in sorted(os.listdir(src)):
        for name in sorted(os.listdir(os.path.join(src, c))):
            photos.append((c, os.path.join(src, c, name)))
    rng = np.random.default_rng(0)
    for kind in ("photos-jpeg", "photos-mixed"):
        root = os.path.join(OUT, kind)
        made[kind] = (root, 224)
        if os.path.exists(os.path.join(root, ".done")):
            continue
        for i in range(1200):
            c, path = photos[i % len(photos)]
            image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            if kind == "photos-jpeg":
                width, fmt, quality, grey = int(rng.integers(320, 641)), "jpeg", 90, False
            else:
                width = int(rng.integers(256, 1025))
                fmt = ["jpeg", "jpeg", "png"][i % 3]
                quality, grey = [75, 95][i % 2], i % 7 == 0
            h, w = image.shape[0], image.shape[1]
            image = tf.cast(tf.image.resize(image, [max(1, round(h * width / w)), width]), tf.uint8)
            if grey:
                image = tf.image.rgb_to_grayscale(image)
            data = tf.io.encode_jpeg(image, quality=quality) if fmt == "jpeg" else tf.io.encode_png(image)
            os.makedirs(os.path.join(root, c), exist_ok=True)
            tf.io.write_file(os.path.join(root, c, f"{i:05}.{'jpg' if fmt == 'jpeg' else 'png'}"), data)
        open(os.path.join(root, ".done"), "w").close()
    return made


def tf_images_per_sec(root, size, batch, batches, warmup):
    import tensorflow as tf

    def load(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        image = tf.image.resize(image, [size, size], method="bilinear")
        image = tf.image.random_flip_left_right(image)
        return image - tf.constant(MEAN)

    files = tf.data.Dataset.list_files(os.path.join(root, "*", "*"), shuffle=True, seed=0)
    ds = files.repeat().map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(tf.data.AUTOTUNE)
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        images = next(it)
    _ = float(images[0, 0, 0, 0])
    return batches * batch / (time.perf_counter() - t)


def ferroflow_images_per_sec(root, size, batch, batches, warmup):
    exe = os.path.join(ROOT, "target/release/ferroflow")
    out = subprocess.run(
        [exe, "bench", "input", "--data", root, "--size", str(size), "--batch", str(batch),
         "--batches", str(batches), "--warmup", str(warmup)],
        check=True, capture_output=True, text=True).stdout
    return float(re.search(r"images/s: ([0-9.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    folders = make_folders()
    print(f"{'folder':<14} {'round':>5} {'tf.data':>10} {'ferroflow':>10} {'ratio':>6}")
    for name, (root, size) in folders.items():
        for r in range(args.rounds):
            # Alternate which goes first, so neither always gets the warmer machine.
            if r % 2 == 0:
                ff = ferroflow_images_per_sec(root, size, args.batch, args.batches, args.warmup)
                tf_ = tf_images_per_sec(root, size, args.batch, args.batches, args.warmup)
            else:
                tf_ = tf_images_per_sec(root, size, args.batch, args.batches, args.warmup)
                ff = ferroflow_images_per_sec(root, size, args.batch, args.batches, args.warmup)
            print(f"{name:<14} {r + 1:>5} {tf_:>10.0f} {ff:>10.0f} {ff / tf_:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
