"""Build a model (with its quantisers) from a TrialConfig."""
from __future__ import annotations

from torch import nn

from models.config import TrialConfig
from models.quantizer import KohonenQuantizer
from models.vqvae import VQVAE
from models.vqvae2 import VQVAE2


def build_quantizer(cfg: TrialConfig) -> KohonenQuantizer:
    """A quantiser with the config's VQ rule (SPEC 1); EMA-VQ keeps the grid only for topography."""
    return KohonenQuantizer(cfg.codebook_size, cfg.code_dim, neighbours=cfg.neighbours, grid=cfg.grid, tau=cfg.tau,
                            n0=cfg.n0, update_empty=cfg.update_empty, decay=cfg.decay, eps=cfg.eps,
                            gaussian_form=cfg.gaussian_form)


def build_model(cfg: TrialConfig) -> nn.Module:
    """The config's model; every model exposes `levels` and returns a ModelOutput."""
    if cfg.model == "vqvae":
        return VQVAE(build_quantizer(cfg), width=cfg.width)
    if cfg.model == "vqvae2":
        top = build_quantizer(cfg)  # top first, then bottom: the codebooks' random init follows this order
        return VQVAE2(top, build_quantizer(cfg), width=cfg.width)
    raise ValueError(f"model={cfg.model!r} is unknown")
