"""Trial fusion on one GPU (`python -m benchmarks.gpu --fusion`): is a pack equal to its trials apart, and how
many paper-length trials per GPU-hour does it train against one trial alone and 8 packed processes?

Parts (each with a time box; about 6 minutes in all on one H100 / H200), every line appended to the device
check's output file as it is measured:

1. Equivalence on the GPU: a pack of four mixed members at paper scale (EMA-VQ, KSOM hard 2D, KSOM Gaussian 1D
   with k-means init, KSOM hard 2D with update-0 off; lr, decay, tau, seeds differ) against each trial alone:
   codes picked alike at step 1 and the largest loss difference; after 20 steps each member's validation loss
   minus its trial's alone, against the difference channels-last alone makes to that trial.
2. Throughput at paper scale (width 128, batch 256, K = 512, the photos; members alternately EMA-VQ and KSOM
   hard 2D): the trainer's step with each member's batches drawn from its own generator, per pack size
   S = 1 (a trial alone), 4, 8, 16, 32, eager and captured as a CUDA graph (torch.cuda.graphs), fp32 and bf16;
   and 8 trainer processes sharing the GPU (benchmarks/gpu.py's packing). A paper-length trial is 30,000 steps
   and 30 validations (one validation with the topography measured here, an upper bound): a pack of S trains
   S trials in 30,000 of its steps and S x 30 validations.

It writes the figures `fusion_pack_size` (the S of the best rate: the default pack size), `fusion_cuda_graphs`
(1 when that rate is the captured step's), `fusion_trials_per_gpu_hour` and `fusion_vs_processes` (that rate
over the 8 processes'). It imports models/ and benchmarks/ only, as lent GPU machines have neither Ray nor
MLflow.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

import metrics as M
from models import topography
from models.config import TrialConfig
from models.data import ImageData, load_data
from models.train import Member, Pack, Window, evaluate, start_member, train_pack, train_step

PAPER_STEPS, PAPER_EVALS = 30_000, 30
SIZES = (4, 8, 16, 32)
PROCESSES = 8
VARIANTS = {"fp32": ("fp32", False), "fp32 + graph": ("fp32", True), "bf16": ("bf16", False),
            "bf16 + graph": ("bf16", True)}
BOXES = {"equal": 90, "processes": 90, "fused": 150}  # seconds: fused equal to apart (F1), 8 processes, packs
MIXED = [dict(neighbours="none", seed=0),
         dict(neighbours="hard", grid_dim=2, lr=2e-3, seed=1),
         dict(neighbours="gaussian", grid_dim=1, tau=0.3, codebook_init="kmeans", seed=2),
         dict(neighbours="hard", grid_dim=2, decay=0.95, update_empty=False, n0=0, seed=3)]
ARMS = [dict(neighbours="none"), dict(neighbours="hard", grid_dim=2)]  # the comparison study's two rules


# ---------------------------------------------------------------- equivalence (also what the CPU tests run)


def first_step(cfgs: list[TrialConfig], data: ImageData, device: torch.device):
    """One training step of `cfgs` as one pack from their start: each member's losses (S, 2), codes
    (S, B, h, w) and clipped gradients (a list per member, in its parameters' order)."""
    members = [start_member(c, None, None, data, device, (0, 1)) for c in cfgs]
    x = torch.cat([m.next_batch() for m in members], 1)
    losses, out = train_step(Pack.of_members(members), x)
    indices = out.levels["vq"].indices
    grads = [[p.grad for p in m.model.parameters()] for m in members]
    return losses, indices if len(cfgs) > 1 else indices[None], grads


def val_losses(cfgs: list[TrialConfig], data: ImageData, device: torch.device) -> list[float]:
    """Each config's last validation loss, trained as one pack (a list of one: alone)."""
    last = [math.nan] * len(cfgs)

    def reporter(i):
        return lambda progress: last.__setitem__(i, progress.metrics.get(M.VAL_LOSS, math.nan))

    train_pack(cfgs, [reporter(i) for i in range(len(cfgs))], data=data, device=device)
    return last


def part_equivalence(log, base: TrialConfig, data: ImageData, device: torch.device, box, steps: int = 20) -> None:
    cfgs = [base.replace(steps=steps, eval_every=steps, **fields) for fields in MIXED]
    log(f"F1. Equivalence on the GPU: a pack of {len(cfgs)} mixed members (width {base.width}, batch "
        f"{base.batch_size}, K={base.codebook_size}) against each trial alone")
    losses, indices, _ = first_step(cfgs, data, device)
    for s, cfg in enumerate(cfgs):
        own_losses, own_indices, _ = first_step([cfg], data, device)
        log(f"   step 1, {cfg.rule:<18} seed {cfg.seed}: codes alike {int((indices[s] == own_indices[0]).sum())} of "
            f"{indices[s].numel()}; largest loss difference {float((losses[s] - own_losses[0]).abs().max()):.1e}")
    if box.left() <= 0:
        log("   time box reached: the 20-step comparison is not run")
        log()
        return
    fused = val_losses(cfgs, data, device)
    for cfg, f in zip(cfgs, fused):
        alone = val_losses([cfg], data, device)[0]
        drift = val_losses([cfg.replace(channels_last=True)], data, device)[0] - alone
        verdict = "within" if abs(f - alone) <= max(3 * abs(drift), 1e-4 * alone) else "NOT within"
        log(f"   {steps} steps, {cfg.rule:<18} seed {cfg.seed}: validation loss {alone:.5f} alone; fused - alone "
            f"{f - alone:+.2e}; channels-last - alone {drift:+.2e}: {verdict} max(3 x that, 1e-4 x loss)")
    log()


# ---------------------------------------------------------------- throughput


def pack_members(base: TrialConfig, size: int, data: ImageData, device: torch.device, precision: str,
                 capturable: bool) -> list[Member]:
    """`size` members at `base` (alternately the comparison's two rules, seeds 0..size-1), with optimizers that
    a CUDA graph can capture when `capturable`."""
    members = []
    for s in range(size):
        cfg = base.replace(precision=precision, seed=s, **ARMS[s % len(ARMS)])
        m = start_member(cfg, None, None, data, device, (0, 1))
        m.optimizer = torch.optim.AdamW(m.model.parameters(), lr=cfg.lr, weight_decay=0.0, capturable=capturable)
        members.append(m)
    return members


def pack_step(members: list[Member], graph: bool, device: torch.device):
    """The trainer's step of these members with their batch draws and per-step bookkeeping; with `graph`, the
    step (forward, backward, clipping, AdamW, codebook updates) is captured once as a CUDA graph and replayed
    on each step's batches. Returns (step function, that step with a fixed batch, no draws)."""
    pack, window = Pack.of_members(members), Window(0, len(members), device)

    def batch():
        batches = [m.next_batch() for m in members]
        return batches[0] if len(batches) == 1 else torch.cat(batches, 1)

    static = batch()
    if not graph:
        def run(x):
            return train_step(pack, x)
    else:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up: k-means inits, optimizer state, cuDNN's choices
            for _ in range(3):
                train_step(pack, static)
        torch.cuda.current_stream(device).wait_stream(side)
        captured = torch.cuda.CUDAGraph()
        with torch.cuda.graph(captured):
            result = train_step(pack, static)

        def run(x):
            static.copy_(x)
            captured.replay()
            return result

    def step():
        losses, out = run(batch())
        window.add(losses, out.levels)

    def fixed():
        losses, out = run(static)
        window.add(losses, out.levels)

    return step, fixed


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(step, device: torch.device, steps: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def validation_seconds(base: TrialConfig, data: ImageData, device: torch.device) -> float:
    """Seconds of one member's validation at `base`, with the topography (measured at a trial's end only: an
    upper bound for each of its validations)."""
    m = start_member(base, None, None, data, device, (0, 1))
    evaluate(m.model, data, data.val, base.batch_size)  # warm-up
    sync(device)
    start = time.perf_counter()
    evaluate(m.model, data, data.val, base.batch_size)
    topography.measure(m.model, data, batch_size=base.batch_size)
    sync(device)
    return time.perf_counter() - start


def peak_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan


def paper_rate(size: int, step_s: float, val_s: float) -> float:
    """Paper-length trials per GPU-hour of packs of `size`: each pack trains `size` trials in PAPER_STEPS steps
    and size x PAPER_EVALS validations."""
    return size * 3600 / (PAPER_STEPS * step_s + size * PAPER_EVALS * val_s)


def best_rate(rates: dict[tuple[int, str], float]) -> tuple[int, str]:
    """The (S, variant) of the highest rate; on a tie the smaller S (fewer trials wait for one pack)."""
    return max(rates, key=lambda key: (rates[key], -key[0]))


def part_throughput(log, base: TrialConfig, data: ImageData, device: torch.device, boxes: dict,
                    processes: Callable[[TrialConfig, object], float | None]) -> None:
    """`processes(base, box)`: paper-length trials per GPU-hour of PROCESSES trainer processes sharing the GPU
    (benchmarks/gpu.py runs them), None if they did not all finish."""
    log(f"F2. Paper-length trials per GPU-hour (width {base.width}, batch {base.batch_size}, K={base.codebook_size},"
        f" photos; each member's batches drawn from its own generator; {PAPER_STEPS} steps and {PAPER_EVALS} "
        "validations a trial)")
    val_s = validation_seconds(base, data, device)
    log(f"   one validation with the topography: {val_s:.2f} s")
    log(f"   {'pack':<18}  {'ms/step':>8}  {'fixed batch':>11}  {'trials/GPU-h':>12}  {'vs alone':>8}  {'peak MB':>8}")
    rates: dict[tuple[int, str], float] = {}

    def measure(size: int, name: str) -> None:
        precision, graph = VARIANTS[name]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            step, fixed = pack_step(pack_members(base, size, data, device, precision, graph), graph, device)
            step_s, fixed_s = seconds_per_step(step, device), seconds_per_step(fixed, device, warmup=1)
        except Exception as e:  # a variant that cannot run says why in one line; the others go on
            log(f"   S={size:<3} {name:<12}  failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            return
        rates[size, name] = paper_rate(size, step_s, val_s)
        alone = rates.get((1, "fp32"), rates[size, name])
        log(f"   S={size:<3} {name:<12}  {step_s * 1e3:>8.2f}  {fixed_s * 1e3:>11.2f}  {rates[size, name]:>12.1f}  "
            f"{rates[size, name] / alone:>7.2f}x  {peak_mb(device):>8.0f}")

    measure(1, "fp32")
    measure(1, "fp32 + graph")
    packed = processes(base, boxes["processes"])
    if packed is not None:
        log(f"   {PROCESSES} trainer processes sharing the GPU: {packed:.1f} trials/GPU-h")
    box = boxes["fused"]
    for size in SIZES:
        for name in VARIANTS:
            if box.left() <= 0:
                log(f"   time box reached: S={size} {name} and beyond not measured")
                break
            measure(size, name)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    fused = {key: rate for key, rate in rates.items() if key[0] > 1}
    if not fused:
        log()
        return
    size, name = best_rate(fused)
    log(f"   best: S={size} {name}, {fused[size, name]:.1f} paper-length trials per GPU-hour"
        + (f", {fused[size, name] / packed:.2f}x the {PROCESSES} processes'" if packed else ""))
    log.figure("fusion_pack_size", size, "trials per fused pack: the best measured rate's")
    log.figure("fusion_cuda_graphs", int(VARIANTS[name][1]), "1: that rate is the step captured as a CUDA graph")
    log.figure("fusion_trials_per_gpu_hour", fused[size, name], f"paper-length trials, S={size} {name}")
    if packed:
        log.figure("fusion_vs_processes", fused[size, name] / packed, f"over {PROCESSES} trainer processes")
    log()


def run(log, base: TrialConfig, device: torch.device, box_type: type, processes) -> list[str]:
    """Both parts on `device` (box_type(seconds): a time box; processes: as part_throughput's); the names of
    the parts that failed."""
    data = load_data(base.dataset, base.data_dir, base.image_size)
    failed = []
    for name, part in (("F1", lambda: part_equivalence(log, base, data, device, box_type(BOXES["equal"]))),
                       ("F2", lambda: part_throughput(log, base, data, device,
                                                      {k: box_type(v) for k, v in BOXES.items()}, processes))):
        try:  # a part that fails says so and the next runs
            part()
        except Exception as e:
            log(f"   part {name} FAILED: {type(e).__name__}: {e}")
            log()
            failed.append(name)
    return failed


def plan_text(base: TrialConfig) -> str:
    return "\n".join([
        "On a GPU --fusion would run, appending each line to the device check's output file:",
        f"  F1. a pack of {len(MIXED)} mixed members against each trial alone: step-1 codes and losses; 20-step "
        "validation losses against the channels-last drift",
        f"  F2. paper-length trials per GPU-hour at width {base.width}, batch {base.batch_size}: one trial alone, "
        f"{PROCESSES} trainer processes, packs of S = {', '.join(map(str, SIZES))} ({', '.join(VARIANTS)}); the "
        "best S becomes the default pack size",
    ])

