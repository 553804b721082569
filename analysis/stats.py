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
    Verdict of an arm against the reference on the primary endpoint (a loss: lower is better):
            level      the TOST passes at the margin declared before the run (even when the difference is
                       also significant: it then lies inside the margin, and is shown with its p);
            better / worse   otherwise, when the Holm-adjusted Welch p (over the primary family) < alpha;
            undecided  otherwise (and without a margin, when the difference is not significant).
    Seeds per arm for 80 % power (each arm's observed std s1, s2, the same n in both):
            a difference d:  the smallest n whose two-sided Welch test at alpha rejects with probability
                             >= 0.8, P(|T'| > t_{1-alpha/2, df}), T' noncentral t with df Welch's and
                             ncp = d / sqrt((s1^2 + s2^2) / n);
                             near n = 2 (z_{1-alpha/2} + z_{1-beta})^2 s^2 / d^2 for s1 = s2 = s;
            level (TOST at true difference 0 against +-delta): the smallest n whose TOST passes in >= 80 %
                             of POWER_SIMULATIONS simulated experiments (normal seeds, sample variances
                             from chi-square, Welch's se and df as above);
                             near n = 2 (z_{1-alpha} + z_{1-beta/2})^2 s^2 / delta^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8  # the power a seeds-needed figure aims at
POWER_SIMULATIONS = 20_000  # simulated experiments per n for the power of TOST
MAX_SEEDS = 10_000  # seeds needed beyond this are reported as not reachable (NaN)
VERDICTS = ("better", "worse", "level", "undecided")


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


@dataclass(frozen=True)
class Verdict:
    """An arm against the reference on the primary endpoint: the word (VERDICTS), the difference arm - reference,
    its Holm-adjusted Welch p, and the TOST p at the margin (NaN without one)."""
    word: str
    diff: float
    p_holm: float
    margin: float
    p_tost: float


def verdict(m1: float, s1: float, n1: int, m2: float, s2: float, n2: int, p_holm: float,
            margin: float | None = None) -> Verdict:
    """The verdict of mean 1 (an arm's loss) against mean 2 (the reference's): level when the TOST at
    +-margin passes, else better / worse when the Holm-adjusted p (`p_holm`, over the primary family) < ALPHA,
    else undecided."""
    test = (tost_from_stats(m1, s1, n1, m2, s2, n2, margin) if margin is not None and math.isfinite(margin)
            else None)
    if test is not None and test.equivalent:
        word = "level"
    elif math.isfinite(p_holm) and p_holm < ALPHA:
        word = "better" if m1 < m2 else "worse"
    else:
        word = "undecided"
    return Verdict(word, m1 - m2, p_holm, math.nan if test is None else margin,
                   math.nan if test is None else test.p)


def welch_power(s1: float, s2: float, n: int, diff: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided Welch test at alpha with n seeds per arm when the true difference is `diff`
    (noncentral t with Welch-Satterthwaite df)."""
    v1, v2 = s1 ** 2 / n, s2 ** 2 / n
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n - 1) + v2 ** 2 / (n - 1))
    ncp, crit = diff / math.sqrt(v1 + v2), float(stats.t.ppf(1 - alpha / 2, df))
    power = float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))
    # scipy's noncentral t gives NaN far in its tail (|ncp| in the tens): there the normal limit is exact enough
    return power if math.isfinite(power) else float(stats.norm.sf(crit - abs(ncp)))


def tost_power(s1: float, s2: float, n: int, margin: float, alpha: float = ALPHA,
               simulations: int = POWER_SIMULATIONS, seed: int = 0) -> float:
    """Power of TOST (two one-sided Welch tests at alpha) against +-margin with n seeds per arm when the true
    difference is 0: the share of `simulations` experiments (normal seeds; seeded, so repeatable) that pass."""
    rng = np.random.default_rng(seed)
    diff = rng.normal(0.0, math.sqrt((s1 ** 2 + s2 ** 2) / n), simulations)
    v1 = s1 ** 2 * rng.chisquare(n - 1, simulations) / (n - 1) / n
    v2 = s2 ** 2 * rng.chisquare(n - 1, simulations) / (n - 1) / n
    se = np.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n - 1) + v2 ** 2 / (n - 1))
    crit = stats.t.ppf(1 - alpha, df)
    return float(np.mean(((diff + margin) / se > crit) & ((diff - margin) / se < -crit)))


def seeds_needed(s1: float, s2: float, diff: float | None = None, margin: float | None = None,
                 power: float = POWER) -> float:
    """Seeds per arm (the same in both) for `power`: of the Welch test to show the true difference `diff`,
    or (diff None) of TOST to show level within +-margin at true difference 0. NaN when the spreads or
    the effect are not finite and positive, or more than MAX_SEEDS would be needed."""
    effect = margin if diff is None else abs(diff)
    if not all(math.isfinite(v) for v in (s1, s2, effect or math.nan)) or effect <= 0 or s1 + s2 == 0:
        return math.nan
    power_at = (lambda n: welch_power(s1, s2, n, effect)) if diff is not None else (
        lambda n: tost_power(s1, s2, n, effect))
    # the normal approximation (module docstring) brackets the answer; then the smallest n that has the power
    z = stats.norm.ppf(1 - ALPHA / 2 if diff is not None else 1 - ALPHA) + stats.norm.ppf(
        power if diff is not None else (1 + power) / 2)
    guess = max(2, math.ceil(z ** 2 * (s1 ** 2 + s2 ** 2) / effect ** 2))
    if guess > MAX_SEEDS:
        return math.nan
    n = guess
    while n > 2 and power_at(n - 1) >= power:
        n -= 1
    while power_at(n) < power:
        n += 1
        if n > MAX_SEEDS:
            return math.nan
    return float(n)
