#!/usr/bin/env bash
# Install everything (CPU torch first, so no CUDA build is pulled) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[test]"
python -m pytest -q "$@"
