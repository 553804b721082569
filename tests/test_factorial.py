"""analysis/factorial.py: the factor effects of a 2 x 2 design and collapse counts, against hand computation."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.factorial import collapse_counts, effects, terms

# ln(final loss) of two seeds per cell of a 2 x 2 design (A: decay 0.8 / 0.99, B: init randn / uniform):
CELLS = {(0.8, "randn"): (1.0, 1.2), (0.99, "randn"): (2.1, 2.3),
         (0.8, "uniform"): (0.5, 0.7), (0.99, "uniform"): (3.0, 3.2)}


def design(arm: str = "EMA-VQ", shift: float = 0.0) -> pd.DataFrame:
    rows = [{"arm": arm, "decay": a, "codebook_init": b, "final_loss": math.exp(y + shift), "diverged": False,
             "collapsed": False, "result": True, "seed": s}
            for (a, b), ys in CELLS.items() for s, y in enumerate(ys)]
    return pd.DataFrame(rows)


def test_terms_are_main_effects_then_interactions():
    assert terms(["a", "b", "c"]) == [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c")]


def test_effects_of_a_balanced_2x2_are_differences_of_cell_means():
    """Cell means of ln loss: 1.1 (0.8, randn), 2.2 (0.99, randn), 0.6 (0.8, uniform), 3.1 (0.99, uniform).
    decay: (2.2 + 3.1) / 2 - (1.1 + 0.6) / 2 = 1.8; init: (0.6 + 3.1) / 2 - (1.1 + 2.2) / 2 = 0.2;
    decay x init: (3.1 - 0.6) - (2.2 - 1.1) = 1.4. Every seed is its cell mean +- 0.1: residual variance
    8 x 0.01 / (8 - 4) = 0.02; se of a main effect sqrt(4 x 0.02 / 8) = 0.1, of the interaction
    sqrt(16 x 0.02 / 8) = 0.2; t_{0.975, 4} = 2.776445. init: t = 2, two-sided p = 0.11612 (t table)."""
    out = effects(design(), ["decay", "codebook_init"], ["arm"]).set_index("term")
    assert list(out.index) == ["decay", "codebook_init", "decay x codebook_init"]
    assert out.loc["decay", "contrast"] == "0.99 vs 0.8"
    assert out.loc["decay x codebook_init", "contrast"] == "0.99 vs 0.8; uniform vs randn"
    t = 2.776445
    for term, est, se in (("decay", 1.8, 0.1), ("codebook_init", 0.2, 0.1), ("decay x codebook_init", 1.4, 0.2)):
        r = out.loc[term]
        assert r["effect"] == pytest.approx(est, abs=1e-9)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((est - t * se, est + t * se), abs=1e-5)
        assert r["ratio"] == pytest.approx(math.exp(est)) and r["ratio_low"] == pytest.approx(math.exp(est - t * se))
        assert (r["n"], r["df_resid"]) == (8, 4)
    assert out.loc["codebook_init", "p"] == pytest.approx(0.11612, abs=1e-5)


def test_effects_are_fitted_per_arm_and_leave_diverged_trials_out():
    """A second arm whose losses are all e^0.5 times larger has the same effects (a constant shift of ln loss);
    a diverged trial (NaN loss) of the first arm is left out: 7 trials, 3 residual df."""
    first = design()
    first.loc[0, ["final_loss", "diverged"]] = [math.nan, True]
    out = effects(pd.concat([first, design("KSOM", 0.5)], ignore_index=True), ["decay", "codebook_init"], ["arm"])
    ksom = out[out.arm == "KSOM"].set_index("term")
    assert ksom.loc["decay", "effect"] == pytest.approx(1.8) and ksom.loc["decay", "n"] == 8
    ema = out[out.arm == "EMA-VQ"].set_index("term")
    assert (ema.loc["decay", "n"], ema.loc["decay", "df_resid"]) == (7, 3)


def test_one_seed_per_cell_has_no_interval():
    one = design().query("seed == 0")
    out = effects(one, ["decay", "codebook_init"], ["arm"]).set_index("term")
    assert out.loc["decay", "effect"] == pytest.approx(((2.1 + 3.0) - (1.0 + 0.5)) / 2)
    assert math.isnan(out.loc["decay", "ci_low"]) and math.isnan(out.loc["decay", "p"])


def test_a_factor_without_two_levels_is_refused():
    with pytest.raises(ValueError, match="factor 'decay' has levels \\[0.8\\] in the trials; allowed: exactly two"):
        effects(design().query("decay == 0.8"), ["decay", "codebook_init"], ["arm"])


def test_collapse_counts_with_exact_intervals():
    """Decay 0.99 collapses every trial, 0.8 none (complete separation). Clopper-Pearson at 0 of n:
    [0, 1 - 0.025^(1/n)]; at n of n: [0.025^(1/n), 1]; n = 4: 1 - 0.025^(1/4) = 0.602364."""
    d = design()
    d["collapsed"] = d["decay"] == 0.99
    out = collapse_counts(d, ["decay", "codebook_init"], ["arm"])
    rows = {(r.factor, r.level): r for r in out.itertuples()}
    assert (rows[("all", "all")].collapsed, rows[("all", "all")].n) == (4, 8)
    low, high = rows[("decay", "0.8")], rows[("decay", "0.99")]
    assert (low.collapsed, low.n, low.rate, low.ci_low) == (0, 4, 0.0, 0.0)
    assert low.ci_high == pytest.approx(1 - 0.025 ** 0.25) and low.ci_high == pytest.approx(0.602364, abs=1e-6)
    assert (high.collapsed, high.rate, high.ci_high) == (4, 1.0, 1.0)
    assert high.ci_low == pytest.approx(0.025 ** 0.25)
    assert rows[("codebook_init", "uniform")].collapsed == 2
    # every 95 % interval holds its rate
    assert np.all((out.ci_low <= out.rate) & (out.rate <= out.ci_high))


# ---------------------------------------------------------------- the tables a study file asks for


def summary_of(cells: dict, reference_shift: float) -> pd.DataFrame:
    """Three seeds per arm: arm -> losses; the reference arm KSOM."""
    rows = [{"arm": arm, "final_loss": loss, "diverged": False, "collapsed": False, "result": True, "seed": s,
             "late_improvement": late, "scale": "cpu-xl", "steps": 10_000, "dataset": "photos"}
            for arm, values in cells.items() for s, (loss, late) in enumerate(values)]
    return pd.DataFrame(rows)


def test_equivalence_by_hand():
    """EMA-VQ 0.100, 0.102, 0.098 (mean 0.100, s 0.002) against KSOM 0.101, 0.103, 0.099 (mean 0.101, s 0.002):
    d = -0.001, se = sqrt(2 x 0.002^2 / 3) = 0.00163299, df = 4, t_{0.95, 4} = 2.131847, so the 90 % interval is
    -0.001 +- 0.0034813 = [-0.0044813, 0.0024813]; margin 5 % of 0.101 = 0.00505 holds it: equivalent.
    Converged: late_improvement <= 0.02 in 2 of 3 EMA-VQ seeds, 3 of 3 KSOM seeds."""
    from analysis.factorial import equivalence
    s = summary_of({"EMA-VQ": [(0.100, 0.01), (0.102, 0.03), (0.098, 0.0)],
                    "KSOM": [(0.101, 0.0), (0.103, 0.01), (0.099, 0.02)]}, 0)
    out = equivalence(s, {"arm": "KSOM"}, 0.05, ["arm"])
    assert list(out.arm) == ["EMA-VQ"]
    r = out.iloc[0]
    assert (r["mean"], r["ref_mean"], r["n"], r["ref_n"]) == pytest.approx((0.100, 0.101, 3, 3))
    assert r["margin"] == pytest.approx(0.00505) and r["diff"] == pytest.approx(-0.001)
    assert (r["ci90_low"], r["ci90_high"]) == pytest.approx((-0.0044813, 0.0024813), abs=1e-7)
    # t_low = (d + margin) / se = 0.00405 / 0.00163299 = 2.480, between t_{0.95, 4} = 2.132 and t_{0.975, 4} = 2.776;
    # t_high = (d - margin) / se = -3.705, beyond -2.776: p = the larger one-sided p, that of t_low, in (0.025, 0.05)
    assert bool(r["equivalent"]) and 0.025 < r["p"] < 0.05
    assert (r["converged"], r["ref_converged"]) == (2, 3)
    tight = equivalence(s, {"arm": "KSOM"}, 0.02, ["arm"]).iloc[0]  # margin 0.00202: the interval pokes out
    assert not bool(tight["equivalent"]) and tight["p"] > 0.05


@pytest.mark.slow
def test_the_analysis_tables_of_a_study_file_fit_a_column(tmp_path):
    """write_analysis writes what the plan's `analysis:` block asks: factorial, collapse and equivalence tables
    as Parquet, LaTeX, Markdown and text; the numbers in the text are the estimator's; the LaTeX compiles in a
    two-column article without an overfull box."""
    from helpers import assert_fits_a_column

    from analysis.factorial import write_analysis
    from plan import Analysis, Plan
    two = pd.concat([design(), design("KSOM hard 2D", 0.5)], ignore_index=True).assign(
        scale="cpu", steps=800, dataset="photos", late_improvement=0.0)
    plan = Plan("parity", "cpu", {}, [{}], [0], 1.0, 0.0, swept=["decay", "codebook_init", "arm"],
                reference={"arm": "KSOM hard 2D"}, analysis=Analysis(["decay", "codebook_init"], 0.05))
    texts = write_analysis(two, "parity", plan, tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"parity_{part}.{ext}" for part in ("collapse", "equivalence", "factorial")
                     for ext in ("md", "parquet", "tex", "txt")]
    factorial = texts[0]
    assert "decay × codebook_init" in factorial and f"{math.exp(1.8):.2f}" in factorial  # the decay effect 1.8
    assert "decay: 0.99 vs 0.8; codebook_init: uniform vs randn" in factorial.replace("\n", " ")
    assert "all trials" in texts[1] and "0/8" in texts[1]
    assert "EMA-VQ" in texts[2] and "δ" in texts[2]
    assert pd.read_parquet(tmp_path / "parity_equivalence.parquet").shape[0] == 4  # 4 cells, EMA-VQ vs KSOM
    assert_fits_a_column([(tmp_path / f"parity_{p}.tex").read_text() for p in ("factorial", "collapse",
                                                                               "equivalence")], tmp_path)
