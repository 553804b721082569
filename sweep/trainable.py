"""The Ray Tune trainables: one trial = one run of the shared trainer, on one process or several.

Ray's trial config is read as a sweep.trial.Trial (its TrialConfig: base <- arm <- search <- seed).
Each report of the trainer (models/train.py's Progress) goes to Tune as a TrialReport (sweep/report.py:
step, status, metrics, where it ran, the data set's fingerprint) together with a checkpoint (the
trainer's TrainState, models/checkpoint.py, as state.pt) in one report. A restarted trial continues from its last
checkpoint; the last checkpoint also holds the trial's topography pictures as PNG files.
A divergence is reported with status "diverged" and no checkpoint.

- `run_trial`: the trial in the Tune trial's own process.
- `run_pack`: a pack of trials (sweep/packs.py) trained as one model (models.train.train_pack) in the
  Tune trial's process. The members' reports of one validation go to Tune as one report whose
  `members` holds each member's latest TrialReport (a member that ended keeps its last), with one
  checkpoint: each member's state and pictures in member-<i>/ and the reports in members.json, from
  which a restarted pack resumes its members that were still running.
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
import json
import tempfile
from pathlib import Path

import ray
import torch
from PIL import Image
from ray import tune

import metrics as M
from models.checkpoint import TrainState
from models.data import DataError, fingerprint, load_data
from models.train import Progress, train, train_pack
from sweep.report import TrialReport
from sweep.trial import members, trial_config

STATE_FILE = "state.pt"
PACK_REPORTS = "members.json"  # in a pack's checkpoint: each member's latest report


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
            save(progress, Path(d))
            send(result, checkpoint=tune.Checkpoint.from_directory(d))
    return report


def save(progress: Progress, folder: Path) -> None:
    """A report's state as STATE_FILE in `folder`, and its topography pictures (at the end) as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, picture in progress.pictures.items():
        Image.fromarray(picture.permute(1, 2, 0).numpy()).save(folder / f"{name}.png")
    progress.state.save(folder / STATE_FILE)


def _threads() -> None:
    """Torch's threads: the CPUs Ray assigned to this process."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))


def _error_line(e: DataError) -> str:
    """A data error's one line (raised in a DataLoader process, its message holds that process's traceback:
    the last line is ours)."""
    return str(e).strip().splitlines()[-1].removeprefix(f"{DataError.__module__}.DataError: ")


def run_trial(config: dict) -> None:
    """One trial in one process: a Tune function trainable. A data error ends it with a failed report (one
    line, no retries: the same files would fail again)."""
    cfg = trial_config(config)
    _threads()
    try:
        data, dataset = _data(cfg.dataset, cfg.data_dir, cfg.image_size)
        train(cfg, report=reporter(tune.report, dataset=dataset), resume=resume_state(tune.get_checkpoint()),
              data=data)
    except DataError as e:
        tune.report(TrialReport(0, M.FAILED, {}, error=_error_line(e)).to_result())


class PackReports:
    """The members' reports of a pack gathered into one Ray report per validation (see the module docstring).
    `latest`: each member's latest report as resumed (None: a new pack)."""

    def __init__(self, send, n: int, where: dict, latest: list[dict] | None = None):
        self.send, self.where = send, where
        self.latest: list[dict | None] = list(latest) if latest else [None] * n
        self.progress: dict[int, Progress] = {}  # this validation's, by member
        self.waiting = set(self.running())

    def running(self) -> list[int]:
        """The members still training (not yet finished, diverged or failed)."""
        return [i for i, r in enumerate(self.latest) if r is None or r["status"] == M.RUNNING]

    def member(self, i: int):
        """Member i's report(Progress): the pack reports once every running member has."""
        def report(progress: Progress):
            self.latest[i] = TrialReport(progress.step, progress.status, progress.metrics, **self.where).to_result()
            self.progress[i] = progress
            self.waiting.discard(i)
            if not self.waiting:
                self._send()
        return report

    def _send(self):
        statuses = [r["status"] for r in self.latest]
        status = next((s for s in (M.RUNNING, M.FINISHED, M.FAILED) if s in statuses), M.DIVERGED)
        step = max(p.step for p in self.progress.values())
        result = TrialReport(step, status, {}, **self.where, members=list(self.latest)).to_result()
        saved = {i: p for i, p in self.progress.items() if p.state is not None}
        self.progress, self.waiting = {}, set(self.running())
        if not saved:  # every member still in the pack diverged: no state, as a trial alone
            self.send(result)
            return
        with tempfile.TemporaryDirectory() as d:
            for i, progress in saved.items():
                save(progress, Path(d) / f"member-{i}")
            (Path(d) / PACK_REPORTS).write_text(json.dumps(self.latest))
            self.send(result, checkpoint=tune.Checkpoint.from_directory(d))


def resume_pack(checkpoint, n: int) -> tuple[list[dict] | None, list[TrainState | None]]:
    """(each member's latest report, each member's state or None) in a pack's Ray checkpoint (None, Nones
    for none)."""
    if checkpoint is None:
        return None, [None] * n
    with checkpoint.as_directory() as d:
        latest = json.loads((Path(d) / PACK_REPORTS).read_text())
        if not isinstance(latest, list) or len(latest) != n or not all(isinstance(r, dict) for r in latest):
            raise ValueError(f"{PACK_REPORTS} of a pack of {n} holds no report per member")
        files = [Path(d) / f"member-{i}" / STATE_FILE for i in range(n)]
        return latest, [TrainState.load(f) if f.is_file() else None for f in files]


def run_pack(config: dict) -> None:
    """A pack of trials in one process, one fused model (models.train.train_pack): a Tune function trainable.
    A data error ends every member with a failed report."""
    cfgs = [trial.config() for trial in members(config)]
    _threads()
    latest, states = resume_pack(tune.get_checkpoint(), len(cfgs))
    try:
        data, dataset = _data(cfgs[0].dataset, cfgs[0].data_dir, cfgs[0].image_size)
        pack = PackReports(tune.report, len(cfgs), {**placement(), "dataset": dataset}, latest)
        going = pack.running()
        if going:
            train_pack([cfgs[i] for i in going], [pack.member(i) for i in going], [states[i] for i in going], data)
    except DataError as e:
        failed = TrialReport(0, M.FAILED, {}, error=_error_line(e)).to_result()
        tune.report({**failed, "members": [failed] * len(cfgs)})


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
    _threads()
    rank = ray.train.get_context().get_world_rank()
    resume = resume_state(ray.train.get_checkpoint())
    if resume is not None:  # every validation up to the checkpoint again: the driver logs those it lacks
        for step, metrics in resume.history or [(resume.step, resume.metrics)]:
            status = M.FINISHED if step == cfg.steps else M.RUNNING
            ray.train.report(TrialReport(step, status, metrics, **placement(), resumed=True).to_result())
    data, dataset = _data(cfg.dataset, cfg.data_dir, cfg.image_size)
    train(cfg, report=reporter(ray.train.report, rank, dataset), resume=resume, data=data,
          device=ray.train.torch.get_device())
