"""Checks ferroflow's ONNX exports with the real tools.

Usage: onnx_runtime_check.py MANIFEST.json

MANIFEST lists {name, onnx, data}: an exported model and a safetensors file
with `input` [7, C, H, W] and ferroflow's outputs for it, at batch 7 (`out7`,
and `probs7` or `values7` for the second output) and image by image (`out1`,
`probs1`, `values1`). For each model this runs
onnx.checker.check_model (full check, with shape inference), then ONNX
Runtime at batch 7 and at batch 1, and prints one JSON object: per model the
checker's verdict, the opset, the input and output names and shapes, and the
largest absolute differences from ferroflow's outputs.
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file


def main():
    manifest = json.load(open(sys.argv[1]))
    report = {}
    for case in manifest:
        model = onnx.load(case["onnx"])
        r = {}
        try:
            onnx.checker.check_model(model, full_check=True)
            r["checker"] = "ok"
        except Exception as e:  # the message is the report
            r["checker"] = str(e)
        r["opset"] = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(case["onnx"], options, providers=["CPUExecutionProvider"])
        r["input_shape"] = session.get_inputs()[0].shape
        r["outputs"] = [o.name for o in session.get_outputs()]
        data = load_file(case["data"])
        x = data["input"]
        out7 = session.run(None, {"input": x})
        out1 = [session.run(None, {"input": x[i : i + 1]}) for i in range(x.shape[0])]
        out1 = [np.concatenate([o[k] for o in out1]) for k in range(len(out7))]
        for batch, ours in (("7", out7), ("1", out1)):
            r["max_diff_out" + batch] = float(np.abs(ours[0] - data["out" + batch]).max())
            r["max_abs_out" + batch] = float(np.abs(data["out" + batch]).max())
            for key in ("probs", "values"):
                if key + batch in data:
                    r["max_diff_" + key + batch] = float(np.abs(ours[1] - data[key + batch]).max())
        r["spread"] = float(np.abs(out7[0] - out7[0][:1]).max())
        report[case["name"]] = r
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
