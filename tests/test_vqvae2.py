"""VQ-VAE-2: shapes at 32 and 256 px, one quantiser (and step counter t) per level, the
encode_codes/decode_codes contract of both models, straight-through gradients, and real training."""
from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from models.build import build_model
from models.config import TrialConfig
from models.quantizer import KohonenQuantizer
from models.checkpoint import TrainState
from models.train import Progress, train
from models.vqvae import VQVAE, ResidualBlock
from models.vqvae2 import VQVAE2

TINY2 = TrialConfig(model="vqvae2", width=16, codebook_size=64, code_dim=16, batch_size=16, lr=1e-3, steps=60,
                    eval_every=20, image_size=32, neighbours="hard", grid_dim=2, tau=0.1, seed=0)


def tiny_model(model: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY2.replace(model=model))


def run(cfg: TrialConfig, photos):
    """train() on the shared photos on the CPU; returns (result, reports [(step, metrics)], checkpoints)."""
    reports, checkpoints = [], {}

    def report(progress: Progress):  # serialise at once: the state aliases live tensors
        reports.append((progress.step, dict(progress.metrics)))
        if progress.state is not None:
            buffer = io.BytesIO()
            progress.state.save(buffer)
            checkpoints[progress.step] = buffer.getvalue()

    result = train(cfg, report=report, data=photos, device="cpu")
    return result, reports, checkpoints


@pytest.fixture(scope="module")
def baseline(photos):
    return run(TINY2, photos)


# ---------------------------------------------------------------- model


def test_shapes_at_32_pixels():
    """(2, 3, 32, 32) -> top codes (2, 4, 4), bottom codes (2, 8, 8), reconstruction (2, 3, 32, 32);
    the commitment loss is the sum over both levels."""
    model = tiny_model("vqvae2")
    out = model(torch.randn(2, 3, 32, 32))
    assert out.recon.shape == (2, 3, 32, 32)
    assert set(out.levels) == {"top", "bottom"}
    top, bottom = out.levels["top"], out.levels["bottom"]
    assert top.indices.shape == (2, 4, 4) and top.quantized.shape == (2, 4, 4, 16)
    assert bottom.indices.shape == (2, 8, 8) and bottom.quantized.shape == (2, 8, 8, 16)
    assert out.commitment_loss.item() == pytest.approx(top.commitment_loss.item() + bottom.commitment_loss.item())


def test_paper_resolution_gives_32x32_top_and_64x64_bottom_codes():
    """At 256 x 256 (the paper's resolution) the codes are 32x32 (top) and 64x64 (bottom); small width for speed."""
    torch.manual_seed(0)
    model = VQVAE2(KohonenQuantizer(16, 8), KohonenQuantizer(16, 8), width=8)
    out = model(torch.randn(1, 3, 256, 256))
    assert out.levels["top"].indices.shape == (1, 32, 32)
    assert out.levels["bottom"].indices.shape == (1, 64, 64)
    assert out.recon.shape == (1, 3, 256, 256)


def test_paper_config_has_two_512_codebooks_and_32_channel_residual_blocks():
    """The default config (width 128): K = 512, d = 64 at each level, residual blocks of hidden width 32."""
    model = build_model(TrialConfig(model="vqvae2", image_size=256))
    assert isinstance(model, VQVAE2)
    for level in model.levels.values():
        assert (level.codebook_size, level.dim) == (512, 64)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 2 * 4  # 2 per stack: bottom encoder, top encoder, top decoder, decoder
    assert all(b.conv1.out_channels == 32 for b in blocks)


def test_quantisers_built_top_first_then_bottom():
    """build_model creates the top quantiser, then the bottom one: their codebooks are the first two draws
    after the seed, in that order (so a seed fixes both)."""
    torch.manual_seed(3)
    top, bottom = torch.randn(64, 16), torch.randn(64, 16)
    torch.manual_seed(3)
    model = build_model(TINY2)
    assert torch.equal(model.levels["top"].weight, top)
    assert torch.equal(model.levels["bottom"].weight, bottom)


def test_each_level_has_its_own_step_counter():
    """Each training forward advances t of both levels by one (separate buffers); eval forwards do not."""
    model = tiny_model("vqvae2")
    x = torch.randn(2, 3, 32, 32)
    for _ in range(3):
        model(x)
    state = model.state_dict()
    assert int(state["levels.top.step"]) == 3 and int(state["levels.bottom.step"]) == 3
    model.levels["top"].step += 5  # one counter moves without the other
    assert int(model.levels["bottom"].step) == 3
    model.eval()
    model(x)
    assert int(model.levels["top"].step) == 8 and int(model.levels["bottom"].step) == 3


def test_gradients_reach_both_encoders_through_straight_through():
    """The reconstruction loss reaches the first layer of the bottom encoder and of the top encoder (the top
    codes feed the decoder through the straight-through estimator); the codebooks are buffers, not parameters."""
    model = tiny_model("vqvae2")
    out = model(torch.randn(4, 3, 32, 32))
    F.mse_loss(out.recon, torch.zeros_like(out.recon)).backward()
    for weight in (model.encoder_bottom[0].weight, model.encoder_top[0].weight, model.to_top.weight):
        assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert not any(p is level.weight for level in model.levels.values() for p in model.parameters())


