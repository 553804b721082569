"""The Ray Tune trainable: one trial = one run of the shared trainer.

Ray's trial config is {"base": {...}, "arm": {...}, "seed": int}; the trial's
TrialConfig is base <- arm <- seed. Each validation is reported to Tune as
{"step", "node_id", "metrics"} together with a checkpoint (model, optimiser,
quantiser buffers, data-sampler state), from which a restarted trial continues;
the last checkpoint also holds the trial's topography pictures as PNG files.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import ray
import torch
from PIL import Image
from ray import tune

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


def resume_state(checkpoint) -> dict | None:
    """The trainer's state in a Ray checkpoint, to resume from (None for no checkpoint)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return load_state(Path(d) / STATE_FILE)


def reporter(send, node_id: str):
    """The trainer's report(step, metrics, state): one Ray report per validation, carrying the state as a
    checkpoint when there is one (the topography pictures as PNG files beside it). `send` is
    tune.report or ray.train.report."""
    def report(step: int, metrics: dict, state: dict | None):
        result = {"step": step, "node_id": node_id, "metrics": metrics}
        if state is None:
            send(result)
            return
        with tempfile.TemporaryDirectory() as d:
            for name, picture in state.pop("pictures", {}).items():  # the topography pictures, at the end
                Image.fromarray(picture.permute(1, 2, 0).numpy()).save(Path(d) / f"{name}.png")
            torch.save(state, Path(d) / STATE_FILE)
            send(result, checkpoint=tune.Checkpoint.from_directory(d))
    return report


def run_trial(config: dict) -> None:
    """One trial in one process: a Tune function trainable."""
    cfg = trial_config(config)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    train(cfg, report=reporter(tune.report, ray.get_runtime_context().get_node_id()),
          resume=resume_state(tune.get_checkpoint()), data=_data(cfg.dataset, cfg.data_dir, cfg.image_size))
