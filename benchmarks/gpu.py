"""The device check: what one GPU does with this platform, measured in about five minutes.

Run from the repository root:

    python -m benchmarks.gpu                  # on a GPU: every figure below (about 5 min on one H200)
    python -m benchmarks.gpu --paper-steps    # the paper's training length once (a later GPU session)
    python -m benchmarks.gpu --fusion         # trial fusion: equivalence and trials per GPU-hour (about 6 min)
    python -m benchmarks.gpu --out FILE       # append elsewhere (default docs/results/benchmarks/gpu.txt)

On a GPU each line is printed and appended to the output file as soon as it is measured, most important
first, so a run cut short keeps what it measured; each part has a time box, and a part that reaches it
stops, says so, and hands over to the next. The parts:

1. The quantiser on the GPU against the CPU on the same inputs: EMA-VQ, KSOM hard 2D and KSOM Gaussian
   2D (paper form), K = 512, d = 64, 5 training steps of 16,384 vectors (batch 256 x 8 x 8 latents)
   from the same initial codebook: codes picked differently, and the largest codebook difference.
2. The paper-scale CIFAR VQ-VAE training step (width 128, batch 256, K = 512, EMA-VQ; models/train.py's
   own step and per-step bookkeeping on a fixed batch) in ms: fp32, bf16, channels-last, both
   (TrialConfig precision / channels_last), each with its peak memory and host syncs per step
   (torch.cuda.set_sync_debug_mode); then the fastest of them under torch.compile, in a process of its
   own, with its compile time stated separately.
3. Packing: 1, 2, 4 and 8 paper-scale trials (EMA-VQ on the photos, --packing-steps steps each, one
   validation) sharing the GPU, each with 1 / n of it. Through a real Ray Tune sweep (sweep.execute,
   fractional GPUs) where Ray and MLflow are installed, else as n trainer processes (models.train.train)
   started together. Reported: each trial's seconds per step, paper-length (30,000-step) trials per
   GPU-hour, the GPU's memory per trial (nvidia-smi), and the packing to use: the fewest trials per GPU
   within 5 % of the best rate.
4. A VQ-VAE-2 step at 256 px (batch 128, the paper's VQ-VAE-2 settings) fed by the image-folder loader
   (models/data/loader.py) from a folder of generated JPEGs (500 x 375, as ImageNet's): images/s with 4, 8
   and 15 loader processes against the same step on a batch already on the GPU; the loader keeps up
   when it reaches 90 % of that.
5. The KSOM / EMA-VQ step ratio on the GPU at K = 512 and K = 16,384 (KSOM hard and Gaussian 2D;
   alternating blocks of steps, median of the per-round ratios).

Lines "figure: NAME = VALUE" are what sweep/scales.py reads (the newest of each name): trials_per_gpu
and paper_step_seconds (one trial's wall seconds per step at that packing, validation included).

`--paper-steps` runs the comparison study's EMA-VQ and KSOM hard 2D arms on the photos at the paper's
length (30,000 steps x batch 256), two seeds each, as many at once as gpu.txt's trials_per_gpu, and
writes trials/metrics/summary Parquet files and the study's tables under docs/results/paper-steps/, with
what it printed in run.txt; each trial's validations also go to reports.jsonl as they happen (one line
[run, step, metrics] each), so a run cut short keeps them.

`--fusion` measures trial fusion instead (benchmarks/fusion.py): a pack equal to its trials apart, and
paper-length trials per GPU-hour for one trial alone, 8 processes and fused packs; about 6 minutes.

Without a GPU every mode prints what it would run (the first also the CPU figures it can measure in
seconds), writes nothing and exits 4: nothing measured.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

import metrics as M
from benchmarks import fusion
from benchmarks.common import EMA, QUANTISERS, ratio
from models.build import build_quantizer
from models.config import TrialConfig
from models.train import Pack, Window, default_device, place_model, train, train_step
from sweep.plan import Plan, make_plan
from sweep.scales import GPU_RESULTS, SCALES, gpu_figures
from sweep.study import Study, load_study

ROOT = Path(__file__).resolve().parents[1]
PAPER = TrialConfig.from_dict({**SCALES["paper"].config, "dataset": "photos"})  # CIFAR needs a download
PAPER_VQVAE2 = TrialConfig.from_dict({**PAPER.to_params(), **SCALES["paper"].datasets["imagefolder"][0]})
VARIANTS = {"fp32": {}, "bf16": dict(precision="bf16"), "channels-last": dict(channels_last=True),
            "bf16 + channels-last": dict(precision="bf16", channels_last=True)}
PACKING = (1, 2, 4, 8)
PACKING_SLACK = 0.05  # the fewest trials per GPU within 5 % of the best rate
LOADER_WORKERS = (4, 8, 15)
KEEPS_UP = 0.9
RATIO_KS = (512, 16_384)
NOTHING_MEASURED = 4  # the exit status without a GPU (docs/operations.md)
BOXES = {"quantiser": 40, "steps": 40, "compile": 120, "packing": 180, "vqvae2": 60, "ratio": 40}  # seconds


class Log:
    """Prints each line and appends it to `path` at once (None: print only)."""

    def __init__(self, path: Path | None):
        self.path = path
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")

    def figure(self, name: str, value: float, what: str) -> None:
        """A figure sweep/scales.py reads (gpu_figures)."""
        self(f"figure: {name} = {value:.6g}  ({what})")


class Box:
    """A part's time box."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- 1. quantiser: GPU against CPU