# ---------------------------------------------------------------- encode_codes / decode_codes (both models)


@pytest.mark.parametrize("model_name,levels", [("vqvae", {"vq": (2, 8, 8)}),
                                               ("vqvae2", {"top": (2, 4, 4), "bottom": (2, 8, 8)})])
def test_decode_of_encode_is_the_eval_reconstruction(model_name, levels):
    """In eval mode decode_codes(encode_codes(x)) equals forward's reconstruction, and encode_codes gives
    forward's codes, shaped (B, h, w) per level."""
    model = tiny_model(model_name).eval()
    x = torch.randn(2, 3, 32, 32)
    codes = model.encode_codes(x)
    assert {name: tuple(c.shape) for name, c in codes.items()} == levels
    assert all(c.dtype == torch.long for c in codes.values())
    out = model(x)
    for name in levels:
        assert torch.equal(codes[name], out.levels[name].indices), name
    assert torch.allclose(model.decode_codes(codes), out.recon, atol=1e-5)


@pytest.mark.parametrize("model_name", ["vqvae", "vqvae2"])
def test_encode_codes_never_updates_a_codebook(model_name):
    """encode_codes in training mode leaves every buffer (codebook, EMAs, t) unchanged and builds no graph."""
    model = tiny_model(model_name).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    codes = model.encode_codes(torch.randn(2, 3, 32, 32))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(c.requires_grad for c in codes.values())


def test_decode_codes_uses_each_levels_embedding():
    """decode_codes of constant codes (top k, bottom j) depends on both levels: changing either code changes the
    image, and the images follow the codebook rows w_k (editing row k of the top codebook changes the output)."""
    model = tiny_model("vqvae2").eval()
    codes = {"top": torch.full((1, 4, 4), 5), "bottom": torch.full((1, 8, 8), 7)}
    with torch.no_grad():
        image = model.decode_codes(codes)
        assert not torch.allclose(model.decode_codes({**codes, "top": torch.full((1, 4, 4), 6)}), image)
        assert not torch.allclose(model.decode_codes({**codes, "bottom": torch.full((1, 8, 8), 6)}), image)
        model.levels["top"].weight[6] = 0.0  # an unused row changes nothing
        assert torch.equal(model.decode_codes(codes), image)
        model.levels["top"].weight[5] = 0.0
        assert not torch.allclose(model.decode_codes(codes), image)


# ---------------------------------------------------------------- training with the shared trainer


def test_trains_and_reports_both_levels(baseline):
    """60 steps of KSOM (hard 2D) on the photos: finite reports with per-level metrics, validation loss falls,
    each level's t equals the number of training steps."""
    result, reports, checkpoints = baseline
    assert result.status == "finished" and result.step == 60
    assert [s for s, _ in reports] == [20, 40, 60]
    for _, m in reports:
        for level in ("top", "bottom"):
            for key in (f"val/perplexity_{level}", f"val/codes_used_{level}", f"train/perplexity_{level}",
                        f"train/codes_used_{level}"):
                assert math.isfinite(m[key]), key
            assert 1.0 <= m[f"val/perplexity_{level}"] <= m[f"val/codes_used_{level}"] <= 64
    val = [m["val/loss"] for _, m in reports]
    assert val[-1] < val[0]
    state = TrainState.load(io.BytesIO(checkpoints[60])).model
    assert int(state["levels.top.step"]) == 60 and int(state["levels.bottom.step"]) == 60


def test_reported_per_level_perplexity_recomputed(baseline, photos):
    """val/perplexity_top/bottom = exp(-sum p log p) of each level's code counts over the validation set,
    recomputed from the step-60 checkpoint with encode_codes; val/loss recomputed with decode_codes."""
    _, reports, checkpoints = baseline
    model = build_model(TINY2)
    model.load_state_dict(TrainState.load(io.BytesIO(checkpoints[60])).model)
    model.eval()
    x = photos.normalise(photos.val)
    codes = model.encode_codes(x)
    metrics = dict(reports)[60]
    for level, c in codes.items():
        counts = torch.bincount(c.flatten(), minlength=64).double()
        p = [n / counts.sum().item() for n in counts.tolist() if n > 0]
        assert metrics[f"val/perplexity_{level}"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)),
                                                                  rel=1e-6)
        assert metrics[f"val/codes_used_{level}"] == len(p)
    with torch.no_grad():
        recon = model.decode_codes(codes)
    assert metrics["val/loss"] == pytest.approx(F.mse_loss(recon.double(), x.double()).item(), rel=1e-4)


def test_same_seed_same_metrics(baseline, photos):
    """Deterministic on the CPU: the same config and seed reports identical metrics; another seed does not."""
    _, reports, _ = baseline
    _, again, _ = run(TINY2, photos)
    comparable = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}  # noqa: E731 (wall clock varies)
    assert [(s, comparable(m)) for s, m in again] == [(s, comparable(m)) for s, m in reports]
    _, other, _ = run(TINY2.replace(steps=20, seed=1), photos)
    assert other[0][1]["val/loss"] != reports[0][1]["val/loss"]


def test_vqvae_still_builds_one_level():
    """model=vqvae is unchanged: a VQVAE with the single level "vq"."""
    model = build_model(TINY2.replace(model="vqvae"))
    assert isinstance(model, VQVAE) and list(model.levels) == ["vq"]
