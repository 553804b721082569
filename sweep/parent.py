"""The parent run of a sweep holds the sweep's answer, so that MLflow alone tells what was run
and what came out.

- params: the sweep's settings: study, scale, seeds, trials, the swept fields, and every field
  the trials share with a `base.` prefix (not one trial's config);
- description (`mlflow.note.content`, Markdown on the run's page): study, paper table, grid,
  seeds, scale, commit, wall time, the trials' outcome and the main table (of a searched study:
  its search, each arm's space, the confirmed table and the winning values);
- artifacts: tables/, figures/, summary.parquet and sweep.json, uploaded when the report is
  written (again on resume);
- MLflow's standard source fields (user, source, git commit), on child runs too;
- status FAILED when any trial failed (set by sweep/execute.py).
"""
from __future__ import annotations

import functools
import getpass
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.git_utils import get_git_commit
from mlflow.utils.mlflow_tags import (MLFLOW_GIT_COMMIT, MLFLOW_RUN_NOTE, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE,
                                      MLFLOW_USER)

from analysis.store import Sweep
import metrics as M
from plan import search_budget
from sweep.search import describe as describe_space

SOURCE = "python -m sweep.run"
ARTIFACTS = ("tables", "figures", "summary.parquet", "sweep.json")


@functools.lru_cache(maxsize=1)  # one commit per process: asked once, not for every trial's run
def source_tags() -> dict[str, str]:
    """MLflow's standard fields for who ran what: user, source, and this repository's git commit."""
    tags = {MLFLOW_USER: getpass.getuser(), MLFLOW_SOURCE_NAME: SOURCE, MLFLOW_SOURCE_TYPE: "LOCAL"}
    commit = get_git_commit(str(Path(__file__).resolve().parent))
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
    return tags


def settings(plan) -> dict[str, str]:
    """The parent's params: the sweep's settings, and the fields every trial shares as `base.<field>`
    (the swept fields are left out: their values are the arms', listed in the description's grid)."""
    out = dict(study=plan.study, scale=plan.scale, seeds=",".join(map(str, plan.seeds)), trials=str(plan.n_trials()),
               arms=str(len(plan.arms)), swept=",".join(plan.swept) or "-", cpus_per_trial=f"{plan.cpus:g}",
               gpus_per_trial=f"{plan.gpus:g}")
    if plan.search:
        out.update(search=plan.search.algorithm, samples_per_arm=str(plan.search.samples),
                   tuning_seed=str(plan.search.tuning_seed), scheduler="asha" if plan.search.asha else "-")
    out.update({f"base.{k}": str(v) for k, v in plan.base.items() if k not in plan.swept})
    return out


def grid(plan) -> str:
    """The grid as text: each swept field with its values, e.g. 'n0 {0, 1} x neighbours {none, hard}'."""
    def values(field):
        if field == "arm":  # a study file's named arms
            return "{" + ", ".join(dict.fromkeys(plan.labels)) + "}"
        seen = []
        for arm in plan.arms:
            value = arm.get(field, plan.base.get(field))
            if value not in seen:
                seen.append(value)
        return "{" + ", ".join(str(v) for v in seen) + "}"
    return " x ".join(f"{f} {values(f)}" for f in plan.swept) or "one configuration"


def describe(plan, name: str, wall: float | None = None, outcome: str = "", table: str = "") -> str:
    """The parent run's description (Markdown)."""
    commit = source_tags().get(MLFLOW_GIT_COMMIT, "unknown")
    rows = [("study", f"{plan.study}" + (f" (paper {plan.table})" if plan.table else "")),
            ("grid", f"{grid(plan)}: {len(plan.arms)} arms"),
            *search_rows(plan),
            ("seeds", ", ".join(map(str, plan.seeds))), ("scale", plan.scale), ("commit", commit[:12]),
            ("wall time", "running" if wall is None else f"{wall / 60:.1f} min"), ("trials", outcome or "running")]
    lines = [f"## Sweep {name}", "", plan.description or "", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if table:
        lines += ["", "### Results", "", table]
    return "\n".join(lines) + "\n"


def search_rows(plan) -> list[tuple[str, str]]:
    """The description's rows on a searched study: budget and algorithm, and each arm's space."""
    if not plan.search:
        return []
    budget = f"{search_budget(plan)}; only the confirmation runs are in the table"
    return [("search", budget)] + [(f"space of {plan.arm_name(arm)}", describe_space(space))
                                   for arm, space in zip(plan.arms, plan.search.spaces)]


def start_parent_run(client: MlflowClient, exp_id: str, plan, name: str) -> str:
    """The run that stands for one sweep (named as its folder); trials nest under it."""
    run = client.create_run(exp_id, run_name=name, tags={
        **source_tags(), M.STUDY_TAG: plan.study, M.SCALE_TAG: plan.scale, M.KIND_TAG: "sweep",
        MLFLOW_RUN_NOTE: describe(plan, name)})
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in settings(plan).items()])
    return run.info.run_id


def outcome(summary_file: Path, total: int) -> str:
    """'18: 16 finished, 2 diverged, 0 failed or unfinished' (and 'n stopped' early by a search's scheduler),
    from the sweep's summary.parquet."""
    status = pd.read_parquet(summary_file)[M.STATUS_TAG] if summary_file.exists() else pd.Series(dtype=str)
    counts = status.value_counts()
    ended = {s: int(counts.get(s, 0)) for s in (M.FINISHED, M.DIVERGED, M.STOPPED)}
    stopped = f"{ended[M.STOPPED]} stopped, " if ended[M.STOPPED] else ""
    return (f"{total}: {ended[M.FINISHED]} finished, {ended[M.DIVERGED]} diverged, {stopped}"
            f"{total - sum(ended.values())} failed or unfinished")


def finish_parent_run(client: MlflowClient, sweep: Sweep, plan, session_wall: float) -> None:
    """Write the answer into the sweep's parent run once the report is written: description with the
    main table, wall time, artifacts (its status is the caller's: FAILED when a trial failed)."""
    text = outcome(sweep.dir / "summary.parquet", plan.n_trials())
    wall = client.get_run(sweep.parent_run_id).data.metrics.get(M.SWEEP_WALL, 0.0) + session_wall
    table_file = sweep.dir / "tables" / f"{plan.study}.md"
    winners_file = sweep.dir / "tables" / f"{plan.study}_winners.md"
    table = "\n\n".join(f.read_text() for f in (table_file, winners_file) if f.exists())
    client.log_batch(sweep.parent_run_id, metrics=[Metric(M.SWEEP_WALL, wall, 0, M.SUMMARY_STEP)])
    client.set_tag(sweep.parent_run_id, MLFLOW_RUN_NOTE, describe(plan, sweep.name, wall, text, table))
    for name in ARTIFACTS:
        path = sweep.dir / name
        if path.is_dir():
            client.log_artifacts(sweep.parent_run_id, str(path), artifact_path=name)
        elif path.exists():
            client.log_artifact(sweep.parent_run_id, str(path))
