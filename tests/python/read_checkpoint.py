"""Reads a ferroflow train dir with TensorFlow and Python's safetensors.

Usage: read_checkpoint.py TRAIN_DIR
Prints one JSON object: the state file as tf.train.get_checkpoint_state
parses it, and the latest checkpoint's tensors (sum of each, global_step)
and metadata as safetensors.numpy reads them.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402


def main(train_dir):
    state = tf.train.get_checkpoint_state(train_dir)
    if state is None:
        raise SystemExit(f"tf.train.get_checkpoint_state({train_dir!r}) found no state file")
    path = state.model_checkpoint_path + ".safetensors"
    tensors = load_file(path)
    with safe_open(path, framework="np") as f:
        metadata = f.metadata()
    print(
        json.dumps(
            {
                "model_checkpoint_path": state.model_checkpoint_path,
                "all_model_checkpoint_paths": list(state.all_model_checkpoint_paths),
                "global_step": int(tensors["global_step"]),
                "sums": {k: float(np.sum(v, dtype=np.float64)) for k, v in tensors.items()},
                "metadata": metadata,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
