"""TF-slim's reference for ferroflow's ImageNet zoo models (issue 16).

Builds the TF-slim net MODEL (tf-slim 1.1.0 on TensorFlow 2.21, a
tf.compat.v1 graph, eval mode) with seeded random weights, gives every bias,
batch-norm beta/gamma and moving statistic a non-trivial seeded value too (a
fresh init leaves them 0 or 1, which would hide a swapped or ignored one),
saves a Saver checkpoint OUT_DIR/model.ckpt, and writes OUT_DIR/io.safetensors:
`input` (the preprocessed photos, NHWC float32) and `logits` (TF's output for
them, [N, classes]), plus `slim_logits`: TF's output for the photos under
TF-slim's own eval preprocessing of the model's family (slim_preprocessing.py).
`input` is also written as OUT_DIR/input.npy.

Preprocessing here is the model family's eval preprocessing reduced to its
arithmetic (decode, bilinear resize to the model's size, VGG mean subtraction
or Inception's [-1, 1] scaling): the test compares the nets, so both sides take
this exact input.

Usage: slim_reference.py MODEL OUT_DIR PHOTO...   (MODEL: alexnet_v2, vgg_16, vgg_19, resnet_v1_50, resnet_v1_101, resnet_v2_50,
                                                 inception_v1, inception_v3)
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# tf-slim 1.1.0 imports tf_keras.legacy_tf_layers, which tf-keras 2.21 keeps under src/.
import tf_keras.src.legacy_tf_layers as legacy_layers  # noqa: E402

sys.modules["tf_keras.legacy_tf_layers"] = legacy_layers
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slim_preprocessing  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_slim  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from tf_slim.nets import alexnet, inception_v1, inception_v3, resnet_utils, resnet_v1, resnet_v2, vgg  # noqa: E402

# name: (builder, arg scope, input size, classes, preprocessing)
MODELS = {
    "alexnet_v2": (alexnet.alexnet_v2, alexnet.alexnet_v2_arg_scope, 224, 1000, "vgg"),
    "vgg_16": (vgg.vgg_16, vgg.vgg_arg_scope, 224, 1000, "vgg"),
    "vgg_19": (vgg.vgg_19, vgg.vgg_arg_scope, 224, 1000, "vgg"),
    # TF-slim's ResNet v1 checkpoints were trained with vgg_preprocessing.
    "resnet_v1_50": (resnet_v1.resnet_v1_50, resnet_utils.resnet_arg_scope, 224, 1000, "vgg"),
    "resnet_v1_101": (resnet_v1.resnet_v1_101, resnet_utils.resnet_arg_scope, 224, 1000, "vgg"),
    # TF-slim's ResNet v2 checkpoints have the background class and inception preprocessing.
    "resnet_v2_50": (resnet_v2.resnet_v2_50, resnet_utils.resnet_arg_scope, 224, 1001, "inception"),
    "inception_v1": (inception_v1.inception_v1, inception_v1.inception_v1_arg_scope, 224, 1001, "inception"),
    "inception_v3": (inception_v3.inception_v3, inception_v3.inception_v3_arg_scope, 299, 1001, "inception"),
}
# Extra arguments of the builders: ferroflow's inception_v3 has no auxiliary head.
EXTRA = {"inception_v3": {"create_aux_logits": False}}
VGG_MEANS = [123.68, 116.78, 103.94]  # vgg_preprocessing.py's _R_MEAN, _G_MEAN, _B_MEAN


def photos(paths, size, kind):
    out = []
    for p in paths:
        img = tf.image.decode_jpeg(tf.io.read_file(p), channels=3)
        img = tf.image.resize(tf.cast(img, tf.float32), [size, size], method="bilinear")
        img = img - VGG_MEANS if kind == "vgg" else img / 127.5 - 1.0
        out.append(img.numpy())
    return np.stack(out).astype(np.float32)


def main():
    model, out_dir, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    build, arg_scope, size, classes, kind = MODELS[model]
    x_value = photos(paths, size, kind)
    slim_eval = slim_preprocessing.vgg_eval if kind == "vgg" else slim_preprocessing.inception_eval
    slim_value = np.stack(
        [
            slim_eval(tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False), size).numpy()
            for p in paths
        ]
    ).astype(np.float32)
    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.set_random_seed(0)
    x = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3])
    with tf_slim.arg_scope(arg_scope()):
        logits, _ = build(x, num_classes=classes, is_training=False, **EXTRA.get(model, {}))
    # tf-slim 1.1.0's ResNets return [N, 1, 1, classes] (no spatial squeeze).
    if logits.shape.rank == 4:
        logits = tf.squeeze(logits, [1, 2])
    rng = np.random.default_rng(0)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for v in tf.compat.v1.global_variables():
            name, shape = v.op.name, v.shape.as_list()
            leaf = name.rsplit("/", 1)[-1]
            if leaf in ("biases", "beta", "moving_mean"):
                v.load(rng.normal(0.0, 0.1, shape).astype(np.float32), sess)
            elif leaf in ("gamma", "moving_variance"):
                v.load(rng.uniform(0.5, 1.5, shape).astype(np.float32), sess)
        tf.compat.v1.train.Saver().save(sess, os.path.join(out_dir, "model.ckpt"), write_meta_graph=False)
        y = sess.run(logits, {x: x_value})
        y_slim = sess.run(logits, {x: slim_value})
    io = {"input": x_value, "logits": y.astype(np.float32), "slim_logits": y_slim.astype(np.float32)}
    save_file(io, os.path.join(out_dir, "io.safetensors"))
    np.save(os.path.join(out_dir, "input.npy"), x_value)
    print(f"{model}: {len(paths)} photos, logits {y.shape}, |logits| max {np.abs(y).max():.3f}")


if __name__ == "__main__":
    main()
