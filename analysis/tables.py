"""The paper's tables (1-4) for whatever a sweep ran: tidy numbers, and LaTeX, Markdown and
text in the paper's layouts, each narrow enough for one column of a two-column paper.

Three tables per study, each from the per-trial summary (analysis.summary):

main         one row per configuration (the fields its study sweeps, in the paper's row
             order): best validation loss and steps to +10 % (+20 %) of it, mean +- sample
             std (n - 1) over seeds; a last column counts seeds / diverged / collapsed.
             Diverged trials are left out of every mean; collapsed ones (analysis.summary)
             count in the loss but not in the steps, whose cells carry a dagger then.
topography   per configuration, the validation loss with every code shifted by +1, +2, +3 on
             the grid as a multiple of the same model's unshifted loss (geometric mean over
             seeds: the ratio is multiplicative and spans orders of magnitude for EMA-VQ, whose
             dead codes decode to noise, so an arithmetic mean would be one seed's), and the
             smoothness ratio (paper Sec. 4.3), mean +- std.
vs reference each configuration minus the study's reference arm within its group (Table 3:
             KSOM minus EMA-VQ for the same N0 / update-0): difference of means, Welch 95 %
             CI, Welch p-value (and Holm-adjusted in the Parquet) and Hedges' g.

Bold (main and topography smoothness) is decided by statistics, not by the mean alone:
within each group and column, the lowest mean of the configurations with >= 2 seeds, and
every configuration not significantly different from it (two-sided Welch t-test, Holm
correction over all comparisons of the table, alpha 0.05; analysis.stats).
"""
from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.stats import ALPHA, describe, holm, welch, welch_from_stats
from analysis.summary import CODE_USE_COLUMNS, COLLAPSE_FRACTION, TOPOGRAPHY_COLUMNS
import metrics as M

LOSS, STEPS = "final_loss", "steps_{}"
TOPOGRAPHY_OFFSETS = (1, 2, 3)  # offset 0 is the model's own loss
TEXT_WIDTH = 120  # the terminal tables' limit
OFFSET, SMOOTH, RATIO = M.column(M.offset_loss("")), M.column(M.smoothness("")), "loss_ratio_"  # column prefixes


@dataclass(frozen=True)
class Layout:
    """How a study's table is set: which config fields make a row, which groups share a bold
    and a reference arm, which step thresholds are shown."""
    rows: tuple[str, ...]  # config fields that make a row, outermost first (the sort order)
    group: tuple[str, ...] = ()  # bold and the reference comparison are within groups of these fields
    thresholds: tuple[int, ...] = (10, 20)
    caption: str = ""
    reference: dict = field(default_factory=dict)  # the reference arm of each group: field -> value
    order: tuple[str, ...] = ()  # display order of the row fields (default: rows)

    name: str = ""  # the study's name (labels and captions)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.order or self.rows

    @classmethod
    def from_plan(cls, plan: dict) -> "Layout":
        """The layout of a sweep's plan (sweep.json "plan"): the paper's for its four studies (as shipped), else
        rows = the swept fields (quantiser first), groups = the swept fields outside the reference
        arm, thresholds from the plan's steps_<p> metrics, caption from its description."""
        name = plan.get("study", "")
        swept, reference = tuple(plan.get("swept", ())), dict(plan.get("reference") or {})
        if name in LAYOUTS and set(swept) <= set(LAYOUTS[name].rows):  # not when --grid added an axis: its
            return LAYOUTS[name]                                        # values would share rows

        thresholds = tuple(int(m[6:]) for m in plan.get("metrics", ()) if m.startswith("steps_")) or (10, 20)
        order = tuple(sorted(swept, key=lambda f: f != "neighbours"))
        caption = plan.get("description", name).replace("_", "\\_") + (f" ({plan['table']})." if plan.get("table")
                                                                         else ".")
        return cls(swept, tuple(f for f in swept if f not in reference), thresholds, caption, reference, order, name)


