"""analysis.stats and the statistical bold / comparison tables on hand-made data whose answers
are computed here by hand from the formulas (Welch-Satterthwaite, Hedges' J, Holm's step-down,
and the closed-form Student t distribution for 4 degrees of freedom)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import (describe, holm, seeds_needed, tost, tost_from_stats, tost_power, verdict, welch,
                            welch_power)
from analysis.tables import Layout, comparison_numbers, mark_best, table_numbers, to_latex, to_text
from analysis.tables.layout import read_layout
from plan import Plan, TableLayout
from sweep.study import SHIPPED

COMPARISON = read_layout(SHIPPED / "comparison.yaml")  # the paper's Table 2, as its study file sets it

T975_DF4 = 2.776  # Student t, 97.5 % quantile, 4 degrees of freedom (any printed t table)


def p_two_sided_df4(t: float) -> float:
    """Two-sided p of Student's t with 4 degrees of freedom, closed form of its CDF:
    F(t) = 1/2 + 3/8 u (1 - t^2 / (12 (1 + t^2/4))), u = t / sqrt(1 + t^2/4)."""
    x = abs(t)
    cdf = 0.5 + 3 / 8 * (x / math.sqrt(1 + x * x / 4)) * (1 - x * x / (12 * (1 + x * x / 4)))
    return 2 * (1 - cdf)


def test_clearly_separated_groups_by_hand():
    w = welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    se = math.sqrt(1 / 3 + 1 / 3)  # both sample variances are 1
    assert w.diff == -3.0 and w.t == pytest.approx(-3 / se) and w.df == pytest.approx(4.0)
    assert w.p == pytest.approx(p_two_sided_df4(-3 / se), rel=1e-9) and w.p == pytest.approx(0.0213, abs=1e-4)
    assert (w.ci_low, w.ci_high) == pytest.approx((-3 - T975_DF4 * se, -3 + T975_DF4 * se), abs=1e-3)
    assert w.g == pytest.approx(-3 * (1 - 3 / (4 * 6 - 9)))  # pooled std 1, J = 1 - 3/15 = 0.8: g = -2.4


def test_overlapping_groups_with_unequal_spread_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 5.0]
    va, vb = 1.6666666667 / 4, 4.5 / 2  # sample variances 5/3 and 4.5 over n
    t = (2.5 - 3.5) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 1)
    pooled = math.sqrt((3 * 1.6666666667 + 1 * 4.5) / 4)
    w = welch(a, b)
    assert w.t == pytest.approx(t) and w.df == pytest.approx(df) and w.df < 2  # Welch, not pooled (df 4)
    assert w.g == pytest.approx((1 - 3 / (4 * 6 - 9)) * (-1.0) / pooled)
    assert w.p > 0.5 and w.ci_low < 0 < w.ci_high  # nothing to tell them apart


def test_one_seed_gives_no_test():
    w = welch([1.0], [2.0, 3.0])
    assert w.diff == -1.5 and all(math.isnan(v) for v in (w.t, w.df, w.p, w.ci_low, w.ci_high, w.g))
    assert describe([0.3])[:1] == (0.3,) and math.isnan(describe([0.3])[1]) and describe([0.3])[2] == 1


def test_a_diverged_seed_is_left_out():
    w, clean = welch([1.0, 2.0, 3.0, math.nan], [4.0, 5.0, 6.0, math.inf]), welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert w == clean and describe([1.0, math.nan, 3.0]) == (2.0, math.sqrt(2.0), 2)


def test_no_spread_on_either_side():
    assert welch([1.0, 1.0], [1.0, 1.0]).p == 1.0 and welch([1.0, 1.0], [2.0, 2.0]).p == 0.0


def test_holm_by_hand():
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> running max 0.06
    assert holm([0.04, 0.01, 0.03, math.nan]) == pytest.approx([0.06, 0.03, 0.06, math.nan], nan_ok=True)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 = 1; 0.9 x 1 = 0.9 < 1: never below an earlier one


def _tidy(rows):
    """A tidy table of the comparison study from (neighbours, mean, std, n) rows: one column."""
    return pd.DataFrame([{"neighbours": nb, "column": "final_loss", "mean": m, "std": s, "n": n}
                         for nb, m, s, n in rows])


def test_bold_separated_overlapping_holm_and_one_seed():
    layout = COMPARISON
    diff = 3.2 * math.sqrt(2 / 3)  # n = 3, std 1 on both sides: t = 3.2 with df = 4 exactly
    p = p_two_sided_df4(3.2)
    assert 0.025 < p < 0.05
    # one comparison at p ~ 0.033: significant, only the best is bold
    t = mark_best(_tidy([("none", 1.0, 1.0, 3), ("hard", 1.0 + diff, 1.0, 3)]), layout)
    assert t.best.tolist() == [True, False] and t.p_vs_best[1] == pytest.approx(p, rel=1e-6)
    # two such comparisons: Holm doubles the smaller p (> 0.05), so neither is significantly worse
    t = mark_best(_tidy([("none", 1.0, 1.0, 3), ("hard", 1.0 + diff, 1.0, 3), ("gaussian", 1.0 + diff, 1.0, 3)]),
                  layout)
    assert t.best.all() and t.p_vs_best[1] == pytest.approx(2 * p, rel=1e-6)
    # overlapping: bold together; a std larger than the mean does not earn a lone bold
    t = mark_best(_tidy([("none", 8.0, 10.0, 3), ("hard", 9.0, 1.0, 3)]), layout)
    assert t.best.all()
    # one seed: never bold, and cannot be the best either
    t = mark_best(_tidy([("none", 0.1, math.nan, 1), ("hard", 9.0, 1.0, 3), ("gaussian", 20.0, 1.0, 3)]), layout)
    assert t.best.tolist() == [False, True, False]


def _summary(losses: dict, steps: dict, codes: dict | None = None) -> pd.DataFrame:
    """Per-trial summary rows of the comparison study; NaN loss = a diverged seed."""
    rows = []
    for nb, values in losses.items():
        for seed, loss in enumerate(values):
            rows.append({"run_id": f"{nb}{seed}", "run_name": f"{nb} seed={seed}", "neighbours": nb, "seed": seed,
                         "final_loss": loss, "steps_10": steps[nb][seed], "steps_20": steps[nb][seed],
                         "diverged": math.isnan(loss), "collapsed": bool(codes and codes[nb][seed]),
                         "steps": 300, "scale": "smoke"})
    return pd.DataFrame(rows)


def test_comparison_table_by_hand():
    s = _summary({"none": [0.4, 0.5, 0.6, math.nan], "hard": [0.1, 0.2, 0.3]},
                 {"none": [300, 200, 100, 0], "hard": [100, 100, 200]})
    c = comparison_numbers(s, COMPARISON).set_index("column")
    loss = c.loc["final_loss"]
    se = math.sqrt(0.01 / 3 + 0.01 / 3)
    assert loss["diff"] == pytest.approx(-0.3) and (loss.n, loss.n_ref) == (3, 3)  # the diverged seed is out
    assert loss.p == pytest.approx(p_two_sided_df4(-0.3 / se), rel=1e-6)
    assert (loss.ci_low, loss.ci_high) == pytest.approx((-0.3 - T975_DF4 * se, -0.3 + T975_DF4 * se), abs=1e-3)
    assert loss.g == pytest.approx(0.8 * -0.3 / 0.1)
    assert set(c.index) == {"final_loss", "steps_10", "steps_20"} and c.p_holm.max() <= 1


def test_collapsed_seeds_are_counted_and_left_out_of_steps():
    s = _summary({"none": [0.4, 0.5, 0.6], "hard": [0.1, 0.2, 0.3]},
                 {"none": [20, 200, 100], "hard": [100, 100, 200]},
                 codes={"none": [True, False, False], "hard": [False, False, False]})
    t = table_numbers(s, COMPARISON).set_index(["neighbours", "column"])
    assert t.loc[("none", "final_loss"), "n"] == 3 and t.loc[("none", "final_loss"), "mean"] == pytest.approx(0.5)
    assert t.loc[("none", "steps_10"), "n"] == 2 and t.loc[("none", "steps_10"), "mean"] == 150  # not the 20
    assert t.loc[("none", "steps_10"), "collapsed"] == 1
    text = to_text(t.reset_index(), s, COMPARISON)
    row = next(line for line in text.splitlines() if line.startswith("EMA-VQ"))
    assert "150 ± 71† *" in row and row.endswith("3/0/1")
    assert "\\dagger" in to_latex(t.reset_index(), s, COMPARISON)


def test_one_seed_table_has_no_bold_and_says_why():
    s = _summary({"none": [0.4], "hard": [0.1]}, {"none": [300], "hard": [100]})
    t = table_numbers(s, COMPARISON)
    assert not t.best.any()
    assert "No bold: fewer than 2 seeds" in to_latex(t, s, COMPARISON)
    assert np.isnan(comparison_numbers(s, COMPARISON).p).all()


def test_layout_from_a_plan():
    """A sweep's plan gives the layout its study file's block sets, the rest derived from its swept axes."""
    block = Layout.from_plan(Plan("r", "smoke", {}, [{}], [0], 1.0, 0.0, swept=["n0", "neighbours"],
                                  reference={"neighbours": "none"},
                                  layout=TableLayout(order=["n0", "neighbours"], caption="$\\tau$ (Table 9).",
                                                     headers={"n0": "$N$"})))
    assert (block.rows, block.group, block.columns, block.caption, block.headers) == (
        ("n0", "neighbours"), ("n0",), ("n0", "neighbours"), "$\\tau$ (Table 9).", {"n0": "$N$"})
    layout = Layout.from_plan(Plan("lr_sweep", "smoke", {}, [{}], [0], 1.0, 0.0, swept=["lr", "neighbours"],
                                   reference={"neighbours": "none"}, metrics=["final_loss", "steps_20"],
                                   description="lr x quantiser"))
    assert (layout.rows, layout.group, layout.thresholds, layout.columns) == (
        ("lr", "neighbours"), ("lr",), (20,), ("neighbours", "lr"))
    s = _summary({"none": [0.4, 0.5], "hard": [0.1, 0.2]}, {"none": [300, 200], "hard": [100, 100]}).assign(lr=1e-3)
    comp = comparison_numbers(s, layout)
    assert comp.neighbours.tolist() == ["hard", "hard"] and comp.column.tolist() == ["final_loss", "steps_20"]


def test_figure_bands_are_geometric_and_colours_follow_the_quantiser():
    from analysis.figures import COLOURS, geometric_band, styles
    mean, low, high = geometric_band(pd.Series([1.0, 100.0, math.nan]))  # logs 0 and 4.6: mean 10, sd ln(100)/sqrt(2)
    sd = math.log(100) / math.sqrt(2)
    assert mean == pytest.approx(10.0) and low == pytest.approx(10 / math.exp(sd)) and high == pytest.approx(
        10 * math.exp(sd)) and low > 0  # an arithmetic band (50.5 +- 70) would cross zero
    trials = pd.DataFrame({"neighbours": ["hard", "none", "hard", "none"], "n0": [1, 1, 0, 0],
                           "update_empty": True, "seed": 0})
    look = styles(trials, read_layout(SHIPPED / "robustness.yaml"))
    assert look.config.tolist() == ["EMA-VQ N0=0 Update-0=Yes", "KSOM hard N0=0 Update-0=Yes",
                                    "EMA-VQ N0=1 Update-0=Yes", "KSOM hard N0=1 Update-0=Yes"]  # paper order
    assert look.colour.tolist() == [COLOURS["none"], COLOURS["hard"]] * 2
    assert look["style"][0] == look["style"][1] != look["style"][2]  # style = N0 x update-0


def test_tost_by_hand():
    """a - b with means 1.00 and 1.01, s = 0.02 each, n = 3 each: se = sqrt(2 x 0.0004 / 3) = 0.0163299, df = 4;
    90 % interval -0.01 +- 2.131847 x 0.0163299 = [-0.044813, 0.024813]. Margin 0.0505 holds it: equivalent;
    margin 0.02 does not: t_low = 0.01 / 0.0163299 = 0.612 < t_{0.95, 4}, so p > 0.05."""
    e = tost([1.00, 1.02, 0.98], [1.01, 1.03, 0.99], 0.0505)
    assert e.diff == pytest.approx(-0.01) and e.margin == 0.0505
    assert (e.ci_low, e.ci_high) == pytest.approx((-0.044813, 0.024813), abs=1e-6)
    assert e.equivalent and e.p < 0.05
    narrow = tost_from_stats(1.00, 0.02, 3, 1.01, 0.02, 3, 0.02)
    assert not narrow.equivalent and narrow.p > 0.05
    assert narrow.p == pytest.approx(stats.t.sf(0.01 / 0.0163299, 4), rel=1e-4)
    undefined = tost_from_stats(1.0, math.nan, 1, 1.0, 0.1, 3, 0.05)
    assert math.isnan(undefined.p) and not undefined.equivalent


def test_holm_runs_over_the_primary_family_alone_by_hand():
    """Two arms against EMA-VQ, all with std 0.1 and 3 seeds (df 4): loss differences -0.3 and -0.1. Holm over the
    two loss tests alone: p_(1) x 2, then max(that, p_(2) x 1); the steps tests are the secondary family."""
    losses = {"none": [0.4, 0.5, 0.6], "hard": [0.1, 0.2, 0.3], "gaussian": [0.3, 0.4, 0.5]}
    steps = {"none": [300, 200, 100], "hard": [100, 100, 200], "gaussian": [300, 300, 200]}
    c = comparison_numbers(_summary(losses, steps), COMPARISON).set_index(["neighbours", "column"])
    se = math.sqrt(0.01 / 3 + 0.01 / 3)
    p_hard, p_gauss = p_two_sided_df4(-0.3 / se), p_two_sided_df4(-0.1 / se)
    assert p_hard < p_gauss
    assert c.loc[("hard", "final_loss"), "p_holm"] == pytest.approx(2 * p_hard, rel=1e-6)
    assert c.loc[("gaussian", "final_loss"), "p_holm"] == pytest.approx(max(2 * p_hard, p_gauss), rel=1e-6)
    secondary = c[c.family == "secondary"]
    assert set(secondary.index.get_level_values("column")) == {"steps_10", "steps_20"}
    assert secondary.p_holm.tolist() == pytest.approx(holm(secondary.p).tolist())  # 4 tests among themselves
    assert (c.loc[(slice(None), "final_loss"), "family"] == "primary").all()
    assert c.loc[("hard", "final_loss"), "verdict"] == "better" and secondary.verdict.eq("").all()


def test_verdict_words_on_hand_made_cases():
    """(mean, std, n) against a reference; margins in loss units. TOST of 1.000 vs 1.001 with s = 0.01, n = 10:
    se = sqrt(2 x 1e-4 / 10) = 0.004472, lower one-sided t = (-0.001 + 0.05) / se = 10.96: passes at any
    reasonable df; the same with n = 3 and margin 0.01: t = 0.009 / 0.008165 = 1.10 < t_{0.95, 4} = 2.132: fails."""
    level = verdict(1.000, 0.01, 10, 1.001, 0.01, 10, p_holm=0.9, margin=0.05)
    assert level.word == "level" and level.p_tost < 1e-6 and level.margin == 0.05
    significant_but_inside = verdict(1.00, 0.001, 10, 1.01, 0.001, 10, p_holm=1e-9, margin=0.05)
    assert significant_but_inside.word == "level"  # a difference inside the margin: level, with its diff and p
    assert significant_but_inside.diff == pytest.approx(-0.01) and significant_but_inside.p_holm == 1e-9
    fails = verdict(1.000, 0.01, 3, 1.001, 0.01, 3, p_holm=0.9, margin=0.01)
    assert fails.word == "undecided"
    assert fails.p_tost == pytest.approx(stats.t.sf(0.009 / math.sqrt(2e-4 / 3), 4), rel=1e-4) and fails.p_tost > 0.05
    assert verdict(1.0, 0.1, 3, 2.0, 0.1, 3, p_holm=0.01).word == "better"
    assert verdict(2.0, 0.1, 3, 1.0, 0.1, 3, p_holm=0.01, margin=0.05).word == "worse"
    assert verdict(2.0, 0.1, 3, 1.0, 0.1, 3, p_holm=0.05).word == "undecided"  # p must be below alpha
    assert math.isnan(verdict(2.0, 0.1, 3, 1.0, 0.1, 3, p_holm=0.2).p_tost)  # no margin: no TOST


def test_power_and_seeds_needed_by_hand():
    """Welch at equal spreads is Student's t: effect d = 1 sd, two-sided 0.05, n = 17 per arm gives power 0.807
    (Cohen 1988's sample-size table: n = 17 per group for 0.80 at d = 1.0), n = 16 falls short. TOST at true difference 0 with
    s = 1, margin 0.5 and n = 50: se = 0.2, power ~ 2 Phi(0.5 / 0.2 - t_{0.95, 98}) - 1 = 2 Phi(0.8394) - 1 = 0.599.
    The convergence study (stds 2.149 and 0.800 x10^-3, margin 5 % of 29.50 x10^-3): 3 seeds give ~2.6 %,
    22 per arm 80 %."""
    assert welch_power(1.0, 1.0, 17, 1.0) == pytest.approx(0.807, abs=1e-3)
    assert welch_power(1.0, 1.0, 16, 1.0) < 0.8 and seeds_needed(1.0, 1.0, diff=-1.0) == 17
    assert tost_power(1.0, 1.0, 50, 0.5) == pytest.approx(2 * stats.norm.cdf(0.8394) - 1, abs=0.01)
    s_ema, s_ksom, margin = 0.002149, 0.000800, 0.05 * 0.029496
    assert tost_power(s_ema, s_ksom, 3, margin) == pytest.approx(0.026, abs=0.005)
    assert seeds_needed(s_ema, s_ksom, margin=margin) == 22
    assert math.isnan(seeds_needed(0.0, 0.0, diff=1.0)) and math.isnan(seeds_needed(1.0, 1.0, diff=0.0))


def test_the_margin_is_in_loss_units_or_a_fraction_of_the_reference():
    """hard 0.40 +- 0.01 against none 0.41 +- 0.01 (3 seeds): level within +-0.05 (TOST p tiny), and within
    10 % of the reference's 0.41 = 0.041; undecided at 1 % (0.0041), where the 90 % interval pokes out."""
    s = _summary({"none": [0.40, 0.41, 0.42], "hard": [0.39, 0.40, 0.41]}, {"none": [1, 1, 1], "hard": [1, 1, 1]})
    def primary(margin):
        layout = Layout(("neighbours",), (), reference={"neighbours": "none"}, name="t", margin=margin)
        return comparison_numbers(s, layout).set_index("column").loc["final_loss"]
    loss = primary({"loss": 0.05})
    assert (loss.verdict, loss.margin) == ("level", 0.05) and loss.p_tost < 0.01
    assert primary({"fraction": 0.1}).margin == pytest.approx(0.041) and primary({"fraction": 0.1}).verdict == "level"
    assert primary({"fraction": 0.01}).verdict == "undecided"
    assert math.isnan(primary({}).margin) and primary({}).verdict == "undecided"
