#!/usr/bin/env bash
# Install everything and run the tests. CPU torch goes first so that no CUDA build is pulled;
# pdflatex (for the LaTeX-compiles test) comes from Debian's TeX Live when we may install it.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v pdflatex >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends texlive-latex-base texlive-latex-recommended >/dev/null
fi
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e ".[test]"
python -m pytest -q "$@"
