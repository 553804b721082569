"""What a study's seeds can show, before it runs: from the spreads of an earlier run of the study (its
committed summary), the power of each primary comparison at the planned seeds per arm, and the seeds
per arm that 80 % power needs (analysis.stats: Welch for the difference that run observed; TOST at the
study's margin, were the true difference 0).

    python -m sweep.run convergence --dry-run     # prints these lines under the plan
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.stats import POWER, tost_power, welch_power
from analysis.tables import Layout, comparison_numbers, loss_scale
from analysis.tables.numbers import PRIMARY
from analysis.tuning import is_searched
import metrics as M


def outlook(summary: pd.DataFrame, layout: Layout, seeds: int, source: str | Path) -> list[str]:
    """One line per primary comparison of `layout` in `summary` (an earlier run, read from `source`): at
    `seeds` per arm, the power to show its observed difference and (with a margin) level, and the seeds
    per arm for 80 %. A searched study's confirmation runs are what its tables compare."""
    if is_searched(summary):
        summary = summary[summary["stage"] == M.CONFIRM]
    comp = comparison_numbers(summary, layout)
    if comp.empty:
        return []
    f = 10.0 ** loss_scale(summary)
    scale = f", {M.printable(str(summary[M.SCALE_TAG].iloc[0]))} scale" if M.SCALE_TAG in summary else ""
    lines = [f"what {seeds} seeds per arm can show (spreads of the earlier run in {source}{scale}):"]
    for r in comp[comp["family"] == PRIMARY].to_dict("records"):
        s1, s2 = r["std"], r["std_ref"]
        if seeds < 2 or not (math.isfinite(s1) and math.isfinite(s2)):
            lines.append(f"  {M.printable(r['label'])}: no test (fewer than 2 seeds on a side)")
            continue
        difference = (f"power {welch_power(s1, s2, seeds, r['diff']):.0%} to show a difference of "
                      f"{r['diff'] * f:.2f} (that run's), {_needed(r['seeds_difference'])}")
        level = (f"; power {tost_power(s1, s2, seeds, r['margin']):.0%} to show level within ±{r['margin'] * f:.2f} "
                 f"were the true difference 0, {_needed(r['seeds_level'])}" if math.isfinite(r["margin"]) else "")
        lines.append(f"  {M.printable(r['label'])}: {difference}{level}")
    return lines


def _needed(n: float) -> str:
    return f"{int(n)} seeds per arm for {POWER:.0%}" if math.isfinite(n) else f"no number of seeds reaches {POWER:.0%}"