def quantiser_vs_cpu(name: str, device: torch.device, k: int = 512, n: int = 16_384, steps: int = 5):
    """(codes picked differently, vectors, largest |w_device - w_cpu|, largest |w_cpu|) after `steps`
    training steps of quantiser `name` on the CPU and on `device` from the same codebook and inputs."""
    torch.manual_seed(0)
    cpu = build_quantizer(TrialConfig(codebook_size=k, code_dim=64, **QUANTISERS[name])).train()
    other = copy.deepcopy(cpu).to(device)
    generator = torch.Generator().manual_seed(1)
    differ = 0
    for _ in range(steps):
        x = torch.randn(n, 64, generator=generator)
        differ += int((cpu(x).indices != other(x.to(device)).indices.cpu()).sum())
    return differ, n * steps, float((cpu.weight - other.weight.cpu()).abs().max()), float(cpu.weight.abs().max())


def part_quantiser(log: Log, device: torch.device, box: Box) -> None:
    log("1. Quantiser on the GPU vs the CPU: K=512, d=64, 5 training steps of 16,384 vectors, same start")
    for name in QUANTISERS:
        if box.left() <= 0:
            log("   time box reached: the remaining quantisers are not compared")
            return
        differ, total, diff, scale = quantiser_vs_cpu(name, device)
        log(f"   {name:<16}  codes picked differently: {differ} of {total}; largest codebook difference "
            f"{diff:.2e} (largest |w| {scale:.2f})")
    log()


# ---------------------------------------------------------------- 2. the training step


def trainer_step(cfg: TrialConfig, device: torch.device, compiled: bool = False):
    """models/train.py's step with its per-step bookkeeping (Window) on one fixed batch of cfg's shape."""
    torch.manual_seed(cfg.seed)
    model, memory_format = place_model(cfg, device)
    net = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    window = Window(0, 1, device)
    pack = dataclasses.replace(Pack.of([model], [optimizer], [cfg]), net=net)

    def step():
        losses, out = train_step(pack, x)
        window.add(losses, out.levels)

    return step


