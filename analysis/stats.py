"""Statistics behind the tables' bold and the comparison tables: Welch's t-test, Holm's
correction and Hedges' g, from samples or from summary numbers (mean, sample std, n).

Everything works from (mean, std, n) so that the paper's published numbers (10 seeds,
mean +- std) get the same treatment as our sweeps. Distributions come from scipy.stats.

    Welch:  se = sqrt(s1^2/n1 + s2^2/n2),  t = (m1 - m2) / se,
            df = se^4 / ((s1^2/n1)^2/(n1-1) + (s2^2/n2)^2/(n2-1))   (Welch-Satterthwaite),
            95 % CI of m1 - m2 = (m1 - m2) +- t_{0.975, df} se.
    Hedges: g = (1 - 3 / (4 (n1 + n2) - 9)) (m1 - m2) / s_pooled,
            s_pooled = sqrt(((n1-1) s1^2 + (n2-1) s2^2) / (n1 + n2 - 2)).
    Holm:   sort the m p-values ascending; p_(i) adjusted = max_{j<=i} min(1, (m - j + 1) p_(j)).
    TOST:   equivalence of a and b within +-delta (Schuirmann's two one-sided tests, Welch's se and df):
            p_low = P(T_df >= (d + delta) / se) for H0: d <= -delta,
            p_high = P(T_df <= (d - delta) / se) for H0: d >= +delta,
            p = max(p_low, p_high); equivalent at alpha when p < alpha, i.e. when the 90 % CI
            d +- t_{0.95, df} se lies inside (-delta, +delta).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05


@dataclass(frozen=True)
class Welch:
    """Welch's two-sample comparison of a - b (two-sided); NaN fields where it is undefined (n < 2)."""
    diff: float
    t: float
    df: float
    p: float
    ci_low: float
    ci_high: float
    g: float  # Hedges' g, bias-corrected standardised difference


def describe(values) -> tuple[float, float, int]:
    """(mean, sample std with n - 1, n) of the finite values (NaN/inf, e.g. a diverged seed, are left out)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def hedges_g(m1: float, s1: float, n1: int, m2: float, s2: float, n2: int) -> float:
    """Hedges' g of group 1 minus group 2; NaN with fewer than 2 values in a group or no spread at all."""
    if n1 < 2 or n2 < 2:
        return math.nan
    pooled = math.sqrt(((n1 - 1) * s1 ** 2 + (n2 - 1) * s2 ** 2) / (n1 + n2 - 2))
    if pooled == 0:
        return math.nan
    return (1 - 3 / (4 * (n1 + n2) - 9)) * (m1 - m2) / pooled


def welch_from_stats(m1: float, s1: float, n1: int, m2: float, s2: float, n2: int) -> Welch:
    """Welch's t-test, 95 % CI and Hedges' g of mean 1 minus mean 2 from (mean, sample std, n) each.
    Both groups without spread: p = 1 if the means are equal, else 0 (the difference is exact)."""
    diff = m1 - m2
    if n1 < 2 or n2 < 2 or not all(map(math.isfinite, (m1, s1, m2, s2))):
        return Welch(diff, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    v1, v2 = s1 ** 2 / n1, s2 ** 2 / n2
    if v1 + v2 == 0:
        return Welch(diff, math.copysign(math.inf, diff) if diff else 0.0, math.nan, float(diff == 0), diff, diff,
                     math.nan)
    se = math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    t = diff / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    return Welch(diff, t, df, p, diff - half, diff + half, hedges_g(m1, s1, n1, m2, s2, n2))


@dataclass(frozen=True)
class Equivalence:
    """TOST of a - b against the margin +-delta; NaN fields where it is undefined (n < 2 or no spread)."""
    diff: float
    margin: float
    ci_low: float  # the (1 - 2 alpha) = 90 % Welch interval of the difference
    ci_high: float
    p: float  # max of the two one-sided p-values
    equivalent: bool  # p < ALPHA: the difference is within the margin


def tost_from_stats(m1: float, s1: float, n1: int, m2: float, s2: float, n2: int, margin: float) -> Equivalence:
    """Two one-sided Welch tests of mean 1 minus mean 2 against +-margin (margin > 0)."""
    diff = m1 - m2
    v1, v2 = (s1 ** 2 / n1, s2 ** 2 / n2) if n1 >= 2 and n2 >= 2 else (math.nan, math.nan)
    if not all(map(math.isfinite, (diff, v1, v2))) or v1 + v2 == 0:
        return Equivalence(diff, margin, math.nan, math.nan, math.nan, False)
    se = math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    p = max(float(stats.t.sf((diff + margin) / se, df)), float(stats.t.cdf((diff - margin) / se, df)))
    half = float(stats.t.ppf(1 - ALPHA, df)) * se
    return Equivalence(diff, margin, diff - half, diff + half, p, p < ALPHA)


def tost(a, b, margin: float) -> Equivalence:
    """TOST of samples a - b against +-margin; non-finite values (diverged seeds) are left out."""
    return tost_from_stats(*describe(a), *describe(b), margin)


def welch(a, b) -> Welch:
    """Welch's comparison of samples a - b; non-finite values (diverged seeds) are left out."""
    return welch_from_stats(*describe(a), *describe(b))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given); NaN stays NaN and is not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
