"""Per-trial summaries of a sweep (SPEC section 5).

final loss    = the best (minimum) validation loss of the trial (as the released code);
steps to +p % = the first validated step whose loss <= (1 + p) * final loss, p in {10, 20};
diverged      = the trial stopped on a NaN/inf loss (counted, never dropped);
and the last value of per-level perplexity / codes used and of the topography metrics
(loss_offset_{o}: validation loss with every code shifted by (o, o) on the grid;
smoothness_{level}: neighbour / random-pair distance of decoded codes; SPEC 6).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

THRESHOLDS = (10, 20)
# A trial is a result when it ran to its last step or stopped on a NaN/inf loss. Trials still running,
# failed or interrupted keep their row (counted apart) but no number of theirs enters a table or figure.
RESULT_STATUSES = ("finished", "diverged")
# Metrics whose last value describes the trained model: per-level perplexity and codes used,
# and the topography measured at the end (loss after shifting codes by o, smoothness ratio).
LAST_VALUE = ("val_perplexity_", "val_codes_used_", "val_loss_offset_", "smoothness_")


def steps_to_threshold(steps, losses, final: float, percent: float) -> float:
    """First step whose loss is within +percent % of `final`; NaN when none is."""
    if not math.isfinite(final):
        return math.nan
    for step, loss in zip(steps, losses):
        if loss <= (1 + percent / 100) * final:
            return float(step)
    return math.nan


def summarise(trials: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: the trial's columns plus result (status finished or diverged), final_loss,
    steps_10, steps_20, diverged, perplexity_/codes_used_{level}, loss_offset_{o} and smoothness_{level}
    (NaN where absent, and everywhere for a trial that is not a result)."""
    rows = []
    by_run = {run: m for run, m in metrics.groupby("run_id")}
    for trial in trials.to_dict("records"):
        result = trial.get("status") in RESULT_STATUSES
        m = by_run.get(trial["run_id"], metrics.iloc[:0]) if result else metrics.iloc[:0]
        val = m[m.metric == "val_loss"].sort_values("step")
        flag = m[m.metric == "diverged"]
        diverged = trial.get("status") == "diverged" or bool((flag.value > 0).any())
        finite = val[np.isfinite(val.value.to_numpy(dtype=float))]
        final = math.nan if diverged or finite.empty else float(finite.value.min())
        row = {**trial, "result": result, "final_loss": final, "diverged": diverged}
        for p in THRESHOLDS:
            row[f"steps_{p}"] = steps_to_threshold(finite.step, finite.value, final, p)
        for name in sorted(set(m.metric)):
            if name.startswith(LAST_VALUE):
                last = m[m.metric == name].sort_values("step").value
                row[name.removeprefix("val_")] = float(last.iloc[-1]) if not diverged else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
