"""The trainer's checkpoint: what models/train.py hands over after each validation and resumes from.

On disk (a sweep's state.pt, sweep/trainable.py) it is a plain dict of the fields below: tensors,
numbers, strings and containers of them, so it is read with torch.load(weights_only=True) and a
checkpoint that someone with write access to the storage (an S3 bucket on a cluster) replaced cannot
run code on the workers. Checkpoints written before this record existed hold the first nine keys and load
(with an empty history); those written before the test split load without a test loss (nan).
"""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import IO

import torch


@dataclass
class TrainState:
    model: dict[str, torch.Tensor]  # the model's state_dict, quantiser buffers included
    optimizer: dict  # AdamW's state_dict
    generator: torch.Tensor  # the batch sampler's random generator (photos, CIFAR)
    step: int  # training steps done; also the image-folder loader's position (models/data/loader.py)
    best_val_loss: float  # inf before the first finite validation
    train_time: float  # total seconds in training steps
    eval_time: float  # total seconds in validation and topography
    config: dict  # TrialConfig.to_params() of the run
    metrics: dict[str, float]  # this validation's metrics
    # (step, metrics) of every validation so far, this one last: a resumed multi-worker trial reports them all
    # again, since its driver may have died before it got the reports that preceded this checkpoint
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    test_loss: float = math.nan  # the test loss at the step of best_val_loss (nan: none measured)

    def save(self, f: str | Path | IO[bytes]) -> None:
        """Write the state as a plain dict (its live tensors are copied out: save before training goes on)."""
        torch.save(vars(self), f)

    @classmethod
    def load(cls, f: str | Path | IO[bytes]) -> TrainState:
        """A saved state, its tensors on the CPU (the trainer moves them to the model's device)."""
        saved = torch.load(f, map_location="cpu", weights_only=True)
        missing = [f_.name for f_ in fields(cls)
                   if f_.name not in saved and f_.default is MISSING and f_.default_factory is MISSING]
        if missing:
            raise ValueError(f"{f} is not a trainer checkpoint: it lacks {missing}")
        return cls(**{f_.name: saved[f_.name] for f_ in fields(cls) if f_.name in saved})