def seconds_per_step(step, device: torch.device, steps: int = 20, rounds: int = 3, warmup: int = 3) -> float:
    """Median over `rounds` blocks of `steps` steps (each block ends with a device sync), after `warmup`."""
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def host_syncs(step, device: torch.device) -> int:
    """How many times one step waits for the GPU (torch.cuda.set_sync_debug_mode's warnings)."""
    if device.type != "cuda":
        return 0
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def measure_variant(cfg: TrialConfig, device: torch.device) -> dict:
    """ms per step, peak memory (MB) and host syncs per step of cfg's training step."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = trainer_step(cfg, device)
    seconds = seconds_per_step(step, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan
    return {"ms": seconds * 1e3, "peak_mb": peak, "syncs": host_syncs(step, device)}


def compile_probe(params: dict) -> dict:
    """(In a process of its own) the config's step under torch.compile: seconds of the first two steps
    (the compilation) and ms per step after them."""
    cfg, device = TrialConfig.from_dict(params), default_device()
    step = trainer_step(cfg, device, compiled=True)
    start = time.perf_counter()
    for _ in range(2):  # the first step compiles; the second can recompile (optimizer state now exists)
        step()
    sync(device)
    first = time.perf_counter() - start
    return {"first_s": first, "ms": seconds_per_step(step, device, warmup=1) * 1e3}


def part_steps(log: Log, device: torch.device, box: Box, compile_box: Box) -> dict:
    """Returns the fields of the fastest variant (for parts 3-5)."""
    log(f"2. Paper-scale CIFAR VQ-VAE training step (width {PAPER.width}, batch {PAPER.batch_size}, "
        f"K={PAPER.codebook_size}, EMA-VQ), models/train.py's step on a fixed batch")
    log(f"   {'variant':<22}  {'ms/step':>8}  {'images/s':>9}  {'vs fp32':>7}  {'peak MB':>8}  {'host syncs/step':>15}")
    results = {}
    for name, fields in VARIANTS.items():
        if box.left() <= 0:
            log("   time box reached: the remaining variants are not measured")
            break
        r = results[name] = measure_variant(PAPER.replace(**fields), device)
        log(f"   {name:<22}  {r['ms']:>8.2f}  {PAPER.batch_size / r['ms'] * 1e3:>9.0f}  "
            f"{results['fp32']['ms'] / r['ms']:>6.2f}x  {r['peak_mb']:>8.0f}  {r['syncs']:>15d}")
    best = min(results, key=lambda name: results[name]["ms"])
    log.figure("paper_step_ms_alone", results[best]["ms"], f"{best}, one trial alone on the GPU")
    probe = run_probe(["--compile-probe", json.dumps(PAPER.replace(**VARIANTS[best]).to_params())], compile_box)
    if "error" in probe:
        log(f"   torch.compile ({best}): {probe['error']}")
    else:
        log(f"   torch.compile ({best}): {probe['ms']:.2f} ms/step ({results[best]['ms'] / probe['ms']:.2f}x "
            f"eager); compiling took {probe['first_s']:.0f} s (the first two steps)")
    log()
    return VARIANTS[best]


def error_line(stderr: str) -> str:
    """The line of a subprocess's stderr that names its exception (the last 'SomethingError: ...' line), not
    the hints that frameworks print after it; else its last line."""
    lines = [line.strip() for line in stderr.strip().splitlines()] or ["no output"]
    named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", line)]
    return (named or lines)[-1][:300]


def run_probe(args: list[str], box: Box) -> dict:
    """A `python -m benchmarks.gpu` subprocess that prints one JSON line; {"error": ...} on failure."""
    try:
        done = subprocess.run([sys.executable, "-m", "benchmarks.gpu", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=max(1.0, box.left()))
    except subprocess.TimeoutExpired:
        return {"error": "time box reached before it finished"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"failed (exit {done.returncode}): {error_line(done.stderr)}"}
    return json.loads(lines[-1])


# ---------------------------------------------------------------- 3. packing trials on one GPU


def packing_plan(n: int, steps: int, fields: dict) -> Plan:
    """n EMA-VQ trials (seeds 0..n-1) at paper scale on the photos, `steps` steps, 1/n GPU each."""
    study = Study(name="gpu-packing", description=f"{n} paper-scale EMA-VQ trials sharing one GPU",
                  arms=[{"neighbours": "none"}])
    return make_plan(study, "paper", seeds=n, overrides={"dataset": "photos", "steps": steps, "eval_every": steps,
                                                         **fields}, cpus=1, gpus=1 / n)


class GpuMemory:
    """The largest memory.used (MB) nvidia-smi reports while it runs (None without nvidia-smi)."""

    def __enter__(self):
        self.peak, self.base, self.stop = None, self.read(), threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @staticmethod
    def read() -> float | None:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout.split()
            return float(out[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def poll(self) -> None:
        while not self.stop.wait(0.5):
            used = self.read()
            if used is not None:
                self.peak = used if self.peak is None else max(self.peak, used)


def trial_main(params: dict, reports_file: str | None) -> dict:
    """(In a process of its own) one trial through models.train.train; its times and peak memory, and each
    validation's metrics appended to `reports_file` as it happens: a JSON line [run name, step, metrics]
    (one short write per line in append mode, so trials sharing the file do not mix their lines)."""
    cfg, device = TrialConfig.from_dict(params), default_device()
    torch.set_num_threads(1)  # the trial's 1 CPU (Ray sets the same for a 1-CPU trial)
    reports = []

    def report(progress):
        reports.append([progress.step, progress.metrics])
        if reports_file:
            with open(reports_file, "a") as f:
                f.write(json.dumps([run_name(cfg), *reports[-1]]) + "\n")

    result = train(cfg, report=report, device=device)
    last = reports[-1][1] if reports else {}
    return {"status": result.status, "steps": result.step, "reports": reports,
            "train_s": last.get(M.TIME_TRAIN_TOTAL, math.nan), "val_s": last.get(M.TIME_VAL_TOTAL, math.nan),
            "peak_mb": torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else math.nan}


def run_trials(configs: list[TrialConfig], at_once: int, box: Box, reports: Path | None = None) -> list[dict]:
    """Each config as a trainer process (`--trial`), `at_once` at a time; their results in order
    ({"error": ...} for one that failed or ran past the box)."""
    pending, running, results = list(enumerate(configs)), {}, [None] * len(configs)
    while pending or running:
        while pending and len(running) < at_once:
            i, cfg = pending.pop(0)
            args = [sys.executable, "-m", "benchmarks.gpu", "--trial", json.dumps(cfg.to_params())]
            if reports:
                args += ["--reports", str(reports)]
            # Output into files, not pipes: a trial's warnings could fill a pipe nobody reads until it ends.
            out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
            running[i] = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=err, text=True), out, err
        for i, (proc, out, err) in list(running.items()):
            if proc.poll() is None and box.left() > 0:
                continue
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            out.seek(0), err.seek(0)
            lines, errors = out.read().strip().splitlines(), err.read().strip().splitlines()
            results[i] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
                "error": (errors or [f"exit {proc.returncode}"])[-1]}
            out.close(), err.close()
            del running[i]
        time.sleep(0.2)
    return results


def sweep_trials(plan: Plan, at_once: int, box: Box) -> list[dict]:
    """The plan's trials through a real Ray Tune sweep (sweep.execute.run_sweep, fractional GPUs) on a
    local Ray cluster with this GPU; each trial's times from its MLflow run."""
    import contextlib

    import ray
    from mlflow.tracking import MlflowClient

    from analysis.store import read_sweep
    from sweep.execute import run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        with open(Path(tmp) / "sweep.log", "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=1, include_dashboard=False,
                     logging_level="WARNING", log_to_driver=False)
            try:
                sweep_dir = run_sweep(plan, results_dir=Path(tmp) / "results", max_concurrent=at_once)
            finally:
                ray.shutdown()
        meta = read_sweep(sweep_dir)
        runs = MlflowClient(meta.tracking_uri).search_runs(
            [meta.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{meta.parent_run_id}'")
    return [{"status": r.data.tags.get(M.STATUS_TAG), "steps": plan.trials()[0].steps, "peak_mb": math.nan,
             "train_s": r.data.metrics.get(M.TIME_TRAIN_TOTAL, math.nan),
             "val_s": r.data.metrics.get(M.TIME_VAL_TOTAL, math.nan)} for r in runs]


def ray_available() -> bool:
    try:
        import mlflow  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def paper_trial_seconds(trial: dict) -> float:
    """Wall seconds of one paper-length trial from a short one: its training seconds per step x 30,000
    plus one validation (the short trial's only one, with the end-of-trial topography: an upper bound)
    per eval_every."""
    paper = SCALES["paper"].config
    return paper["steps"] * trial["train_s"] / trial["steps"] + paper["steps"] // paper["eval_every"] * trial["val_s"]


def recommend(rates: dict[int, float]) -> int:
    """The fewest trials per GPU whose trials-per-hour is within PACKING_SLACK of the best."""
    best = max(rates.values())
    return min(n for n, rate in rates.items() if rate >= (1 - PACKING_SLACK) * best)


def part_packing(log: Log, box: Box, steps: int, fields: dict, levels=PACKING) -> None:
    via_ray = ray_available()
    log(f"3. Packing: n paper-scale EMA-VQ trials on the photos ({steps} steps, one validation) sharing the GPU, "
        f"1/n GPU each, "
        f"{'through a Ray Tune sweep' if via_ray else 'as n trainer processes (Ray/MLflow not installed)'}"
        f"; fields {fields or 'fp32'}")
    log(f"   {'n':>2}  {'s/step/trial':>12}  {'paper trials/GPU-h':>18}  {'GPU MB/trial':>12}  {'torch MB/trial':>14}")
    rates, per_step = {}, {}
    for n in levels:
        if box.left() <= 0:
            log(f"   time box reached: n = {n} and beyond not measured")
            break
        plan = packing_plan(n, steps, fields)
        with GpuMemory() as memory:
            try:
                trials = sweep_trials(plan, n, box) if via_ray else run_trials(plan.trials(), n, box)
            except Exception as e:  # Ray or MLflow failed to start: the trainer processes measure the same
                log(f"   the Ray Tune sweep failed ({type(e).__name__}: {e}); trainer processes from here on")
                via_ray, trials = False, run_trials(plan.trials(), n, box)
        done = [t for t in trials if t.get("status") == M.FINISHED]
        if len(done) < n:
            errors = sorted({t.get("error", t.get("status", "?")) for t in trials if t not in done})
            log(f"   {n:>2}  only {len(done)} of {n} trials finished: {'; '.join(errors)}")
            break
        seconds = statistics.mean(paper_trial_seconds(t) for t in done)
        rates[n], per_step[n] = n * 3600 / seconds, seconds / SCALES["paper"].config["steps"]
        gpu_mb = (memory.peak - memory.base) / n if memory.peak is not None and memory.base is not None else math.nan
        torch_mb = statistics.mean(t["peak_mb"] for t in done)
        log(f"   {n:>2}  {statistics.mean(t['train_s'] / t['steps'] for t in done):>12.4f}  {rates[n]:>18.1f}  "
            f"{gpu_mb:>12.0f}  {torch_mb:>14.0f}")
    if rates:
        n = recommend(rates)
        log(f"   recommended: {n} trials per GPU (--gpus-per-trial {1 / n:g}): {rates[n]:.1f} paper-length trials "
            f"per GPU-hour, the fewest within {PACKING_SLACK:.0%} of the best measured")
        log.figure("trials_per_gpu", n, "paper-scale CIFAR VQ-VAE trials sharing one GPU")
        log.figure("paper_step_seconds", per_step[n], f"one trial's wall seconds per step, {n} per GPU, "
                                                      "validation included")
    log()


# ---------------------------------------------------------------- 4. VQ-VAE-2 with the image-folder loader


def part_vqvae2(log: Log, device: torch.device, box: Box, fields: dict, images: int = 512, steps: int = 15) -> None:
    from benchmarks.data_throughput import write_jpegs
    from models.data import load_image_folder
    from models.data.loader import image_batches

    cfg = PAPER_VQVAE2.replace(**fields)
    log(f"4. VQ-VAE-2 step at {cfg.image_size} px (batch {cfg.batch_size}, width {cfg.width}, K={cfg.codebook_size}; "
        f"{fields or 'fp32'}) fed by the image-folder loader from {images} generated JPEGs")
    gpu_rate = cfg.batch_size / seconds_per_step(trainer_step(cfg, device), device, steps=steps, rounds=1)
    log(f"   batch already on the GPU: {gpu_rate:.0f} images/s")
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), images)
        data = load_image_folder(tmp, cfg.image_size)
        for workers in LOADER_WORKERS:
            if box.left() <= 0:
                log("   time box reached: no more loader settings measured")
                break
            torch.manual_seed(cfg.seed)
            model, memory_format = place_model(cfg, device)
            pack = Pack.of([model], [torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)], [cfg])
            batches = image_batches(data.train, cfg.batch_size, cfg.seed, workers=workers,
                                    pin_memory=device.type == "cuda")

            def step():  # as models/train.py's loop
                x = data.normalise(next(batches).to(device, non_blocking=True))
                train_step(pack, x.contiguous(memory_format=memory_format))

            rate = cfg.batch_size / seconds_per_step(step, device, steps=steps, rounds=1)
            del batches  # stops the loader processes
            verdict = "keeps up" if rate >= KEEPS_UP * gpu_rate else "does NOT keep up"
            log(f"   {workers:>2} loader processes: {rate:.0f} images/s ({rate / gpu_rate:.0%} of the GPU's): "
                f"{verdict}")
    log()


