"""The Ray Tune trainables: one trial = one run of the shared trainer, on one process or several.

Ray's trial config is read as a sweep.trial.Trial (its TrialConfig: base <- arm <- search <- seed).
Each report of the trainer (models/train.py's Progress) goes to Tune as a TrialReport (sweep/report.py:
step, status, metrics, where it ran, the data set's fingerprint) together with a checkpoint (the
trainer's TrainState, models/checkpoint.py, as state.pt) in one report. A restarted trial continues from its last
checkpoint; the last checkpoint also holds the trial's topography pictures as PNG files.
A divergence is reported with status "diverged" and no checkpoint.

- `run_trial`: the trial in the Tune trial's own process.
- `run_workers_trial`: the trial as a Ray Train TorchTrainer of N worker processes
  (data parallel, models/train.py), started from the Tune trial. Rank 0's reports
  reach Tune through Ray Train's TuneReportCallback; the checkpoints live in Ray
  Train's run folder <storage>/train-<trial id>, from which a restarted trial's
  TorchTrainer restores every worker. A resumed run first re-reports every
  validation up to its checkpoint (the checkpoint's history, flagged "resumed"): Ray Train
  may have saved a checkpoint whose report, or earlier ones, never reached the driver, and
  the driver logs only the steps it lacks, so none is lost or doubled; when the run finishes,
  the Tune trial reports the last checkpoint once more, so that Tune holds it as
  for a one-process trial.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import ray
import torch
from PIL import Image
from ray import tune

import metrics as M
from models.checkpoint import TrainState
from models.data import DataError, fingerprint, load_data
from models.train import Progress, train
from sweep.report import TrialReport
from sweep.trial import trial_config

STATE_FILE = "state.pt"


@functools.lru_cache(maxsize=2)
def _data(name: str, data_dir: str, size: int):
    data = load_data(name, data_dir, size)  # kept across trials when Ray reuses the actor
    return data, fingerprint(data)


def resume_state(checkpoint) -> TrainState | None:
    """The trainer's state in a Ray checkpoint, to resume from (None for no checkpoint)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return TrainState.load(Path(d) / STATE_FILE)


def placement() -> dict:
    """Where this process runs: its Ray node id and the ids of the GPUs Ray assigned to it."""
    context = ray.get_runtime_context()
    return {"node_id": context.get_node_id(), "gpu_ids": [str(i) for i in ray.get_gpu_ids()]}


def reporter(send, rank: int = 0, dataset: dict | None = None):
    """The trainer's report(Progress): one Ray report per validation, carrying rank 0's state as
    a checkpoint when there is one (the topography pictures as PNG files beside it). `send` is
    tune.report or ray.train.report (which every worker calls, rank 0 with the checkpoint); `dataset`
    (models.data.fingerprint) goes with every report, for the run's record of its input."""
    where = {**placement(), "dataset": dataset or {}}

    def report(progress: Progress):
        result = TrialReport(progress.step, progress.status, progress.metrics, **where).to_result()
        if progress.state is None or rank != 0:  # diverged (no checkpoint), or not the worker that saves
            send(result)
            return
        with tempfile.TemporaryDirectory() as d:
            for name, picture in progress.pictures.items():  # the topography pictures, at the end
                Image.fromarray(picture.permute(1, 2, 0).numpy()).save(Path(d) / f"{name}.png")
            progress.state.save(Path(d) / STATE_FILE)
            send(result, checkpoint=tune.Checkpoint.from_directory(d))
    return report


def run_trial(config: dict) -> None:
    """One trial in one process: a Tune function trainable. A data error ends it with a failed report (one
    line, no retries: the same files would fail again)."""
    cfg = trial_config(config)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    try:
        data, dataset = _data(cfg.dataset, cfg.data_dir, cfg.image_size)
        train(cfg, report=reporter(tune.report, dataset=dataset), resume=resume_state(tune.get_checkpoint()),
              data=data)
    except DataError as e:
        # Raised in a DataLoader process, its message holds that process's traceback: the last line is ours.
        line = str(e).strip().splitlines()[-1].removeprefix(f"{DataError.__module__}.DataError: ")
        tune.report(TrialReport(0, M.FAILED, {}, error=line).to_result())


def run_workers_trial(config: dict, storage: str, workers: int, cpus: float, gpus: float) -> None:
    """One trial on `workers` processes: a Tune function trainable that runs a Ray Train TorchTrainer whose
    workers share `cpus` and `gpus` evenly; its run folder is <storage>/train-<trial id>."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    per_worker = {"CPU": cpus / workers, **({"GPU": gpus / workers} if gpus else {})}
    trainer = TorchTrainer(
        _worker_loop, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=f"train-{tune.get_context().get_trial_id()}", storage_path=storage,
            callbacks=[TuneReportCallback()], checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=0)))  # Tune retries the trial
    result = trainer.fit()
    if result.checkpoint is not None and TrialReport.from_result(result.metrics).step == trial_config(config).steps:
        tune.report(result.metrics, checkpoint=result.checkpoint)


def _worker_loop(config: dict) -> None:
    """One worker of a multi-worker trial (inside Ray Train: torch.distributed is initialised)."""
    import ray.train
    import ray.train.torch

    cfg = trial_config(config)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    rank = ray.train.get_context().get_world_rank()
    resume = resume_state(ray.train.get_checkpoint())
    if resume is not None:  # every validation up to the checkpoint again: the driver logs those it lacks
        for step, metrics in resume.history or [(resume.step, resume.metrics)]:
            status = M.FINISHED if step == cfg.steps else M.RUNNING
            ray.train.report(TrialReport(step, status, metrics, **placement(), resumed=True).to_result())
    data, dataset = _data(cfg.dataset, cfg.data_dir, cfg.image_size)
    train(cfg, report=reporter(ray.train.report, rank, dataset), resume=resume, data=data,
          device=ray.train.torch.get_device())
