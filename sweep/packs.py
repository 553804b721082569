"""Which trials of a plan train together as one pack (models/fused.py): the `fuse` setting (--fuse on the
command line, `fuse:` in a study file) resolved to a pack size with the rule that decided it, and the
plan's trials grouped into packs of up to that size.

Trials share a pack when they differ only in values (seed, lr, decay, tau, N0, ...): models.fused.check_pack
says which fields must agree (those that set shapes or the loop) and which models have a fused form, so
the grouping here only asks it. `auto` fuses only where it has been measured to pay: a CUDA device, and
docs/results/benchmarks/gpu.txt holding a fusion measurement (benchmarks/fusion.py's figures
fusion_pack_size and fusion_vs_processes) of a GPU of the same name whose best pack size trained at
least AUTO_GAIN times the paper-length trials per GPU-hour of 8 trainer processes sharing it.
ASHA stops trials one by one and TPE draws each sample from the results before it, so their search
trials are never fused; a searched study runs unfused altogether in this version (its random-search
samples and confirmation trials could share packs: not yet done).
"""
from __future__ import annotations

from models.config import ConfigError, TrialConfig
from models.fused import PACK_FIELDS, check_pack
from sweep.scales import Figure, gpu_figures

OFF, AUTO = "off", "auto"
FUSE_ALLOWED = "a whole number of trials per pack >= 1, auto (fuse where gpu.txt measured a gain on this GPU) or off"
AUTO_GAIN = 1.2  # auto fuses when the measured best pack beats the 8-process packing by this factor


def parse_fuse(value) -> int | str:
    """A --fuse / `fuse:` value as a pack size (int >= 1), AUTO or OFF; ConfigError (one line) otherwise."""
    if isinstance(value, str) and value.strip().lower() in (OFF, AUTO):
        return value.strip().lower()
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(f"fuse {value!r}: allowed: {FUSE_ALLOWED}")


def cuda_name() -> str | None:
    """The name of the first CUDA device (torch.cuda.get_device_name), None without one."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def pack_size(fuse: int | str, origin: str, gpu: str | None = None,
              figures: dict[str, Figure] | None = None) -> tuple[int, str]:
    """(trials per pack, the rule that decided it, in words) for a parsed `fuse` given by `origin` (e.g.
    '--fuse'); `gpu`: the CUDA device's name (None: no CUDA), `figures`: gpu.txt's (default: read it)."""
    if fuse == OFF:
        return 1, f"{origin} off: every trial on its own"
    if fuse != AUTO:
        return fuse, f"{origin} {fuse}: packs of up to {fuse} trials"
    if gpu is None:
        return 1, f"{origin} auto: no CUDA device, so every trial on its own"
    figures = gpu_figures() if figures is None else figures
    size, gain = figures.get("fusion_pack_size"), figures.get("fusion_vs_processes")
    if size is None or gain is None or size.device != gpu or gain.device != gpu:
        return 1, f"{origin} auto: gpu.txt holds no fusion measurement on {gpu}, so every trial on its own"
    if gain.value < AUTO_GAIN:
        return 1, (f"{origin} auto: on {gpu} the best pack (S={size.value:g}) measured {gain.value:.2f}x the 8-process "
                   f"packing, under {AUTO_GAIN}x, so every trial on its own")
    return int(size.value), (f"{origin} auto: on {gpu} the best pack (S={size.value:g}) measured {gain.value:.2f}x "
                             f"the 8-process packing (at least {AUTO_GAIN}x)")


def group(trials: list, configs: list[TrialConfig], size: int) -> list[list]:
    """`trials` (any items, with their `configs`) in packs of up to `size`, in order: trials that agree on every
    field of PACK_FIELDS share packs, and trials of a model without a fused form (check_pack) stay alone."""
    shapes: dict[tuple, list] = {}
    for trial, cfg in zip(trials, configs):
        shapes.setdefault(tuple(getattr(cfg, name) for name in PACK_FIELDS), []).append((trial, cfg))
    packs = []
    for same in shapes.values():
        chunks = [same[i:i + size] for i in range(0, len(same), size)]
        for chunk in chunks:
            try:
                check_pack([cfg for _, cfg in chunk])
            except ConfigError:  # no fused form of this model or quantiser: each its own trial
                packs += [[trial] for trial, _ in chunk]
                continue
            packs.append([trial for trial, _ in chunk])
    return packs


def unfused_search(algorithm: str, asha: bool) -> str:
    """Why a searched study's search trials run unfused, in words."""
    if asha:
        return "ASHA stops search trials one by one, so they run unfused"
    if algorithm == "optuna":
        return "TPE draws each sample from the results before it, so search trials run unfused"
    return "random-search samples are not yet fused"
