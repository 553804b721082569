"""The numbers of a study's tables, as tidy frames (analysis.tables.render sets them as text).

main         one row per configuration (the layout's row fields, in the paper's row order): final
             loss (analysis.summary) and steps to +p % of the best validation loss, mean +- sample
             std (n - 1) over seeds; the
             seeds / diverged / collapsed / unfinished counts of the row. Diverged trials are left
             out of every mean; collapsed ones (analysis.summary) count in the loss but not in the steps.
topography   per configuration, the validation loss with every code shifted by +1, +2, +3 on the
             grid as a multiple of the same model's unshifted loss (geometric mean over seeds: the
             ratio is multiplicative and spans orders of magnitude for EMA-VQ, whose dead codes
             decode to noise, so an arithmetic mean would be one seed's), the absolute increase
             (shifted minus unshifted loss, median over seeds: a shift that decodes to noise makes one
             seed's increase thousands of times the others'), and the smoothness ratio (paper Sec.
             4.3), mean +- std. The ratio alone flatters a collapsed model: one that uses a handful of
             codes has a high unshifted loss, so the same or a larger increase is a smaller multiple
             of it. So collapsed trials are counted in the table, and a configuration with a
             collapsed seed takes no part in the topography's bold.
vs reference each configuration minus the study's reference arm within its group (Table 3: KSOM
             minus EMA-VQ for the same N0 / update-0): difference of means, Welch 95 % CI, Welch
             p-value, Hedges' g, and its family: the study's primary endpoint (its `primary:`, by
             default the final loss) is one family, Holm-adjusted over its comparisons alone; the
             other columns (steps to +p %, smoothness, codes used) are the secondary family, Holm-adjusted
             within itself. Each primary comparison gets its verdict (analysis.stats.verdict: better /
             worse / level / undecided; level by TOST at the study's margin) and the seeds per arm that
             80 % power needs, for the observed difference and for level at the margin.

Bold (main and topography smoothness) is decided by statistics, not by the mean alone: within
each group and column, the lowest mean of the configurations with >= 2 seeds, and every
configuration not significantly different from it (two-sided Welch t-test, Holm correction over
all comparisons of the table, alpha 0.05; analysis.stats). In the topography's columns only
configurations without a collapsed seed compete.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.stats import ALPHA, describe, holm, seeds_needed, verdict, welch, welch_from_stats
from analysis.summary import selection_loss
from analysis.tables.layout import Layout, layout_for, paper_order
import metrics as M

TOPOGRAPHY_OFFSETS = (1, 2, 3)  # offset 0 is the model's own loss
OFFSET, SMOOTH = M.column(M.offset_loss("")), M.column(M.smoothness(""))  # column prefixes
CODES_USED = M.column(M.val_codes_used(""))
RATIO, INCREASE = "loss_ratio_", "loss_increase_"  # shifted / unshifted and shifted - unshifted loss


def loss_scale(summary: pd.DataFrame) -> int:
    """Losses are shown x10^3, or x10^4 for the face data sets (as the paper)."""
    faces = summary.get("dataset", pd.Series(dtype=str)).astype(str).str.contains("celeba|afhq|face").any()
    return 4 if faces else 3


def steps_scale(summary: pd.DataFrame) -> int:
    """Steps are shown x10^3 at the paper's scale (>= 10,000 steps), else as they are."""
    return 3 if summary.get("steps", pd.Series([0])).max() >= 10_000 else 0


def topography_columns(summary: pd.DataFrame) -> list[str]:
    """The topography columns of the tables: loss ratio and loss increase at shift 1..3, smoothness per level."""
    measured = [o for o in TOPOGRAPHY_OFFSETS if f"{OFFSET}{o}" in summary]
    return ([f"{RATIO}{o}" for o in measured] + [f"{INCREASE}{o}" for o in measured]
            + sorted(c for c in summary.columns if c.startswith(SMOOTH)))


def _with_shifts(summary: pd.DataFrame) -> pd.DataFrame:
    """loss_ratio_o = validation loss with codes shifted by o / the same model's unshifted loss, and
    loss_increase_o = the shifted minus the unshifted loss (loss_offset_0 where measured, else the
    trial's best validation loss)."""
    base = summary[f"{OFFSET}0"] if f"{OFFSET}0" in summary else selection_loss(summary)
    measured = [o for o in TOPOGRAPHY_OFFSETS if f"{OFFSET}{o}" in summary]
    return summary.assign(**{f"{RATIO}{o}": summary[f"{OFFSET}{o}"] / base for o in measured},
                          **{f"{INCREASE}{o}": summary[f"{OFFSET}{o}"] - base for o in measured})


