"""Read what a sweep logged in MLflow into two tidy pandas frames.

trials:  one row per trial run: run_id, run_name, start_time (ms), status, study, scale, rule (the VQ rule's
         display name), arm (its study arm's label, if any; every arm's name in a searched study), stage,
         search and searched (a searched study's), topography (measured, or why not) and
         every config field (typed: numbers as numbers, true/false as bools).
metrics: one row per logged point: run_id, metric, step, value (names: metrics.py;
         a summary is one point at step 0).

MLflow (a local store or a server) and the Parquet files written here are the
only inputs of the analysis; it never imports the trainer or Ray (only the metric names).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.store import BadSweep, check_store, read_plan, read_sweep
import metrics as M
from plan import Plan


def _typed(value: str):
    if value in ("True", "False"):
        return value == "True"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def load_runs(tracking_uri: str, study: str, parent_run_id: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, metrics) of the child runs of one sweep (parent_run_id), or of every sweep of `study`.
    Raises StoreMissing when a sqlite store is not there (and creates nothing)."""
    check_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        raise ValueError(f"no MLflow experiment {study!r} at {tracking_uri}")
    runs = client.search_runs([exp.experiment_id], max_results=50_000)
    runs = [r for r in runs if "mlflow.parentRunId" in r.data.tags
            and (parent_run_id is None or r.data.tags["mlflow.parentRunId"] == parent_run_id)]
    trials, points = [], []
    for r in runs:
        row = {"run_id": r.info.run_id, "run_name": r.info.run_name, "parent_run_id": r.data.tags["mlflow.parentRunId"],
               "start_time": r.info.start_time}
        row.update({t: r.data.tags.get(t, "") for t in M.TRIAL_TAGS})
        row.update({k: _typed(v) for k, v in r.data.params.items()})
        trials.append(row)
        for name in r.data.metrics:
            points += [(r.info.run_id, name, m.step, m.value) for m in client.get_metric_history(r.info.run_id, name)]
    trials = pd.DataFrame(trials)
    if len(trials):
        trials = trials.sort_values(["run_name"], kind="stable").reset_index(drop=True)
    metrics = pd.DataFrame(points, columns=["run_id", "metric", "step", "value"])
    metrics = metrics.sort_values(["run_id", "metric", "step"], kind="stable").reset_index(drop=True)
    return trials, metrics


def sweep_runs(tracking_uri: str, study: str) -> list:
    """The parent runs (one per sweep) of `study`, newest first; a missing experiment is a ValueError,
    a missing sqlite store StoreMissing (nothing created)."""
    check_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        raise ValueError(f"no MLflow experiment {study!r} at {tracking_uri}")
    runs = client.search_runs([exp.experiment_id], max_results=50_000, order_by=["attributes.start_time DESC"])
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def logged_plan(tracking_uri: str, parent) -> Plan | None:
    """The plan of the sweep whose parent run is `parent`, from the sweep.json uploaded with its report
    (None before the report was written); BadSweep when that file is not a sweep's."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = MlflowClient(tracking_uri).download_artifacts(parent.info.run_id, "sweep.json", folder)
        except (MlflowException, OSError):
            return None
        where = f"the sweep.json of run {parent.info.run_name}"
        try:
            record = json.loads(Path(path).read_bytes().decode("utf-8"))
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise BadSweep(f"{where} is not a sweep's ({type(e).__name__}: {e})") from None
        plan = record.get("plan") if isinstance(record, dict) else None
        if not isinstance(plan, dict):
            raise BadSweep(f"{where} is not a sweep's (it holds no plan)")
        return read_plan(plan, where)


def pooled_runs(tracking_uri: str, study: str,
                all_sweeps: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, str, Plan | None]:
    """(trials, metrics, what was read, the newest sweep's plan or None) of the newest sweep of `study`,
    or with all_sweeps of every sweep, which must share one base config (the parent runs' params):
    pooling different step counts or data would average incomparable numbers, so that is a ValueError
    naming the sweeps and the fields."""
    parents = sweep_runs(tracking_uri, study)
    if not parents:
        raise ValueError(f"no sweep of {study!r} at {tracking_uri}")
    chosen = parents if all_sweeps else parents[:1]
    first = chosen[0]
    for other in chosen[1:]:
        differ = sorted(k for k in set(first.data.params) | set(other.data.params)
                        if first.data.params.get(k) != other.data.params.get(k))
        if differ:
            shown = ", ".join(f"{k}: {first.data.params.get(k)} vs {other.data.params.get(k)}" for k in differ[:5])
            raise ValueError(f"--all-sweeps: sweeps {first.info.run_name} and {other.info.run_name} differ in their "
                             f"base config ({shown}); allowed: sweeps of one base config, or one sweep (the default)")
    frames = [load_runs(tracking_uri, study, parent.info.run_id) for parent in chosen]
    trials = pd.concat([t for t, _ in frames], ignore_index=True)
    metrics = pd.concat([m for _, m in frames], ignore_index=True)
    names = ", ".join(p.info.run_name for p in chosen)
    what = f"{len(chosen)} sweeps ({names})" if all_sweeps else f"sweep {names} (the newest of {len(parents)})"
    return trials, metrics, what, logged_plan(tracking_uri, first)


def load_sweep(sweep_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, metrics) of the sweep whose folder (with its sweep.json) is sweep_dir, wherever it is now."""
    sweep = read_sweep(sweep_dir)
    return load_runs(sweep.tracking_uri, sweep.study, sweep.parent_run_id)


def write_parquet(trials: pd.DataFrame, metrics: pd.DataFrame, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trials.to_parquet(folder / "trials.parquet", index=False)
    metrics.to_parquet(folder / "metrics.parquet", index=False)


def read_parquet(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = Path(folder)
    return pd.read_parquet(folder / "trials.parquet"), pd.read_parquet(folder / "metrics.parquet")
