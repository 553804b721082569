"""The quantiser and model protocols of models/protocol.py, and its one perplexity formula."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from models.build import build_model
from models.config import TrialConfig
from models.protocol import CodedModel, Quantizer, perplexity
from models.quantizer import KohonenQuantizer

ROOT = Path(__file__).resolve().parents[1]


def test_both_quantisers_satisfy_the_protocol_and_a_plain_module_does_not():
    assert isinstance(KohonenQuantizer(16, 4, neighbours="hard", grid=(4, 4)), Quantizer)
    pytest.importorskip("vector_quantize_pytorch")
    from models.lucidrains import LucidrainsQuantizer
    assert isinstance(LucidrainsQuantizer(16, 4), Quantizer)
    assert not isinstance(nn.Linear(4, 4), Quantizer)


@pytest.mark.parametrize("model", ["vqvae", "vqvae2"])
def test_both_models_satisfy_the_coded_model_protocol(model):
    built = build_model(TrialConfig(model=model, width=16, codebook_size=16, code_dim=8, image_size=32))
    assert isinstance(built, CodedModel) and all(isinstance(q, Quantizer) for q in built.levels.values())
    assert not isinstance(nn.Linear(4, 4), CodedModel)


@pytest.mark.parametrize("counts,expected", [
    ([5.0, 5.0, 0.0, 0.0], 2.0),  # two codes used equally; unused codes count 0 log 0 = 0
    ([1.0, 1.0, 1.0, 1.0], 4.0),
    ([7.0, 0.0, 0.0], 1.0),
    ([3.0, 1.0], math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))),  # 1.7548...
])
def test_perplexity_by_hand(counts, expected):
    assert perplexity(torch.tensor(counts, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)


def test_the_perplexity_formula_is_written_once():
    """Quantisers and the trainer's validation call models.protocol.perplexity: no other p log p in the code."""
    folders = ("models", "sweep", "analysis", "benchmarks")
    code = [ROOT / "metrics.py", *(p for d in folders for p in (ROOT / d).rglob("*.py"))]
    written = [str(p.relative_to(ROOT)) for p in code if "xlogy" in p.read_text()]
    assert written == ["models/protocol.py"]
