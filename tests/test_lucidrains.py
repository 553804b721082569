"""The quantiser registry: vector-quantize-pytorch's VectorQuantize behind our contract, in our trainer."""
from __future__ import annotations

import pytest
import torch

import metrics as M
from models import topography
from models.build import QUANTIZERS, build_model, build_quantizer, topography_note
from models.config import QUANTIZERS as CONFIG_QUANTIZERS, ConfigError, TrialConfig
from models.lucidrains import LucidrainsQuantizer
from models.train import train

pytest.importorskip("vector_quantize_pytorch")

TINY = dict(width=16, codebook_size=16, code_dim=8, batch_size=8, steps=6, eval_every=3)


def test_registry_names_match_the_config_and_build_the_right_module():
    assert tuple(QUANTIZERS) == CONFIG_QUANTIZERS
    torch.manual_seed(0)
    q = build_quantizer(TrialConfig(quantizer="lucidrains", codebook_size=16, code_dim=8, decay=0.8, n0=0,
                                    codebook_init="kmeans", dead_code_threshold=2, rotation_trick=True))
    cb = q.vq._codebook
    assert isinstance(q, LucidrainsQuantizer) and q.grid is None
    assert (cb.decay, cb.threshold_ema_dead_code, q.vq.rotation_trick, q.vq.commitment_weight) == (0.8, 2, True, 1.0)
    assert not bool(cb.initted)  # k-means init waits for the first training batch
    assert cb.cluster_size.sum().item() == 0.0  # n0 = 0


@pytest.mark.parametrize("init", ["randn", "uniform"])
def test_randn_and_uniform_write_the_library_codebook_as_ours(init):
    """For a seed, the library starts from our quantiser's codebook (written after construction, its EMA sum a
    copy, the cluster sizes n0), and leaves the RNG where ours does (the model built next is the same)."""
    cfg = TrialConfig(codebook_size=16, code_dim=8, codebook_init=init, n0=0)
    torch.manual_seed(7)
    ours = build_quantizer(cfg)
    after_ours = torch.rand(3)
    torch.manual_seed(7)
    theirs = build_quantizer(cfg.replace(quantizer="lucidrains"))
    assert torch.equal(torch.rand(3), after_ours)
    cb = theirs.vq._codebook
    assert torch.equal(cb.embed[0], ours.weight) and torch.equal(cb.embed_avg[0], ours.weight)
    assert bool(cb.initted) and cb.cluster_size.sum().item() == 0.0
    if init == "uniform":
        assert ours.weight.abs().max().item() <= (6 / (16 * 8)) ** 0.5


def test_kmeans_runs_the_library_kmeans_on_the_first_training_batch():
    """codebook_init kmeans: the library's kmeans_init, after the first training forward: the codes are then
    a k-means fixed point of that batch (each used code is the mean of the rows nearest to it)."""
    torch.manual_seed(0)
    q = LucidrainsQuantizer(4, 2, rotation_trick=False, codebook_init="kmeans").train()
    cb = q.vq._codebook
    assert not bool(cb.initted) and torch.equal(cb.embed, torch.zeros(1, 4, 2))
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    rows = centres.repeat(8, 1) + 0.3 * torch.randn(32, 2)
    q(rows.view(1, 4, 8, 2))
    assert bool(cb.initted)
    nearest = q.nearest(rows)
    for k in nearest.unique():
        assert torch.allclose(rows[nearest == k].mean(0), q.vq.codebook[k], atol=1e-3)


def test_eval_output_is_the_nearest_code_with_our_commitment_loss():
    """In eval mode: k* = argmin ||e - w_k||^2 (Eq. 12), quantised = w_k*, commitment = mean ||w_k* - e||^2."""
    torch.manual_seed(0)
    q = LucidrainsQuantizer(4, 2, rotation_trick=False).eval()
    with torch.no_grad():
        q.vq._codebook.embed.copy_(torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]))
    e = torch.tensor([[[[0.9, 0.2], [0.1, 0.1]], [[0.2, 0.8], [0.7, 0.6]]]])  # (1, 2, 2, 2)
    out = q(e)
    assert out.indices.tolist() == [[[1, 0], [2, 3]]]
    hand = ((0.1**2 + 0.2**2) + (0.1**2 + 0.1**2) + (0.2**2 + 0.2**2) + (0.3**2 + 0.4**2)) / 8
    assert out.commitment_loss.item() == pytest.approx(hand)
    assert out.codes_used.item() == 4 and out.perplexity.item() == pytest.approx(4.0)


def test_the_trainer_runs_lucidrains_and_says_it_measures_no_topography():
    cfg = TrialConfig(quantizer="lucidrains", decay=0.8, rotation_trick=True, commitment=1.0,
                      codebook_init="kmeans", dead_code_threshold=2, **TINY)
    reports = []
    result = train(cfg, report=lambda p: reports.append((p.step, p.metrics)), device="cpu")
    assert result.status == "finished" and [s for s, _ in reports] == [3, 6]
    last = reports[-1][1]
    assert M.VAL_LOSS in last and M.val_perplexity("vq") in last
    assert not [k for k in last if k.startswith(M.TOPOGRAPHY)]  # no grid: no shifts, no smoothness
    assert "has no grid" in topography_note(cfg) and topography_note(cfg.replace(quantizer="kohonen",
                                                                                  rotation_trick=False,
                                                                                  dead_code_threshold=0)) == ""


def test_topography_of_a_gridless_model_is_empty(photos):
    torch.manual_seed(0)
    model = build_model(TrialConfig(quantizer="lucidrains", **TINY))
    topo = topography.measure(model, photos, photos.val[:8], batch_size=8)
    assert topo.metrics == {} and topo.pictures == {}


@pytest.mark.parametrize("fields, message", [
    (dict(quantizer="lucidrains", neighbours="hard"), "quantizer=lucidrains has no neighbourhood"),
    (dict(quantizer="lucidrains", update_empty=False), "always updates every code"),
    (dict(rotation_trick=True), "rotation_trick=True applies only to quantizer=lucidrains"),
    (dict(codebook_init="zeros"), "codebook_init='zeros' is unknown; allowed: randn, uniform, kmeans"),
    (dict(dead_code_threshold=-1.0), "dead_code_threshold=-1.0 must be >= 0"),
    (dict(quantizer="vqtorch"), "quantizer='vqtorch' is unknown; allowed: kohonen, lucidrains"),
])
def test_config_refuses_options_of_the_other_quantizer(fields, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig(**fields)
