#!/usr/bin/env bash
# Regenerate docs/results: the paper's four studies at cpu scale, the long runs of Tables 2-3, the
# new studies, and the benchmarks, each with the command, commit, lock, machine and wall time.
#
#   bash docs/results/make.sh              # everything (about 1.5 h on 2 cores)
#   bash docs/results/make.sh robustness   # some of it: study names, or "benchmarks", "readme"
#
# Sweeps run into results/docs/ (git-ignored: the MLflow store and checkpoints stay local); the
# tables, figures, summaries and the end-of-sweep output are copied into docs/results/<name>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=docs/results
RUNS=results/docs
PAPER_STUDIES=(sensitivity comparison robustness ablation)
LONG=(robustness comparison)
NEW=(modern-baselines shrink)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${PAPER_STUDIES[@]}" long "${NEW[@]}" benchmarks readme)

provenance() {  # $1 = command, $2 = wall seconds
  local s=$2
  printf 'command:  %s\ncommit:   %s%s\nlock:     requirements.lock sha256 %s (torch %s)\nmachine:  %s cores (%s), %s\nwall:     %d min %02d s\ndate:     %s\n' \
    "$1" "$(git rev-parse --short HEAD)" "$(git diff --quiet HEAD -- . ':!docs' || echo ' (with uncommitted changes)')" \
    "$(sha256sum requirements.lock | cut -c1-12)" "$(python -c 'import torch; print(torch.__version__)')" \
    "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(uname -sm)" \
    $((s / 60)) $((s % 60)) "$(date -u +%Y-%m-%d)"
}

sweep() {  # $1 = folder name under docs/results, rest = arguments of sweep.run
  local name=$1; shift
  local cmd="python -m sweep.run $* --results-dir $RUNS"
  echo "== $name: $cmd" >&2
  local log; log=$(mktemp)
  local start=$SECONDS
  $cmd 2>&1 | tee "$log" >&2
  local wall=$((SECONDS - start))
  local dir; dir=$(grep -o "results: [^ ]*" "$log" | tail -1 | cut -d' ' -f2)
  [ -n "$dir" ] && [ -d "$dir" ] || { echo "no sweep folder found in the output of: $cmd" >&2; exit 1; }
  rm -rf "${OUT:?}/$name" && mkdir -p "$OUT/$name"
  cp -r "$dir/tables" "$OUT/$name/"
  mkdir -p "$OUT/$name/figures" && cp "$dir"/figures/*.png "$OUT/$name/figures/"
  cp "$dir/summary.parquet" "$OUT/$name/"
  { provenance "$cmd" "$wall"; echo; grep -v "^\[" "$log" | sed -n '/^sweep /,$p'; } > "$OUT/$name/run.txt"
  rm -f "$log"
}

bench() {  # $1 = script name under benchmarks/
  local cmd="python benchmarks/$1.py"
  echo "== $cmd" >&2
  mkdir -p "$OUT/benchmarks"
  local log; log=$(mktemp)
  local start=$SECONDS
  $cmd 2>&1 | tee "$log" >&2
  { provenance "$cmd" $((SECONDS - start)); echo; cat "$log"; } > "$OUT/benchmarks/$1.txt"
  rm -f "$log"
}

for t in "${targets[@]}"; do
  case $t in
    sensitivity|comparison|robustness|ablation) sweep "$t" "$t" --seeds 3 ;;
    long) for s in "${LONG[@]}"; do sweep "$s-long" "$s" --scale cpu-long --seeds 3; done ;;
    modern-baselines|shrink) sweep "$t" "$t" --seeds 3 ;;
    benchmarks) for b in step_time scaling sweep_overhead vs_peers data_throughput; do bench "$b"; done ;;
    readme) python -m analysis.paper "$OUT" ;;
    *) echo "unknown target $t; allowed: ${PAPER_STUDIES[*]} long ${NEW[*]} benchmarks readme" >&2; exit 2 ;;
  esac
done
du -sh "$OUT"
