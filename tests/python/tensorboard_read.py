"""Reads a TensorBoard run directory with TensorBoard's own event reader and
prints what TensorBoard sees, as JSON, for ferroflow's Rust tests.

Usage: python tensorboard_read.py RUN_DIR

Uses tensorboard.backend.event_processing.plugin_event_accumulator, the reader
the TensorBoard server itself uses (with data_compat migrating TF1-style
histograms and images to the plugin tensor forms).
"""

import json
import struct
import sys
import zlib

from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util


def png_pixels(blob):
    """Decodes an 8-bit, non-interlaced PNG: (width, height, channels, rows)."""
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind = blob[pos + 4 : pos + 8]
        data = blob[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    width, height, depth, color, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        filt = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if filt == 1:
                line[i] = (line[i] + a) & 255
            elif filt == 2:
                line[i] = (line[i] + b) & 255
            elif filt == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(list(line))
        prev = line
    return width, height, channels, rows


def main(run_dir):
    acc = pea.EventAccumulator(run_dir, size_guidance={pea.TENSORS: 0})
    acc.Reload()
    out = {"scalars": {}, "histograms": {}, "images": {}, "text": {}, "other": [], "graph_nodes": None}
    for tag in acc.Tags()[pea.TENSORS]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        events = acc.Tensors(tag)
        if plugin == "scalars":
            out["scalars"][tag] = [[e.step, float(tensor_util.make_ndarray(e.tensor_proto))] for e in events]
        elif plugin == "histograms":
            e = events[-1]
            buckets = tensor_util.make_ndarray(e.tensor_proto)
            out["histograms"][tag] = {
                "step": e.step,
                "n": float(buckets[:, 2].sum()),
                "min": float(buckets[0, 0]),
                "max": float(buckets[-1, 1]),
                "buckets": int(buckets.shape[0]),
            }
        elif plugin == "images":
            e = events[-1]
            blobs = tensor_util.make_ndarray(e.tensor_proto)
            images = [png_pixels(b) for b in blobs[2:]]
            out["images"][tag] = {
                "step": e.step,
                "width": int(blobs[0]),
                "height": int(blobs[1]),
                "count": len(images),
                "pixels": [img[3] for img in images],
            }
        elif plugin == "text":
            e = events[-1]
            out["text"][tag] = tensor_util.make_ndarray(e.tensor_proto).item().decode("utf-8")
        else:
            out["other"].append([tag, plugin])
    if acc.Tags()[pea.GRAPH]:
        out["graph_nodes"] = [[n.name, n.op, list(n.input)] for n in acc.Graph().node]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
