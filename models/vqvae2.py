"""The two-level VQ-VAE-2 of Razavi et al. (2019) for 256x256 images (paper Sec. 4, Appendix A).

The layout is the usual one of rosinality/vq-vae-2-pytorch, which the paper
names as its reference implementation (Appendix A), with the residual blocks
of models/vqvae.py (width h, 2 blocks of hidden width h/4: 32 at h = 128).
Only the codebook rule differs: each level has its own quantiser (models/protocol.py), hence
its own step counter t.

Shape contract (width h, code dim d, image side S a multiple of 8):
    images (B, 3, S, S) -> bottom features (B, h, S/4, S/4) -> top features (B, h, S/8, S/8)
    top codes (B, S/8, S/8) -> decoded top (B, d, S/4, S/4), concatenated with the bottom features
    -> bottom codes (B, S/4, S/4) -> reconstruction (B, 3, S, S)

At S = 256 the codes are 32x32 (top) and 64x64 (bottom), as in the paper:

    >>> model = VQVAE2(KohonenQuantizer(512, 64), KohonenQuantizer(512, 64), width=128)
    >>> out = model(torch.randn(1, 3, 256, 256))
    >>> out.levels["top"].indices.shape, out.levels["bottom"].indices.shape
    (torch.Size([1, 32, 32]), torch.Size([1, 64, 64]))
"""
from __future__ import annotations

import torch
from torch import nn

from models.protocol import Quantizer
from models.vqvae import ModelOutput, downsample4, nearest_codes, residual_stack


class VQVAE2(nn.Module):
    """Bottom encoder (x4 down) -> top encoder (x2 down) -> top quantiser; the decoded top codes condition
    the bottom quantiser; the decoder upsamples both levels' codes (x4) to an image."""

    def __init__(self, top: Quantizer, bottom: Quantizer, width: int = 128, in_channels: int = 3):
        super().__init__()
        if top.dim != bottom.dim:
            # The decoder concatenates both levels' codes: one d for both, as in the paper (d = 64).
            raise ValueError(f"top.dim={top.dim} and bottom.dim={bottom.dim} must be equal")
        h, d = width, top.dim
        self.encoder_bottom = nn.Sequential(*downsample4(in_channels, h))
        self.encoder_top = nn.Sequential(
            nn.Conv2d(h, h // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(h // 2, h, 3, padding=1),
            residual_stack(h, h // 4),
        )
        self.to_top = nn.Conv2d(h, d, 1)  # top latents
        self.levels = nn.ModuleDict({"top": top, "bottom": bottom})
        self.decoder_top = nn.Sequential(  # top codes -> bottom resolution, to condition the bottom level
            nn.Conv2d(d, h, 3, padding=1),
            residual_stack(h, h // 4),
            nn.ConvTranspose2d(h, d, 4, stride=2, padding=1),
        )
        self.to_bottom = nn.Conv2d(d + h, d, 1)  # bottom latents from [decoded top, bottom features]
        self.upsample_top = nn.ConvTranspose2d(d, d, 4, stride=2, padding=1)
        self.decoder = nn.Sequential(
            nn.Conv2d(2 * d, h, 3, padding=1),
            residual_stack(h, h // 4),
            nn.ConvTranspose2d(h, h // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(h // 2, in_channels, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> ModelOutput:
        features = self.encoder_bottom(x)
        top = self.levels["top"](self._top_latents(features))
        bottom = self.levels["bottom"](self._bottom_latents(top.quantized, features))
        recon = self._decode(top.quantized, bottom.quantized)
        return ModelOutput(recon, top.commitment_loss + bottom.commitment_loss, {"top": top, "bottom": bottom})

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images (B, 3, S, S) -> {"top": (B, S/8, S/8), "bottom": (B, S/4, S/4)} codes, as forward picks them
        (the bottom level sees the top codes' embedding); never updates a codebook, in any mode."""
        features = self.encoder_bottom(x)
        top = nearest_codes(self.levels["top"], self._top_latents(features))
        bottom = nearest_codes(self.levels["bottom"], self._bottom_latents(self.levels["top"].embed(top), features))
        return {"top": top, "bottom": bottom}

    def decode_codes(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Decode integer codes {"top": (B, h, w), "bottom": (B, 2h, 2w)} to images (B, 3, 8h, 8w)."""
        return self._decode(self.levels["top"].embed(codes["top"]), self.levels["bottom"].embed(codes["bottom"]))

    def _top_latents(self, features: torch.Tensor) -> torch.Tensor:
        """Bottom features (B, h, S/4, S/4) -> top latents, channels last (B, S/8, S/8, d)."""
        return self.to_top(self.encoder_top(features)).permute(0, 2, 3, 1)

    def _bottom_latents(self, top: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Quantised top (B, S/8, S/8, d) and bottom features -> bottom latents, channels last (B, S/4, S/4, d)."""
        conditioning = self.decoder_top(top.permute(0, 3, 1, 2))
        return self.to_bottom(torch.cat([conditioning, features], 1)).permute(0, 2, 3, 1)

    def _decode(self, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """Quantised top (B, S/8, S/8, d) and bottom (B, S/4, S/4, d), channels last -> images (B, 3, S, S)."""
        upsampled = self.upsample_top(top.permute(0, 3, 1, 2))
        return self.decoder(torch.cat([upsampled, bottom.permute(0, 3, 1, 2)], 1))
