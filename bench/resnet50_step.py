"""ResNet-50 training step at 224x224 (issue 16): `ferroflow bench train
--model resnet_v1_50` against TensorFlow 2.21 (Keras `ResNet50`) and PyTorch
(torchvision's `resnet50`, written out here because torchvision has no wheel
for the installed torch on PyPI), in one run on the same machine.

The step: random 224x224x3 batches (4 made up front, cycled), 1000 classes,
training mode (batch statistics), mean sparse softmax cross-entropy,
backward, SGD with momentum 0.9 (lr 0.01). The three ResNet-50s differ in
details, which the table states with their parameter counts:
- ferroflow `resnet_v1_50`: TF-slim's (stride in the last unit of blocks 1-3,
  on the 3x3 conv; no conv biases; 25,557,032 parameters with 1000 classes);
- Keras `ResNet50(weights=None, classifier_activation=None)`: stride on the
  first 1x1 conv of blocks 2-4, conv biases (25,583,592 trainable);
- torchvision `resnet50`: "v1.5", stride on the 3x3 conv of the first unit
  of blocks 2-4 (25,557,032).
Their multiply-adds per image are within a few percent of each other (4.1 G).

Each side runs in its own process (its peak RSS is its own), `--warmup`
untimed steps, then `--steps` timed ones, reading the loss back every step.
With `--repeats N` the sides run N times, interleaved; the best of each is
compared.

Usage (from the repository root, after bench/setup.sh and cargo build --release):
    bench/.venv/bin/python bench/resnet50_step.py [--batch 16] [--steps 8] [--warmup 2] [--repeats 3]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import (  # noqa: E402
    ROOT,
    TF_STEP,
    TORCH_STEP,
    common_job,
    interleaved_best,
    run_ferroflow,
    run_python,
)

COMMON = common_job(size=224, classes=1000)

TF_JOB = COMMON + r'''
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
tf.keras.utils.set_random_seed(0)
model = tf.keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=1000,
                                       classifier_activation=None)
''' + TF_STEP

# torchvision.models.resnet50 (torchvision/models/resnet.py: Bottleneck with
# expansion 4, stride on conv2, downsample = 1x1 conv + BN), written out.
TORCH_JOB = COMMON + r'''
import torch
from torch import nn
torch.manual_seed(0)

class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)

def stage(cin, width, blocks, stride):
    layers = [Bottleneck(cin, width, stride)] + [Bottleneck(width * 4, width, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)

model = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                      nn.MaxPool2d(3, 2, 1), stage(64, 64, 3, 1), stage(256, 128, 4, 2), stage(512, 256, 6, 2),
                      stage(1024, 512, 3, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000))
model.train()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()

''' + TORCH_STEP

# Trainable parameters each side must build (the script stops otherwise).
PARAMS = {"ferroflow": 25_557_032, "tensorflow": 25_583_592, "pytorch": 25_557_032}


def ferroflow(binary, batch, steps, warmup):
    return run_ferroflow(binary, ["--model", "resnet_v1_50", "--classes", "1000", "--batch", str(batch),
                                  "--steps", str(steps), "--warmup", str(warmup)])


def python_peer(job, batch, steps, warmup):
    return run_python(job, [batch, steps, warmup])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ferroflow", default=os.path.join(ROOT, "target/release/ferroflow"))
    args = ap.parse_args()
    if not os.path.exists(args.ferroflow):
        sys.exit(f"{args.ferroflow} is missing: run `cargo build --release` first")
    sides = {
        "ferroflow": lambda: ferroflow(args.ferroflow, args.batch, args.steps, args.warmup),
        "tensorflow": lambda: python_peer(TF_JOB, args.batch, args.steps, args.warmup),
        "pytorch": lambda: python_peer(TORCH_JOB, args.batch, args.steps, args.warmup),
    }
    load_before = os.getloadavg()[0]
    runs, best = interleaved_best(sides, args.repeats, PARAMS.get)
    print(f"training step: ResNet-50, batch {args.batch}, 224x224x3 random data, 1000 classes, momentum SGD 0.9, "
          f"{args.steps} timed steps after {args.warmup} warm-up; {os.cpu_count()} CPUs; best of {args.repeats}; "
          f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"{'':<20}{'images/s':>10}{'range':>13}{'median ms/step':>16}{'peak RSS MiB':>14}{'parameters':>12}")
    for name, r in best.items():
        rates = [x["images_per_sec"] for x in runs[name]]
        span = f"{min(rates):.2f}-{max(rates):.2f}"
        print(f"{r['version']:<20}{r['images_per_sec']:>10.2f}{span:>13}{r['ms_median']:>16.0f}"
              f"{r['rss']:>14.0f}{r['params']:>12,}")
    ff = best["ferroflow"]
    for name, label in [("tensorflow", "TF"), ("pytorch", "PyTorch")]:
        p = best[name]
        print(f"ferroflow / {label}: {ff['images_per_sec'] / p['images_per_sec']:.2f}x images/s, "
              f"{ff['rss'] / p['rss']:.2f}x peak RSS")


if __name__ == "__main__":
    main()
