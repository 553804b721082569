"""Did a run last long enough, and do the paper's central claims hold on it? (analysis.summary's
late improvement, analysis.paper's long-run claims), on hand-made trials whose answers are known."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.paper import convergence_markdown, long_run_claims
from analysis.tables.layout import read_layout
from sweep.study import SHIPPED
from analysis.summary import late_improvement


def test_late_improvement_is_what_the_last_fifth_of_the_steps_gained():
    steps = [100, 200, 300, 400, 500]
    # best up to step 400 (= 0.8 * 500) is 0.50; the final (best overall) is 0.40: (0.50 - 0.40) / 0.40
    assert late_improvement(steps, [0.9, 0.6, 0.5, 0.55, 0.4], 0.4) == pytest.approx(0.25)
    # flat at the end: nothing gained
    assert late_improvement(steps, [0.9, 0.6, 0.5, 0.5, 0.51], 0.5) == 0.0
    assert math.isnan(late_improvement(steps, [0.9] * 5, math.nan))
    assert math.isnan(late_improvement([], [], 0.3))


def _trials(ema_losses, ksom_losses, ema_steps, ksom_steps):
    rows = []
    for kind, losses, steps in (("none", ema_losses, ema_steps), ("hard", ksom_losses, ksom_steps)):
        for seed, (loss, step) in enumerate(zip(losses, steps)):
            rows.append({"neighbours": kind, "n0": 1, "update_empty": True, "seed": seed, "final_loss": loss,
                         "steps_10": step, "steps_20": step / 2, "diverged": False, "result": True,
                         "late_improvement": 0.01 * seed, "steps": 4000})
    return pd.DataFrame(rows)


def test_ema_catches_up_when_the_difference_is_not_significant():
    # means 0.0450 vs 0.0440, stds 0.002 each, n = 3: t = 0.001 / sqrt(2 * 0.002^2 / 3) = 0.61, p ~ 0.57
    claims = long_run_claims(_trials([0.043, 0.045, 0.047], [0.042, 0.044, 0.046], [900, 1000, 1100], [400, 500, 600]))
    (catch, held, numbers), (sooner10, fast10, _), _ = claims
    assert held and "p = 0.57" in numbers and "EMA-VQ 45.0 ± 2.0 vs KSOM 44.0 ± 2.0" in numbers
    # steps: 500 vs 1000, stds 100: t = -500 / sqrt(2 * 100^2 / 3) = -6.12, df = 4, p = 0.0036
    assert fast10


def test_ema_does_not_catch_up_when_clearly_worse():
    claims = long_run_claims(_trials([0.060, 0.061, 0.062], [0.040, 0.041, 0.042], [500, 500, 600], [500, 600, 500]))
    assert not claims[0][1] and "EMA-VQ - KSOM = 20.0" in claims[0][2]
    assert not claims[1][1]  # same steps: not sooner


def test_convergence_table_counts_the_converged_seeds():
    table = convergence_markdown(_trials([0.04] * 3, [0.04] * 3, [1] * 3, [1] * 3), read_layout(SHIPPED / "comparison.yaml"))
    # late improvements 0, 1 and 2 %: all three within the 2 % tolerance; mean 1.0 %, max 2.0 %
    assert "| EMA-VQ | 3 of 3 | 1.0 % (2.0 %) |" in table and "| KSOM hard | 3 of 3 |" in table
