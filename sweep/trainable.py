"""The Ray Tune trainable: one trial = one run of the shared trainer.

Ray's trial config is {"base": {...}, "arm": {...}, "seed": int}; the trial's
TrialConfig is base <- arm <- seed. Each validation is reported to Tune as
{"step", "node_id", "metrics"} together with a checkpoint (model, optimiser,
quantiser buffers, data-sampler state), from which a restarted trial continues;
the last checkpoint also holds the trial's topography pictures as PNG files.
A divergence is reported as {"step", "node_id", "metrics", "status": "diverged"},
with no checkpoint.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import ray
import torch
from PIL import Image
from ray import tune

from models import metrics as M
from models.config import TrialConfig
from models.data import load_data
from models.train import train

STATE_FILE = "state.pt"


def trial_config(config: dict) -> TrialConfig:
    """The TrialConfig of a Ray trial config."""
    return TrialConfig.from_dict({**config["base"], **config["arm"], "seed": config["seed"]})


@functools.lru_cache(maxsize=2)
def _data(name: str, data_dir: str, size: int):
    return load_data(name, data_dir, size)  # kept across trials when Ray reuses the actor


def load_state(path: str | Path) -> dict:
    """A trial's saved state (tensors, numbers, strings and containers of them: the generator state is a
    tensor and the config plain values). Read with weights_only=True, so a checkpoint that someone with write
    access to the storage (an S3 bucket on a cluster) replaced cannot run code on the workers."""
    return torch.load(path, map_location="cpu", weights_only=True)


def run_trial(config: dict) -> None:
    cfg = trial_config(config)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    node_id = ray.get_runtime_context().get_node_id()

    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = load_state(Path(d) / STATE_FILE)

    pending: dict = {}

    def report(step: int, metrics: dict):
        pending.update(step=step, node_id=node_id, metrics=metrics)

    def save(step: int, state: dict):
        with tempfile.TemporaryDirectory() as d:
            for name, picture in state.pop("pictures", {}).items():  # the topography pictures, at the end
                Image.fromarray(picture.permute(1, 2, 0).numpy()).save(Path(d) / f"{name}.png")
            torch.save(state, Path(d) / STATE_FILE)
            tune.report(dict(pending), checkpoint=tune.Checkpoint.from_directory(d))

    result = train(cfg, report=report, checkpoint=save, resume=resume,
                   data=_data(cfg.dataset, cfg.data_dir, cfg.image_size))
    if result.status == M.DIVERGED:  # no checkpoint follows a divergence
        tune.report({**pending, "status": M.DIVERGED})
