"""lucidrains' VectorQuantize (vector-quantize-pytorch) behind the Quantizer protocol of
models/protocol.py, so that the same VQ-VAE, trainer, sweep and tables run it beside EMA-VQ and KSOM.

Config fields map to the library's options: decay -> decay, eps -> eps, rotation_trick,
dead_code_threshold -> threshold_ema_dead_code, n0 -> the initial EMA cluster size (the library
starts at 1, our N_k^(0) = 1), codebook_init "kmeans" -> kmeans_init (the library's own k-means on
the first training batch). For codebook_init "randn" and "uniform" the adapter writes the codebook
and its EMA sum itself after construction, drawn by models/quantizer.py's initial_codebook (the
library's own init is "uniform"), so both implementations start from the same codebook for a seed
(the library's own draw happens under a forked RNG). The library always updates every code
(update-0 = yes). Its commitment weight stays 1 inside the library and the trainer multiplies
commitment_loss by the config's `commitment`, exactly as for our quantiser, so
`commitment` is the library's commitment_weight. The library's codebook has no grid:
`grid` is None and the trial measures no topography (models/topography.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ConfigError
from models.protocol import QuantizerOutput, perplexity
from models.quantizer import in_float32, initial_codebook


def vector_quantize():
    """The library's VectorQuantize class; a one-line ConfigError naming the extra when it is missing."""
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError:
        raise ConfigError("quantizer=lucidrains needs vector-quantize-pytorch, which is not installed; install the "
                          "bench extra: pip install 'kohonen-vq[bench]' (or pip install -e '.[bench]')") from None
    return VectorQuantize


class LucidrainsQuantizer(nn.Module):
    """VectorQuantize on channels-last inputs (..., d) -> quantised (..., d), indices (...)."""

    grid = None  # codes have no positions on a map

    def __init__(self, codebook_size: int, dim: int, decay: float = 0.8, eps: float = 1e-5,
                 rotation_trick: bool = True, codebook_init: str = "uniform", dead_code_threshold: float = 0.0,
                 n0: int = 1):
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        kmeans = codebook_init == "kmeans"
        w = None if kmeans else initial_codebook(codebook_init, codebook_size, dim)
        with torch.random.fork_rng(devices=[]):  # its own draw, overwritten below, leaves the RNG as ours does
            self.vq = vector_quantize()(dim=dim, codebook_size=codebook_size, decay=decay, eps=eps,
                                        rotation_trick=rotation_trick, straight_through=False, kmeans_init=kmeans,
                                        threshold_ema_dead_code=dead_code_threshold, commitment_weight=1.0)
        codebook = self.vq._codebook
        if w is not None:  # the library's rule: embed_avg starts as a copy of the codebook
            codebook.embed.copy_(w[None])
            codebook.embed_avg.copy_(w[None])
        codebook.cluster_size.fill_(float(n0))

    @in_float32
    def forward(self, inputs: torch.Tensor) -> QuantizerOutput:
        if inputs.shape[-1] != self.dim:
            raise ValueError(f"inputs have last dim {inputs.shape[-1]}, expected dim={self.dim}")
        quantized, indices, loss = self.vq(inputs.reshape(inputs.shape[0], -1, self.dim))
        quantized = quantized.view_as(inputs)
        indices = indices.view(inputs.shape[:-1])
        # In eval mode the library returns no loss: then it is mean ||sg(q) - e||^2, as ours.
        commitment = loss if self.training else F.mse_loss(inputs, self.embed(indices))
        with torch.no_grad():  # as KohonenQuantizer.forward (Appendix B.1)
            counts = torch.bincount(indices.flatten(), minlength=self.codebook_size).to(inputs.dtype)
        return QuantizerOutput(quantized, indices, commitment, perplexity(counts), (counts > 0).sum())

    @in_float32
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """argmin_k ||e - w_k||^2 for each row of flat (n, d), leaving the codebook as it is."""
        w = self.vq.codebook
        return torch.addmm((w * w).sum(1), flat, w.T, alpha=-2.0).argmin(1)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """w_k for each index: (...) -> (..., d)."""
        return self.vq.codebook[indices]
