"""Run (or resume) a planned sweep on Ray Tune with MLflow tracking."""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient
from ray import tune

from analysis.report import report_sweep
from analysis.store import embedded_uri, write_sweep
from sweep.parent import finish_parent_run, start_parent_run
from sweep.plan import Plan
from sweep.progress import Progress, plan_line
from sweep.scales import SCALES
from sweep.tracking import MlflowCallback, experiment_id
from sweep.ui import browse_hint
from sweep.trainable import run_trial, trial_config


def run_sweep(plan: Plan, results_dir: Path, tracking_uri: str | None = None, storage: str | None = None,
              address: str | None = None, resume: dict | None = None, max_concurrent: int = 0,
              max_failures: int = 2) -> Path:
    """Run every trial of `plan` (or continue the sweep described by `resume`); returns the sweep folder."""
    session_start = time.time()
    if resume is None:
        meta = _new_sweep(plan, Path(results_dir).resolve(), tracking_uri, storage)
    else:
        meta = resume
        print(f"resuming {meta['dir']}: trusting its sweep.json and checkpoints (resume only folders your own "
              "sweeps wrote)", flush=True)
    sweep_dir = Path(meta["dir"])
    print(f"sweep folder: {sweep_dir}\n  resume with: python -m sweep.run --resume {sweep_dir}\n"
          f"{browse_hint(meta['tracking_uri'], meta['experiment_id'])}", flush=True)

    # One checkpoint per validation is the point (resume loses nothing); Tune warns about the
    # experiment snapshots that follow. Trials print nothing of their own, so their logs stay on the nodes.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables of Ray's own; Progress prints
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    trainable = tune.with_resources(run_trial, {"cpu": plan.cpus, "gpu": plan.gpus})
    n_trials = len(plan.arms) * len(plan.seeds)
    scale = SCALES.get(plan.scale)
    print(plan_line(plan, _at_once(plan, n_trials, max_concurrent), scale and scale.trial_seconds), flush=True)
    if resume is None:
        callbacks = [MlflowCallback(meta["tracking_uri"], meta["experiment_id"], meta["parent_run_id"],
                                    plan.study, plan.scale, trial_config, sweep_dir / "pictures", plan.swept),
                     Progress(n_trials, trial_config, plan.swept)]
        tuner = tune.Tuner(
            trainable,
            param_space={"base": plan.base, "arm": tune.grid_search(plan.arms), "seed": tune.grid_search(plan.seeds)},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or None, reuse_actors=True),
            run_config=tune.RunConfig(
                name=meta["ray_name"], storage_path=meta["ray_storage"], callbacks=callbacks, verbose=0,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    else:
        tuner = tune.Tuner.restore(f"{meta['ray_storage'].rstrip('/')}/{meta['ray_name']}", trainable,
                                   resume_errored=True)
    start = time.time()
    results = tuner.fit()
    errors = sum(r.error is not None for r in results)
    print(f"sweep done in {time.time() - start:.0f} s: {len(results)} trials, {errors} failed\n", flush=True)
    print(report_sweep(sweep_dir), flush=True)
    finish_parent_run(MlflowClient(meta["tracking_uri"]), meta["parent_run_id"], plan, meta,
                      time.time() - session_start)
    print(f"\n{browse_hint(meta['tracking_uri'], meta['experiment_id'])}\n"
          f"results: {sweep_dir} (tables/, figures/, *.parquet)", flush=True)
    return sweep_dir


def _at_once(plan: Plan, n_trials: int, max_concurrent: int) -> int:
    """How many trials run at once: as the cluster's CPUs (and GPUs) allow, capped by --max-concurrent."""
    resources = ray.cluster_resources()
    fits = int(resources.get("CPU", 1) // plan.cpus)
    if plan.gpus:
        fits = min(fits, int(resources.get("GPU", 0) // plan.gpus))
    return max(1, min(fits, max_concurrent or n_trials, n_trials))


def _new_sweep(plan: Plan, results_dir: Path, tracking_uri: str | None, storage: str | None) -> dict:
    """Create the sweep folder, its MLflow parent run and sweep.json."""
    name = f"{plan.study}-{plan.scale}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep_dir = results_dir / name
    sweep_dir.mkdir(parents=True, exist_ok=False)
    tracking_uri = tracking_uri or embedded_uri(results_dir)
    client = MlflowClient(tracking_uri)
    exp_id = experiment_id(client, plan.study, tracking_uri)
    meta = {"name": name, "study": plan.study, "scale": plan.scale, "dir": str(sweep_dir), "base": plan.base,
            "plan": asdict(plan), "tracking_uri": tracking_uri, "experiment_id": exp_id,
            "ray_storage": storage or str(sweep_dir), "ray_name": name if storage else "ray"}
    meta["parent_run_id"] = start_parent_run(client, exp_id, plan, meta)
    write_sweep(meta)  # paths relative to the results folder, so that it can move
    return meta
