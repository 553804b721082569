"""Per-trial summaries of a sweep (the paper's Tables 1-4 columns, Sec. 4).

selection loss = the best (minimum) validation loss of the trial (the released code's final loss): what
                selected the trial's step, and a search's winner; selection data, never a result;
final loss    = the test loss at the first step of the selection loss (the trainer measures the test
                split only where validation improved). A sweep that logged no test loss (one of an
                earlier version) has no selection-loss column and its final loss is the selection loss:
                `has_test_split` tells the two apart, and the tables label the second
                "validation (selection) loss, no test split";
steps to +p % = the first validated step whose validation loss <= (1 + p) * selection loss, p in {10, 20};
diverged      = the trial's status is diverged: it stopped on a NaN/inf loss (counted, never dropped);
and the last value of per-level validation perplexity / codes used and the topography summaries
(loss_offset_{o}: validation loss with every code shifted by (o, o) on the grid; smoothness_{level}:
neighbour / random-pair distance of decoded codes; Sec. 4.3), each in the column metrics.column
names;
late_improvement = how much the best validation loss still fell over the last 20 % of the steps,
                relative to the selection loss: (best up to 0.8 T - selection) / selection, T the last
                validated step;
                a trial with late_improvement <= 2 % has converged (CONVERGENCE_TOLERANCE);
collapsed     = the trained model uses fewer than 5 % of the K codes on the validation set at
                some level (its last validation point): a codebook collapse, counted, kept in the
                loss means and left out of the steps means (its "final loss" is a bad plateau).
A sweep with finished trials but no validation loss logged is an error naming the metric.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow

import metrics as M

CONVERGENCE_WINDOW = 0.2  # the last 20 % of a trial's steps
CONVERGENCE_TOLERANCE = 0.02  # converged: its best validation loss fell by at most 2 % over that window
# A trial is a result when it ran to its last step or stopped on a NaN/inf loss. Trials still running,
# failed or interrupted keep their row (counted apart) but no number of theirs enters a table or figure.
RESULT_STATUSES = (M.FINISHED, M.DIVERGED)
COLLAPSE_FRACTION = 0.05  # fewer than 5 % of the K codes used on validation: collapsed
# Metrics whose last value describes the trained model: per-level perplexity and codes used,
# and the topography measured at the end (loss after shifting codes by o, smoothness ratio).
LAST_VALUE = tuple(family("") for family in (M.val_perplexity, M.val_codes_used, M.offset_loss, M.smoothness))
CODE_USE_COLUMNS = tuple(M.column(prefix) for prefix in LAST_VALUE[:2])  # prefixes of their summary columns
TOPOGRAPHY_COLUMNS = tuple(M.column(prefix) for prefix in LAST_VALUE[2:])
LAST_VALUE_COLUMNS = CODE_USE_COLUMNS + TOPOGRAPHY_COLUMNS


def steps_to_threshold(steps, losses, final: float, percent: float) -> float:
    """First step whose loss is within +percent % of `final`; NaN when none is."""
    if not math.isfinite(final):
        return math.nan
    for step, loss in zip(steps, losses):
        if loss <= (1 + percent / 100) * final:
            return float(step)
    return math.nan


def late_improvement(steps, losses, final: float) -> float:
    """(best loss up to 80 % of the last step - final) / final: what the last 20 % of the steps still
    gained (0 = nothing); NaN when there is no final loss or no point before that window."""
    steps, losses = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    if not math.isfinite(final) or len(steps) == 0:
        return math.nan
    early = losses[steps <= (1 - CONVERGENCE_WINDOW) * steps.max()]
    return float((early.min() - final) / final) if len(early) else math.nan


def collapsed(codes_used: dict[str, float], codebook_size: int) -> bool:
    """True when any level's validation codes-used (of the trained model) is below
    COLLAPSE_FRACTION x K; False when nothing was measured (a diverged trial has no codes)."""
    return any(math.isfinite(v) and v < COLLAPSE_FRACTION * codebook_size for v in codes_used.values())


NO_TEST_SPLIT = "validation (selection) loss, no test split"  # the label of a final loss that is not a test loss


def has_test_split(summary: pd.DataFrame) -> bool:
    """Whether the summary's final losses are test losses (else they are the best validation losses of a sweep
    that logged no test loss, labelled NO_TEST_SPLIT wherever they are shown)."""
    return M.SELECTION_LOSS in summary


def selection_loss(summary: pd.DataFrame) -> pd.Series:
    """Each trial's best validation loss, the loss that selects (a search's winner): the selection-loss column,
    or the final loss of a summary without a test split (where it is that loss)."""
    return summary[M.SELECTION_LOSS if has_test_split(summary) else M.FINAL_LOSS]


def summarise(trials: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: the trial's columns plus the summary columns metrics.py names (result: status
    finished or diverged, final_loss, selection_loss if the sweep logged a test loss, steps_10, steps_20,
    diverged, collapsed, late_improvement) and
    perplexity_/codes_used_{level}, loss_offset_{o} and smoothness_{level} (NaN where absent, and
    everywhere for a trial that is not a result).
    Raises metrics.MissingMetric when trials finished but no validation loss was logged."""
    if (trials.get(M.STATUS_TAG, pd.Series(dtype=str)) == M.FINISHED).any():
        M.require(metrics.metric.unique(), [M.VAL_LOSS], "the sweep's logged metrics")
    rows = []
    by_run = {run: m for run, m in metrics.groupby("run_id")}
    tested = M.TEST_LOSS in set(metrics.metric)
    for trial in trials.to_dict("records"):
        result = trial.get(M.STATUS_TAG) in RESULT_STATUSES
        m = by_run.get(trial["run_id"], metrics.iloc[:0]) if result else metrics.iloc[:0]
        val = m[m.metric == M.VAL_LOSS].sort_values("step")
        diverged = trial.get(M.STATUS_TAG) == M.DIVERGED
        finite = val[np.isfinite(val.value.to_numpy(dtype=float))]
        selection = math.nan if diverged or finite.empty else float(finite.value.min())
        row = {**trial, M.RESULT: result, M.FINAL_LOSS: selection, M.DIVERGED: diverged}
        if tested:
            chosen = finite.step[finite.value == selection].min() if math.isfinite(selection) else None
            test = m[(m.metric == M.TEST_LOSS) & (m.step == chosen)].value
            row[M.FINAL_LOSS] = float(test.iloc[0]) if len(test) else math.nan
            row[M.SELECTION_LOSS] = selection
        for p in M.THRESHOLDS:
            row[M.steps_to(p)] = steps_to_threshold(finite.step, finite.value, selection, p)
        row[M.LATE_IMPROVEMENT] = late_improvement(finite.step, finite.value, selection)
        for name in sorted(set(m.metric)):
            if name.startswith(LAST_VALUE):
                last = m[m.metric == name].sort_values("step").value
                row[M.column(name)] = float(last.iloc[-1]) if not diverged else math.nan
        codes = {k.removeprefix(CODE_USE_COLUMNS[1]): v for k, v in row.items() if k.startswith(CODE_USE_COLUMNS[1])}
        row[M.COLLAPSED] = collapsed(codes, int(trial.get("codebook_size", 0)))
        rows.append(row)
    return pd.DataFrame(rows)


