#!/usr/bin/env bash
# Regenerate requirements.lock, the exact versions the suite is tested with, from pyproject.toml
# (all extras) with pip-tools. The lock is for CPython 3.11 on Linux x86_64 with the CPU build of
# torch 2.13.0: torch itself is left out (it is installed first, `pip install torch==2.13.0`, or the
# CUDA build of your choice on a GPU machine) and its dependencies are resolved from the CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet pip-tools==7.6.2
python -m piptools compile --quiet --all-extras --strip-extras --no-emit-index-url --no-emit-find-links \
  --unsafe-package torch -c scripts/torch.txt -o requirements.lock pyproject.toml
