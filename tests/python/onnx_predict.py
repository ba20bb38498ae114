"""Runs an ONNX model exported by `ferroflow export --format onnx` the way a
user would: preprocessing the images from the steps its metadata records.

Usage: onnx_predict.py MODEL.onnx IMAGE...

Reads `ferroflow.preprocessing.json` from the model's metadata_props,
decodes each image with TensorFlow, applies the recorded central crop,
resize and normalisation (in float32, in the order ferroflow applies them;
TF-slim's eval preprocessing when `slim` names it),
and runs ONNX Runtime on all images as one batch and on each image alone.
Prints JSON: {"classes": [...], "batch": {path: [p0, p1, ...]}, "single": {...}}.
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slim_preprocessing  # noqa: E402  (TF-slim's eval preprocessing, `"slim": "vgg" | "inception"`)


def preprocess(path, p):
    image = tf.io.decode_image(tf.io.read_file(path), channels=p["channels"], expand_animations=False)
    slim = p.get("slim", "none")
    if slim != "none":
        size = p["image_size"][0]
        run = slim_preprocessing.vgg_eval if slim == "vgg" else slim_preprocessing.inception_eval
        return run(image, size).numpy().astype(np.float32).transpose(2, 0, 1)  # HWC -> CHW
    fraction = p.get("eval_central_fraction")
    if fraction is not None and fraction < 1.0:
        image = tf.image.central_crop(image, fraction)
    h, w = p["image_size"]
    x = tf.cast(image, tf.float32)
    if tuple(x.shape[:2]) != (h, w):
        x = tf.image.resize(x, (h, w), method=p["resize_method"], antialias=p["antialias"])
    x = x.numpy().astype(np.float32)
    c = p["channels"]
    mean = np.array(p["mean"] or [0.0, 0.0, 0.0], np.float32)[:c]
    inv_std = (np.float32(1.0) / np.array(p["std"] or [1.0, 1.0, 1.0], np.float32))[:c]
    k = inv_std * np.float32(p["scale"])
    return ((x - mean) * k).transpose(2, 0, 1)  # HWC -> CHW


def main():
    model, images = sys.argv[1], sys.argv[2:]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    p = json.loads(meta["ferroflow.preprocessing.json"])
    x = np.stack([preprocess(path, p) for path in images])
    batch = session.run(["probabilities"], {"input": x})[0]
    single = [session.run(["probabilities"], {"input": x[i : i + 1]})[0][0] for i in range(len(images))]
    json.dump(
        {
            "classes": json.loads(meta["ferroflow.classes"]),
            "batch": {path: row.tolist() for path, row in zip(images, batch)},
            "single": {path: row.tolist() for path, row in zip(images, single)},
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
