"""Sensitivity figures: a study's final loss and steps to +p % against each numeric axis it sweeps.

One figure per numeric row field of the layout with at least three values
(figures/sensitivity_<field>.{png,pdf}): one panel per table metric (final loss,
steps to +10 % / +20 %, paper Sec. 4.1), one line per combination of the other
swept fields, each point the mean over seeds with its 95 % confidence interval
(Student t, n - 1 degrees of freedom; diverged seeds left out). The x axis is
logarithmic when the values span more than a decade.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats as st  # noqa: E402

from analysis.figures import figure_text, save  # noqa: E402
from analysis.stats import describe  # noqa: E402
from analysis.summary import NO_TEST_SPLIT, has_test_split  # noqa: E402
from analysis.tables import layout_for  # noqa: E402
import metrics as M  # noqa: E402

MIN_VALUES = 3  # fewer values make a comparison, which the tables show
TITLES = {M.steps_to(p): f"steps to +{p} % of the best validation loss" for p in M.THRESHOLDS}


def numeric_axes(summary: pd.DataFrame, study) -> list[str]:
    """The layout's row fields that hold numbers (not booleans) with at least MIN_VALUES values."""
    out = []
    for name in layout_for(study, summary).rows:
        col = summary.get(name)
        if (col is not None and pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
                and col.nunique() >= MIN_VALUES):
            out.append(name)
    return out


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % confidence interval (NaN with n < 2), n) of the finite values."""
    mean, std, n = describe(values)
    half = st.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n >= 2 else math.nan
    return mean, half, n


def write_sensitivity(summary: pd.DataFrame, study, folder: str | Path) -> list[Path]:
    """Write figures/sensitivity_<field>.{png,pdf} for every numeric axis; returns the paths."""
    folder = Path(folder)
    layout = layout_for(study, summary)
    columns = [M.FINAL_LOSS] + [M.steps_to(p) for p in layout.thresholds if M.steps_to(p) in summary]
    titles = {**TITLES, M.FINAL_LOSS: "final test loss" if has_test_split(summary) else NO_TEST_SPLIT}
    written = []
    for axis in numeric_axes(summary, study):
        others = [f for f in layout.rows if f != axis]
        folder.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.0), layout="constrained",
                                 squeeze=False)
        groups = summary.groupby(others, sort=False, dropna=False) if others else [((), summary)]
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            label = figure_text(" ".join(f"{f}={v}" for f, v in zip(others, key)) or "all")
            for ax, col in zip(axes[0], columns):
                points = [(x, *mean_ci(v[col])) for x, v in g.groupby(axis)]
                xs, means, halves = ([p[i] for p in points] for i in range(3))
                ax.errorbar(xs, means, yerr=[0 if math.isnan(h) else h for h in halves], marker="o", capsize=3,
                            label=label)
        values = sorted(summary[axis].unique())
        for ax, col in zip(axes[0], columns):
            if values[0] > 0 and values[-1] / values[0] > 10 * (1 + 1e-9):
                ax.set_xscale("log")
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.minorticks_off()
            ax.set(xlabel=axis, ylabel=col, title=titles.get(col, col))
        axes[0][-1].legend(fontsize=6, loc="best")
        fig.suptitle(f"{figure_text(layout.name or study)}: sensitivity to {axis} (mean, 95 % CI over seeds)",
                     fontsize=9)
        written += save(fig, folder, f"sensitivity_{axis}")
    return written
