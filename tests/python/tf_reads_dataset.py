"""TensorFlow reads a dataset written by `ferroflow prepare`.

Usage: python tf_reads_dataset.py DATASET_DIR

Reads dataset.json, parses every Example of every split with tf.data and
tf.io.parse_single_example using the documented feature spec, decodes every
image (tf.io.decode_image for the original encoding, tf.io.decode_raw for raw),
and prints what it found as JSON: per split the count, per-class counts, the
image shapes seen, and a checksum of all decoded pixels.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402


def spec_for(meta):
    kinds = {"bytes": tf.string, "int64": tf.int64, "float": tf.float32}
    spec = {}
    for key, kind in meta["features"].items():
        if key in ("image/target", "target"):
            spec[key] = tf.io.FixedLenFeature([meta["target_size"]], tf.float32)
        else:
            spec[key] = tf.io.FixedLenFeature([], kinds[kind])
    return spec


def main(root):
    meta = json.load(open(os.path.join(root, "dataset.json")))
    compression = "GZIP" if meta["compression"] == "gzip" else ""
    spec = spec_for(meta)
    out = {}
    for split, info in meta["splits"].items():
        files = [os.path.join(root, f) for f in info["files"]]
        ds = tf.data.TFRecordDataset(files, compression_type=compression)
        count, per_class, shapes, checksum = 0, {}, set(), 0
        for record in ds:
            ex = tf.io.parse_single_example(record, spec)
            if meta["encoding"] == "original":
                image = tf.io.decode_image(ex["image/encoded"], expand_animations=False)
                assert int(ex["image/height"]) == image.shape[0] and int(ex["image/width"]) == image.shape[1]
                label = int(ex["image/class/label"]) if "image/class/label" in ex else None
            else:
                h, w, c = int(ex["height"]), int(ex["width"]), int(ex["channels"])
                image = tf.reshape(tf.io.decode_raw(ex["img_raw"], tf.uint8), [h, w, c])
                label = int(ex["label"]) if "label" in ex else None
            shapes.add(tuple(int(d) for d in image.shape))
            checksum += int(tf.reduce_sum(tf.cast(image, tf.int64)))
            if label is not None:
                name = meta["classes"][label]
                per_class[name] = per_class.get(name, 0) + 1
            count += 1
        out[split] = {"count": count, "per_class": per_class, "shapes": sorted(shapes), "checksum": checksum}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
