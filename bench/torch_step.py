"""PyTorch's training step for `ferroflow bench train`'s models on any
torch device: the GPU peer of scripts/gpu-check.sh (the CPU peers are in
bench/train_step.py). Same step: random NCHW data (4 batches cycled), training
mode, mean cross-entropy, backward, SGD momentum 0.9 (lr 0.01); the loss is
read back every step, so each timed step has finished on the device.

Models (trainable parameters for 10 classes, checked against ferroflow's):
- cifar_cnn (1,117,162): bench/train_step.py's model;
- resnet20 (272,474): ferroflow's zoo resnet20, conv3x3(16)+BN+ReLU, three
  stages of three basic blocks (16/32/64, stride 2 into stages 2 and 3 with
  1x1 conv+BN projections), global average pool, dense.

Usage: python bench/torch_step.py --device cuda --model resnet20 [--batch 128] [--steps 50] [--warmup 10]
Prints one JSON line: images_per_sec, ms_median, params, device name.
"""

import argparse
import json
import time

import torch
from torch import nn

PARAMS = {"cifar_cnn": 1_117_162, "resnet20": 272_474}


def bn(f):
    # PyTorch's BN momentum is 1 - TF's decay (0.99); epsilon 1e-3 as TF's.
    return nn.BatchNorm2d(f, eps=1e-3, momentum=0.01)


def cifar_cnn():
    def block(cin, f):
        return [nn.Conv2d(cin, f, 3, padding=1, bias=False), bn(f), nn.ReLU(inplace=True)]
    return nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(inplace=True),
                         nn.Dropout(0.5), nn.Linear(256, 10))


class Basic(nn.Module):
    def __init__(self, cin, f, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, f, 3, stride, 1, bias=False), bn(f)
        self.c2, self.b2 = nn.Conv2d(f, f, 3, 1, 1, bias=False), bn(f)
        self.short = (nn.Sequential(nn.Conv2d(cin, f, 1, stride, bias=False), bn(f))
                      if stride != 1 or cin != f else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + self.short(x))


def resnet20():
    layers, cin = [nn.Conv2d(3, 16, 3, padding=1, bias=False), bn(16), nn.ReLU(inplace=True)], 16
    for stage, f in enumerate([16, 32, 64]):
        for block in range(3):
            layers.append(Basic(cin, f, 2 if stage > 0 and block == 0 else 1))
            cin = f
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", choices=sorted(PARAMS), default="cifar_cnn")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = {"cifar_cnn": cifar_cnn, "resnet20": resnet20}[args.model]().to(dev).train()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if params != PARAMS[args.model]:
        raise SystemExit(f"{args.model}: built {params} parameters, not ferroflow's {PARAMS[args.model]}")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(args.batch, 3, 32, 32, generator=g).to(dev),
             torch.randint(0, 10, (args.batch,), generator=g).to(dev)) for _ in range(4)]
    times = []
    for i in range(args.warmup + args.steps):
        x, y = data[i % 4]
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss.item()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(json.dumps({"images_per_sec": args.batch * len(times) / sum(times),
                      "ms_median": 1e3 * sorted(times)[len(times) // 2], "params": params,
                      "torch": torch.__version__, "device": name}))


if __name__ == "__main__":
    main()