# What summarise writes, as a reader of a summary.parquet checks it (the file is data: it may be damaged, cut
# short or written by something else): column -> kind. The per-level and per-offset columns are numbers too, and
# the selection loss where there is one.
SUMMARY_KINDS = {M.STUDY_TAG: "text", "run_id": "text", "run_name": "text", M.STATUS_TAG: "text", M.SCALE_TAG: "text",
                 "steps": "integer", M.SEED_TAG: "integer", M.RESULT: "bool", M.FINAL_LOSS: "number",
                 M.DIVERGED: "bool", M.COLLAPSED: "bool", M.LATE_IMPROVEMENT: "number",
                 **{M.steps_to(p): "number" for p in M.THRESHOLDS}}
KINDS = {"text": pd.api.types.is_string_dtype, "bool": pd.api.types.is_bool_dtype,
         "integer": lambda c: pd.api.types.is_integer_dtype(c) and not pd.api.types.is_bool_dtype(c),
         "number": lambda c: pd.api.types.is_numeric_dtype(c) and not pd.api.types.is_bool_dtype(c)}
KIND_NAMES = {"text": "text", "bool": "true/false", "integer": "whole numbers", "number": "numbers"}


class BadSummary(ValueError):
    """A summary.parquet that is not what summarise wrote: one line naming the file and what is wrong."""

    def __str__(self) -> str:
        return self.args[0]


def read_summary(path: str | Path) -> pd.DataFrame:
    """The per-trial summary in `path`, checked: a Parquet file with rows, every SUMMARY_KINDS column of its
    kind, every other column plain values (text, numbers or true/false: config fields and tags), and a searched
    study's `searched` fields among its columns. Raises BadSummary naming the file and what is wrong."""
    allowed = "allowed: the summary.parquet a sweep's report wrote (python -m analysis.report SWEEP_DIR writes one)"
    try:
        frame = pd.read_parquet(path)
    except (pyarrow.ArrowException, ValueError, OSError) as e:
        why = str(e).splitlines()[0].rsplit("': ", 1)[-1][:200]  # pyarrow's message names the file again
        raise BadSummary(M.printable(f"{path}: not a readable Parquet file ({why}); {allowed}")) from None
    missing = [c for c in SUMMARY_KINDS if c not in frame]
    if missing:
        raise BadSummary(f"{path}: no column {', '.join(missing)}; {allowed}")
    if frame.empty:
        raise BadSummary(f"{path}: holds no trials; {allowed}")
    for column in frame.columns:
        kind = SUMMARY_KINDS.get(column, "number" if column == M.SELECTION_LOSS or str(column).startswith(
            LAST_VALUE_COLUMNS) else None)
        plain = any(check(frame[column]) for check in KINDS.values())
        if not isinstance(column, str) or not (KINDS[kind](frame[column]) if kind else plain):
            raise BadSummary(M.printable(f"{path}: column {column!r} holds {frame[column].dtype} values, not "
                                         f"{KIND_NAMES[kind] if kind else 'text, numbers or true/false'}; {allowed}"))
    searched = {f for text in frame.get(M.SEARCHED_TAG, pd.Series(dtype=str)) for f in str(text).split(",") if f}
    if searched - set(frame.columns) or (searched and M.ARM_TAG not in frame):
        raise BadSummary(M.printable(f"{path}: its 'searched' column names fields it has no column for "
                                     f"({sorted(searched - set(frame.columns)) or ['arm']}); {allowed}"))
    return frame
