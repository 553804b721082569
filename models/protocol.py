"""What every VQ layer is to the models, the trainer and the topography (the Quantizer protocol),
and what every model is to the topography (the CodedModel protocol).

Two implementations satisfy Quantizer: KohonenQuantizer (models/quantizer.py: EMA-VQ and KSOM) and
LucidrainsQuantizer (models/lucidrains.py); models/build.py picks one from the config.
Shape contract: inputs (..., d) -> quantised (..., d), indices (...).
Two models satisfy CodedModel: VQVAE (models/vqvae.py) and VQVAE2 (models/vqvae2.py).
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor  # straight-through output, same shape as the input
    indices: torch.Tensor  # k*_i (Eq. 12), the input's shape without the last dim
    commitment_loss: torch.Tensor  # mean ||sg(w_k*) - e||^2 per element (Eq. 15 without alpha)
    perplexity: torch.Tensor  # perplexity() of this batch's codes (training: of all processes' batches)
    codes_used: torch.Tensor  # number of distinct codes in this batch (training: in all processes' batches)


@runtime_checkable
class Quantizer(Protocol):
    codebook_size: int  # K
    dim: int  # d, the size of each code vector
    grid: tuple[int, ...] | None  # the codes' map, (K,) or (W, H); None when codes have no positions

    def forward(self, inputs: torch.Tensor) -> QuantizerOutput:
        """Quantise inputs (..., d); in training mode the codebook learns from them."""

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """k* = argmin_k ||e - w_k||^2 (Eq. 12) for each row of flat (n, d), leaving the codebook as it is."""

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """w_k for each index: (...) -> (..., d)."""


@runtime_checkable
class CodedModel(Protocol):
    levels: nn.ModuleDict  # level name -> its Quantizer ("vq"; "top" and "bottom")

    def encode_codes(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each level's codes k* of images (B, 3, S, S): {level: (B, h, w) long}, no codebook update."""

    def decode_codes(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """The images (B, 3, S, S) that every level's codes {level: (B, h, w)} decode to."""

    def parameters(self) -> Iterator[nn.Parameter]:
        """(nn.Module's) the device of the first is where the topography computes."""


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(-sum_k p_k log p_k) with p = counts / sum(counts) (Appendix B.1; 0 log 0 = 0): the number of
    equally used codes that would give the same entropy. Counts (..., K) give one perplexity per row."""
    p = counts / counts.sum(-1, keepdim=True)
    return torch.exp(-torch.special.xlogy(p, p).sum(-1))
