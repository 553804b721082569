"""Build a model (with its quantisers) from a TrialConfig.

The config's `quantizer` field picks the VQ implementation from QUANTIZERS:
"kohonen" (ours, models/quantizer.py: EMA-VQ or KSOM by `neighbours`) or "lucidrains"
(vector-quantize-pytorch's VectorQuantize, models/lucidrains.py; needs the bench extra).
Every quantiser satisfies the Quantizer protocol (models/protocol.py), so models,
trainer and topography treat them alike.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from models.config import TrialConfig
from models.protocol import Quantizer
from models.quantizer import KohonenQuantizer
from models.vqvae import VQVAE
from models.vqvae2 import VQVAE2


def kohonen(cfg: TrialConfig) -> KohonenQuantizer:
    """Our quantiser with the config's VQ rule (Secs. 3.1-3.3); EMA-VQ keeps the grid only for topography."""
    return KohonenQuantizer(cfg.codebook_size, cfg.code_dim, neighbours=cfg.neighbours, grid=cfg.grid, tau=cfg.tau,
                            n0=cfg.n0, update_empty=cfg.update_empty, decay=cfg.decay, eps=cfg.eps,
                            gaussian_form=cfg.gaussian_form, codebook_init=cfg.codebook_init)


def lucidrains(cfg: TrialConfig) -> Quantizer:
    """vector-quantize-pytorch's VectorQuantize with the config's options (ImportError naming the extra)."""
    from models.lucidrains import LucidrainsQuantizer
    return LucidrainsQuantizer(cfg.codebook_size, cfg.code_dim, decay=cfg.decay, eps=cfg.eps,
                               rotation_trick=cfg.rotation_trick, codebook_init=cfg.codebook_init,
                               dead_code_threshold=cfg.dead_code_threshold, n0=cfg.n0)


QUANTIZERS: dict[str, Callable[[TrialConfig], Quantizer]] = {"kohonen": kohonen, "lucidrains": lucidrains}


def topography_note(cfg: TrialConfig) -> str:
    """Why the trial has no topography ("" when it has one): a quantiser without a grid."""
    if cfg.quantizer == "kohonen":
        return ""
    return (f"not measured: quantizer={cfg.quantizer} has no grid (its codes have no positions), so no grid-shift "
            "losses, smoothness ratio or codebook pictures")


def build_quantizer(cfg: TrialConfig) -> Quantizer:
    """The quantiser the config's `quantizer` field names."""
    return QUANTIZERS[cfg.quantizer](cfg)


def build_model(cfg: TrialConfig) -> nn.Module:
    """The config's model; every model exposes `levels` and returns a ModelOutput."""
    if cfg.model == "vqvae":
        return VQVAE(build_quantizer(cfg), width=cfg.width)
    if cfg.model == "vqvae2":
        top = build_quantizer(cfg)  # top first, then bottom: the codebooks' random init follows this order
        return VQVAE2(top, build_quantizer(cfg), width=cfg.width)
    raise ValueError(f"model={cfg.model!r} is unknown")
