"""Faults and hostile input: what a sweep refuses, how it stops, and that it resumes with nothing lost.

Real components throughout: checkpoints written by torch.save, Ray Tune (local), MLflow (sqlite store
and a real `mlflow server` on 127.0.0.1). The CIFAR reader's own hostile-file tests are in test_data.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sweep.trainable import load_state


class _RunsCommand:
    """Unpickling this creates `marker` (os.system through __reduce__)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    """A state.pt replaced by someone who can write the checkpoint storage does not run on the worker;
    the trainer's own states (tensors, generator state, plain config) load."""
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "config": _RunsCommand(marker)}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        load_state(tmp_path / "evil.pt")
    assert not marker.exists()
    good = {"model": {"w": torch.ones(2)}, "generator": torch.Generator().manual_seed(3).get_state(),
            "step": 4, "best_val_loss": float("inf"), "config": {"dataset": "photos", "lr": 1e-3, "n0": 1}}
    torch.save(good, tmp_path / "state.pt")
    loaded = load_state(tmp_path / "state.pt")
    assert torch.equal(loaded["generator"], good["generator"]) and loaded["config"] == good["config"]
