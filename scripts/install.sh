#!/usr/bin/env bash
# Install what the project runs on into the active Python environment (the README makes a venv first):
# torch at the version of scripts/torch.txt, then exactly requirements.lock (all extras), then this
# checkout editable. Which torch build (docs/operations.md#installing-the-lock), first that applies:
#   1. the one the machine's own wheel folder offers (pip's configured find-links), with no index asked;
#   2. an NVIDIA GPU (nvidia-smi lists one): PyPI's build of that version, the CUDA one;
#   3. PyTorch's CPU build from its CPU wheel index ($TORCH_CPU_INDEX), probed once first (5 s, no retry);
#   4. a torch of that version already installed in the environment (any build) stays;
#   5. otherwise it stops with one line saying what to install by hand.
# Nothing is installed again while requirements.lock, pyproject.toml, scripts/torch.txt and this script
# are what they were at the last install into this environment from this folder (a stamp in the
# environment; --force installs anyway). --dry-run prints the choice and the commands and installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0 force=0
for arg in "$@"; do
  case $arg in
    --dry-run) dry=1 ;;
    --force) force=1 ;;
    *) echo "scripts/install.sh: unknown argument '$arg'; allowed: --dry-run, --force" >&2; exit 2 ;;
  esac
done
pip=(python -m pip)
version=$(sed -n 's/^torch==\([^ #]*\).*/\1/p' scripts/torch.txt)
cpu_index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
prefix=$(python -c 'import sys; print(sys.prefix)')
stamp="$prefix/kohonen-vq-install.stamp"
key=$(cat requirements.lock pyproject.toml scripts/torch.txt scripts/install.sh <(pwd) | sha256sum | cut -c1-16)
if [ $dry = 0 ] && [ $force = 0 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then
  echo "install: up to date in $prefix (requirements.lock, pyproject.toml unchanged since the last install)"
  exit 0
fi

# 1. The wheel folder: pip resolves torch from find-links alone, without installing or asking an index.
own=$("${pip[@]}" install --dry-run --ignore-installed --no-index --no-deps "torch==$version" 2>/dev/null |
      sed -n 's/^Would install torch-//p' || true)
installed=$(python -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
if [ -n "$own" ]; then
  torch=("torch==$own") why="the wheel folder pip is configured with offers torch $own"
elif nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  torch=("torch==$version") why="an NVIDIA GPU is present: PyPI's torch $version, the CUDA build"
elif python - "$cpu_index/torch/" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=5)
except Exception:
    sys.exit(1)
EOF
then
  torch=("torch==$version+cpu" --extra-index-url "$cpu_index") why="no NVIDIA GPU: the CPU build from $cpu_index"
elif [ "${installed%%+*}" = "$version" ]; then
  torch=() why="none of the above; keeps the torch $installed installed here"
else
  echo "scripts/install.sh: no torch==$version in pip's wheel folder, no NVIDIA GPU, and $cpu_index does not" \
       "answer; allowed: install torch==$version yourself (pip install torch==$version: PyPI's CUDA build, several" \
       "GB) and run this again, or set TORCH_CPU_INDEX to a reachable mirror of that index" >&2
  exit 1
fi
echo "install: into $prefix; torch: $why"
install=("${pip[@]}" install --quiet ${torch[@]+"${torch[@]}"} -r requirements.lock)
editable=("${pip[@]}" install --quiet --no-deps -e .)
if [ $dry = 1 ]; then
  echo "${install[*]}"
  echo "${editable[*]}"
  exit 0
fi
"${install[@]}"
"${editable[@]}"
echo "$key" > "$stamp"