# ---------------------------------------------------------------- 5. KSOM / EMA-VQ on the GPU


def step_ratios(k: int, device: torch.device, fields: dict, rounds: int = 5, steps: int = 10) -> dict[str, float]:
    """Median over `rounds` of (KSOM step time / EMA-VQ step time) at paper scale with K = k."""
    runs = {name: trainer_step(PAPER.replace(codebook_size=k, **q, **fields), device) for name, q in QUANTISERS.items()}
    for step in runs.values():
        seconds_per_step(step, device, steps=1, rounds=1)  # warm-up
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, step in runs.items():
            times[name].append(seconds_per_step(step, device, steps=steps, rounds=1, warmup=0))
    ratios = {name: ratio(times, name) for name in runs if name != EMA}
    return ratios | {"EMA-VQ ms": statistics.median(times[EMA]) * 1e3}


def part_ratio(log: Log, device: torch.device, box: Box, fields: dict) -> None:
    log(f"5. KSOM / EMA-VQ training-step ratio at paper scale ({fields or 'fp32'})")
    for k in RATIO_KS:
        if box.left() <= 0:
            log(f"   time box reached: K={k} not measured")
            break
        r = step_ratios(k, device, fields)
        log(f"   K={k:>6}: EMA-VQ {r.pop('EMA-VQ ms'):.2f} ms/step; "
            + "; ".join(f"{name} / EMA-VQ {value:.3f}" for name, value in r.items()))
    log()


