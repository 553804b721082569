#!/usr/bin/env bash
# Install exactly the locked versions and run the tests (the command CI runs, .ci/run).
# `bash scripts/test.sh --fast` leaves out the slow end-to-end tests (pytest marker `slow`: real sweeps,
# kills, outages, browsers, LaTeX), the loop for changing one module; further arguments go to pytest.
# The environment: the active venv, else the README's .venv when there is one, else the python on PATH
# (CI: a clean clone with the machine's Python 3.11 and no venv). scripts/install.sh installs into it
# (torch, requirements.lock, this checkout editable) and does nothing while the lock and
# pyproject.toml are unchanged since its last install there. As root, Debian's TeX Live (pdflatex: the
# tables must compile) and Chromium (the MLflow UI test) are installed when absent.
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
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
  . .venv/bin/activate
fi
bash scripts/install.sh
python -m pytest -q --durations=10 "${select[@]}" "$@"  # the ten slowest tests, to keep the suite short
