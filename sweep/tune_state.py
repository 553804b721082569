"""Ray Tune's experiment state, made whole again before a resume.

Tune writes a sweep's experiment state (experiment_state-<time>.json, the searcher's state, tuner.pkl) into
a staging folder on the driver's machine (Ray's temp folder: session_*/artifacts/*/<experiment>/driver_artifacts)
and copies it to the sweep folder in the background, in place. A disk that fills during that copy leaves a
file cut short: Tune cannot restore from it and would start the whole sweep again, running every finished
trial twice. Before a resume, `complete` finishes that copy from the staging folder the stopped driver left
on this machine: a file of the sweep folder that is a strict prefix of the file of the same name there is
replaced by it. An experiment state that stays cut short refuses the resume in one line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from models.config import ConfigError

STATE = "experiment_state-*.json"


def complete(experiment: Path, ray_temp: Path) -> list[str]:
    """Complete the files of the Tune experiment folder `experiment` (a stage of a sweep) that a staging folder
    under `ray_temp` holds whole; returns the names completed. Raises ConfigError naming an experiment state
    that is still cut short."""
    done = []
    for staging in sorted(ray_temp.glob(f"session_*/artifacts/*/{experiment.name}/driver_artifacts")):
        if not any(_cut_short(experiment / p.name, p) for p in staging.glob(STATE)):
            continue  # another sweep's (every sweep's Tune experiment has the same folder name)
        for whole in sorted(p for p in staging.iterdir() if p.is_file()):
            if _cut_short(experiment / whole.name, whole, empty=True):
                part = experiment / f".{whole.name}.part"
                part.write_bytes(whole.read_bytes())
                os.replace(part, experiment / whole.name)
                done.append(whole.name)
    for state in sorted(experiment.glob(STATE)):
        try:
            json.loads(state.read_text())
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"{state}: Ray Tune's state of this sweep is cut short (the disk filled while it was "
                              f"written?) and no whole copy of it is left in {ray_temp} on this machine; allowed: "
                              f"a sweep whose Tune state is whole (its finished trials are in MLflow)") from None
    return done


def _cut_short(kept: Path, whole: Path, empty: bool = False) -> bool:
    """Whether `kept` is a strict prefix of `whole` (an empty file counts only with `empty`)."""
    if not kept.is_file():
        return False
    size = kept.stat().st_size
    if size >= whole.stat().st_size or (size == 0 and not empty):
        return False
    with whole.open("rb") as f:
        return f.read(size) == kept.read_bytes()


def complete_sweep(storage: str, name: str) -> list[str]:
    """`complete` for each Tune experiment of a sweep (its stages: `name`, `name`-search-i, `name`-confirm) in
    a local `storage` folder, with Ray's temp folder on this machine; returns what it completed. A storage URI
    (s3://, gs://) is left to Tune: its staging copies are uploaded whole or not at all."""
    if "://" in storage:
        return []
    from ray._common.utils import get_default_ray_temp_dir

    experiments = [p for p in Path(storage).glob(f"{name}*") if p.is_dir() and (p.name == name or
                                                                                p.name.startswith(f"{name}-"))]
    return [f"{p.name}/{f}" for p in sorted(experiments) for f in complete(p, Path(get_default_ray_temp_dir()))]