# ---------------------------------------------------------------- without a GPU


def cpu_figures() -> None:
    """What a machine without a GPU measures in seconds (1 thread): part 1's quantiser steps on the CPU,
    and the cpu scale's training step with and without channels-last."""
    device = torch.device("cpu")
    torch.set_num_threads(1)
    print("CPU figures (this machine, 1 thread):")
    x = torch.randn(16_384, 64, generator=torch.Generator().manual_seed(1))
    for name in QUANTISERS:
        q = build_quantizer(TrialConfig(codebook_size=512, code_dim=64, **QUANTISERS[name])).train()
        print(f"   {name:<16}  {seconds_per_step(lambda: q(x), device, steps=2, rounds=1, warmup=1) * 1e3:7.1f} ms "
              "per training step of 16,384 vectors, K=512")
    cpu = TrialConfig.from_dict(SCALES["cpu"].config)
    times = {name: seconds_per_step(trainer_step(cpu.replace(**fields), device), device, steps=2, rounds=1, warmup=1)
             for name, fields in VARIANTS.items() if "precision" not in fields}
    print(f"   cpu-scale step (width {cpu.width}, batch {cpu.batch_size}): "
          + ", ".join(f"{name} {t * 1e3:.1f} ms" for name, t in times.items()))


def plan_text(steps: int) -> str:
    figures = gpu_figures()
    measured = (f"{figures['trials_per_gpu'].value:g} (measured on {figures['trials_per_gpu'].device})"
                if "trials_per_gpu" in figures else f"{1 / SCALES['paper'].gpus:g} (the arithmetic estimate)")
    return "\n".join([
        "On a GPU this check would run, appending each line to " + str(GPU_RESULTS.relative_to(ROOT)) + ":",
        "  1. the quantiser (EMA-VQ, KSOM hard / Gaussian 2D) on the GPU vs the CPU: 5 steps, K=512",
        f"  2. the paper-scale step (width {PAPER.width}, batch {PAPER.batch_size}, K={PAPER.codebook_size}): "
        f"{', '.join(VARIANTS)}, and torch.compile",
        f"  3. {', '.join(map(str, PACKING))} paper-scale trials of {steps} steps sharing the GPU "
        f"({'Ray Tune sweep' if ray_available() else 'trainer processes'}): trials per GPU-hour, memory, packing",
        f"  4. a VQ-VAE-2 step at 256 px fed by the image-folder loader with {', '.join(map(str, LOADER_WORKERS))} "
        "processes",
        f"  5. the KSOM / EMA-VQ step ratio at K = {', '.join(map(str, RATIO_KS))}",
        f"Trials per GPU used by the paper scale now: {measured}.",
    ])


