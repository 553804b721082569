"""Peer benchmark: our EMA-VQ and KSOM against lucidrains' vector-quantize-pytorch, in the same VQ-VAE.

Run from the repository root (needs the bench extra: pip install -e ".[bench]"):

    python -m benchmarks.vs_peers                 # default run, ~5 minutes on 2 idle cores
    python -m benchmarks.vs_peers --quick         # smoke run on 1 thread, about a minute
    python -m benchmarks.vs_peers --threads 1 --steps 2000 --seeds 5

Four quantisers, each one TrialConfig of the platform's quantiser registry
(models/build.py: `quantizer` kohonen or lucidrains), in the same VQ-VAE, trained
by the platform's own trainer (models.train.train); encoder, decoder, loss,
optimiser and data are the same for all four:

  EMA-VQ                   quantizer=kohonen, neighbours=none (Eqs. 16-18)
  KSOM hard 2D             quantizer=kohonen, neighbours=hard, 2D grid 32x16, tau = 0.1
  lucidrains defaults      quantizer=lucidrains with the library's defaults: decay 0.8,
                           rotation_trick, commitment 1.0, kaiming-uniform codebook
  lucidrains closest       quantizer=lucidrains with the options closest to ours (decay 0.99,
                           eps 1e-5, commitment 0.25, plain straight-through estimator,
                           randn codebook, no dead-code replacement)

models/lucidrains.py wraps VectorQuantize into our QuantizerOutput contract (its
commitment weight stays 1 inside the library and the trainer applies the config's
`commitment`, as for ours). The printed output lists every option of the two
lucidrains settings as the constructed modules resolve them.

It measures, and prints as tables:

1. Full training step, as in models/train.py's loop (forward, loss, finiteness
   check, backward, clip 1.0, AdamW; the codebook update happens in the forward)
   on one fixed batch of 128 random 32x32 images, K = 512, d = 64, for each
   --widths. Reported: ms/step, images/s and the ratio to lucidrains (closest).
   Timed in rounds of alternating blocks (benchmarks/step_time.py's `interleaved`):
   a time is the median over blocks, a ratio the median over rounds of the
   ratio within a round, which cancels load that changes more slowly than a round.
2. Validation loss on the `photos` data set after --steps steps, for --seeds
   seeds, at the cpu scale of sweep/scales.py (width 32, K 512, d 64, batch 32,
   lr 1e-3, validation every 50 steps): each run is models.train.train on the
   quantiser's TrialConfig, exactly as a sweep's trial. Reported: mean +- std over seeds of the
   best validation loss (as train()'s val/best_loss), of the final one, of the
   validation perplexity and codes used, and a one-line reading.
3. Targets: step time of ours / lucidrains (closest) <= 1.0 at every width.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch
from torch import nn

from benchmarks import common
from benchmarks.common import EMA, interleaved, print_checks, print_steps, ratio, training_step
import metrics as M
from models.build import build_model, build_quantizer
from models.config import ConfigError, TrialConfig
from models.data import ImageData, load_data
from models.lucidrains import vector_quantize
from models.train import train

K, D = 512, 64
STEP_BATCH, IMAGE_SIZE = 128, 32
CPU_SCALE = dict(width=32, batch_size=32, lr=1e-3, steps=800, eval_every=50)  # sweep/scales.py "cpu"
CPU_SEEDS = 3
STEP_TARGET = 1.0

QUANTISERS = {  # display name -> TrialConfig fields (models/build.py's registry)
    EMA: common.QUANTISERS[EMA],
    "KSOM hard 2D": common.QUANTISERS["KSOM hard 2D"],
    "lucidrains defaults": dict(quantizer="lucidrains", decay=0.8, rotation_trick=True, commitment=1.0,
                                codebook_init="uniform"),
    "lucidrains closest": dict(quantizer="lucidrains"),  # decay 0.99, eps 1e-5, commitment 0.25, randn, straight-through
}
OURS = (EMA, "KSOM hard 2D")
REFERENCE = "lucidrains closest"
NAMES = tuple(QUANTISERS)


def config(name: str, width: int, seed: int = 0, **fields) -> TrialConfig:
    """The TrialConfig of quantiser `name` in a VQ-VAE of `width` (K = 512, d = 64)."""
    return TrialConfig(codebook_size=K, code_dim=D, width=width, seed=seed, **QUANTISERS[name], **fields)


def resolved_options(q: nn.Module) -> dict:
    """The options that decide the algorithm, read back from the constructed module ("n/a": not in this version)."""
    vq, cb = q.vq, q.vq._codebook
    read = {
        "dim": (vq, "dim"), "codebook_size": (vq, "codebook_size"), "heads": (vq, "heads"),
        "projection": (vq, "has_projections"), "decay": (cb, "decay"), "eps": (cb, "eps"),
        "commitment_weight": (vq, "commitment_weight"), "threshold_ema_dead_code": (cb, "threshold_ema_dead_code"),
        "use_cosine_sim": (vq, "use_cosine_sim"), "rotation_trick": (vq, "rotation_trick"),
        "directional_reparam": (vq, "directional_reparam"), "ema_update": (vq, "ema_update"),
        "learnable_codebook": (vq, "learnable_codebook"), "affine_param": (cb, "affine_param"),
        "orthogonal_reg_weight": (vq, "orthogonal_reg_weight"),
        "codebook_diversity_loss_weight": (vq, "codebook_diversity_loss_weight"),
    }
    out = {k: getattr(obj, attr, "n/a") for k, (obj, attr) in read.items()}
    out["kmeans_init"] = not bool(cb.initted)  # the k-means init sets initted on the first training batch
    out["init"] = (f"codebook max |w| {cb.embed.abs().max().item():.4f}; "
                   f"cluster_size {cb.cluster_size.mean().item():g} (our n0); embed_avg = codebook")
    return out


def make_model(name: str, width: int, seed: int) -> nn.Module:
    """As models.train.train builds it: the seed, then models.build.build_model."""
    torch.manual_seed(seed)
    return build_model(config(name, width, seed))


# ---------------------------------------------------------------- 1. step time


def bench_steps(widths: list[int], repeats: int, warmup: int) -> dict[int, dict[str, list[float]]]:
    images = torch.randn(STEP_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    return {width: interleaved({name: training_step(make_model(name, width, 0), images, config(name, width)) for name in NAMES},
                               repeats, warmup, block_seconds=0.3)
            for width in widths}


# ---------------------------------------------------------------- 2. validation loss


def train_run(name: str, seed: int, data: ImageData, steps: int, eval_every: int, width: int, batch_size: int,
              lr: float) -> dict:
    """One run of models.train.train: best and final validation metrics."""
    cfg = config(name, width, seed, batch_size=batch_size, lr=lr, steps=steps, eval_every=eval_every)
    last: dict = {}
    result = train(cfg, report=lambda progress: last.update(progress.metrics), data=data, device="cpu")
    if result.status != "finished":
        return {"status": f"{result.status} at step {result.step}", "best": math.nan, "final": math.nan}
    return {"status": "finished", "best": result.best_val_loss, "final": last[M.VAL_LOSS],
            "perplexity": last[M.val_perplexity("vq")], "codes": last[M.val_codes_used("vq")],
            "train_time": last[M.TIME_TRAIN_TOTAL]}


def bench_quality(seeds: int, steps: int, eval_every: int, width: int, batch_size: int,
                  lr: float) -> dict[str, list[dict]]:
    data = load_data("photos")
    runs = {name: [] for name in NAMES}
    for seed in range(seeds):  # seeds outermost: load drifts hit every quantiser alike
        for name in NAMES:
            runs[name].append(train_run(name, seed, data, steps, eval_every, width, batch_size, lr))
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def fmt(values: list[float], digits: int = 4) -> str:
    m, s = mean_std(values)
    return f"{m:.{digits}f} +- {s:.{digits}f}" if math.isfinite(s) else f"{m:.{digits}f}"


def reading(runs: dict[str, list[dict]]) -> str:
    """One honest line: is each of ours better or worse than lucidrains (closest), beyond the seed spread?"""
    n = len(runs[REFERENCE])
    ref_m, ref_s = mean_std([r["best"] for r in runs[REFERENCE]])
    parts = []
    for name in OURS:
        m, s = mean_std([r["best"] for r in runs[name]])
        diff = m - ref_m
        if n < 2:
            verdict = "one seed: no spread, so no verdict"
        else:
            se = math.sqrt((s * s + ref_s * ref_s) / n)  # standard error of the difference of means
            verdict = ("within seed noise" if abs(diff) <= 2 * se else
                       f"{'lower' if diff < 0 else 'higher'}, beyond 2 standard errors") + f" (SE {se:.4f})"
        parts.append(f"{name} {diff:+.4f} vs {REFERENCE}: {verdict}")
    d_m, _ = mean_std([r["best"] for r in runs["lucidrains defaults"]])
    parts.append(f"lucidrains defaults {d_m - ref_m:+.4f}")
    return "; ".join(parts)


def print_quality(runs: dict[str, list[dict]], steps: int, eval_every: int, width: int, batch_size: int,
                  lr: float) -> None:
    n = len(runs[REFERENCE])
    print(f"2. Validation loss on photos after {steps} steps ({n} seed{'s' * (n > 1)}, mean +- std): width {width}, "
          f"K={K}, d={D}, batch {batch_size}, lr {lr:g}, validation every {eval_every}")
    print(f"{'quantiser':<19}  {'best val loss':>17}  {'final val loss':>17}  {'val perplexity':>15}  "
          f"{'codes used':>12}  {'train s':>7}  status")
    for name in NAMES:
        rs = runs[name]
        ok = [r for r in rs if r["status"] == "finished"]
        status = ", ".join(sorted({r["status"] for r in rs}))
        print(f"{name:<19}  {fmt([r['best'] for r in rs]):>17}  {fmt([r['final'] for r in rs]):>17}  "
              f"{fmt([r['perplexity'] for r in ok], 1):>15}  {fmt([r['codes'] for r in ok], 0):>12}  "
              f"{statistics.fmean(r['train_time'] for r in ok) if ok else math.nan:>7.1f}  {status}")
    print(f"   reading (best val loss, lower is better): {reading(runs)}")
    print()


# ---------------------------------------------------------------- report


def print_options() -> None:
    print(f"vector-quantize-pytorch {_dist_version()}: VectorQuantize(dim={D}, codebook_size={K}, ...)")
    for name in NAMES[len(OURS):]:
        torch.manual_seed(0)
        q = build_quantizer(config(name, 32))
        given = ", ".join(f"{k}={v!r}" for k, v in QUANTISERS[name].items())
        print(f"   {name}: config {given}")
        print(f"   {'':<{len(name)}}  resolved: " + ", ".join(f"{k}={v}" for k, v in resolved_options(q).items()))
    print("   lucidrains: the library's commitment weight is 1; the trainer multiplies by the config's commitment")
    torch.manual_seed(0)
    ours = build_quantizer(config(EMA, 32))
    print(f"   ours: decay {ours.decay}, eps {ours.eps}, n0 {int(ours.ema_count[0])}, update_empty "
          f"{ours.update_empty}, straight-through, commitment {config('EMA-VQ', 32).commitment}, codebook ~ N(0, 1) "
          f"(max |w| {ours.weight.abs().max().item():.2f})\n")


def _dist_version() -> str:
    from importlib.metadata import version
    return version("vector-quantize-pytorch")


def print_targets(steps: dict[int, dict[str, list[float]]]) -> None:
    checks = [(f"full step {name} / {REFERENCE}, width {width}", ratio(times, name, REFERENCE), STEP_TARGET)
              for width, times in steps.items() for name in OURS]
    print_checks(checks)


def main() -> None:
    try:
        vector_quantize()
    except ConfigError as e:
        sys.exit(str(e))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int,
                        help=f"torch.set_num_threads (default: all cores, {os.cpu_count()}; 1 with --quick, which "
                             "keeps a smoke run steady on a shared machine)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 repeats, width 32 only, 100 training steps, 1 seed")
    parser.add_argument("--repeats", type=int, help="timed blocks per quantiser (default: 15, or 3 with --quick)")
    parser.add_argument("--widths", type=int, nargs="+", help="VQ-VAE widths for the step time (default: 32 128)")
    parser.add_argument("--steps", type=int,
                        help=f"training steps (default: {CPU_SCALE['steps']}, or 100 with --quick)")
    parser.add_argument("--seeds", type=int, help=f"seeds 0..N-1 (default: {CPU_SEEDS}, or 1 with --quick)")
    parser.add_argument("--width", type=int, default=CPU_SCALE["width"], help="VQ-VAE width for the validation loss")
    parser.add_argument("--batch-size", type=int, default=CPU_SCALE["batch_size"])
    parser.add_argument("--lr", type=float, default=CPU_SCALE["lr"])
    parser.add_argument("--eval-every", type=int, default=CPU_SCALE["eval_every"])
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 15)
    warmup = 1 if args.quick else 3
    widths = args.widths or ([32] if args.quick else [32, 128])
    steps = args.steps or (100 if args.quick else CPU_SCALE["steps"])
    seeds = args.seeds or (1 if args.quick else CPU_SEEDS)

    args.threads = args.threads or (1 if args.quick else os.cpu_count())
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; step time: median of {repeats} interleaved blocks "
          f"after {warmup} warm-up calls\n")
    print_options()
    start = time.perf_counter()
    step_times = bench_steps(widths, repeats, warmup)
    print_steps(f"1. Full training step: batch {STEP_BATCH}, {IMAGE_SIZE}x{IMAGE_SIZE} images, K={K}, d={D}",
                step_times, STEP_BATCH, REFERENCE, "/ " + REFERENCE)
    runs = bench_quality(seeds, steps, args.eval_every, args.width, args.batch_size, args.lr)
    print_quality(runs, steps, args.eval_every, args.width, args.batch_size, args.lr)
    print_targets(step_times)
    print(f"\ntotal time {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
