"""TensorFlow reads a TF checkpoint that `ferroflow export` wrote.

Usage: tf_restores_bundle.py EXPORT_DIR SOURCE.safetensors IMAGE...

Prints one JSON object:
- "latest", "all_paths": what tf.train.latest_checkpoint and
  tf.train.get_checkpoint_state find in EXPORT_DIR;
- "variables": {name: shape} from tf.train.load_checkpoint, and
  "mismatched": the names whose values differ from the source checkpoint's
  (compared bit for bit, after OIHW -> HWIO for 4-D kernels);
- "probabilities": {image: softmax of the logits} of a TF1 graph of the
  source's model (built from its `ferroflow.model` metadata: conv2d, max_pool,
  flatten, dense) restored from the bundle with tf.compat.v1.train.Saver, on
  the images preprocessed as the checkpoint's `ferroflow.preprocess` says
  (no resize: the images must already be the model's size);
- "corrupt_error": TensorFlow's error reading every tensor of a copy of the
  bundle with one byte of its .data file flipped;
- "truncated_error": the same for a copy whose .data file is cut in half.
"""

import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402


def tf_layout(name, value):
    return np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value


def build_graph(model, reader):
    """The model in TF1 graph ops; returns (input placeholder, logits, variables)."""
    tf1 = tf.compat.v1
    h, w, c = model["input"]
    x = tf1.placeholder(tf.float32, [None, h, w, c])
    variables, counts, y = [], {"conv2d": 0, "dense": 0}, x

    def var(name):
        v = tf1.get_variable(name, shape=reader.get_variable_to_shape_map()[name], dtype=tf.float32)
        variables.append(v)
        return v

    for layer in model["layers"]:
        kind = layer["type"]
        if kind in counts:
            counts[kind] += 1
        if kind == "conv2d":
            scope = layer["name"] or f"conv{counts['conv2d']}"
            if layer["batch_norm"] or layer["dilation"] != 1:
                raise SystemExit(f"{scope}: batch norm / dilation not built in this test graph")
            y = tf.nn.conv2d(y, var(f"{scope}/weights"), strides=layer["stride"], padding=layer["padding"])
            if layer["use_bias"]:
                y = y + var(f"{scope}/biases")
        elif kind == "dense":
            scope = layer["name"] or f"fc{counts['dense']}"
            y = tf.matmul(y, var(f"{scope}/weights"))
            if layer["use_bias"]:
                y = y + var(f"{scope}/biases")
        elif kind == "max_pool":
            stride = layer["stride"] or layer["pool"]
            y = tf.nn.max_pool2d(y, layer["pool"], stride, layer["padding"])
            continue
        elif kind == "flatten":
            y = tf.reshape(y, [-1, int(np.prod(y.shape[1:]))])
            continue
        else:
            raise SystemExit(f"layer type {kind!r} not built in this test graph")
        activation = layer.get("activation", "linear")
        if activation == "relu":
            y = tf.nn.relu(y)
        elif activation != "linear":
            raise SystemExit(f"activation {activation!r} not built in this test graph")
    return x, y, variables


def preprocess(paths, pre):
    images = []
    for p in paths:
        img = tf.io.decode_image(tf.io.read_file(p), channels=pre["channels"], expand_animations=False)
        x = tf.cast(img, tf.float32).numpy() * pre["scale"]
        x = (x - np.array(pre["mean"][: pre["channels"]], np.float32)) / np.array(pre["std"][: pre["channels"]], np.float32)
        images.append(x.astype(np.float32))
    return np.stack(images)


def read_error(prefix):
    """TensorFlow's error reading every tensor of the bundle at `prefix`, or None."""
    try:
        bad = tf.train.load_checkpoint(prefix)
        for name in bad.get_variable_to_shape_map():
            bad.get_tensor(name)
    except Exception as e:  # noqa: BLE001 - the message is the result
        return str(e)
    return None


def main(export_dir, source, images):
    latest = tf.train.latest_checkpoint(export_dir)
    state = tf.train.get_checkpoint_state(export_dir)
    reader = tf.train.load_checkpoint(latest)
    shapes = reader.get_variable_to_shape_map()
    ours = load_file(source)
    def same(name):
        theirs, mine = np.asarray(reader.get_tensor(name)), np.array(tf_layout(name, ours[name]), order="C")
        return theirs.dtype == mine.dtype and theirs.shape == mine.shape and theirs.tobytes() == mine.tobytes()

    mismatched = [name for name in shapes if name not in ours or not same(name)]
    mismatched += [name for name in ours if name not in shapes]

    with safe_open(source, framework="np") as f:
        meta = f.metadata()
    model = json.loads(meta["ferroflow.model"])
    pre = json.loads(meta["ferroflow.preprocess"])
    inputs = preprocess(images, pre)  # eagerly, before the TF1 graph
    graph = tf.Graph()
    with graph.as_default():
        x, logits, variables = build_graph(model, reader)
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, latest)
            out = sess.run(tf.nn.softmax(logits), {x: inputs})
    probabilities = {p: [float(v) for v in row] for p, row in zip(images, out)}

    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, os.path.basename(latest))
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(latest + suffix, prefix + suffix)
        with open(prefix + ".data-00000-of-00001", "r+b") as f:
            f.seek(os.path.getsize(prefix + ".data-00000-of-00001") // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x20]))
        corrupt_error = read_error(prefix)
        data = prefix + ".data-00000-of-00001"
        shutil.copy(latest + ".data-00000-of-00001", data)
        with open(data, "r+b") as f:
            f.truncate(os.path.getsize(data) // 2)
        truncated_error = read_error(prefix)

    print(json.dumps({
        "latest": latest,
        "all_paths": list(state.all_model_checkpoint_paths),
        "variables": {k: list(v) for k, v in shapes.items()},
        "mismatched": mismatched,
        "probabilities": probabilities,
        "corrupt_error": corrupt_error,
        "truncated_error": truncated_error,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