# ---------------------------------------------------------------- --paper-steps


def paper_steps_plan(trials_per_gpu: float, scale: str = "paper", overrides: dict | None = None) -> Plan:
    """The comparison study's EMA-VQ and KSOM hard 2D arms at `scale` (the paper's) on the photos, two seeds."""
    study = load_study("comparison")
    study = dataclasses.replace(study, arms=[a for a in study.arms if a["neighbours"] in ("none", "hard")], labels=[])
    return make_plan(study, scale, seeds=2, overrides={"dataset": "photos", **(overrides or {})},
                     gpus=1 / trials_per_gpu)


def run_name(cfg: TrialConfig) -> str:
    return f"{cfg.rule} seed={cfg.seed}".replace(" ", "_")


def paper_steps(log: Log, device: torch.device, out_dir: Path) -> int:
    figures = gpu_figures()
    at_once = int(figures["trials_per_gpu"].value) if "trials_per_gpu" in figures else round(1 / SCALES["paper"].gpus)
    plan = paper_steps_plan(at_once)
    configs = plan.trials()
    per_step = figures["paper_step_seconds"].value if "paper_step_seconds" in figures else math.nan
    waves = math.ceil(len(configs) / at_once)
    cfg = configs[0]
    log(f"paper length: comparison study, EMA-VQ and KSOM hard 2D on the photos, {cfg.steps} steps x batch "
        f"{cfg.batch_size}, seeds 0-1: {len(configs)} trials, {at_once} at a time on one GPU; expected "
        + (f"{waves * cfg.steps * per_step / 60:.0f} min (gpu.txt: {per_step:.4f} s per step)" if per_step == per_step
           else "time unknown (no paper_step_seconds in gpu.txt yet)"))
    if device.type != "cuda":
        log("no GPU here: nothing run. On a GPU it writes " + str(out_dir.relative_to(ROOT)) + "/")
        return NOTHING_MEASURED
    out_dir.mkdir(parents=True, exist_ok=True)
    results = run_trials(configs, at_once, Box(math.inf), out_dir / "reports.jsonl")
    write_tables(plan, configs, results, out_dir, log)
    return 0 if all(r.get("status") in (M.FINISHED, M.DIVERGED) for r in results) else 1