def _counts(g: pd.DataFrame) -> dict:
    """seeds (trials with a result), diverged, collapsed, unfinished (no result: failed or still running), and
    stopped (ended early by a search's scheduler: no result) where a trial was."""
    result = g[M.RESULT].astype(bool) if M.RESULT in g else pd.Series(True, index=g.index)
    collapsed = g[M.COLLAPSED].astype(bool) if M.COLLAPSED in g else pd.Series(False, index=g.index)
    stopped = g[M.STATUS_TAG] == M.STOPPED if M.STATUS_TAG in g else pd.Series(False, index=g.index)
    counts = {M.SEEDS: int(result.sum()), M.DIVERGED: int((g[M.DIVERGED].astype(bool) & result).sum()),
              M.COLLAPSED: int((collapsed & result).sum()), "unfinished": int((~result & ~stopped).sum())}
    return {**counts, M.STOPPED: int(stopped.sum())} if stopped.any() else counts  # a column only where it counts


def _values(g: pd.DataFrame, column: str) -> pd.Series:
    """The values of `column` that enter a mean: no diverged trial; steps also without collapsed ones."""
    keep = ~g[M.DIVERGED].astype(bool)
    if column.startswith(M.STEPS) and M.COLLAPSED in g:
        keep &= ~g[M.COLLAPSED].astype(bool)
    return g.loc[keep, column]


def _groups(summary: pd.DataFrame, study: "str | Layout"):
    """(key dict, trials) per configuration, in the paper's row order."""
    rows = list(layout_for(study, summary).rows)
    for key, g in paper_order(summary, study).groupby(rows, sort=False, dropna=False):
        yield dict(zip(rows, key if isinstance(key, tuple) else (key,))), g


def table_numbers(summary: pd.DataFrame, study: "str | Layout") -> pd.DataFrame:
    """Tidy table: one row per (configuration, column) with agg ('mean' or 'geometric'), mean, std
    (for 'geometric': the geometric mean and the x/ geometric std factor), n averaged, the row's
    seeds / diverged / collapsed / unfinished counts, best (bold) and p_vs_best (Holm-adjusted); for
    'median' (the loss increases) the median in `mean` and no std."""
    layout = layout_for(study, summary)
    summary = _with_shifts(summary)
    columns = [M.FINAL_LOSS] + [M.steps_to(p) for p in layout.thresholds] + topography_columns(summary)
    records = []
    for key, g in _groups(summary, study):
        for col in columns:
            values = _values(g, col)
            if col.startswith(RATIO):
                mean, std, n = describe(np.log(values.where(values > 0)))
                mean, std, agg = math.exp(mean), math.exp(std), "geometric"
            elif col.startswith(INCREASE):
                finite = values[np.isfinite(values)]
                mean, std, n, agg = float(finite.median()), math.nan, len(finite), "median"
            else:
                (mean, std, n), agg = describe(values), "mean"
            records.append({**key, "column": col, "agg": agg, "mean": mean, "std": std, "n": n, **_counts(g)})
    return mark_best(pd.DataFrame(records), layout)


