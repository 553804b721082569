"""Scaling benchmark: how the codebook update and the nearest-code search grow with K, and how a sweep
grows with concurrent trials.

Run from the repository root:

    python -m benchmarks.scaling                  # default run, ~8 minutes on 2 idle cores
    python -m benchmarks.scaling --quick          # smoke run on 1 thread, about a minute
    python -m benchmarks.scaling --part update --ks 512 65536 131072
    python -m benchmarks.scaling --part sweep --concurrency 1 2 4 8
    python -m benchmarks.scaling --part search --ks 512 16384 65536 --ns 1024 16384

It measures, and prints as tables:

1. Codebook update vs K: `quantizer.update(flat, indices, counts)` alone for
   N = 8192 input vectors of d = 64 (128 images x 8 x 8 latents), indices from the
   nearest-code search, K in --ks (default 512 ... 65536), with EMA-VQ, KSOM hard
   2D and KSOM gaussian 2D (paper form, Eq. 5); tau = 0.1 and the step counter t
   reset to 0 before each call (the widest neighbourhood of a run), as in
   benchmarks/step_time.py (benchmarks/common.py builds both). The released Gaussian form builds the dense K x K matrix
   and is left out.
   - time: median over interleaved blocks (EMA, hard, gaussian, EMA, ...), and the
     ratio to EMA-VQ as the median of the per-round ratios (load that changes more
     slowly than a round cancels);
   - peak memory: each (K, quantiser) runs in a fresh subprocess that builds the
     quantiser and its input, resets the kernel's peak-RSS counter (write "5" to
     /proc/self/clear_refs; this is the counter getrusage(RUSAGE_SELF).ru_maxrss
     reads), reads VmRSS, calls update, and reads the peak VmHWM: the difference is
     the extra memory the update touched. glibc is told to mmap every allocation of
     64 KiB or more (MALLOC_MMAP_THRESHOLD_), so freed memory is given back and
     cannot hide a later allocation. Reported for the first call in the process and
     for a second call (steady state), beside the quantiser's own state (w, m, N)
     and what one dense K x K float32 matrix would take (K^2 * 4 bytes: 17.2 GB at
     K = 65,536), which KSOM never builds. A calibration row measures a fresh
     (K, 64) float32 tensor, whose true size is known.
2. Nearest-code search vs K and n (Eq. 12): `quantizer.nearest(flat)` for n input
   vectors of d = 64 (--ns, default 1024, 8192, 16384) and K in --ks (default 512,
   4096, 16384, 65536), each (K, n) in a fresh subprocess with the same peak-RSS
   probe as part 1: peak MB of the search, peak MB of a whole training-mode forward
   of the quantiser (search + codebook update), and ms per search (median of
   --repeats calls, interleaved with the other search). Beside it, the same for the
   search of one n x K distance matrix (torch.addmm with the bias ||w_k||^2 broadcast to every row, argmin), which
   the quantiser used before it searched in chunks: the memory it needs grows with
   n x K (4.3 GB at n = 16,384, K = 65,536), the chunked search's does not.
3. Sweep throughput vs concurrent trials: the same small study (default
   "sensitivity": 4 EMA-VQ arms of equal cost) at smoke scale with more steps
   (default 3000 steps, validation every 500), 4 trials per concurrent slot
   (rounded up to whole seeds: 4 arms x c seeds), run by the platform's own code path: sweep.run.make_plan + sweep.execute.run_sweep
   with ray.init(address="local", num_cpus=c), max_concurrent=c, 1 CPU per trial, a temporary
   results dir (MLflow store, Ray storage, each trial's end-of-run topography,
   analysis report). For c in
   --concurrency (default 1, 2, 4, ... up to os.cpu_count()). Reported: trials
   per hour over the trial span (first trial start to last trial end, from the
   MLflow runs) and end to end (ray.init + run_sweep, i.e. also the MLflow store,
   Tune start-up and the analysis report), each with its speed-up over c = 1; and
   the slot utilisation = summed training time (the trainer's time/train_total_s) /
   (span x c). Ideal: speed-up = c.
4. Targets, at the largest K: update-only ratio to EMA-VQ <= 2 for each KSOM
   variant (as benchmarks/step_time.py at K = 16384), the largest update peak
   (1st call) at most a tenth of one dense K x K float32 matrix; at the largest
   (K, n) the search's time at most that of the one-matrix search (x 1.1 for
   noise on a shared machine) and its peak at most a tenth of that one matrix.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from analysis.store import read_sweep
from benchmarks.common import EMA, QUANTISERS, by_quantiser, interleaved, print_checks, ratio, update_inputs
import metrics as M
from models.build import build_quantizer
from models.config import TrialConfig

ROOT = Path(__file__).resolve().parents[1]  # the probes run as `python -m benchmarks.scaling` from here

N_VECTORS, CODE_DIM = 8192, 64
KS = (512, 2048, 8192, 32768, 65536)
QUICK_KS = (512, 8192)
SEARCH_KS, SEARCH_NS = (512, 4096, 16384, 65536), (1024, 8192, 16384)
QUICK_SEARCH_NS = (1024, 8192)
SEARCH_TIME_TARGET = 1.1  # chunked / one-matrix search time at the largest (K, n)
CALIBRATION = "calibration"
UPDATE_TARGET, DENSE_SHARE_TARGET = 2.0, 0.1
MB = 1e6
SWEEP_STUDY, SWEEP_SCALE = "sensitivity", "smoke"


# ---------------------------------------------------------------- 1. update vs K


def setup(k: int, name: str) -> tuple:
    """The quantiser and its update's inputs (flat, indices, counts), as benchmarks/step_time.py builds them."""
    flat = torch.randn(N_VECTORS, CODE_DIM, generator=torch.Generator().manual_seed(0))
    quantizer, indices, counts = update_inputs(k, name, flat)
    return quantizer, flat, indices, counts


