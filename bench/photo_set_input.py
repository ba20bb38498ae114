"""The input pipeline on prepared photo sets of several kinds: `ferroflow bench
input` (exact decode and `--fast-jpeg`) against tf.data doing the same work
on the same TFRecord shards, in one run, alternating the order, with each
side's peak RSS.

The script generates the sets itself from the bundled photos
(testdata/data/photos-mini), re-encoded with TensorFlow, then runs
`ferroflow prepare --shards 4` on each folder:

- q90: 2,000 photos, JPEG quality 90, 320-640 px wide, 3% grey JPEGs and 3%
  PNGs (the set issue 19 describes);
- mixed: 2,000 photos 256-1,600 px wide, JPEG quality 60, 75, 90 or 98 (a
  quarter of them without chroma subsampling), 5% grey JPEGs, 5% PNGs;
- large: 600 JPEGs 1,600-2,560 px wide at quality 85 (where decoding
  dominates and libjpeg's DCT scaling matters).

Both sides: TFRecord -> parse Example -> decode to RGB (grey and PNG
included: tf.io.decode_image with channels=3) -> resize 224x224 bilinear ->
random left-right flip -> subtract the per-channel mean -> batch 64,
repeating the shards. tf.data: num_parallel_reads and num_parallel_calls
AUTOTUNE, prefetch(AUTOTUNE). Every side runs as its own process, so its
peak RSS (ru_maxrss from wait4) is its own.

Usage (from the repository root, after bench/setup.sh and cargo build --release):
    bench/.venv/bin/python bench/photo_set_input.py [--rounds 3] [--batches 60] [--kinds q90,mixed,large]
"""

import argparse
import glob
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import run_child  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench/out/photo-sets")
MEAN = [123.68, 116.78, 103.94]

KINDS = {
    # name: (count, width range, qualities, share without chroma subsampling, grey share, PNG share)
    "q90": (2000, (320, 640), [90], 0.0, 0.03, 0.03),
    "mixed": (2000, (256, 1600), [60, 75, 90, 98], 0.25, 0.05, 0.05),
    "large": (600, (1600, 2560), [85], 0.0, 0.0, 0.0),
}

TF_JOB = r'''
import json, sys, time
import tensorflow as tf
files, batch, batches, warmup, size = sys.argv[1].split(","), *map(int, sys.argv[2:6])
MEAN = [123.68, 116.78, 103.94]
spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64)}

def parse(record):
    ex = tf.io.parse_single_example(record, spec)
    image = tf.io.decode_image(ex["image/encoded"], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    image = tf.image.resize(image, [size, size], method="bilinear")
    image = tf.image.random_flip_left_right(image)
    return image - tf.constant(MEAN), ex["image/class/label"]

ds = (tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).repeat()
      .map(parse, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(tf.data.AUTOTUNE))
it = iter(ds)
for _ in range(warmup):
    next(it)
t = time.perf_counter()
for _ in range(batches):
    images, _ = next(it)
_ = float(images[0, 0, 0, 0])
print(json.dumps({"images_per_sec": batches * batch / (time.perf_counter() - t), "version": tf.__version__}))
'''


def make_set(kind):
    """Writes the photo folder of `kind` (once) and prepares it into 4 shards; returns the dataset dir.

    The writing runs in a child process: a parent that has imported
    TensorFlow would pass its own RSS on to every process it starts (Linux
    counts a forked child's peak RSS from the fork, before the exec)."""
    dataset = os.path.join(OUT, kind, "dataset")
    if not os.path.exists(os.path.join(dataset, ".done")):
        subprocess.run([sys.executable, os.path.abspath(__file__), "--write-set", kind], check=True)
    return dataset


