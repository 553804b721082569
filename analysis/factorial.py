"""Which factor explains a study's loss and its collapses: a linear model with interactions on the log
final loss over two-level factors, and collapse counts per factor level with exact intervals.

A study file asks for it (sweep/study.py):

    analysis:
      factorial: [decay, codebook_init, commitment]   # two-level axes of the study

Effects. Per arm (the arms are different algorithms, so each gets its own model), ordinary least
squares of y = ln(final loss) on every factor and every interaction of them (the formula
`y ~ decay * codebook_init * commitment`). Each factor is coded -1/2 at its lower level and +1/2 at
its higher one (sorted order: 0.8 < 0.99, randn < uniform, 0.25 < 1), so in a balanced design

    main effect of A       = mean y at A's higher level - mean y at its lower level (other factors averaged),
    interaction A x B      = (effect of A at B's higher level) - (effect of A at B's lower level),
    A x B x C              = the A x B interaction at C's higher level minus that at C's lower level,

and exp(effect) is the ratio of geometric-mean losses. With every interaction in, the model has one
mean per cell, its residual variance is the pooled within-cell variance of the seeds, and the 95 %
intervals are exact t intervals on cells x (seeds - 1) degrees of freedom. Diverged trials (no loss)
are left out; collapsed ones stay in (their loss is what the model reached).

Why statsmodels: its formula interface writes the model as the question (the `*` of a formula expands
to the main effects and all interactions, by name), and its OLS gives the classical exact inference
(standard errors from the residual variance, t intervals and p-values) with no algebra of ours.

Collapse (analysis.summary: fewer than 5 % of the codes used) is counted, not modelled: per arm and
factor level, k collapsed of n trials, with the exact (Clopper-Pearson) 95 % interval of
scipy.stats.binomtest. A logistic regression would be the model-based route, but when a level has
every trial collapsed, or none (as EMA-VQ at decay 0.99 can), the likelihood keeps growing as that
coefficient runs to infinity (complete separation): there is no estimate and no interval to report.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

from analysis.stats import ALPHA

LOSS = "final_loss"


def levels(summary: pd.DataFrame, factor: str) -> list:
    """The two levels of `factor` in the summary, lower first; a ValueError unless there are exactly two."""
    values = sorted(summary[factor].dropna().unique().tolist())
    if len(values) != 2:
        raise ValueError(f"factor {factor!r} has levels {values} in the trials; allowed: exactly two")
    return values


def terms(factors: list[str]) -> list[tuple[str, ...]]:
    """Main effects, then two-way, three-way ... interactions, each in the factors' order."""
    return [combo for k in range(1, len(factors) + 1) for combo in itertools.combinations(factors, k)]


def effects(summary: pd.DataFrame, factors: list[str], by: list[str]) -> pd.DataFrame:
    """One row per group of `by` (e.g. the arm) and model term: the term ("decay" or "decay x commitment"),
    what it contrasts ("0.99 vs 0.8"), the estimate on the ln scale with its 95 % t interval and p-value,
    the same as a loss ratio (exp), the trials fitted and the residual degrees of freedom."""
    data = summary[np.isfinite(summary[LOSS].astype(float)) & (summary[LOSS] > 0)]
    if "diverged" in data:
        data = data[~data["diverged"].astype(bool)]
    records = []
    groups = data.groupby(by, sort=False, dropna=False) if by else [((), data)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        coded = pd.DataFrame({"y": np.log(g[LOSS].astype(float).to_numpy())}, index=g.index)
        contrast = {}
        for f in factors:
            low, high = levels(summary, f)
            coded[f] = np.where(g[f] == high, 0.5, -0.5)
            contrast[f] = f"{_show(high)} vs {_show(low)}"
        with np.errstate(divide="ignore", invalid="ignore"):  # one trial per cell: no variance (NaN below)
            fit = smf.ols("y ~ " + " * ".join(factors), data=coded).fit()
            ci = fit.conf_int(ALPHA)
        for term in terms(factors):
            name = ":".join(term)
            est, low, high = fit.params[name], ci.loc[name, 0], ci.loc[name, 1]
            p = fit.pvalues[name]
            if fit.df_resid < 1:  # one trial per cell: no residual variance, no interval
                low = high = p = math.nan
            records.append({**dict(zip(by, key)), "term": " x ".join(term),
                            "contrast": "; ".join(contrast[f] for f in term), "effect": est, "ci_low": low,
                            "ci_high": high, "p": p, "ratio": math.exp(est), "ratio_low": math.exp(low),
                            "ratio_high": math.exp(high), "n": int(fit.nobs), "df_resid": int(fit.df_resid)})
    return pd.DataFrame(records)


def collapse_counts(summary: pd.DataFrame, factors: list[str], by: list[str]) -> pd.DataFrame:
    """Per group of `by` and level of each factor: trials with a result, how many collapsed, the rate
    and its exact (Clopper-Pearson) 95 % interval; plus one row per group over all its trials."""
    data = summary[summary["result"].astype(bool)] if "result" in summary else summary
    records = []
    groups = data.groupby(by, sort=False, dropna=False) if by else [((), data)]
    for key, g in groups:
        key = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        records.append({**key, "factor": "all", "level": "all", **_rate(g)})
        for f in factors:
            for level in levels(summary, f):
                records.append({**key, "factor": f, "level": _show(level), **_rate(g[g[f] == level])})
    return pd.DataFrame(records)


def _rate(g: pd.DataFrame) -> dict:
    n, k = len(g), int(g["collapsed"].astype(bool).sum())
    if n == 0:
        return {"collapsed": 0, "n": 0, "rate": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    ci = stats.binomtest(k, n).proportion_ci(1 - ALPHA, method="exact")
    return {"collapsed": k, "n": n, "rate": k / n, "ci_low": ci.low, "ci_high": ci.high}


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
