"""Step-time benchmark: what does KSOM cost over EMA-VQ on the CPU?

Run from the repository root:

    python -m benchmarks.step_time                # default run, about 2 minutes on 2 idle cores
    python -m benchmarks.step_time --quick        # smoke run
    python -m benchmarks.step_time --threads 1 --repeats 40 --widths 128

It measures, and prints as tables:

1. Full training step of the VQ-VAE (models.build.build_model), exactly as in
   models/train.py's loop: forward, loss = MSE(recon, x) + 0.25 * commitment,
   finiteness check, backward, gradient clipping, AdamW step; the codebook update
   happens inside the forward. Batch 128 of one fixed random 32x32 tensor (no data
   loading), K = 512, d = 64, for each --widths, with EMA-VQ and KSOM hard 2D
   (tau = 0.1). Reported: ms/step, images/s and the ratio KSOM / EMA-VQ.
2. The quantiser alone on a fixed (8192, 64) input (128 images x 8 x 8 latents)
   for K in 512, 4096, 16384, with EMA-VQ, KSOM hard 2D and KSOM gaussian 2D
   (paper form): the train-mode forward (nearest-code search + codebook update) and
   `update(flat, indices, counts)` alone with precomputed indices and counts.
   The step counter t is reset to 0 before each call, so the neighbourhood is the
   widest one of a run (the Gaussian kernel's length shrinks as t grows).
3. The targets: full-step ratio <= 1.03 at K = 512 (every width), update-only
   ratio <= 2 at K = 16384 (each KSOM variant).

The machine may be shared, so the quantisers are timed in rounds of
alternating blocks (A, B, A, B, ...) after a warm-up, each block a few calls
long. A time is the median over the blocks; a ratio KSOM / EMA-VQ is the median
over the rounds of the ratio of the two blocks of one round, which cancels load
that changes more slowly than a round. On a busy machine, --threads 1 gives
steadier figures (two threads on two shared cores wait on each other).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from benchmarks.common import (EMA, QUANTISERS, Timings, by_quantiser, interleaved, print_checks, print_steps,
                               ratio, training_step, update_inputs)
from models.build import build_model
from models.config import TrialConfig

BATCH, IMAGE_SIZE, CODE_DIM = 128, 32, 64
LATENTS = BATCH * (IMAGE_SIZE // 4) ** 2  # vectors the quantiser sees per step: 8192
STEP_K = 512
UPDATE_KS = (512, 4096, 16384)
STEP_QUANTISERS = (EMA, "KSOM hard 2D")
STEP_TARGET, UPDATE_TARGET = 1.03, 2.0  # KSOM may cost at most 3 % more per training step


def bench_steps(widths: list[int], repeats: int, warmup: int) -> dict[int, Timings]:
    """Seconds per training step for each width and quantiser."""
    images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    results = {}
    for width in widths:
        runs = {}
        for name in STEP_QUANTISERS:
            cfg = TrialConfig(width=width, codebook_size=STEP_K, code_dim=CODE_DIM, batch_size=BATCH,
                              **QUANTISERS[name])
            torch.manual_seed(cfg.seed)  # as models/train.py builds it
            runs[name] = training_step(build_model(cfg), images, cfg)
        results[width] = interleaved(runs, repeats, warmup, block_seconds=1.0)  # several steps a block at width 128
    return results


def bench_quantisers(repeats: int, warmup: int) -> dict[int, dict[str, Timings]]:
    """Seconds per train-mode forward and per update alone, for each K and quantiser."""
    flat = torch.randn(LATENTS, CODE_DIM, generator=torch.Generator().manual_seed(0))
    results = {}
    for k in UPDATE_KS:
        forwards, updates = {}, {}
        for name in QUANTISERS:
            quantizer, indices, counts = update_inputs(k, name, flat)

            def forward(q=quantizer):
                q.set_step(0)
                q(flat)

            def update(q=quantizer, indices=indices, counts=counts):
                q.set_step(0)
                q.update(flat, indices, counts)

            forwards[name], updates[name] = forward, update
        results[k] = {"forward": interleaved(forwards, repeats, warmup, block_seconds=0.2),
                      "update": interleaved(updates, repeats, warmup, block_seconds=0.1)}
    return results


def print_quantisers(results: dict[int, dict[str, Timings]]) -> None:
    print(f"2. Quantiser alone: N={LATENTS} vectors, d={CODE_DIM}, train mode, t=0")
    print("   forward = nearest-code search + update; update = quantizer.update(flat, indices, counts)")
    print(f"{'K':>6}  {'grid':>7}  {'quantiser':<16}  {'forward ms':>10}  {'ratio':>6}  "
          f"{'update ms':>10}  {'ratio':>6}")
    for k, grid, name, times in by_quantiser(results):
        cells = []
        for kind in ("forward", "update"):
            cells.append(f"{statistics.median(times[kind][name]) * 1e3:>10.3f}")
            cells.append(f"{'' if name == EMA else f'{ratio(times[kind], name):.2f}':>6}")
        print(f"{k:>6}  {grid:>7}  {name:<16}  " + "  ".join(cells))
    print()


def print_targets(steps: dict[int, Timings], quantisers: dict[int, dict[str, Timings]]) -> None:
    checks = [(f"full step KSOM hard 2D / EMA-VQ, width {width}, K={STEP_K}", ratio(times, "KSOM hard 2D"),
               STEP_TARGET) for width, times in steps.items()]
    k = max(UPDATE_KS)
    checks += [(f"update only {name} / EMA-VQ, K={k}", ratio(quantisers[k]["update"], name), UPDATE_TARGET)
               for name in QUANTISERS if name != EMA]
    print_checks(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads (default: all cores, %(default)s)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed blocks per quantiser (default: 15, or 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="few repeats, for a smoke run")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 128],
                        help="VQ-VAE widths for the full step (default: 32 128)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 15)
    warmup = 1 if args.quick else 3

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; "
          f"median of {repeats} interleaved blocks after {warmup} warm-up calls\n")
    start = time.perf_counter()
    steps = bench_steps(args.widths, repeats, warmup)
    print_steps(f"1. Full training step: batch {BATCH}, {IMAGE_SIZE}x{IMAGE_SIZE} images, K={STEP_K}, d={CODE_DIM}",
                steps, BATCH, EMA, "KSOM/EMA-VQ")
    quantisers = bench_quantisers(repeats, warmup)
    print_quantisers(quantisers)
    print_targets(steps, quantisers)
    print(f"\ntotal time {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
