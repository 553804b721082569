"""A study's tables as LaTeX, Markdown and text: the grid of cells each table has (labels of the
layout's row fields, numbers at the display scale, bold, daggers and the s/d/c counts), set by
analysis.tables.formats under the captions of analysis.tables.captions.
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.tables.captions import caption, comparison_caption
from analysis.tables.formats import DAGGER, PCT, TIMES, Grid, as_latex, as_markdown, as_text
from analysis.tables.layout import LABELS, Layout, header, layout_for
from analysis.tables.numbers import RATIO, SMOOTH, loss_scale, steps_scale, topography_columns
import metrics as M


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
    return [header(layout, f, fmt) for f in layout.columns]


def _main_grid(tidy: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", fmt: str, part: str) -> Grid:
    layout = layout_for(study, summary)
    ls, ss = loss_scale(summary), steps_scale(summary)
    unit, pct = TIMES[fmt], PCT[fmt]
    steps_title = ("\\# Steps" if fmt == "latex" else "Steps") + (f" {unit(ss)}" if ss else "")
    if part == "main":
        specs = [(M.FINAL_LOSS, ("Loss", unit(ls)), ls, 1)]
        specs += [(M.steps_to(p), (steps_title, f"+{p}{pct}"), -ss, 1 if ss else 0) for p in layout.thresholds]
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
            fewer = col.startswith(M.STEPS) and r.get(M.COLLAPSED, 0) > 0 and math.isfinite(r["mean"])
            row_cells.append((_fmt(r["mean"] * f, digits), spread, bool(r["best"]), DAGGER[fmt] if fewer else ""))
        if part == "main":
            c = by_col.iloc[0]
            count = f"{c['seeds']}/{c[M.DIVERGED]}/{c[M.COLLAPSED]}"
            if c.get("unfinished", 0):
                count += f"+{c['unfinished']}"
            if c.get(M.STOPPED, 0) > 0:  # NaN in rows of groups without a stopped trial
                count += f" ({int(c[M.STOPPED])} stopped)"
            row_cells.append((count, "", False, ""))
        keys.append(key)
        labels.append(row_labels(key))
        cells.append(row_cells)
    heads = [h for _, h, _, _ in specs] + ([("Seeds", "s/d/c")] if part == "main" else [])
    pm = [any(row[i][1] for row in cells) for i in range(len(heads))]
    rows, breaks = _blank_repeats(labels, layout, keys)
    return Grid(_headers(layout, fmt), heads, rows, cells, breaks, pm)


def _comparison_grid(comp: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", fmt: str) -> Grid:
    """One section per configuration (named in a row of its own, so the table stays narrow), one
    row per metric: difference, Welch CI, p, Hedges' g, seeds averaged."""
    layout = layout_for(study, summary)
    ls, ss = loss_scale(summary), steps_scale(summary)
    pct = PCT[fmt]
    names = {M.FINAL_LOSS: ("Loss", ls, 1)}
    names.update({M.steps_to(p): (f"Steps +{p}{pct}", -ss, 1 if ss else 0) for p in layout.thresholds})
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


def to_latex(tidy: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", label: str | None = None,
             part: str = "main") -> str:
    """A booktabs table float for one column of a two-column paper; needs only \\usepackage{booktabs}.
    part: "main" (loss and steps) or "topography"."""
    grid = _main_grid(tidy, summary, study, "latex", part)
    return as_latex(grid, caption(tidy, summary, study, part, "latex"),
                  label or f"tab:{layout_for(study, summary).name}" + ("" if part == "main" else "-topography"))


def to_markdown(tidy: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", part: str = "main") -> str:
    """The table as GitHub Markdown (same cells as the LaTeX; bold in **), its caption below."""
    return as_markdown(_main_grid(tidy, summary, study, "md", part), caption(tidy, summary, study, part, "md"))


def to_text(tidy: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", part: str = "main") -> str:
    """The table for a terminal (at most 120 characters wide); bold cells are marked with *."""
    return as_text(_main_grid(tidy, summary, study, "text", part),
                 "(* bold: best mean or not significantly worse, Welch + Holm, alpha 0.05; "
                 "† steps without collapsed seeds; s/d/c = seeds/diverged/collapsed)" if part == "main" else
                 "(loss ratio: shifted / unshifted validation loss, geometric mean over seeds; "
                 "smoothness: lower = more ordered)")


def comparison_latex(comp: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout") -> str:
    """The comparison table (each configuration minus the reference arm) as a booktabs float."""
    return as_latex(_comparison_grid(comp, summary, study, "latex"), comparison_caption(summary, study, "latex"),
                  f"tab:{layout_for(study, summary).name}-vs-reference")


def comparison_markdown(comp: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout") -> str:
    """The comparison table as Markdown, caption below."""
    return as_markdown(_comparison_grid(comp, summary, study, "md"), comparison_caption(summary, study, "md"))


def comparison_text(comp: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout") -> str:
    """The comparison table for a terminal."""
    return as_text(_comparison_grid(comp, summary, study, "text"),
                 "(Δ = configuration - reference; 95% CI Welch; p Welch two-sided, unadjusted; g Hedges)")