def write_set(kind):
    folder, dataset = os.path.join(OUT, kind, "photos"), os.path.join(OUT, kind, "dataset")
    import numpy as np
    import tensorflow as tf

    count, (w_lo, w_hi), qualities, share_444, share_grey, share_png = KINDS[kind]
    src = os.path.join(ROOT, "testdata/data/photos-mini")
    photos = [(c, os.path.join(src, c, name)) for c in sorted(os.listdir(src))
              for name in sorted(os.listdir(os.path.join(src, c)))]
    decoded = {}
    rng = np.random.default_rng(19)
    for i in range(count):
        c, path = photos[i % len(photos)]
        if path not in decoded:
            decoded[path] = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = decoded[path]
        width = int(rng.integers(w_lo, w_hi + 1))
        h, w = int(image.shape[0]), int(image.shape[1])
        image = tf.cast(tf.clip_by_value(tf.image.resize(image, [max(1, round(h * width / w)), width]), 0, 255),
                        tf.uint8)
        u = rng.random()
        if u < share_png:
            data, ext = tf.io.encode_png(image), "png"
        else:
            if u < share_png + share_grey:
                image = tf.image.rgb_to_grayscale(image)
            quality = int(rng.choice(qualities))
            data = tf.io.encode_jpeg(image, quality=quality, chroma_downsampling=rng.random() >= share_444)
            ext = "jpg"
        os.makedirs(os.path.join(folder, c), exist_ok=True)
        tf.io.write_file(os.path.join(folder, c, f"{i:05}.{ext}"), data)
    exe = os.path.join(ROOT, "target/release/ferroflow")
    subprocess.run([exe, "prepare", folder, "--out", dataset, "--shards", "4", "--val-fraction", "0"],
                   check=True, capture_output=True)
    open(os.path.join(dataset, ".done"), "w").close()


def describe(folder):
    files = glob.glob(os.path.join(folder, "*", "*"))
    size = sum(os.path.getsize(f) for f in files)
    pngs = sum(f.endswith(".png") for f in files)
    return f"{len(files)} files, {size / 2**20:.0f} MiB, {pngs} PNGs"


def ferroflow(dataset, args, fast):
    exe = os.path.join(ROOT, "target/release/ferroflow")
    cmd = [exe, "bench", "input", dataset, "--batch", str(args.batch), "--size", "224",
           "--batches", str(args.batches), "--warmup", str(args.warmup)]
    out, rss = run_child(cmd + (["--fast-jpeg"] if fast else []))
    return float(re.search(r"images/s: ([0-9.]+)", out).group(1)), rss


def tfdata(dataset, args):
    import json

    shards = sorted(glob.glob(os.path.join(dataset, "train-*")))
    if len(shards) != 4:
        sys.exit(f"expected 4 train shards in {dataset}, found {shards}")
    out, rss = run_child([sys.executable, "-c", TF_JOB, ",".join(shards), str(args.batch), str(args.batches),
                          str(args.warmup), "224"])
    return json.loads(out.strip().splitlines()[-1])["images_per_sec"], rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--write-set", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.write_set:
        return write_set(args.write_set)
    sides = {"tf.data": lambda d: tfdata(d, args), "exact": lambda d: ferroflow(d, args, False),
             "fast": lambda d: ferroflow(d, args, True)}
    summary = []
    for kind in args.kinds.split(","):
        dataset = make_set(kind)
        print(f"{kind}: {describe(os.path.join(OUT, kind, 'photos'))}, 4 shards", flush=True)
        runs = {name: [] for name in sides}
        names = list(sides)
        for r in range(args.rounds):
            # Rotate the order, so no side always runs on the warmest (or coolest) machine.
            for name in names[r % 3:] + names[:r % 3]:
                runs[name].append(sides[name](dataset))
            tf_rate = runs["tf.data"][-1][0]
            print(f"  round {r + 1}: tf.data {tf_rate:7.0f}  exact {runs['exact'][-1][0]:7.0f} "
                  f"({runs['exact'][-1][0] / tf_rate:.2f}x)  fast {runs['fast'][-1][0]:7.0f} "
                  f"({runs['fast'][-1][0] / tf_rate:.2f}x) images/s", flush=True)
        med = {name: statistics.median(x for x, _ in rs) for name, rs in runs.items()}
        rss = {name: max(m for _, m in rs) for name, rs in runs.items()}
        summary.append((kind, med, rss))
    print(f"\n{'set':<7} {'tf.data':>8} {'exact':>8} {'fast':>8} {'exact/tf':>9} {'fast/tf':>8} "
          f"{'RSS tf':>8} {'exact':>7} {'fast':>7}   (median images/s of {args.rounds} rounds; peak RSS MiB)")
    for kind, med, rss in summary:
        print(f"{kind:<7} {med['tf.data']:8.0f} {med['exact']:8.0f} {med['fast']:8.0f} "
              f"{med['exact'] / med['tf.data']:8.2f}x {med['fast'] / med['tf.data']:7.2f}x "
              f"{rss['tf.data']:8.0f} {rss['exact']:7.0f} {rss['fast']:7.0f}")
    print(f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
