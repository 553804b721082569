"""The VQ-VAE of van den Oord et al. (2017) for 32x32 images (paper Sec. 3.1, Appendix A).

Shape contract (width h, code dim d, codebook K):
    images (B, 3, 32, 32) -> latents (B, 8, 8, d) -> codes (B, 8, 8) -> reconstruction (B, 3, 32, 32)

    >>> model = VQVAE(KohonenQuantizer(512, 64), width=128)
    >>> out = model(torch.randn(2, 3, 32, 32))
    >>> out.recon.shape, out.levels["vq"].indices.shape
    (torch.Size([2, 3, 32, 32]), torch.Size([2, 8, 8]))

A model exposes `levels` (name -> Quantizer, models/protocol.py); the trainer needs nothing else,
so VQ-VAE-2 (models/vqvae2.py) plugs in with two levels. For topography, every
model also maps images to integer codes and back (CodedModel, models/protocol.py):

    encode_codes(images) -> {level: (B, h, w) long}    decode_codes(codes) -> images
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.protocol import Quantizer, QuantizerOutput


class ModelOutput(NamedTuple):
    recon: torch.Tensor  # reconstruction, the input's shape
    commitment_loss: torch.Tensor  # summed over levels (alpha not applied)
    levels: dict[str, QuantizerOutput]


class ResidualBlock(nn.Module):
    """x + conv1x1(ReLU(conv3x3(ReLU(x)))), bottleneck width/4, no biases."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def residual_stack(channels: int, hidden: int, n: int = 2) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(channels, hidden) for _ in range(n)], nn.ReLU())


def nearest_codes(quantizer: Quantizer, latents: torch.Tensor) -> torch.Tensor:
    """k* (Eq. 12) of channels-last latents (B, h, w, d) -> (B, h, w), without touching the codebook."""
    return quantizer.nearest(latents.reshape(-1, quantizer.dim)).view(latents.shape[:-1])


def downsample4(in_channels: int, h: int) -> list[nn.Module]:
    """The encoder trunk shared by VQ-VAE and VQ-VAE-2's bottom level: (B, in, S, S) -> (B, h, S/4, S/4)."""
    return [nn.Conv2d(in_channels, h // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(h // 2, h, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1),
            residual_stack(h, h // 4)]


class VQVAE(nn.Module):
    """Encoder (downsample x4) -> quantiser -> decoder (upsample x4)."""

    def __init__(self, quantizer: Quantizer, width: int = 128, in_channels: int = 3):
        super().__init__()
        h, d = width, quantizer.dim
        self.encoder = nn.Sequential(*downsample4(in_channels, h), nn.Conv2d(h, d, 1))
        self.levels = nn.ModuleDict({"vq": quantizer})
        self.decoder = nn.Sequential(
            nn.Conv2d(d, h, 3, padding=1),
            residual_stack(h, h // 4),
            nn.ConvTranspose2d(h, h // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(h // 2, in_channels, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> ModelOutput:
        z = self.encoder(x).permute(0, 2, 3, 1)  # channels last for the quantiser
        q = self.levels["vq"](z)
        recon = self.decoder(q.quantized.permute(0, 3, 1, 2))
        return ModelOutput(recon, q.commitment_loss, {"vq": q})

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images (B, 3, H, W) -> {"vq": codes (B, H/4, W/4)}; never updates the codebook, in any mode."""
        return {"vq": nearest_codes(self.levels["vq"], self.encoder(x).permute(0, 2, 3, 1))}

    def decode_codes(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Decode integer codes {level: (B, h, w)} to images (for codebook pictures)."""
        z = self.levels["vq"].embed(codes["vq"]).permute(0, 3, 1, 2)
        return self.decoder(z)