def bench_updates(ks: list[int], repeats: int, warmup: int) -> dict[int, dict[str, list[float]]]:
    results = {}
    for k in ks:
        runs = {}
        for name in QUANTISERS:
            quantizer, flat, indices, counts = setup(k, name)

            def update(q=quantizer, flat=flat, indices=indices, counts=counts):
                q.set_step(0)
                q.update(flat, indices, counts)

            runs[name] = update
        results[k] = interleaved(runs, repeats, warmup, block_seconds=0.1)
    return results


def _status_kb(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS (Linux >= 4.0)


def probe(k: int, name: str) -> dict:
    """In a fresh process: bytes the update touches beyond what is resident before it (1st and 2nd call)."""
    if name == CALIBRATION:
        def call():
            torch.empty(k, CODE_DIM).fill_(1.0)  # k * 64 * 4 bytes, touched, then freed
        state = 0
    else:
        quantizer, flat, indices, counts = setup(k, name)
        state = sum(b.numel() * b.element_size() for b in quantizer.buffers())

        def call():
            quantizer.set_step(0)
            quantizer.update(flat, indices, counts)
    peaks = []
    for _ in range(2):
        _reset_peak()
        before = _status_kb("VmRSS")
        call()
        peaks.append((_status_kb("VmHWM") - before) * 1024)
    return {"first": peaks[0], "steady": peaks[1], "state": state}


def measure_memory(ks: list[int], threads: int) -> dict[int, dict[str, dict]] | str:
    """probe() for each (K, quantiser) in its own subprocess; a string says why memory is not measured."""
    try:
        _reset_peak()
        _status_kb("VmHWM")
    except (OSError, AttributeError) as e:
        return f"peak memory not measured: needs Linux's /proc/self/clear_refs and status ({e})"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results = {}
    for k in ks:
        results[k] = {}
        for name in (*QUANTISERS, CALIBRATION):
            done = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--probe", str(k), name,
                                   "--threads", str(threads)],
                                  env=env, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                raise RuntimeError(f"memory probe K={k} {name} failed:\n{done.stderr[-2000:]}")
            results[k][name] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def print_updates(times: dict[int, dict[str, list[float]]], memory: dict | str) -> None:
    print(f"1. Codebook update vs K: quantizer.update(flat, indices, counts), N={N_VECTORS} vectors, d={CODE_DIM}, "
          "t=0")
    print("   peak MB = memory the update touches beyond what was resident (fresh process: 1st call / 2nd call;")
    print("   the kernel's RSS counters are batched, so about +-0.3 MB);")
    print("   state MB = w, m, N of the quantiser; dense KxK = one K x K float32 matrix (K^2 * 4 bytes)")
    print(f"{'K':>6}  {'grid':>7}  {'quantiser':<16}  {'update ms':>10}  {'/EMA-VQ':>7}  {'peak MB 1st':>11}  "
          f"{'steady':>8}  {'state MB':>8}  {'dense KxK':>10}")
    for k, grid, name, ts in by_quantiser(times):
        versus = "" if name == EMA else f"{ratio(ts, name):.2f}"
        if isinstance(memory, dict):
            m = memory[k][name]
            mem = f"{m['first'] / MB:>11.1f}  {m['steady'] / MB:>8.1f}  {m['state'] / MB:>8.1f}"
        else:
            mem = f"{'n/a':>11}  {'n/a':>8}  {'n/a':>8}"
        print(f"{k:>6}  {grid:>7}  {name:<16}  {statistics.median(ts[name]) * 1e3:>10.3f}  "
              f"{versus:>7}  {mem}  {_bytes(k * k * 4):>10}")
    if isinstance(memory, dict):
        k = max(memory)
        c = memory[k][CALIBRATION]
        print(f"   calibration: a fresh ({k}, {CODE_DIM}) float32 tensor measures {c['first'] / MB:.2f} MB "
              f"(1st) / {c['steady'] / MB:.2f} MB (2nd); its size is {k * CODE_DIM * 4 / MB:.2f} MB")
    else:
        print(f"   {memory}")
    print()


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