def frames(plan: Plan, configs: list[TrialConfig], results: list[dict]):
    """The analysis's (trials, metrics) frames (analysis/load.py's layout) of trials run outside MLflow."""
    import pandas as pd

    trials, points = [], []
    for cfg, result in zip(configs, results):
        name = run_name(cfg)
        trials.append({"run_id": name, "run_name": name, M.STATUS_TAG: result.get("status", M.FAILED),
                       M.STUDY_TAG: plan.study, M.SCALE_TAG: plan.scale, M.RULE_TAG: cfg.rule, M.ARM_TAG: "",
                       M.TOPOGRAPHY_TAG: "",
                       **cfg.to_params()})
        for step, metrics in result.get("reports", []):
            points += [(name, k, M.SUMMARY_STEP if M.is_summary(k) else step, v) for k, v in metrics.items()]
    return pd.DataFrame(trials), pd.DataFrame(points, columns=["run_id", "metric", "step", "value"])


def write_tables(plan: Plan, configs: list[TrialConfig], results: list[dict], out_dir: Path, log: Log) -> None:
    """trials/metrics/summary Parquet files (analysis/load.py's names) and the study's main table (.md,
    .txt) in out_dir. Neither MLflow nor analysis.report (which imports it) is needed: GPU machines may lack it."""
    from analysis.summary import summarise
    from analysis.tables import Layout, table_numbers, to_markdown, to_text

    trials, metrics = frames(plan, configs, results)
    trials.to_parquet(out_dir / "trials.parquet", index=False)
    metrics.to_parquet(out_dir / "metrics.parquet", index=False)
    summary = summarise(trials, metrics)
    summary.to_parquet(out_dir / "summary.parquet", index=False)
    layout = Layout.from_plan(plan)
    tidy = table_numbers(summary, layout)
    (out_dir / "comparison.md").write_text(to_markdown(tidy, summary, layout) + "\n")
    text = to_text(tidy, summary, layout)
    (out_dir / "comparison.txt").write_text(text + "\n")
    log(text)


# ---------------------------------------------------------------- --fusion


