"""MLflow layout of a sweep: one experiment per study, one parent run per sweep,
one child run per trial, each member of a pack its own as if it ran alone (named by
the VQ rule and what the study sweeps, e.g. `KSOM hard N0=1 update-0=yes seed=0`;
all config fields as params; study, scale, seed, status, every swept field and MLflow's
source fields as tags; curves as metrics logged once per validation in one batch, the
trial's summaries once at step 0: metrics.py; the test loss only at the validations that chose a new best
step, and the test loss at the chosen step as a summary, which the runs table shows beside val/best_loss).

All logging happens on the driver, in a Ray Tune callback, so there is a
single writer per store and trials need no access to it. A resumed sweep
finds each trial's run again by its Ray trial id and skips steps it already
logged, so the store holds exactly one run per trial and no duplicate points.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from PIL import Image
from ray import tune

from analysis.store import artifact_location
import metrics as M
from models.build import topography_note
from sweep.parent import source_tags
from sweep.plan import Plan, file_name
from sweep.report import TrialReport, data_error, ending, ending_of
from sweep.trial import PACK, Trial, members

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # training-runs view in the UI


def experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The id of experiment `name`, created (with the training-runs UI view) if absent; in an
    embedded store its artifacts go to `mlflow-artifacts:/<name>` (analysis/store.py)."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(tracking_uri, name),
                                    tags=EXPERIMENT_KIND)


def mark_unfinished(tracking_uri: str, exp_id: str, parent_run_id: str) -> int:
    """Mark the sweep's child runs still RUNNING as KILLED with tag status=interrupted (a resume finds
    them again and sets them RUNNING); returns how many trials ended (status finished, diverged or stopped)."""
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    for run in runs:
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, M.STATUS_TAG, M.INTERRUPTED)
            client.set_terminated(run.info.run_id, "KILLED")
    return sum(run.data.tags.get(M.STATUS_TAG) in (M.FINISHED, M.DIVERGED, M.STOPPED) for run in runs)


def trial_run_name(plan: Plan, config: dict) -> str:
    """The run name of a Ray trial config of `plan` (sweep.trial.Trial.run_name); of a pack, its members' joined
    by ' + '."""
    return " + ".join(trial.run_name(plan) for trial in members(config))


def search_tags(plan: Plan, trial: Trial) -> dict:
    """A searched study's run tags: stage (search or confirm), search (the algorithm, +asha when stopped early)
    and searched (the fields its arm's space draws); none for a grid's runs."""
    if not plan.search:
        return {}
    space = plan.search.spaces[plan.arms.index(trial.arm)]
    draw = {} if trial.draw is None else {M.DRAW_TAG: str(trial.draw)}  # which shared draw a random search ran
    return {M.STAGE_TAG: trial.stage, M.SEARCHED_TAG: ",".join(space),
            M.SEARCH_TAG: plan.search.algorithm + ("+asha" if plan.search.asha else ""), **draw}


class MlflowCallback(tune.Callback):
    """Logs every trial of a sweep as a child run of the sweep's parent run."""

    def __init__(self, tracking_uri: str, exp_id: str, parent_run_id: str, plan: Plan, pictures_dir: str | Path):
        self.tracking_uri, self.exp_id, self.parent = tracking_uri, exp_id, parent_run_id
        self.plan, self.study, self.scale, self.pictures_dir = plan, plan.study, plan.scale, Path(pictures_dir)
        self._reset()

    def _reset(self):
        self.client = MlflowClient(self.tracking_uri)
        self.runs: dict[str, str] = {}  # Ray trial id -> MLflow run id
        self.logged_up_to: dict[str, int] = {}  # run id -> last step in the store
        self.inputs_logged: set[str] = set()  # run ids whose data set is recorded (again after a resume: a no-op)

    # Tune pickles its callbacks with the sweep and unpickles them on restore:
    # keep only the settings, and look runs up again in the store.
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("client", "runs", "logged_up_to", "inputs_logged")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def run_id(self, trial, i: int | None = None) -> str:
        """The child run of the trial (of a pack: of its member i): found again after a resume, else created."""
        key = trial.trial_id if i is None else f"{trial.trial_id}-{i}"  # a pack's members: one run each
        if key in self.runs:
            return self.runs[key]
        spec = members(trial.config)[i or 0]
        found = self.client.search_runs(
            [self.exp_id], filter_string=f"tags.{M.RAY_TRIAL_TAG} = '{key}' "
                                         f"and tags.`mlflow.parentRunId` = '{self.parent}'")
        if found:
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, M.TRAIN_LOSS)
            self.logged_up_to[run_id] = max((m.step for m in history), default=0)
            self.client.set_terminated(run_id, "RUNNING")
            self.client.set_tag(run_id, M.STATUS_TAG, M.RUNNING)
            if not found[0].data.params:  # the store failed (outage, full disk) between creating and filling it
                self.client.log_batch(run_id, params=self._params(spec))
        else:
            cfg = spec.config()
            tags = {**source_tags(), **{f: str(getattr(cfg, f)) for f in self.plan.swept if f != "arm"},
                    "mlflow.parentRunId": self.parent, M.RAY_TRIAL_TAG: key, M.STUDY_TAG: self.study,
                    M.SCALE_TAG: self.scale, M.SEED_TAG: str(cfg.seed), M.RULE_TAG: cfg.rule, M.STATUS_TAG: M.RUNNING,
                    M.ARM_TAG: self.plan.arm_name(spec.arm) if self.plan.search else self.plan.label(spec.arm),
                    M.TOPOGRAPHY_TAG: topography_note(cfg) or "measured", **search_tags(self.plan, spec)}
            run = self.client.create_run(self.exp_id, run_name=spec.run_name(self.plan),
                                         tags={k: v for k, v in tags.items() if v})
            run_id = run.info.run_id
            self.client.log_batch(run_id, params=self._params(spec))
            self.logged_up_to[run_id] = 0
        self.runs[key] = run_id
        return run_id

    def _params(self, spec: Trial) -> list[Param]:
        return [Param(k, str(v)) for k, v in spec.config().to_params().items()]

    def _members(self, trial) -> list[tuple[int | None, Trial]]:
        """(member index, trial) of each run of a Ray trial: a pack's members, or (None, the trial)."""
        trials = members(trial.config)
        return list(enumerate(trials)) if PACK in trial.config else [(None, trials[0])]

    def _reports(self, trial, result: dict | None) -> list[tuple[int | None, Trial, TrialReport | None]]:
        """(member index, trial, its latest report) of each run of a Ray trial given its result."""
        report = TrialReport.from_result(result) if result and "step" in result else None
        if PACK not in trial.config:
            return [(None, members(trial.config)[0], report)]
        latest = report.members if report else []
        return [(i, spec, TrialReport.from_result(latest[i]) if i < len(latest) and latest[i] else None)
                for i, spec in self._members(trial)]

    def on_trial_start(self, iteration, trials, trial, **info):
        for i, _ in self._members(trial):
            self.run_id(trial, i)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        for i, spec, report in self._reports(trial, result):
            if report is not None:
                self._log(self.run_id(trial, i), report, spec)

    def _log(self, run_id: str, report: TrialReport, spec: Trial):
        if report.step <= self.logged_up_to[run_id]:
            return  # replayed from a checkpoint after a resume, or a pack member that ended: already in the store
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, M.SUMMARY_STEP if M.is_summary(k) else report.step)
                   for k, v in report.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)]
        self.client.log_batch(run_id, metrics=metrics, tags=[RunTag(M.NODE_TAG, report.node_id)])
        if report.dataset and run_id not in self.inputs_logged:  # MLflow keeps one record per data set
            self.client.log_inputs(run_id, [dataset_input(report.dataset, spec.config().data_dir)])
            self.inputs_logged.add(run_id)
        self.logged_up_to[run_id] = report.step

    def on_trial_complete(self, iteration, trials, trial, **info):
        for i, spec, report in self._reports(trial, trial.last_result):
            run_id = self.run_id(trial, i)
            member = i is not None and report is not None  # else the trial's own last report says
            ended = ending_of(report) if member else ending(trial)
            self.client.set_tag(run_id, M.STATUS_TAG, ended)
            if ended == M.FAILED:  # its data could not be used: nothing was trained
                self.client.set_tag(run_id, M.ERROR_TAG, report.error if member else data_error(trial))
                self.client.set_terminated(run_id, "FAILED")
                continue
            self._log_checkpoint(run_id, trial, spec, i, report)
            self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        for i, _ in self._members(trial):
            run_id = self.run_id(trial, i)
            self.client.set_tag(run_id, M.STATUS_TAG, M.FAILED)
            self.client.set_terminated(run_id, "FAILED")

    def _log_checkpoint(self, run_id: str, trial, spec: Trial, i: int | None, report: TrialReport | None):
        """The final state as artifact checkpoint/, its topography pictures as pictures/ (also copied
        to <pictures_dir>/<run name>/) and as MLflow images keyed by name, which the UI shows side
        by side across runs. A pack member's are its member-<i>/ of the pack's checkpoint (none for a member
        that diverged)."""
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(checkpoint.to_directory(tmp))
            if i is not None:
                folder = folder / f"member-{i}"
                if not folder.is_dir():
                    return
            pictures = sorted(folder.glob("*.png"))
            if pictures:
                name = spec.run_name(self.plan)
                if spec.stage == M.SEARCH:  # two draws can print alike (a choice space)
                    name += f" {trial.trial_id}"
                own = self.pictures_dir / file_name(name)
                own.mkdir(parents=True, exist_ok=True)
                for picture in pictures:
                    shutil.copy(picture, own)
                self.client.log_artifacts(run_id, str(own), artifact_path="pictures")
                step = (report or TrialReport.from_result(trial.last_result)).step
                for picture in pictures:
                    with Image.open(picture) as image:
                        self.client.log_image(run_id, image.convert("RGB"), key=picture.stem, step=step)
                    picture.unlink()
            self.client.log_artifacts(run_id, str(folder), artifact_path="checkpoint")


def dataset_input(dataset: dict, data_dir: str) -> DatasetInput:
    """The MLflow record of a trial's training data (the Dataset column of the runs table): name, digest
    and image counts from models.data.fingerprint, the folder it was read from as its source."""
    source = {"data_dir": data_dir or "(shipped with the package)"}
    profile = {"train_images": dataset["train"], "val_images": dataset["val"], "test_images": dataset["test"]}
    record = Dataset(dataset["name"], dataset["digest"], "local", json.dumps(source), profile=json.dumps(profile))
    return DatasetInput(record, tags=[InputTag("mlflow.data.context", "training")])
