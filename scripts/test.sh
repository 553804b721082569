#!/usr/bin/env bash
# Install exactly the locked versions and run the tests (the command CI runs, .ci/run).
# `bash scripts/test.sh --fast` leaves out the slow end-to-end tests (pytest marker `slow`: real sweeps,
# kills, outages, browsers, LaTeX), the loop for changing one module; further arguments go to pytest.
# CPU torch goes first so that no CUDA build is pulled; the lock (requirements.lock, made by
# scripts/lock.sh) pins everything else. As root, Debian's TeX Live (pdflatex: the tables must
# compile) and Chromium (the MLflow UI test) are installed when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
select=()
if [ "${1:-}" = --fast ]; then
  select=(-m "not slow")
  shift
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  command -v pdflatex >/dev/null || missing+=(texlive-latex-base texlive-latex-recommended)
  command -v chromium >/dev/null || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
python -m pip install --quiet -r scripts/torch.txt
python -m pip install --quiet -r requirements.lock
python -m pip install --quiet --no-deps -e .
python -m pytest -q --durations=10 "${select[@]}" "$@"  # the ten slowest tests, to keep the suite short
