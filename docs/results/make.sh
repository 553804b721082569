#!/usr/bin/env bash
# Regenerate docs/results: the paper's four studies at cpu scale, the long runs of Tables 2-3
# (cpu-long scale), the new studies, and the benchmarks, each with the command, commit, lock,
# machine (CPU model, vector extensions, torch's CPU capability: sweep/machine.py) and wall time it was
# produced with.
#
#   bash docs/results/make.sh                        # everything (about 2 h 30 min on 2 idle cores)
#   bash docs/results/make.sh robustness long        # some of it: study names, long (or robustness-long,
#                                                    # comparison-long), benchmarks, readme
#   bash docs/results/make.sh collect NAME SWEEP_DIR # re-read a finished sweep into docs/results/NAME
#   bash docs/results/make.sh tables                 # re-set every folder's tables and topography figure
#                                                    # from its summary.parquet (no study re-run)
#
# Sweeps run into results/docs/ (git-ignored: the MLflow store and checkpoints stay local); the
# tables, figures, summary and the report's output are copied into docs/results/<name>/, with
# provenance.txt (how the sweep was run) written into the sweep folder first.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=docs/results
RUNS=results/docs

commit() {  # the commit a run starts at (taken before it starts: later commits do not change what ran)
  echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo ' (with uncommitted changes)')"
}

provenance() {  # $1 = command, $2 = wall seconds, $3 = exit code, $4 = the commit it started at
  printf 'command:  %s\ncommit:   %s\nlock:     requirements.lock sha256 %s, torch %s, Python %s\nmachine:  %s\nwall:     %d min %02d s (exit code %s)\ndate:     %s\n' \
    "$1" "$4" \
    "$(sha256sum requirements.lock | cut -c1-12)" "$(python -c 'import torch; print(torch.__version__)')" \
    "$(python -c 'import platform; print(platform.python_version())')" \
    "$(python -m sweep.machine)" \
    $(($2 / 60)) $(($2 % 60)) "$3" "$(date -u +%Y-%m-%d)"
}

collect() {  # $1 = folder name under docs/results, $2 = a finished sweep folder holding provenance.txt
  local name=$1 dir=$2
  echo "== collect $dir -> $OUT/$name" >&2
  local report; report=$(python -m analysis.report "$dir")
  rm -rf "${OUT:?}/$name" && mkdir -p "$OUT/$name/figures"
  cp -r "$dir/tables" "$OUT/$name/"
  cp "$dir"/figures/*.png "$OUT/$name/figures/"
  cp "$dir/summary.parquet" "$OUT/$name/"
  { cat "$dir/provenance.txt"; echo; echo "$report" | grep -v "^written into"; } > "$OUT/$name/run.txt"
}

sweep() {  # $1 = folder name under docs/results, rest = arguments of sweep.run
  local name=$1; shift
  local cmd="python -m sweep.run $* --results-dir $RUNS --address local"
  echo "== $name: $cmd" >&2
  local log; log=$(mktemp)
  local start=$SECONDS rc=0 at; at=$(commit)
  $cmd 2>&1 | tee "$log" >&2 || rc=$?
  local dir; dir=$(grep -o "resume with: python -m sweep.run --resume [^ ]*" "$log" | head -1 | awk '{print $NF}')
  [ -n "$dir" ] && [ -d "$dir" ] || { echo "no sweep folder in the output of: $cmd" >&2; exit 1; }
  provenance "$cmd" $((SECONDS - start)) "$rc" "$at" > "$dir/provenance.txt"
  rm -f "$log"
  [ "$rc" = 0 ] || { echo "$cmd exited with $rc: not collected; resume with: python -m sweep.run --resume $dir" >&2; exit 1; }
  collect "$name" "$dir"
}

bench() {  # $1 = module name under benchmarks/ (run as python -m benchmarks.NAME), rest = its arguments
  local name=$1; shift
  local cmd="python -m benchmarks.$name $*"
  echo "== $cmd" >&2
  mkdir -p "$OUT/benchmarks"
  local log; log=$(mktemp)
  local start=$SECONDS rc=0 at; at=$(commit)
  $cmd 2>&1 | tee "$log" >&2 || rc=$?
  { provenance "$cmd" $((SECONDS - start)) "$rc" "$at"; echo; cat "$log"; } > "$OUT/benchmarks/$name.txt"
  rm -f "$log"
}

if [ "${1:-}" = collect ]; then collect "$2" "$3"; exit; fi
if [ "${1:-}" = tables ]; then python -m sweep.retable $(dirname "$OUT"/*/tables); exit; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(sensitivity comparison robustness ablation long modern-baselines shrink parity convergence
                                     tuned-comparison benchmarks readme)
for t in "${targets[@]}"; do
  case $t in
    comparison|robustness|modern-baselines) sweep "$t" "$t" --seeds 10 ;;  # the README's rows: the paper's 10 seeds
    sensitivity|ablation|shrink|parity) sweep "$t" "$t" --seeds 3 ;;
    convergence) sweep convergence convergence --scale cpu-xl --seeds 3 ;;
    tuned-comparison) sweep "$t" "$t" ;;  # a searched study: 16 samples per arm, 10 confirmation seeds (its file)
    robustness-long|comparison-long) sweep "$t" "${t%-long}" --scale cpu-long --seeds 3 ;;
    long) for s in robustness comparison; do sweep "$s-long" "$s" --scale cpu-long --seeds 3; done ;;
    benchmarks) bench step_time; bench scaling --part search --threads 2; bench data_throughput ;;
    readme) python -m analysis.paper "$OUT" --header "$OUT/header.md"
            python -m analysis.headline "$OUT" README.md ;;  # the README's Results table, from the verdicts
    *) echo "make.sh: unknown target '$t'; allowed: sensitivity comparison robustness ablation long" \
            "robustness-long comparison-long" \
            "modern-baselines shrink parity convergence tuned-comparison benchmarks readme, or: collect NAME SWEEP_DIR," \
            "or: tables" >&2; exit 2 ;;
  esac
done
du -sh "$OUT"
