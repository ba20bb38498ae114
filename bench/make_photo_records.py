"""Writes bench/out/photos.tfrecord: ~2,000 JPEG photos (320-640 px wide) as
TF-slim Examples, for the input-pipeline benchmark. The photos are
testdata/data/photos-mini's JPEGs, repeated; written with TensorFlow's own
TFRecordWriter.

Usage: bench/.venv/bin/python bench/make_photo_records.py [--count 2000]
"""

import argparse
import os

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=2000)
    args = ap.parse_args()
    src = os.path.join(ROOT, "testdata/data/photos-mini")
    classes = sorted(os.listdir(src))
    photos = []
    for label, c in enumerate(classes):
        for name in sorted(os.listdir(os.path.join(src, c))):
            if name.lower().endswith((".jpg", ".jpeg")):
                photos.append((os.path.join(src, c, name), label))
    out = os.path.join(ROOT, "bench/out")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "photos.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for i in range(args.count):
            file, label = photos[i % len(photos)]
            data = open(file, "rb").read()
            shape = tf.io.extract_jpeg_shape(data).numpy()
            ex = tf.train.Example(features=tf.train.Features(feature={
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"jpeg"])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(shape[0])])),
                "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(shape[1])])),
            }))
            w.write(ex.SerializeToString())
    print(f"wrote {args.count} records from {len(photos)} distinct JPEGs to {path}")


if __name__ == "__main__":
    main()