def mark_best(tidy: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Add `best` (bold) and `p_vs_best`: per group and column (lower is better), the lowest mean of
    the configurations with >= 2 values and every one whose Welch test against it is not significant
    after Holm's correction over all comparisons in the table. Geometric (ratio) and median (increase)
    columns get no bold; in the smoothness columns a configuration with a collapsed seed does not compete."""
    tidy = tidy.reset_index(drop=True)
    eligible = (tidy["n"] >= 2) & tidy["mean"].notna() & (tidy.get("agg", "mean") == "mean")
    if M.COLLAPSED in tidy:
        eligible &= ~(tidy["column"].str.startswith(SMOOTH) & (tidy[M.COLLAPSED] > 0))
    best = pd.Series(False, index=tidy.index)
    tests = {}  # row index -> raw p against its group's best
    for _, g in tidy[eligible].groupby(list(layout.group) + ["column"], dropna=False):
        top = g["mean"].idxmin()
        best[top] = True
        b = tidy.loc[top]
        for i, r in g.drop(index=top).iterrows():
            tests[i] = welch_from_stats(r["mean"], r["std"], r["n"], b["mean"], b["std"], b["n"]).p
    adjusted = pd.Series(holm(list(tests.values())), index=list(tests), dtype=float)
    p_vs_best = adjusted.reindex(tidy.index)
    best |= p_vs_best >= ALPHA
    return tidy.assign(best=best, p_vs_best=p_vs_best)


def _matches(frame: pd.DataFrame, values: dict) -> pd.Series:
    sel = pd.Series(True, index=frame.index)
    for f, v in values.items():
        sel &= frame[f] == v
    return sel


PRIMARY, SECONDARY = "primary", "secondary"  # the families of the vs-reference tests


def comparison_columns(summary: pd.DataFrame, layout: Layout) -> list[str]:
    """The columns compared with the reference: the primary endpoint first, then loss, steps to +p %,
    smoothness and codes used per level (each once)."""
    columns = [layout.primary, M.FINAL_LOSS] + [M.steps_to(p) for p in layout.thresholds] + sorted(
        c for c in summary.columns if c.startswith((SMOOTH, CODES_USED)))
    return [c for c in dict.fromkeys(columns) if c in summary]


def comparison_name(key: dict) -> str:
    """How a comparison is named in verdict markers (docs: `<!-- verdict: STUDY/NAME -->`): the arm's label,
    or field=value of each row field, joined by ', '."""
    return ", ".join(str(v) if f == "arm" else f"{f}={v}" for f, v in key.items())


def margin_of(layout: Layout, reference_mean: float) -> float:
    """The study's equivalence margin in loss units: {"loss": delta} as it is, {"fraction": f} times the
    reference arm's mean; NaN without one."""
    if "loss" in layout.margin:
        return float(layout.margin["loss"])
    return float(layout.margin["fraction"]) * reference_mean if "fraction" in layout.margin else math.nan


def comparison_numbers(summary: pd.DataFrame, study: "str | Layout") -> pd.DataFrame:
    """Each configuration minus the reference arm of its group, per column (comparison_columns): diff of
    means, Welch 95 % CI, p, Hedges' g, n and n_ref, the family (primary: the study's primary endpoint;
    secondary: the rest) and p_holm (Holm within its family); on primary rows also the verdict, both sides'
    std (std, std_ref), the margin (loss units), the TOST p, and the seeds per arm 80 % power needs for the observed difference
    (seeds_difference) and for level at the margin (seeds_level). Empty when the study names no reference
    arm or a group lacks it."""
    layout = layout_for(study, summary)
    if not layout.reference:
        return pd.DataFrame()
    records = []
    for key, g in _groups(summary, study):
        if all(key.get(f) == v for f, v in layout.reference.items()):
            continue
        where = {f: key[f] for f in layout.group}
        ref = summary[_matches(summary, {**where, **layout.reference})]
        if ref.empty:
            continue
        for col in comparison_columns(summary, layout):
            a, b = _values(g, col), _values(ref, col)
            w = welch(a, b)
            records.append({**key, "label": comparison_name(key), "column": col,
                            "family": PRIMARY if col == layout.primary else SECONDARY, "diff": w.diff,
                            "ci_low": w.ci_low, "ci_high": w.ci_high, "p": w.p, "g": w.g,
                            "n": int(np.isfinite(a).sum()), "n_ref": int(np.isfinite(b).sum()),
                            "stats": (describe(a), describe(b))})
    out = pd.DataFrame(records)
    if out.empty:
        return out
    out["p_holm"] = math.nan
    for family in (PRIMARY, SECONDARY):
        rows = out["family"] == family
        out.loc[rows, "p_holm"] = holm(out.loc[rows, "p"])
    extra = [_verdict_columns(r, layout) for r in out.to_dict("records")]
    return pd.concat([out.drop(columns="stats"), pd.DataFrame(extra, index=out.index)], axis=1)


def _verdict_columns(r: dict, layout: Layout) -> dict:
    """verdict, margin, p_tost, seeds_difference and seeds_level of a primary row ("" and NaN otherwise)."""
    if r["family"] != PRIMARY:
        return {"verdict": "", "std": math.nan, "std_ref": math.nan, "margin": math.nan, "p_tost": math.nan,
                "seeds_difference": math.nan, "seeds_level": math.nan}
    (m, s, n), (mr, sr, nr) = r["stats"]
    margin = margin_of(layout, mr)
    v = verdict(m, s, n, mr, sr, nr, r["p_holm"], margin)
    return {"verdict": v.word, "std": s, "std_ref": sr, "margin": margin, "p_tost": v.p_tost,
            "seeds_difference": seeds_needed(s, sr, diff=m - mr),
            "seeds_level": seeds_needed(s, sr, margin=margin) if math.isfinite(margin) else math.nan}
