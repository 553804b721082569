"""Topography (paper Sec. 4.3): the grid shift, the smoothness ratio on a hand-made
decoder with a known answer, the pictures, and the trainer measuring it at the end of a trial."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import topography
from models.build import build_model
from models.config import TrialConfig
from models.quantizer import KohonenQuantizer
from models.train import train


@pytest.mark.parametrize("grid, offset, codes, expected", [
    ((4, 2), 1, [0, 1, 3, 4, 7], [5, 6, 7, 5, 7]),  # (1, 0) -> (2, 1) = 6; (3, 0) -> (3, 1) = 7 clamped in x
    ((4, 2), 3, [0, 5], [7, 7]),  # (0, 0) -> (3, 3) clamped to (3, 1)
    ((4, 2), 0, [2, 6], [2, 6]),
    ((5,), 2, [0, 1, 3, 4], [2, 3, 4, 4]),  # 1D: k + o clamped to K - 1
])
def test_shift_codes_moves_grid_coordinates_and_clamps(grid, offset, codes, expected):
    got = topography.shift_codes(torch.tensor(codes), grid, offset)
    assert got.tolist() == expected


class GridDecoder(nn.Module):
    """A hand-made 'model' whose decoder paints code k as its grid coordinates G(k) = (k mod W, k // W)."""

    def __init__(self, grid):
        super().__init__()
        self.levels = nn.ModuleDict({"vq": KohonenQuantizer(math.prod(grid), 2, neighbours="hard", grid=grid)})
        self.scale = nn.Parameter(torch.ones(()))

    def decode_codes(self, codes):
        k = codes["vq"][:, :1, :1].float()  # (B, 1, 1): the latents are constant here
        width = self.levels["vq"].grid[0]
        return torch.stack([k % width, torch.div(k, width, rounding_mode="floor")], 1) * self.scale


def test_smoothness_ratio_of_a_hand_made_decoder():
    """3 x 2 grid, code k decodes to the point G(k). Of the 15 pairs, 7 are at distance 1 and 4 at sqrt(2)
    (the 11 neighbours); 2 are at distance 2 and 2 at sqrt(5). Ratio = mean(neighbours) / mean(all)."""
    model = GridDecoder((3, 2))
    images = topography.codebook_images(model, "vq", {"vq": torch.zeros(1, 2, 2, dtype=torch.long)})
    assert images.shape == (6, 2, 1, 1)
    assert images[4].flatten().tolist() == [1.0, 1.0]  # k = 4 -> (1, 1)
    neighbours = (7 + 4 * math.sqrt(2)) / 11
    everyone = (7 + 4 * math.sqrt(2) + 2 * 2 + 2 * math.sqrt(5)) / 15
    assert topography.smoothness_ratio(images, (3, 2)) == pytest.approx(neighbours / everyone, rel=1e-12)


def test_smoothness_ratio_1d_and_unordered():
    """1D: images 0, 1, 2, 3 in grid order give 1 / (10 / 6) = 0.6; shuffled on the grid, more."""
    ordered = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(4, 1)
    assert topography.smoothness_ratio(ordered, (4,)) == pytest.approx(0.6)
    shuffled = torch.tensor([0.0, 3.0, 1.0, 2.0]).view(4, 1)  # neighbour gaps 3, 2, 1
    assert topography.smoothness_ratio(shuffled, (4,)) == pytest.approx(2.0 / (10 / 6))


@pytest.mark.parametrize("model_name, levels", [("vqvae", ("vq",)), ("vqvae2", ("top", "bottom"))])
def test_offset_losses_shift_every_level(model_name, levels, photos):
    """The loss at offset o is the MSE after moving every level's codes by (o, o) on its grid,
    computed here with the coordinates written out; offset 0 is the ordinary eval-mode loss."""
    torch.manual_seed(0)
    cfg = TrialConfig(model=model_name, width=16, codebook_size=64, code_dim=8, neighbours="hard")
    model = build_model(cfg).eval()
    images = photos.val[:6]
    losses = topography.offset_losses(model, photos, images, offsets=(0, 2))
    x = photos.normalise(images)
    assert losses[0] == pytest.approx(F.mse_loss(model(x).recon, x).item(), rel=1e-5)
    codes = model.encode_codes(x)
    assert set(codes) == set(levels)
    width, height = cfg.grid
    moved = {name: (c % width + 2).clamp(max=width - 1) + width * (c // width + 2).clamp(max=height - 1)
             for name, c in codes.items()}
    assert all((moved[name] != codes[name]).any() for name in levels)
    assert losses[2] == pytest.approx(F.mse_loss(model.decode_codes(moved), x).item(), rel=1e-5)


def test_measure_gives_metrics_and_pictures(photos):
    cfg = TrialConfig(width=16, codebook_size=64, code_dim=8, neighbours="hard", grid_width=16)  # grid 16 x 4
    torch.manual_seed(0)
    model = build_model(cfg).train()
    before = model.levels["vq"].step.item()
    topo = topography.measure(model, photos)
    assert model.training and model.levels["vq"].step.item() == before  # mode restored, codebook untouched
    assert set(topo.metrics) == {"topography/loss_offset_0", "topography/loss_offset_1", "topography/loss_offset_2",
                                 "topography/loss_offset_3", "topography/smoothness_vq"}
    assert all(math.isfinite(v) and v > 0 for v in topo.metrics.values())
    book = topo.pictures["codebook_vq"]  # 16 x 4 tiles of 32 px with 1 px gaps
    assert book.dtype == torch.uint8 and book.shape == (3, 4 * 33 + 1, 16 * 33 + 1)
    strip = topo.pictures["perturbation"]  # 8 images x (original + 4 offsets)
    assert strip.shape == (3, 8 * 33 + 1, 5 * 33 + 1)
    assert torch.equal(strip[:, 1:33, 1:33], photos.val[0])  # first column: the original image


def test_vqvae2_codebook_pictures_per_level(photos):
    torch.manual_seed(0)
    model = build_model(TrialConfig(model="vqvae2", width=16, codebook_size=16, code_dim=8, neighbours="hard"))
    topo = topography.measure(model, photos, photos.val[:4])
    assert set(topo.pictures) == {"codebook_top", "codebook_bottom", "perturbation"}
    assert topo.pictures["codebook_top"].shape == (3, 4 * 33 + 1, 4 * 33 + 1)  # a 4 x 4 grid
    assert {"topography/smoothness_top", "topography/smoothness_bottom"} <= set(topo.metrics)


def test_trainer_measures_topography_after_the_last_validation(photos):
    cfg = TrialConfig(width=16, codebook_size=64, code_dim=16, batch_size=16, steps=40, eval_every=20,
                      neighbours="hard")
    reports = []
    train(cfg, report=reports.append, data=photos, device="cpu")
    first, last = (r.metrics for r in reports)
    assert "topography/loss_offset_1" not in first and "topography/smoothness_vq" in last
    assert last["topography/loss_offset_0"] == pytest.approx(last["val/loss"], rel=1e-5)
    assert reports[0].pictures == {} and set(reports[1].pictures) == {"codebook_vq", "perturbation"}
