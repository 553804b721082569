"""What the benchmarks share: the quantisers they compare, interleaved timing, per-round ratios, the
training step they time, and the tables they print.

The benchmarks run as modules from the repository root, e.g. `python -m benchmarks.step_time`.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Iterator, TypeVar

import torch
from torch import nn

from models.build import build_quantizer
from models.config import TrialConfig
from models.quantizer import KohonenQuantizer
from models.train import Pack, make_optimizer, train_step

EMA = "EMA-VQ"
QUANTISERS = {  # display name (TrialConfig.rule) -> config fields
    EMA: dict(neighbours="none"),
    "KSOM hard 2D": dict(neighbours="hard", grid_dim=2, tau=0.1),
    "KSOM gaussian 2D": dict(neighbours="gaussian", grid_dim=2, tau=0.1, gaussian_form="paper"),
}

Timings = dict[str, list[float]]  # name -> seconds per call in each round
T = TypeVar("T")


def interleaved(runs: dict[str, Callable[[], None]], repeats: int, warmup: int, block_seconds: float) -> Timings:
    """Seconds per call of each run in `repeats` rounds of one block per run, after `warmup` calls each.

    A block is as many calls as fill about `block_seconds`, judged from the last warm-up call.
    """
    block_calls = {}
    for name, run in runs.items():
        for _ in range(warmup - 1):
            run()
        start = time.perf_counter()
        run()
        block_calls[name] = max(1, round(block_seconds / (time.perf_counter() - start)))
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(block_calls[name]):
                run()
            times[name].append((time.perf_counter() - start) / block_calls[name])
    return times


def ratio(times: Timings, name: str, reference: str = EMA) -> float:
    """Median over the rounds of name's time / the reference's time in that round: load that changes
    more slowly than a round cancels."""
    return statistics.median(t / t_ref for t, t_ref in zip(times[name], times[reference]))


def training_step(model: nn.Module, images: torch.Tensor, cfg: TrialConfig) -> Callable[[], None]:
    """One step of the trainer (models.train.train_step with its optimiser) on a fixed batch, without the
    metric bookkeeping; raises if the losses stop being finite."""
    model.train()
    pack = Pack.of([model], [make_optimizer(model, cfg)], [cfg])

    def step():
        losses, _ = train_step(pack, images)
        if not torch.isfinite(losses).all():
            raise RuntimeError("a quantiser diverged during the benchmark")

    return step


def update_inputs(k: int, name: str, flat: torch.Tensor) -> tuple[KohonenQuantizer, torch.Tensor, torch.Tensor]:
    """Quantiser `name` of QUANTISERS with K = k codes (seed 0, train mode), and what its update(flat, indices,
    counts) takes: the nearest codes of the rows of flat and their counts."""
    torch.manual_seed(0)
    quantizer = build_quantizer(TrialConfig(codebook_size=k, code_dim=flat.shape[1], **QUANTISERS[name])).train()
    indices = quantizer.nearest(flat)
    return quantizer, indices, torch.bincount(indices, minlength=k).to(flat.dtype)


def by_quantiser(results: dict[int, T]) -> Iterator[tuple[int, str, str, T]]:
    """(K, 'WxH' of K's 2D grid, quantiser name, results[K]) for each K and each of QUANTISERS: table rows."""
    for k, result in results.items():
        width, height = TrialConfig(codebook_size=k, grid_dim=2).grid
        for name in QUANTISERS:
            yield k, f"{width}x{height}", name, result


def print_steps(title: str, results: dict[int, Timings], batch: int, reference: str, ratio_header: str) -> None:
    """Per width and quantiser: ms per training step, images/s and the ratio to `reference`."""
    names = list(next(iter(results.values())))
    name_width, ratio_width = max(16, *map(len, names)), max(11, len(ratio_header))
    print(title)
    print(f"{'width':>5}  {'quantiser':<{name_width}}  {'ms/step':>9}  {'images/s':>9}  {ratio_header:>{ratio_width}}")
    for width, times in results.items():
        for name in names:
            seconds = statistics.median(times[name])
            versus = "" if name == reference else f"{ratio(times, name, reference):.3f}"
            print(f"{width:>5}  {name:<{name_width}}  {seconds * 1e3:>9.1f}  {batch / seconds:>9.0f}  "
                  f"{versus:>{ratio_width}}")
    print()


def print_checks(checks: list[tuple[str, float, float]], heading: str = "3. Targets") -> None:
    """The "Targets" section: one line per (label, measured value, upper bound)."""
    print(heading)
    label_width = max(len(label) for label, _, _ in checks)
    for label, value, target in checks:
        verdict = "met" if value <= target else "NOT met"
        print(f"   {label:<{label_width}}  {value:8.4f} <= {target:<4}  {verdict}")