LAYOUTS = {
    "sensitivity": Layout(("n0", "update_empty"), (), (10,),
                          "Sensitivity of EMA-VQ to $N_k^{(0)}$ and update-0 (paper Table 1).",
                          reference={"n0": 1, "update_empty": True}, name="sensitivity"),
    "comparison": Layout(("neighbours",), (), (10, 20),
                         "Well-configured EMA-VQ ($N_k^{(0)}=1$, update-0) against KSOM, 2D grid, "
                         "$\\tau=0.1$ (paper Table 2).", reference={"neighbours": "none"}, name="comparison"),
    "robustness": Layout(("n0", "update_empty", "neighbours"), ("n0", "update_empty"), (10,),
                         "Robustness of KSOM (hard, 2D, $\\tau=0.1$) under configurations sub-optimal for "
                         "EMA-VQ (paper Table 3).", reference={"neighbours": "none"},
                         order=("neighbours", "n0", "update_empty"), name="robustness"),
    "ablation": Layout(("neighbours", "grid_dim", "tau"), ("neighbours",), (10, 20),
                       "KSOM ablations: 1D/2D grid and shrinking step $\\tau$ (paper Table 4); "
                       "hard and Gaussian are separate groups.", reference={"grid_dim": 2, "tau": 0.1},
                       name="ablation"),
}
HEADERS = {"n0": ("$N_k^{(0)}$", "N0"), "update_empty": ("Upd.-0", "Update-0"),
           "neighbours": ("Quantiser", "Quantiser"), "grid_dim": ("Grid", "Grid"), "tau": ("$\\tau$", "tau")}
FIELD_NOTES = {"n0": ("$N_k^{(0)}$: initial EMA count of every code", "N0: initial EMA count of every code"),
               "update_empty": ("Upd.-0: whether codes with no member in the batch are updated (update-0)",
                                "Update-0: whether codes with no member in the batch are updated"),
               "tau": ("$\\tau$: shrinking step of the neighbourhood", "tau: shrinking step of the neighbourhood")}
ROW_ORDER = {"none": 0, "hard": 1, "gaussian": 2}
LABELS = {"neighbours": {"none": "EMA-VQ", "hard": "KSOM hard", "gaussian": "KSOM Gauss."},
          "update_empty": {True: "Yes", False: "No"}, "grid_dim": {1: "1D", 2: "2D"}}
SKIP = {"run_id", "run_name", "seed", "ray_trial_id", "node_id", "status", "final_loss", "diverged", "collapsed",
        "parent_run_id", "result", "late_improvement"}


def layout_for(study: "str | Layout", summary: pd.DataFrame) -> Layout:
    """The layout itself when given one (e.g. Layout.from_plan), the paper's for a known study name;
    otherwise one row per combination of the fields that vary, no reference arm."""
    if isinstance(study, Layout):
        return study
    if study in LAYOUTS:
        return LAYOUTS[study]
    varying = [c for c in summary.columns if c not in SKIP and not c.startswith(
        ("steps_",) + CODE_USE_COLUMNS + TOPOGRAPHY_COLUMNS) and summary[c].nunique(dropna=False) > 1]
    return Layout(tuple(varying), (), (10, 20), f"Study {study}.", name=study)


def loss_scale(summary: pd.DataFrame) -> int:
    """Losses are shown x10^3, or x10^4 for the face data sets (as the paper)."""
    faces = summary.get("dataset", pd.Series(dtype=str)).astype(str).str.contains("celeba|afhq|face").any()
    return 4 if faces else 3


def steps_scale(summary: pd.DataFrame) -> int:
    """Steps are shown x10^3 at the paper's scale (>= 10,000 steps), else as they are."""
    return 3 if summary.get("steps", pd.Series([0])).max() >= 10_000 else 0


def paper_order(frame: pd.DataFrame, study: str) -> pd.DataFrame:
    """Rows sorted as the paper's table: by the layout's fields, EMA-VQ before KSOM (stable otherwise)."""
    return frame.sort_values(list(layout_for(study, frame).rows), kind="stable",
                             key=lambda col: col.map(ROW_ORDER).fillna(col) if col.name == "neighbours" else col)


def topography_columns(summary: pd.DataFrame) -> list[str]:
    """The topography columns of the tables: loss ratio at shift 1..3 and smoothness per level."""
    ratios = [f"{RATIO}{o}" for o in TOPOGRAPHY_OFFSETS if f"{OFFSET}{o}" in summary]
    return ratios + sorted(c for c in summary.columns if c.startswith(SMOOTH))


def _with_ratios(summary: pd.DataFrame) -> pd.DataFrame:
    """loss_ratio_o = validation loss with codes shifted by o / the same model's unshifted loss
    (loss_offset_0 where measured, else the trial's final loss)."""
    base = summary[f"{OFFSET}0"] if f"{OFFSET}0" in summary else summary[LOSS]
    return summary.assign(**{f"{RATIO}{o}": summary[f"{OFFSET}{o}"] / base
                             for o in TOPOGRAPHY_OFFSETS if f"{OFFSET}{o}" in summary})


