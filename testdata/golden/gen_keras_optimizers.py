"""Golden cases for the optimizers TensorFlow has only in Keras (AdamW).

Writes cases/optimizer/<name>.safetensors in gen_golden.py's optimizer format
(var0, grads [steps, n] -> var_after_each_step, slot_* final values) and adds
them to cases/manifest.json. The slot keys map to the names ferroflow gives
the slots (TF1's, `var/Adam`, `var/Adam_1`); Keras's own variable names are
recorded in params.keras_slot_variable_names.

Usage: python gen_keras_optimizers.py CASES_DIR
Needs: tensorflow-cpu 2.21 (Keras 3), numpy, safetensors.
"""
import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

STEPS = 6


def adamw_case(out, name, n, lr, params, rng, exclude=None, var_name="var"):
    var0 = rng.standard_normal(n).astype(np.float32)
    grads = rng.standard_normal((STEPS, n)).astype(np.float32)
    v = tf.Variable(var0, name=var_name)
    opt = tf.keras.optimizers.AdamW(
        learning_rate=lr, weight_decay=params["weight_decay"], beta_1=params["beta1"],
        beta_2=params["beta2"], epsilon=params["epsilon"])
    if exclude:
        opt.exclude_from_weight_decay(var_names=exclude)
    hist = []
    for s in range(STEPS):
        opt.apply_gradients([(tf.constant(grads[s]), v)])
        hist.append(v.numpy())
    m = opt._momentums[0].numpy()
    vel = opt._velocities[0].numpy()
    tensors = {"var0": var0, "grads": grads, "var_after_each_step": np.stack(hist),
               "slot_m": m, "slot_v": vel}
    p = dict(params, learning_rate=lr, tf_api="tf.keras.optimizers.AdamW",
             tf_slot_variable_names={"slot_m": f"{var_name}/Adam", "slot_v": f"{var_name}/Adam_1"},
             keras_slot_variable_names={"slot_m": opt._momentums[0].path, "slot_v": opt._velocities[0].path})
    if exclude:
        p["exclude_from_weight_decay"] = exclude
    tensors = {k: np.ascontiguousarray(t) for k, t in tensors.items()}
    meta = {"op": "optimizer", "params": json.dumps(p, sort_keys=True), "tf_version": tf.__version__}
    os.makedirs(os.path.join(out, "optimizer"), exist_ok=True)
    save_file(tensors, os.path.join(out, "optimizer", name + ".safetensors"), metadata=meta)
    return {"op": "optimizer", "file": f"optimizer/{name}.safetensors", "params": p,
            "tensors": {k: [str(t.dtype), list(t.shape)] for k, t in tensors.items()}}


def main(out):
    rng = np.random.default_rng(2021)
    cases = [
        adamw_case(out, "adamw", 7, 0.1,
                   {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-7, "weight_decay": 0.05}, rng),
        adamw_case(out, "adamw_keras_defaults", 5, 0.001,
                   {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-7, "weight_decay": 0.004}, rng),
        adamw_case(out, "adamw_excluded", 6, 0.05,
                   {"beta1": 0.8, "beta2": 0.99, "epsilon": 1e-3, "weight_decay": 0.3}, rng,
                   exclude=["biases"], var_name="fc/biases"),
    ]
    manifest_path = os.path.join(out, "manifest.json")
    manifest = json.load(open(manifest_path))
    files = {c["file"] for c in cases}
    manifest["cases"] = [c for c in manifest["cases"] if c["file"] not in files] + cases
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
