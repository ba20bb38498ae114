"""End to end on mnist5k: ferroflow vs TensorFlow/Keras doing the same job,
in one run on the same machine.

The job: the bundled 5,000 MNIST digits (class folders, 4,000 train / 1,000
validation) -> per-channel mean/std normalisation -> the model -> 10 epochs of
batch 64, momentum SGD (0.9), cosine-decayed learning rate 0.05 over 620
steps, L2 weight decay 5e-4 on conv/dense kernels -> validation accuracy.
ferroflow runs `prepare` then `train --config examples/mnist.toml`; Keras
loads the same folders with image_dataset_from_directory and trains the same
architecture with model.fit. Each side's wall time runs from process start
(imports included) to the final validation; the time to the first training
step is reported too.

Usage (from the repository root, after bench/setup.sh and cargo build --release):
    bench/.venv/bin/python bench/mnist_end_to_end.py [--model lenet|cifar_cnn] [--epochs 10]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KERAS_JOB = r'''
import sys, time, json, os
t0 = time.perf_counter()
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
from tensorflow import keras
root, model_name, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
tf.keras.utils.set_random_seed(0)
load = lambda split, shuffle: keras.utils.image_dataset_from_directory(
    os.path.join(root, split), labels="inferred", label_mode="int", color_mode="grayscale",
    image_size=(28, 28), batch_size=64, shuffle=shuffle, seed=0)
train, val = load("train", True), load("val", False)
# Per-channel statistics of the training split, as ferroflow computes them.
xs = np.concatenate([x.numpy() for x, _ in train])
mean, std = float(xs.mean()), float(xs.std())
norm = lambda x, y: ((x - mean) / std, y)
train = train.map(norm).prefetch(tf.data.AUTOTUNE)
val = val.map(norm).prefetch(tf.data.AUTOTUNE)
reg = keras.regularizers.l2(5e-4 / 2)  # tf.nn.l2_loss(w) * wd == (wd / 2) * sum(w^2)
L = keras.layers
if model_name == "lenet":
    model = keras.Sequential([keras.Input((28, 28, 1)),
        L.Conv2D(6, 5, padding="same", activation="relu", kernel_regularizer=reg), L.MaxPooling2D(2),
        L.Conv2D(16, 5, padding="valid", activation="relu", kernel_regularizer=reg), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(120, activation="relu", kernel_regularizer=reg),
        L.Dense(84, activation="relu", kernel_regularizer=reg), L.Dense(10, kernel_regularizer=reg)])
else:
    def block(f):
        return [L.Conv2D(f, 3, padding="same", use_bias=False, kernel_regularizer=reg),
                L.BatchNormalization(momentum=0.99, epsilon=1e-3), L.ReLU()]
    model = keras.Sequential([keras.Input((28, 28, 1)), *block(32), *block(32), L.MaxPooling2D(2),
        *block(64), *block(64), L.MaxPooling2D(2), L.Flatten(),
        L.Dense(256, activation="relu", kernel_regularizer=reg), L.Dropout(0.5), L.Dense(10, kernel_regularizer=reg)])
steps = epochs * (4000 // 64 + 1)
lr = keras.optimizers.schedules.CosineDecay(0.05, 620 if epochs == 10 else steps)
model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
first = {}
class First(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        first.setdefault("t", time.perf_counter() - t0)
model.fit(train, epochs=epochs, verbose=0, callbacks=[First()])
loss, acc = model.evaluate(val, verbose=0)
print(json.dumps({"accuracy": acc, "first_step": first["t"], "total": time.perf_counter() - t0,
                  "params": model.count_params()}))
'''


def run_ferroflow(binary, model, epochs, out):
    t0 = time.perf_counter()
    ds = os.path.join(out, "mnist-ds")
    subprocess.run([binary, "prepare", "testdata/data/mnist5k", "--out", ds], check=True, cwd=ROOT, capture_output=True)
    train_dir = os.path.join(out, f"ff-{model}")
    # A fresh run every time: a train dir left by an earlier run would be resumed, finished.
    shutil.rmtree(train_dir, ignore_errors=True)
    args = [binary, "train", "--config", "examples/mnist.toml", "--data", ds, "--model", model,
            "--epochs", str(epochs), "--train-dir", train_dir]
    if model == "cifar_cnn":
        args += ["--set", "model.input=[28,28,1]"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    for line in proc.stderr:
        m = re.search(r"first training step done after ([0-9.]+)s", line)  # a progress bar may precede it
        if m and first is None:
            first = time.perf_counter() - t0
    stdout = proc.stdout.read()
    proc.wait()
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"ferroflow failed:\n{stdout}")
    acc = float(re.search(r"validation accuracy: ([0-9.]+)", stdout).group(1))
    return {"accuracy": acc, "first_step": first, "total": total}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="lenet", choices=["lenet", "cifar_cnn"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--ferroflow", default=os.path.join(ROOT, "target/release/ferroflow"))
    args = ap.parse_args()
    out = os.path.join(ROOT, "bench/out")
    os.makedirs(out, exist_ok=True)
    ff = run_ferroflow(args.ferroflow, args.model, args.epochs, out)
    r = subprocess.run([sys.executable, "-c", KERAS_JOB, os.path.join(ROOT, "testdata/data/mnist5k"),
                        args.model, str(args.epochs)], check=True, capture_output=True, text=True)
    import json
    tf = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"mnist5k, {args.model}, {args.epochs} epochs, batch 64, momentum SGD")
    print(f"{'':<12}{'wall s':>9}{'first step s':>14}{'val accuracy':>14}")
    print(f"{'ferroflow':<12}{ff['total']:>9.1f}{ff['first_step']:>14.2f}{ff['accuracy']:>14.4f}")
    print(f"{'TF/Keras':<12}{tf['total']:>9.1f}{tf['first_step']:>14.2f}{tf['accuracy']:>14.4f}")
    print(f"wall-time ratio ferroflow / TF: {ff['total'] / tf['total']:.2f}x (below 1.0 is faster)")
    print(f"time-to-first-step ratio: {ff['first_step'] / tf['first_step']:.2f}x")


if __name__ == "__main__":
    main()