def _counts(g: pd.DataFrame) -> dict:
    """seeds (trials with a result), diverged, collapsed, unfinished (no result: failed or still running)."""
    result = g["result"].astype(bool) if "result" in g else pd.Series(True, index=g.index)
    collapsed = g["collapsed"].astype(bool) if "collapsed" in g else pd.Series(False, index=g.index)
    return {"seeds": int(result.sum()), "diverged": int((g.diverged.astype(bool) & result).sum()),
            "collapsed": int((collapsed & result).sum()), "unfinished": int((~result).sum())}


def _values(g: pd.DataFrame, column: str) -> pd.Series:
    """The values of `column` that enter a mean: no diverged trial; steps also without collapsed ones."""
    keep = ~g.diverged.astype(bool)
    if column.startswith("steps_") and "collapsed" in g:
        keep &= ~g.collapsed.astype(bool)
    return g.loc[keep, column]


def _groups(summary: pd.DataFrame, study: str):
    """(key dict, trials) per configuration, in the paper's row order."""
    rows = list(layout_for(study, summary).rows)
    for key, g in paper_order(summary, study).groupby(rows, sort=False, dropna=False):
        yield dict(zip(rows, key if isinstance(key, tuple) else (key,))), g


def table_numbers(summary: pd.DataFrame, study: str) -> pd.DataFrame:
    """Tidy table: one row per (configuration, column) with agg ('mean' or 'geometric'), mean, std
    (for 'geometric': the geometric mean and the x/ geometric std factor), n averaged, the row's
    seeds / diverged / collapsed / unfinished counts, best (bold) and p_vs_best (Holm-adjusted)."""
    layout = layout_for(study, summary)
    summary = _with_ratios(summary)
    columns = [LOSS] + [STEPS.format(p) for p in layout.thresholds] + topography_columns(summary)
    records = []
    for key, g in _groups(summary, study):
        for col in columns:
            values = _values(g, col)
            if col.startswith(RATIO):
                mean, std, n = describe(np.log(values.where(values > 0)))
                mean, std, agg = math.exp(mean), math.exp(std), "geometric"
            else:
                (mean, std, n), agg = describe(values), "mean"
            records.append({**key, "column": col, "agg": agg, "mean": mean, "std": std, "n": n, **_counts(g)})
    return mark_best(pd.DataFrame(records), layout)


