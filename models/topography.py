"""Topography of a trained codebook: pictures and numbers (paper Sec. 4.3, Figures 4, 5, 7).

KSOM orders its codes on the grid G (Sec. 2.1): codes close on the grid decode to
similar images. The paper shows this only in pictures; here it is also measured:

- offset losses: encode validation images, shift every code's grid coordinates by
  (o, o) (clamped at the border; every level of VQ-VAE-2), decode, and take the
  reconstruction MSE, for o = 0..3 (o = 0 is the validation loss);
- smoothness ratio per level: decode, for every code k, a latent whose codes all
  equal k (the codebook picture of Figure 4); the ratio is the mean distance between
  the images of grid neighbours (||G(i) - G(j)|| <= sqrt(2), as the hard
  neighbourhood) over the mean distance between the images of all pairs of codes.
  About 1 means no order on the grid; KSOM should give clearly less.

EMA-VQ has no grid of its own; it is measured on the same grid map as KSOM.
A model is a CodedModel (models/protocol.py): `levels` (name -> Quantizer, each with its
`grid`), `encode_codes(x) -> {level: (B, h, w)}` and `decode_codes(codes) -> images`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

import metrics as M
from models.data import ImageData
from models.neighbourhood import grid_coords
from models.protocol import CodedModel

OFFSETS = (0, 1, 2, 3)
PICTURE_IMAGES = 8  # validation images in the perturbation picture
THUMB = 32  # largest side of one code's tile in the codebook picture
ROW_1D = 32  # codes per row when a 1D grid is drawn


class Topography(NamedTuple):
    metrics: dict[str, float]  # M.offset_loss(o), M.smoothness(level)
    pictures: dict[str, torch.Tensor]  # name -> uint8 (3, H, W)


def shift_codes(codes: torch.Tensor, grid: tuple[int, ...], offset: int) -> torch.Tensor:
    """The code at G(k) + (offset, offset) for every code k in `codes`, clamped at the grid's border.

    On a 4 x 2 grid (G(k) = (k mod 4, k // 4)) code 1 = (1, 0) shifted by 1 is (2, 1) = code 6,
    and code 7 = (3, 1) stays where it is.
    """
    width = grid[0]
    x = (codes % width + offset).clamp(0, width - 1)
    if len(grid) == 1:
        return x
    y = (codes // width + offset).clamp(0, grid[1] - 1)
    return x + width * y


def offset_losses(model: CodedModel, data: ImageData, images: torch.Tensor, offsets=OFFSETS, batch_size: int = 128
                  ) -> dict[int, float]:
    """Mean reconstruction MSE of standardised uint8 `images` after shifting all codes by each offset."""
    device = next(model.parameters()).device
    total = dict.fromkeys(offsets, 0.0)
    n = 0
    with torch.no_grad():
        for chunk in images.split(batch_size):
            x = data.normalise(chunk).to(device)
            codes = model.encode_codes(x)
            for o in offsets:
                shifted = {name: shift_codes(c, model.levels[name].grid, o) for name, c in codes.items()}
                total[o] += F.mse_loss(model.decode_codes(shifted), x, reduction="sum").item()
            n += x.numel()
    return {o: t / n for o, t in total.items()}


def codebook_images(model: CodedModel, level: str, base: dict[str, torch.Tensor], batch_size: int = 128
                    ) -> torch.Tensor:
    """Decoded images (K, 3, H, W) of latents whose codes at `level` all equal k, for k = 0..K-1;
    the other levels keep the codes in `base` (one latent: {level: (1, h, w)})."""
    k_total = model.levels[level].codebook_size
    out = []
    with torch.no_grad():
        for ks in torch.arange(k_total, device=base[level].device).split(batch_size):
            codes = {name: c.expand(len(ks), *c.shape[1:]) for name, c in base.items()}
            codes[level] = ks.view(-1, 1, 1).expand(len(ks), *base[level].shape[1:])
            out.append(model.decode_codes(codes))
    return torch.cat(out)


def smoothness_ratio(images: torch.Tensor, grid: tuple[int, ...]) -> float:
    """Mean distance between the images of grid neighbours / mean distance over all pairs of codes.

    images: (K, ...) one image per code k, G as in models.neighbourhood. Distances are Euclidean.
    """
    flat = images.reshape(len(images), -1).double()
    dist = torch.cdist(flat, flat)
    g = grid_coords(grid, torch.float64).to(dist.device)
    apart = torch.cdist(g, g)
    pairs = ~torch.eye(len(flat), dtype=torch.bool, device=dist.device)
    neighbours = pairs & (apart < 1.5)  # 1.5 separates 1 and sqrt(2) from 2 without float trouble
    return float(dist[neighbours].mean() / dist[pairs].mean())


def tile(images: torch.Tensor, columns: int, pad: int = 1) -> torch.Tensor:
    """Lay (N, C, H, W) images out in rows of `columns`, in order, on a white background."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    sheet = images.new_full((c, rows * (h + pad) + pad, columns * (w + pad) + pad), 255)
    for i, image in enumerate(images):
        r, q = divmod(i, columns)
        sheet[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = image
    return sheet


def _thumbnails(images: torch.Tensor) -> torch.Tensor:
    side = max(images.shape[-2:])
    if side <= THUMB:
        return images
    return F.interpolate(images, scale_factor=THUMB / side, mode="area")


def measure(model: CodedModel, data: ImageData, images: torch.Tensor | None = None, batch_size: int = 128
            ) -> Topography:
    """The offset losses, the smoothness ratio of every level and the pictures of a trained model
    on validation `images` (uint8; default data.val), decoding `batch_size` images at a time.
    The model is left in the mode it was in.

    Pictures: `codebook_{level}` (Figure 4: code k's image at G(k); for VQ-VAE-2 the other
    level fixed to its most used code, Figure 7) and `perturbation` (Figure 5: one row per
    validation image, the original then offsets 0..3).
    A model with a quantiser that has no grid (lucidrains) gets no metrics and no pictures.
    """
    if any(q.grid is None for q in model.levels.values()):
        return Topography({}, {})  # a quantiser whose codes have no map: nothing to shift (models/build.py)
    images = data.val if images is None else images
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses = offset_losses(model, data, images, batch_size=batch_size)
    metrics = {M.offset_loss(o): v for o, v in losses.items()}
    pictures = {}
    with torch.no_grad():
        codes = model.encode_codes(data.normalise(images[:batch_size]).to(device))
        # The other level's most used code: a typical context for one level's codebook picture.
        base = {name: torch.bincount(c.flatten()).argmax().view(1, 1, 1).expand(1, *c.shape[1:])
                for name, c in codes.items()}
        for name, quantizer in model.levels.items():
            decoded = codebook_images(model, name, base, batch_size)
            metrics[M.smoothness(name)] = smoothness_ratio(decoded, quantizer.grid)
            thumbs = data.to_uint8(_thumbnails(decoded).cpu())
            pictures[f"codebook_{name}"] = tile(thumbs, quantizer.grid[0] if len(quantizer.grid) == 2 else ROW_1D)
        sample = images[:PICTURE_IMAGES]
        x = data.normalise(sample).to(device)
        sample_codes = model.encode_codes(x)
        rows = [sample]
        for o in OFFSETS:
            shifted = {name: shift_codes(c, model.levels[name].grid, o) for name, c in sample_codes.items()}
            rows.append(data.to_uint8(model.decode_codes(shifted).cpu()))
        # (1 + offsets, n, ...) -> one row per image: original, offset 0, 1, 2, 3
        pictures["perturbation"] = tile(torch.stack(rows, 1).flatten(0, 1), 1 + len(OFFSETS))
    model.train(was_training)
    return Topography(metrics, pictures)