def fusion_processes(base: TrialConfig, box: Box, steps: int) -> float | None:
    """Paper-length trials per GPU-hour of 8 trainer processes at `base` (EMA-VQ, seeds 0-7, `steps` steps and one
    validation each) sharing the GPU; None unless all finished."""
    trials = run_trials([base.replace(seed=i, steps=steps, eval_every=steps) for i in range(fusion.PROCESSES)],
                        fusion.PROCESSES, box)
    if any(t.get("status") != M.FINISHED for t in trials):
        return None
    return len(trials) * 3600 / statistics.mean(paper_trial_seconds(t) for t in trials)


def run_fusion(log: Log, device: torch.device, steps: int) -> int:
    start = time.perf_counter()
    header(log, device)
    failed = fusion.run(log, PAPER, device, Box, lambda base, box: fusion_processes(base, box, steps))
    log(f"total {time.perf_counter() - start:.0f} s" + (f"; parts {', '.join(failed)} failed" if failed else ""))
    log()
    return 1 if failed else 0


# ---------------------------------------------------------------- main


def header(log: Log, device: torch.device) -> None:
    try:  # a copy of the working tree on a lent machine may have neither git nor .git
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    log(f"## device check {when}: {torch.cuda.get_device_name(device)} (torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, commit {commit}, {os.cpu_count()} CPUs)")
    log(f"command: python -m benchmarks.gpu {' '.join(sys.argv[1:])}".rstrip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=GPU_RESULTS, help="file the figures are appended to")
    p.add_argument("--paper-steps", action="store_true", help="run the paper's training length once instead")
    p.add_argument("--fusion", action="store_true",
                   help="measure trial fusion instead (benchmarks/fusion.py: equivalence and trials per GPU-hour)")
    p.add_argument("--paper-steps-dir", type=Path, default=ROOT / "docs/results/paper-steps")
    p.add_argument("--packing-steps", type=int, default=200, help="steps of each packing trial (default 200)")
    p.add_argument("--trial", help=argparse.SUPPRESS)  # internal: one trial's config (JSON), in its own process
    p.add_argument("--reports", help=argparse.SUPPRESS)
    p.add_argument("--compile-probe", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.trial:
        print(json.dumps(trial_main(json.loads(args.trial), args.reports)))
        return 0
    if args.compile_probe:
        print(json.dumps(compile_probe(json.loads(args.compile_probe))))
        return 0
    device = default_device()
    if device.type != "cuda":
        print("no GPU here (torch.cuda.is_available() is False): nothing measured on a GPU, nothing written.")
        if args.paper_steps:
            paper_steps(Log(None), device, args.paper_steps_dir.resolve())
        elif args.fusion:
            print(fusion.plan_text(PAPER))
        else:
            print(plan_text(args.packing_steps))
            cpu_figures()
        print(f"nothing measured (exit {NOTHING_MEASURED}): this check needs a CUDA GPU", file=sys.stderr)
        return NOTHING_MEASURED
    if args.paper_steps:
        out_dir = args.paper_steps_dir.resolve()
        log = Log(out_dir / "run.txt")
        header(log, device)
        return paper_steps(log, device, out_dir)
    if args.fusion:
        return run_fusion(Log(args.out), device, args.packing_steps)
    start = time.perf_counter()
    log = Log(args.out)
    header(log, device)
    fields, failed = {}, []
    parts = [("1", lambda: part_quantiser(log, device, Box(BOXES["quantiser"]))),
             ("2", lambda: part_steps(log, device, Box(BOXES["steps"]), Box(BOXES["compile"]))),
             ("3", lambda: part_packing(log, Box(BOXES["packing"]), args.packing_steps, fields)),
             ("4", lambda: part_vqvae2(log, device, Box(BOXES["vqvae2"]), fields)),
             ("5", lambda: part_ratio(log, device, Box(BOXES["ratio"]), fields))]
    for number, part in parts:
        try:  # a part that fails says so and the next runs: one GPU session may be all there is
            result = part()
        except Exception as e:
            log(f"   part {number} FAILED: {type(e).__name__}: {e}")
            log()
            failed.append(number)
            continue
        if number == "2":
            fields.update(result)  # parts 3-5 run the fastest variant
    log(f"total {time.perf_counter() - start:.0f} s" + (f"; parts {', '.join(failed)} failed" if failed else ""))
    log()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