# ---------------------------------------------------------------- 2. nearest-code search


def one_matrix_nearest(weight: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """The search of one n x K distance matrix, for comparison (what the quantiser did before chunking)."""
    return torch.addmm((weight * weight).sum(1), flat, weight.T, alpha=-2.0).argmin(1)


def search_probe(k: int, n: int, repeats: int) -> dict:
    """In a fresh process: peak bytes and seconds of the chunked and the one-matrix search, peak of a forward.
    The times are interleaved (chunked, one matrix, chunked, ...); the ratio is the median of per-round ratios."""
    torch.manual_seed(0)
    quantizer = build_quantizer(TrialConfig(codebook_size=k, code_dim=CODE_DIM)).train()
    flat = torch.randn(n, CODE_DIM, generator=torch.Generator().manual_seed(0))
    searches = {"chunked": lambda: quantizer.nearest(flat),
                "one matrix": lambda: one_matrix_nearest(quantizer.weight, flat)}
    out, indices = {}, {}
    for name, search in searches.items():
        _reset_peak()
        before = _status_kb("VmRSS")
        indices[name] = search()
        out[name] = {"peak": (_status_kb("VmHWM") - before) * 1024}
    assert torch.equal(indices["chunked"], indices["one matrix"]), "the searches disagree"
    times = interleaved(searches, repeats, warmup=1, block_seconds=0.0)
    for name in searches:
        out[name]["seconds"] = statistics.median(times[name])
    out["ratio"] = statistics.median(a / b for a, b in zip(times["chunked"], times["one matrix"]))
    _reset_peak()
    before = _status_kb("VmRSS")
    quantizer(flat)
    out["forward peak"] = (_status_kb("VmHWM") - before) * 1024
    return out


def measure_searches(ks: list[int], ns: list[int], threads: int, repeats: int) -> dict[tuple[int, int], dict]:
    """search_probe() for each (K, n) in subprocesses: the peaks from one where glibc is told to mmap every
    block (as in measure_memory, so that freed memory leaves the RSS), the times from one with the allocator
    as users have it (forced mmaps would charge every tile a fresh page-faulted block)."""
    peaks_env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results = {}
    for k in ks:
        for n in ns:
            peaks = _search_probe(k, n, threads, 1, peaks_env)
            times = _search_probe(k, n, threads, repeats, dict(os.environ))
            for name in ("chunked", "one matrix"):
                times[name]["peak"] = peaks[name]["peak"]
            results[k, n] = {**times, "forward peak": peaks["forward peak"]}
    return results


def _search_probe(k: int, n: int, threads: int, repeats: int, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--probe-search", str(k), str(n),
                           "--threads", str(threads), "--repeats", str(repeats)],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"search probe K={k} n={n} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_searches(results: dict[tuple[int, int], dict], repeats: int) -> None:
    print(f"2. Nearest-code search (Eq. 12), d={CODE_DIM}: quantizer.nearest(flat) (chunked) beside one n x K "
          f"matrix; ms = median of {repeats} interleaved calls, ratio = median of the per-round ratios;")
    print("   peak MB = memory touched beyond what was resident (fresh process); forward = the whole "
          "training-mode forward of the quantiser (search + update)")
    print(f"{'K':>6}  {'n':>6}  {'chunked ms':>10}  {'one-matrix ms':>13}  {'ratio':>5}  {'chunked MB':>10}  "
          f"{'one-matrix MB':>13}  {'forward MB':>10}")
    for (k, n), r in results.items():
        c, m = r["chunked"], r["one matrix"]
        print(f"{k:>6}  {n:>6}  {c['seconds'] * 1e3:>10.1f}  {m['seconds'] * 1e3:>13.1f}  "
              f"{r['ratio']:>5.2f}  {c['peak'] / MB:>10.1f}  {m['peak'] / MB:>13.1f}  "
              f"{r['forward peak'] / MB:>10.1f}")
    print()


# ---------------------------------------------------------------- 3. sweep throughput


def sweep_rate(concurrency: int, trials_per_slot: int, steps: int, eval_every: int, study: str) -> dict:
    """Run one sweep with `concurrency` trials at once through the platform's code path; its timings."""
    import ray
    from mlflow.tracking import MlflowClient

    from sweep.execute import run_sweep
    from sweep.plan import make_plan
    from sweep.study import load_study

    n_arms = len(load_study(study).grid())
    seeds = math.ceil(trials_per_slot * concurrency / n_arms)
    plan = make_plan(study, SWEEP_SCALE, seeds=seeds, overrides={"steps": steps, "eval_every": eval_every})
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "sweep.log"
        try:
            with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                start = time.perf_counter()
                # "local": always a new cluster of our own, never one another process runs on this node
                ray.init(address="local", num_cpus=concurrency, include_dashboard=False, logging_level="WARNING",
                         log_to_driver=False)
                sweep_dir = run_sweep(plan, results_dir=Path(tmp) / "results", max_concurrent=concurrency)
                wall = time.perf_counter() - start
        except BaseException:
            print(f"sweep with concurrency {concurrency} failed; the end of its log:\n"
                  + "\n".join(log.read_text().splitlines()[-40:]), file=sys.stderr)
            raise
        finally:
            if ray.is_initialized():
                ray.shutdown()
        meta = read_sweep(sweep_dir)
        client = MlflowClient(meta.tracking_uri)
        runs = client.search_runs([meta.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{meta.parent_run_id}'")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    span = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1e3
    train_time = sum(r.data.metrics.get(M.TIME_TRAIN_TOTAL, 0.0) for r in finished)
    return {"trials": len(runs), "finished": len(finished), "span": span, "wall": wall, "train_time": train_time}


def bench_sweeps(levels: list[int], trials_per_slot: int, steps: int, eval_every: int,
                 study: str) -> dict[int, dict]:
    results = {}
    for c in levels:
        results[c] = sweep_rate(c, trials_per_slot, steps, eval_every, study)
        r = results[c]
        print(f"   concurrency {c}: {r['finished']}/{r['trials']} trials finished, span {r['span']:.1f} s, "
              f"end to end {r['wall']:.1f} s", flush=True)
    return results


def print_sweeps(results: dict[int, dict], steps: int, eval_every: int, study: str) -> None:
    scale = TrialConfig.from_dict(_smoke_config())
    print(f"3. Sweep throughput: study {study!r} at {SWEEP_SCALE} scale (width {scale.width}, K={scale.codebook_size}, "
          f"d={scale.code_dim}, batch {scale.batch_size}) with {steps} steps, validation every {eval_every}; "
          "1 CPU per trial")
    print(f"{'at once':>7}  {'trials':>6}  {'span s':>7}  {'trials/h':>8}  {'speed-up':>8}  {'end-to-end s':>12}  "
          f"{'trials/h':>8}  {'speed-up':>8}  {'slot use':>8}")
    base = results[min(results)]
    for c, r in results.items():
        rate, rate_wall = 3600 * r["trials"] / r["span"], 3600 * r["trials"] / r["wall"]
        base_rate, base_wall = 3600 * base["trials"] / base["span"], 3600 * base["trials"] / base["wall"]
        print(f"{c:>7}  {r['trials']:>6}  {r['span']:>7.1f}  {rate:>8.0f}  {rate / base_rate:>8.2f}  "
              f"{r['wall']:>12.1f}  {rate_wall:>8.0f}  {rate_wall / base_wall:>8.2f}  "
              f"{r['train_time'] / (r['span'] * c):>8.2f}")
    print("   span = first trial start to last trial end (MLflow runs); end to end = ray.init + run_sweep "
          "(MLflow store, Tune, report); slot use = summed train_time / (span x concurrency); ideal speed-up = c")
    print()


def _smoke_config() -> dict:
    from sweep.scales import SCALES
    return SCALES[SWEEP_SCALE].config


# ---------------------------------------------------------------- report


def print_targets(times: dict[int, dict[str, list[float]]] | None, memory: dict | str | None,
                  searches: dict[tuple[int, int], dict] | None) -> None:
    checks = []
    if times:
        k = max(times)
        checks += [(f"update only {name} / EMA-VQ, K={k}", ratio(times[k], name), UPDATE_TARGET)
                   for name in QUANTISERS if name != EMA]
    if isinstance(memory, dict):
        k = max(memory)
        share = max(memory[k][name]["first"] for name in QUANTISERS) / (k * k * 4)
        checks.append((f"largest update peak / dense KxK bytes, K={k}", share, DENSE_SHARE_TARGET))
    if searches:
        k, n = max(searches)
        c = searches[k, n]["chunked"]
        checks.append((f"search time chunked / one matrix, K={k}, n={n}", searches[k, n]["ratio"],
                       SEARCH_TIME_TARGET))
        checks.append((f"search peak / one n x K matrix's bytes, K={k}, n={n}", c["peak"] / (n * k * 4),
                       DENSE_SHARE_TARGET))
    if not checks:
        return
    print_checks(checks, "4. Targets")


def default_levels() -> list[int]:
    """1, 2, 4, ... up to os.cpu_count(), which is always included."""
    cpus = os.cpu_count() or 1
    return sorted({2 ** i for i in range(int(math.log2(cpus)) + 1)} | {cpus})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int,
                        help=f"torch.set_num_threads in part 1 (default: all cores, {os.cpu_count()}; 1 with --quick, which "
                             "keeps a smoke run steady on a shared machine)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: K in {QUICK_KS}, 3 repeats; sweeps of 150-step trials, >= 2 per slot")
    parser.add_argument("--part", choices=("update", "search", "sweep", "all"), default="all")
    parser.add_argument("--ks", type=int, nargs="+", help=f"codebook sizes (default: {' '.join(map(str, KS))}; "
                                                          f"for the search {' '.join(map(str, SEARCH_KS))})")
    parser.add_argument("--ns", type=int, nargs="+",
                        help=f"vectors per search (default: {' '.join(map(str, SEARCH_NS))})")
    parser.add_argument("--repeats", type=int, help="timed blocks per quantiser (default: 15, or 3 with --quick)")
    parser.add_argument("--concurrency", type=int, nargs="+",
                        help=f"concurrent trials to try (default: {' '.join(map(str, default_levels()))})")
    parser.add_argument("--study", default=SWEEP_STUDY, help="study whose arms the sweeps run (default %(default)s)")
    parser.add_argument("--steps", type=int, help="training steps per trial (default: 3000, or 150 with --quick)")
    parser.add_argument("--eval-every", type=int, help="validation interval (default: 500, or 50 with --quick)")
    parser.add_argument("--trials-per-slot", type=int,
                        help="trials per concurrent slot, rounded up to whole seeds of the study's arms "
                             "(default: 4, or 2 with --quick)")
    parser.add_argument("--probe", nargs=2, metavar=("K", "QUANTISER"), help=argparse.SUPPRESS)  # internal
    parser.add_argument("--probe-search", nargs=2, type=int, metavar=("K", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.threads = args.threads or (1 if args.quick else os.cpu_count())
    torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(probe(int(args.probe[0]), args.probe[1])))
        return
    repeats = args.repeats or (3 if args.quick else 15)
    if args.probe_search:
        print(json.dumps(search_probe(*args.probe_search, repeats)))
        return
    warmup = 1 if args.quick else 3
    ks = args.ks or list(QUICK_KS if args.quick else KS)
    levels = args.concurrency or default_levels()
    steps = args.steps or (150 if args.quick else 3000)
    eval_every = args.eval_every or (50 if args.quick else 500)
    per_slot = args.trials_per_slot or (2 if args.quick else 4)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; update time: median of {repeats} interleaved blocks "
          f"after {warmup} warm-up calls\n")
    start = time.perf_counter()
    times = memory = searches = None
    if args.part in ("update", "all"):
        times = bench_updates(ks, repeats, warmup)
        memory = measure_memory(ks, args.threads)
        print_updates(times, memory)
    if args.part in ("search", "all"):
        search_repeats = min(repeats, 5)
        searches = measure_searches(args.ks or list(QUICK_KS if args.quick else SEARCH_KS),
                                    args.ns or list(QUICK_SEARCH_NS if args.quick else SEARCH_NS), args.threads,
                                    search_repeats)
        print_searches(searches, search_repeats)
    if args.part in ("sweep", "all"):
        print(f"running sweeps at concurrency {', '.join(map(str, levels))} ...", flush=True)
        try:
            sweeps = bench_sweeps(levels, per_slot, steps, eval_every, args.study)
        except Exception:
            traceback.print_exc()
            sys.exit(1)
        print()
        print_sweeps(sweeps, steps, eval_every, args.study)
    print_targets(times, memory, searches)
    print(f"\ntotal time {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
