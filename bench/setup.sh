#!/usr/bin/env bash
# Creates bench/.venv with the peers ferroflow is measured against:
# TensorFlow 2.21 (CPU) and PyTorch (CPU).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet tensorflow-cpu==2.21.0 safetensors==0.8.0
# PyPI's torch (the only package registry the CI and development machines
# reach); it runs on the CPU without a GPU.
.venv/bin/pip install --quiet torch
.venv/bin/python -c "import tensorflow as tf; print('tensorflow', tf.__version__)"
