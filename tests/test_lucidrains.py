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
                                    kmeans_init=True, dead_code_threshold=2, rotation_trick=True))
    cb = q.vq._codebook
    assert isinstance(q, LucidrainsQuantizer) and q.grid is None
    assert (cb.decay, cb.threshold_ema_dead_code, q.vq.rotation_trick, q.vq.commitment_weight) == (0.8, 2, True, 1.0)
    assert not bool(cb.initted)  # k-means init waits for the first training batch
    assert cb.cluster_size.sum().item() == 0.0  # n0 = 0


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
    cfg = TrialConfig(quantizer="lucidrains", decay=0.8, rotation_trick=True, commitment=1.0, kmeans_init=True,
                      dead_code_threshold=2, **TINY)
    reports = []
    result = train(cfg, report=lambda step, m, state: reports.append((step, m)), device="cpu")
    assert result.status == "finished" and [s for s, _ in reports] == [3, 6]
    last = reports[-1][1]
    assert M.VAL_LOSS in last and M.val_perplexity("vq") in last
    assert not [k for k in last if k.startswith(M.TOPOGRAPHY)]  # no grid: no shifts, no smoothness
    assert "has no grid" in topography_note(cfg) and topography_note(cfg.replace(quantizer="kohonen",
                                                                                  rotation_trick=False,
                                                                                  kmeans_init=False,
                                                                                  dead_code_threshold=0)) == ""


def test_topography_of_a_gridless_model_is_empty(photos):
    torch.manual_seed(0)
    model = build_model(TrialConfig(quantizer="lucidrains", **TINY))
    topo = topography.measure(model, photos, photos.val[:8], batch_size=8)
    assert topo.metrics == {} and topo.pictures == {}


@pytest.mark.parametrize("fields, message", [
    (dict(quantizer="lucidrains", neighbours="hard"), "quantizer=lucidrains has no neighbourhood"),
    (dict(quantizer="lucidrains", update_empty=False), "always updates every code"),
    (dict(kmeans_init=True), "kmeans_init=True applies only to quantizer=lucidrains"),
    (dict(dead_code_threshold=-1.0), "dead_code_threshold=-1.0 must be >= 0"),
    (dict(quantizer="vqtorch"), "quantizer='vqtorch' is unknown; allowed: kohonen, lucidrains"),
])
def test_config_refuses_options_of_the_other_quantizer(fields, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig(**fields)