def mark_best(tidy: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Add `best` (bold) and `p_vs_best`: per group and column (lower is better), the lowest mean of
    the configurations with >= 2 values and every one whose Welch test against it is not significant
    after Holm's correction over all comparisons in the table. Geometric (ratio) columns get no bold."""
    tidy = tidy.reset_index(drop=True)
    eligible = (tidy["n"] >= 2) & tidy["mean"].notna() & (tidy.get("agg", "mean") == "mean")
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


def comparison_numbers(summary: pd.DataFrame, study: str) -> pd.DataFrame:
    """Each configuration minus the reference arm of its group, per column (loss, steps, smoothness):
    diff of means, Welch 95 % CI, p, Holm-adjusted p over the table, Hedges' g, n and n_ref.
    Empty when the study names no reference arm or a group lacks it."""
    layout = layout_for(study, summary)
    columns = [LOSS] + [STEPS.format(p) for p in layout.thresholds] + sorted(
        c for c in summary.columns if c.startswith(SMOOTH))
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
        for col in columns:
            a, b = _values(g, col), _values(ref, col)
            w = welch(a, b)
            records.append({**key, "column": col, "diff": w.diff, "ci_low": w.ci_low, "ci_high": w.ci_high,
                            "p": w.p, "g": w.g, "n": int(np.isfinite(a).sum()), "n_ref": int(np.isfinite(b).sum())})
    out = pd.DataFrame(records)
    return out.assign(p_holm=holm(out["p"])) if len(out) else out


# ----------------------------------------------------------------------------------------------
# Display: one neutral grid (label columns, data columns with value / spread / bold / mark), set
# as LaTeX, Markdown or text, so that the three always carry the same cells.

PM = {"latex": "$\\pm$", "text": "±", "md": "±"}
DAGGER = {"latex": "$^\\dagger$", "text": "†", "md": "†"}
TIMES = {"latex": lambda e: f"($\\times 10^{{{e}}}$)", "text": lambda e: f"(×10{_sup(e)})",
         "md": lambda e: f"(×10{_sup(e)})"}
PCT = {"latex": "\\%", "text": "%", "md": "%"}
PM_COLUMNS = "r@{\\extracolsep{0pt}\\,$\\pm$\\,}r"  # mean and std, right-aligned: decimal points line up


def _sup(e: int) -> str:
    return str(e).translate(str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻"))


@dataclass
class Grid:
    labels: list[str]  # headers of the label columns
    heads: list[tuple[str, str]]  # per data column: (spanning header, sub-header)
    rows: list[list[str]]  # label cells per row ("" repeats the row above)
    cells: list[list[tuple[str, str, bool, str]]]  # (value, spread or "", bold, mark) per data column
    breaks: list[int]  # rows after which a new group starts
    pm: list[bool]  # per data column: has a value +- spread pair
    sections: dict = field(default_factory=dict)  # row index -> a label row set before it


def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "--"


def _ratio(x: float) -> str:
    """A ratio with three significant digits, powers of ten from 1,000 on (e.g. 1.2e3)."""
    if not math.isfinite(x):
        return "--"
    if x >= 1000:
        return f"{x:.1e}".replace("e+0", "e").replace("e+", "e")
    return f"{x:.{2 if x < 10 else 1 if x < 100 else 0}f}"


def neighbour_labels(kinds) -> dict:
    """Quantiser labels as short as the table allows (the caption names the rest): "KSOM" when it
    is the only KSOM kind beside EMA-VQ (paper Table 3), "Hard"/"Gaussian" when every row is KSOM
    (Table 4)."""
    kinds = set(kinds)
    ksom = kinds - {"none"}
    if "none" not in kinds:
        return {"hard": "Hard", "gaussian": "Gaussian"}
    return {"none": "EMA-VQ", **({k: "KSOM" for k in ksom} if len(ksom) == 1 else LABELS["neighbours"])}


def _row_labeller(layout: Layout, kinds, summary: pd.DataFrame):
    """key -> the row's label cells: the fields' display names, or their values with the digits that tell
    the summary's values apart (metrics.value_texts: two rows never print alike)."""
    labels = {**LABELS, "neighbours": neighbour_labels(kinds)}
    texts = {f: M.value_texts(summary[f].dropna()) for f in layout.columns if f in summary}
    return lambda key: [labels.get(f, {}).get(key[f]) or texts.get(f, {}).get(key[f], str(key[f]))
                        for f in layout.columns]


def _blank_repeats(rows: list[list[str]], layout: Layout, keys: list[dict]) -> tuple[list[list[str]], list[int]]:
    """Blank a group field's label where it repeats the row above (as the paper does); group breaks."""
    out, breaks = [], []
    for i, (row, key) in enumerate(zip(rows, keys)):
        same = i > 0 and all(keys[i - 1][f] == key[f] for f in layout.group)
        if i > 0 and layout.group and not same:
            breaks.append(i)
        out.append(["" if same and f in layout.group else cell for f, cell in zip(layout.columns, row)])
    return out, breaks


def _headers(layout: Layout, fmt: str) -> list[str]:
    return [HEADERS.get(f, (f.replace("_", "\\_"), f))[0 if fmt == "latex" else 1] for f in layout.columns]


def _main_grid(tidy: pd.DataFrame, summary: pd.DataFrame, study: str, fmt: str, part: str) -> Grid:
    layout = layout_for(study, summary)
    ls, ss = loss_scale(summary), steps_scale(summary)
    unit, pct = TIMES[fmt], PCT[fmt]
    steps_title = ("\\# Steps" if fmt == "latex" else "Steps") + (f" {unit(ss)}" if ss else "")
    if part == "main":
        specs = [(LOSS, ("Loss", unit(ls)), ls, 1)]
        specs += [(STEPS.format(p), (steps_title, f"+{p}{pct}"), -ss, 1 if ss else 0) for p in layout.thresholds]
    else:
        topo = [c for c in topography_columns(summary) if c in set(tidy.column)]
        levels = [c.removeprefix(SMOOTH) for c in topo if c.startswith(SMOOTH)]
        title = "Loss ratio at shift"
        specs = [(c, (title, f"+{c.removeprefix(RATIO)}"), None, 0) for c in topo if c.startswith(RATIO)]
        specs += [(c, ("Smooth." if len(levels) > 1 else "Smoothness",
                       c.removeprefix(SMOOTH) if len(levels) > 1 else ""), 0, 2)
                  for c in topo if c.startswith(SMOOTH)]
    keys, labels, cells = [], [], []
    row_labels = _row_labeller(layout, tidy.get("neighbours", pd.Series(dtype=str)).unique(), summary)
    for _, rows in tidy.groupby(list(layout.rows), sort=False, dropna=False):
        key = {f: rows.iloc[0][f] for f in layout.rows}
        by_col = rows.set_index("column")
        row_cells = []
        for col, _, scale, digits in specs:
            r = by_col.loc[col]
            if scale is None:  # geometric mean of a ratio, no spread in the table (figures show it)
                row_cells.append((_ratio(r["mean"]), "", False, ""))
                continue
            f = 10.0 ** scale
            spread = _fmt(r["std"] * f, digits) if math.isfinite(r["std"]) and math.isfinite(r["mean"]) else ""
            fewer = col.startswith("steps_") and r.get("collapsed", 0) > 0 and math.isfinite(r["mean"])
            row_cells.append((_fmt(r["mean"] * f, digits), spread, bool(r["best"]), DAGGER[fmt] if fewer else ""))
        if part == "main":
            c = by_col.iloc[0]
            count = f"{c['seeds']}/{c['diverged']}/{c['collapsed']}"
            if c.get("unfinished", 0):
                count += f"+{c['unfinished']}"
            row_cells.append((count, "", False, ""))
        keys.append(key)
        labels.append(row_labels(key))
        cells.append(row_cells)
    heads = [h for _, h, _, _ in specs] + ([("Seeds", "s/d/c")] if part == "main" else [])
    pm = [any(row[i][1] for row in cells) for i in range(len(heads))]
    rows, breaks = _blank_repeats(labels, layout, keys)
    return Grid(_headers(layout, fmt), heads, rows, cells, breaks, pm)


def _comparison_grid(comp: pd.DataFrame, summary: pd.DataFrame, study: str, fmt: str) -> Grid:
    """One section per configuration (named in a row of its own, so the table stays narrow), one
    row per metric: difference, Welch CI, p, Hedges' g, seeds averaged."""
    layout = layout_for(study, summary)
    ls, ss = loss_scale(summary), steps_scale(summary)
    pct = PCT[fmt]
    names = {LOSS: ("Loss", ls, 1)}
    names.update({STEPS.format(p): (f"Steps +{p}{pct}", -ss, 1 if ss else 0) for p in layout.thresholds})
    row_labels = _row_labeller(layout, summary.get("neighbours", pd.Series(dtype=str)).unique(), summary)
    headers = _headers(layout, fmt)
    rows, cells, sections, previous = [], [], {}, None
    for _, r in comp.iterrows():
        key = {f: r[f] for f in layout.rows}
        if key != previous:
            sections[len(rows)] = ", ".join(v if f == "neighbours" else f"{h} = {v}" for f, h, v in
                                            zip(layout.columns, headers, row_labels(key)))
            previous = key
        smooth = [c for c in comp.column.unique() if c.startswith(SMOOTH)]
        level = r["column"].removeprefix(SMOOTH) if len(smooth) > 1 else ""
        title, scale, digits = names.get(r["column"], (f"Smoothness {level}".strip(), 0, 2))
        f = 10.0 ** scale
        ci = (f"[{_fmt(r['ci_low'] * f, digits)}, {_fmt(r['ci_high'] * f, digits)}]" if math.isfinite(r["ci_low"])
              else "--")
        p = "--" if not math.isfinite(r["p"]) else ("<0.001" if r["p"] < 0.001 else f"{r['p']:.3f}")
        rows.append([title])
        cells.append([(_fmt(r["diff"] * f, digits), "", False, ""), (ci, "", False, ""), (p, "", False, ""),
                      (_fmt(r["g"], 1), "", False, ""), (f"{r['n']}/{r['n_ref']}", "", False, "")])
    latex = fmt == "latex"
    heads = [("$\\Delta$" if latex else "Δ", ""), (f"95{pct} CI", ""), ("$p$" if latex else "p", ""),
             ("$g$" if latex else "g", ""), ("$n$" if latex else "n", "")]
    return Grid(["Metric"], heads, rows, cells, [], [False] * len(heads), sections)


# A label longer than WRAP characters (an arm's name such as "lucidrains k-means + dead codes") is set
# in a paragraph column of WRAP_WIDTH, ragged right, so that the table still fits the column.
WRAP, WRAP_WIDTH = 14, "7em"


def _latex(grid: Grid, caption: str, label: str) -> str:
    # tabular* spreads the room left in the column between the columns (at least 2 x 1.5 pt each), but
    # never between a mean and its std: the "+-" separator switches the stretch off, the next one back on.
    wrap = [max((len(str(row[j])) for row in grid.rows), default=0) > WRAP for j in range(len(grid.labels))]
    spec = "@{\\extracolsep{\\fill}}" + "".join(f"p{{{WRAP_WIDTH}}}" if w else "l" for w in wrap)
    for k, pm in enumerate(grid.pm):
        spec += PM_COLUMNS if pm else "r"
        if pm and k + 1 < len(grid.pm):
            spec += "@{\\extracolsep{\\fill}\\hspace{2\\tabcolsep}}"
    width = [2 if pm else 1 for pm in grid.pm]
    top, cmid, sub = [""] * len(grid.labels), [], list(grid.labels)
    col = len(grid.labels) + 1
    for i, j in _spans(grid.heads):
        span = sum(width[i:j + 1])
        top.append(f"\\multicolumn{{{span}}}{{c}}{{{grid.heads[i][0]}}}" if span > 1 else grid.heads[i][0])
        if grid.heads[i][1]:
            cmid.append(f"\\cmidrule(lr){{{col}-{col + span - 1}}}")
        sub += [f"\\multicolumn{{{width[k]}}}{{c}}{{{grid.heads[k][1]}}}" if width[k] > 1 else grid.heads[k][1]
                for k in range(i, j + 1)]
        col += span
    lines = ["\\begin{table}[tbp]", "\\footnotesize", "\\setlength{\\tabcolsep}{1.5pt}",
             f"\\caption{{{caption}}}", f"\\label{{{label}}}",
             f"\\begin{{tabular*}}{{\\columnwidth}}{{{spec}}}", "\\toprule"]
    if any(h[1] for h in grid.heads):  # spanning headers over sub-headers
        lines += [" & ".join(top) + " \\\\", " ".join(cmid), " & ".join(sub) + " \\\\", "\\midrule"]
    else:
        lines += [" & ".join(grid.labels + [h[0] for h in grid.heads]) + " \\\\", "\\midrule"]
    ncols = len(grid.labels) + sum(width)
    for i, (labels, cells) in enumerate(zip(grid.rows, grid.cells)):
        if i in grid.breaks or (i in grid.sections and i > 0):
            lines.append("\\addlinespace")
        if i in grid.sections:
            lines.append(f"\\multicolumn{{{ncols}}}{{l}}{{\\emph{{{grid.sections[i]}}}}} \\\\")
        parts = [f"\\raggedright {text}" if w and text else text for text, w in zip(labels, wrap)]
        for (value, spread, bold, mark), pm in zip(cells, grid.pm):
            value, spread = _minus(value), _minus(spread)
            b = (lambda s: f"\\textbf{{{s}}}") if bold else (lambda s: s)
            if pm and spread:
                parts += [b(value), b(spread) + mark]
            elif pm:  # no spread (n = 1 or nothing to average): value where the means are, no +-
                parts += [f"\\multicolumn{{1}}{{r@{{}}}}{{{b(value)}}}", f"\\multicolumn{{1}}{{l}}{{{mark}}}"]
            else:
                parts.append(b(value) + mark)
        lines.append(" & ".join(parts) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular*}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _minus(text: str) -> str:
    """A number's minus sign as LaTeX's minus, not a hyphen (also inside "[-1.0, -0.5]")."""
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", text)


def _plain_cells(grid: Grid, fmt: str) -> list[list[str]]:
    out = []
    for labels, cells in zip(grid.rows, grid.cells):
        row = list(labels)
        for value, spread, bold, mark in cells:
            text = f"{value} {PM[fmt]} {spread}" if spread else value
            row.append((f"**{text}**{mark}" if fmt == "md" else f"{text}{mark} *") if bold else text + mark)
        out.append(row)
    return out


def _head_text(head: tuple[str, str]) -> str:
    return " ".join(h for h in head if h)


def _markdown(grid: Grid, caption: str) -> str:
    header = grid.labels + [_head_text(h) for h in grid.heads]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * len(grid.labels) + "---:|" * len(grid.heads)]
    for i, row in enumerate(_plain_cells(grid, "md")):
        if i in grid.sections:
            lines.append(f"| *{grid.sections[i]}* |" + " |" * len(grid.heads))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n\n" + caption


def _spans(heads: list[tuple[str, str]]) -> list[tuple[int, int]]:
    """(first, last) data columns sharing a spanning header (equal and with sub-headers)."""
    spans, i = [], 0
    while i < len(heads):
        j = i
        while j + 1 < len(heads) and heads[i][1] and heads[j + 1][0] == heads[i][0]:
            j += 1
        spans.append((i, j))
        i = j + 1
    return spans


def _text(grid: Grid, note: str) -> str:
    nl = len(grid.labels)
    body = _plain_cells(grid, "text")
    sub = grid.labels + [h[1] for h in grid.heads]
    widths = [max(len(r[i]) for r in [sub] + body) for i in range(len(sub))]
    spans = _spans(grid.heads)
    for i, j in spans:  # a spanning header wider than its columns widens the last of them
        inner = sum(widths[nl + i:nl + j + 1]) + 2 * (j - i)
        widths[nl + j] += max(0, len(grid.heads[i][0]) - inner)
    top = [" " * w for w in widths[:nl]] + [grid.heads[i][0].rjust(sum(widths[nl + i:nl + j + 1]) + 2 * (j - i))
                                            for i, j in spans]
    fmt_row = lambda r: "  ".join(c.ljust(w) if i < nl else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    lines = (["  ".join(top).rstrip()] if any(h[1] for h in grid.heads) else []) + [
        fmt_row(sub if any(h[1] for h in grid.heads) else grid.labels + [h[0] for h in grid.heads])]
    for i, r in enumerate(body):
        if i in grid.breaks or (i in grid.sections and i > 0):
            lines.append("")
        if i in grid.sections:
            lines.append(grid.sections[i])
        lines.append(fmt_row(r))
    return "\n".join(lines) + "\n" + textwrap.fill(note, TEXT_WIDTH)


def _scale_note(summary: pd.DataFrame) -> tuple[str, str]:
    """(scale name, steps per trial) for captions."""
    scale = str(summary["scale"].iloc[0]) if "scale" in summary and len(summary) else "?"
    steps = int(summary["steps"].max()) if "steps" in summary and len(summary) else 0
    return scale, f"{steps:,}"


def caption(tidy: pd.DataFrame, summary: pd.DataFrame, study: str, part: str, fmt: str) -> str:
    """Caption defining every column of the main or topography table, for LaTeX or plain text."""
    layout = layout_for(study, summary)
    latex = fmt == "latex"
    pm, pct, dagger = PM[fmt], PCT[fmt], DAGGER[fmt]
    scale, steps = _scale_note(summary)
    seeds = sorted(set(tidy["seeds"])) if len(tidy) else [0]
    seeds_text = "-".join(map(str, (seeds[0], seeds[-1]))) if len(seeds) > 1 else str(seeds[0])
    ls = loss_scale(summary)
    unit = TIMES[fmt]
    txt = layout.caption if latex else layout.caption.replace("$", "").replace("\\tau", "τ").replace(
        "N_k^{(0)}", "N0").replace("\\", "")
    notes = [FIELD_NOTES[f][0 if latex else 1] for f in layout.columns if f in FIELD_NOTES]
    parts = [txt, f"Scale {scale}, {steps} training steps, {seeds_text} seeds per configuration."]
    parts += ["; ".join(notes) + "."] if notes else []
    enough = (tidy["n"] >= 2).any() if len(tidy) else False
    bold = (f"Bold: the lowest mean of its column{' and group' if layout.group else ''} and every configuration "
            f"not significantly different from it (two-sided Welch $t$-test, Holm correction over the table's "
            f"comparisons, $\\alpha={ALPHA}$); cells averaging fewer than 2 seeds are never bold."
            if enough else "No bold: fewer than 2 seeds per configuration, so no test can separate them.")
    if not latex:
        bold = bold.replace("$t$", "t").replace("$\\alpha=", "alpha = ").replace("$)", ")")
    if part == "main":
        parts += [f"Loss {unit(ls)}: best validation MSE on per-channel standardised images. "
                  f"Steps: first validated step within +{'/+'.join(map(str, layout.thresholds))}{pct} of that loss"
                  + (f", shown {unit(3)[1:-1]}" if steps_scale(summary) else "") + ".",
                  f"Mean {pm} sample std over the seeds that did not diverge (--: no seed left); "
                  f"{dagger}: collapsed seeds (fewer than {COLLAPSE_FRACTION:.0%} of the K codes used on validation "
                  f"at some level) are left out of that steps mean, which averages the s - d - c seeds of its "
                  f"row.".replace("%", pct),
                  "Seeds s/d/c: trials with a result / of them diverged / of them collapsed"
                  + (" (+n: trials without a result)." if tidy.get("unfinished", pd.Series([0])).sum() else "."),
                  bold]
    else:
        parts += ["Loss ratio at shift +o: validation loss with every code moved by (o, o) on the grid (clamped at "
                  "the border), divided by the same model's unshifted loss; geometric mean over seeds (the ratio "
                  "is multiplicative and spans orders of magnitude; its spread is in the topography figure).",
                  f"Smoothness: mean distance between decoded images of grid neighbours over that of random code "
                  f"pairs (1 = no order; lower = smoother), mean {pm} sample std. " + bold]
    return " ".join(parts)


def comparison_caption(summary: pd.DataFrame, study: str, fmt: str) -> str:
    """Caption of the comparison table."""
    layout = layout_for(study, summary)
    ref = ", ".join(f"{HEADERS.get(f, (f, f))[0 if fmt == 'latex' else 1]} = "
                    f"{LABELS.get(f, {}).get(v, v)}" for f, v in layout.reference.items())
    within = f" within the same {', '.join(HEADERS.get(f, (f, f))[0 if fmt == 'latex' else 1] for f in layout.group)}" \
        if layout.group else ""
    scale, steps = _scale_note(summary)
    text = (f"{layout.name}: each configuration minus the reference arm ({ref}){within}; scale {scale}, {steps} steps. "
            f"$\\Delta$: difference of means (loss and steps in the main table's units); 95\\% CI: Welch; $p$: "
            f"two-sided Welch $t$-test, not adjusted (Holm-adjusted in the Parquet); $g$: Hedges' $g$; $n$: seeds "
            f"averaged, configuration/reference (diverged left out; collapsed left out of steps). "
            f"-- where a side has fewer than 2 seeds.")
    if fmt != "latex":
        text = text.replace("$\\Delta$", "Δ").replace("\\%", "%").replace("$p$", "p").replace("$t$", "t").replace(
            "$g$", "g").replace("$n$", "n")
    return text


def to_latex(tidy: pd.DataFrame, summary: pd.DataFrame, study: str, label: str | None = None,
             part: str = "main") -> str:
    """A booktabs table float for one column of a two-column paper; needs only \\usepackage{booktabs}.
    part: "main" (loss and steps) or "topography"."""
    grid = _main_grid(tidy, summary, study, "latex", part)
    return _latex(grid, caption(tidy, summary, study, part, "latex"),
                  label or f"tab:{layout_for(study, summary).name}" + ("" if part == "main" else "-topography"))


def to_markdown(tidy: pd.DataFrame, summary: pd.DataFrame, study: str, part: str = "main") -> str:
    """The table as GitHub Markdown (same cells as the LaTeX; bold in **), its caption below."""
    return _markdown(_main_grid(tidy, summary, study, "md", part), caption(tidy, summary, study, part, "md"))


def to_text(tidy: pd.DataFrame, summary: pd.DataFrame, study: str, part: str = "main") -> str:
    """The table for a terminal (at most 120 characters wide); bold cells are marked with *."""
    return _text(_main_grid(tidy, summary, study, "text", part),
                 "(* bold: best mean or not significantly worse, Welch + Holm, alpha 0.05; "
                 "† steps without collapsed seeds; s/d/c = seeds/diverged/collapsed)" if part == "main" else
                 "(loss ratio: shifted / unshifted validation loss, geometric mean over seeds; "
                 "smoothness: lower = more ordered)")


def comparison_latex(comp: pd.DataFrame, summary: pd.DataFrame, study: str) -> str:
    """The comparison table (each configuration minus the reference arm) as a booktabs float."""
    return _latex(_comparison_grid(comp, summary, study, "latex"), comparison_caption(summary, study, "latex"),
                  f"tab:{layout_for(study, summary).name}-vs-reference")


def comparison_markdown(comp: pd.DataFrame, summary: pd.DataFrame, study: str) -> str:
    """The comparison table as Markdown, caption below."""
    return _markdown(_comparison_grid(comp, summary, study, "md"), comparison_caption(summary, study, "md"))


def comparison_text(comp: pd.DataFrame, summary: pd.DataFrame, study: str) -> str:
    """The comparison table for a terminal."""
    return _text(_comparison_grid(comp, summary, study, "text"),
                 "(Δ = configuration - reference; 95% CI Welch; p Welch two-sided, unadjusted; g Hedges)")
