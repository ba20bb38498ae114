"""TF-slim's eval preprocessing, as TensorFlow computes it (issue 16).

For each photo, writes OUT_DIR/preprocessed.safetensors with `vgg/<i>` (sizes up
to 256) and `inception/<i>` ([H, W, 3] float32, HWC): the eval branch of
research/slim/preprocessing/vgg_preprocessing.py (resize_side 256) and of
inception_preprocessing.py (central_fraction 0.875), written out here with
the same TF ops (tensorflow/models is not a pip package): TF1's
`resize_bilinear(align_corners=False)`, `_smallest_size_at_least`'s float32
truncation, `_central_crop`'s offsets, `tf.image.central_crop`, the means
and the [-1, 1] scaling. Photos are decoded with `decode_image(channels=3)`,
as TF-slim's dataset readers do.

Usage: slim_preprocessing.py SIZE OUT_DIR PHOTO...
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

MEANS = [123.68, 116.78, 103.94]  # vgg_preprocessing.py's _R_MEAN, _G_MEAN, _B_MEAN


def vgg_eval(image, size, resize_side=256):
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    side = tf.cast(resize_side, tf.float32)
    scale = tf.cond(height > width, lambda: side / width, lambda: side / height)
    new_h, new_w = tf.cast(height * scale, tf.int32), tf.cast(width * scale, tf.int32)
    resized = tf.compat.v1.image.resize_bilinear(image[None], [new_h, new_w], align_corners=False)[0]
    oh, ow = (tf.shape(resized)[0] - size) // 2, (tf.shape(resized)[1] - size) // 2
    cropped = tf.slice(resized, [oh, ow, 0], [size, size, 3])
    return tf.cast(cropped, tf.float32) - MEANS


def inception_eval(image, size, central_fraction=0.875):
    image = tf.image.convert_image_dtype(image, tf.float32)
    image = tf.image.central_crop(image, central_fraction=central_fraction)
    image = tf.compat.v1.image.resize_bilinear(image[None], [size, size], align_corners=False)[0]
    return (image - 0.5) * 2.0


def main():
    size, out_dir, paths = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    out = {}
    for i, p in enumerate(paths):
        image = tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False)
        if size <= 256:  # vgg_preprocessing crops out of a 256-pixel side
            out[f"vgg/{i}"] = vgg_eval(image, size).numpy().astype(np.float32)
        out[f"inception/{i}"] = inception_eval(image, size).numpy().astype(np.float32)
    save_file(out, os.path.join(out_dir, "preprocessed.safetensors"))


if __name__ == "__main__":
    main()
