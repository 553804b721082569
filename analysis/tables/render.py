"""A study's tables as LaTeX, Markdown and text: the grid of cells each table has (labels of the
layout's row fields, numbers at the display scale, bold, daggers and the s/d/c counts), set by
analysis.tables.formats under the captions of analysis.tables.captions.
"""
from __future__ import annotations

import math
import textwrap

import pandas as pd

from analysis.stats import MAX_SEEDS
from analysis.tables.captions import caption, comparison_caption
from analysis.tables.formats import (DAGGER, DDAGGER, PCT, TEXT_WIDTH, TIMES, Grid, as_latex, as_markdown, as_text,
                                     escape)
from analysis.tables.layout import LABELS, Layout, header, layout_for
from analysis.tables.numbers import (CODES_USED, INCREASE, PRIMARY, RATIO, SECONDARY, SMOOTH, loss_scale,
                                     steps_scale, topography_columns)
import metrics as M


def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "--"


def _ratio(x: float) -> str:
    """A ratio or a loss increase with three significant digits, powers of ten from 1,000 on (e.g. 1.2e3)."""
    if not math.isfinite(x):
        return "--"
    if abs(x) >= 1000:
        return f"{x:.1e}".replace("e+0", "e").replace("e+", "e")
    return f"{x:.{2 if abs(x) < 10 else 1 if abs(x) < 100 else 0}f}"


def neighbour_labels(kinds) -> dict:
    """Quantiser labels as short as the table allows (the caption names the rest): "KSOM" when it
    is the only KSOM kind beside EMA-VQ (paper Table 3), "Hard"/"Gaussian" when every row is KSOM
    (Table 4)."""
    kinds = set(kinds)
    ksom = kinds - {"none"}
    if "none" not in kinds:
        return {"hard": "Hard", "gaussian": "Gaussian"}
    return {"none": "EMA-VQ", **({k: "KSOM" for k in ksom} if len(ksom) == 1 else LABELS["neighbours"])}


def _row_labeller(layout: Layout, kinds, summary: pd.DataFrame, fmt: str):
    """key -> the row's label cells in format `fmt`: the fields' display names, or their values (escaped:
    they are data) with the digits that tell the summary's values apart (metrics.value_texts: two rows never
    print alike)."""
    labels = {**LABELS, "neighbours": neighbour_labels(kinds)}
    texts = {f: M.value_texts(summary[f].dropna()) for f in layout.columns if f in summary}
    return lambda key: [labels.get(f, {}).get(key[f]) or escape(texts.get(f, {}).get(key[f], str(key[f])), fmt)
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


SECTION_GROUPS = 3  # a layout grouping by this many fields or more names each group in a row of its own


def _label_columns(labels: list[list[str]], layout: Layout, keys: list[dict], fmt: str):
    """(headers, cells, group breaks, section rows) of the label columns. A group's fields are written once
    per group: in their columns, blank where they repeat the row above (as the paper does); or, when the
    layout groups by SECTION_GROUPS fields or more (too wide for a column of a two-column paper), in a row
    of their own above the group ("Decay = 0.8, Init = randn, ...")."""
    headers = _headers(layout, fmt)
    rows, breaks = _blank_repeats(labels, layout, keys)
    if len(layout.group) < SECTION_GROUPS:
        return headers, rows, breaks, {}
    keep = [j for j, f in enumerate(layout.columns) if f not in layout.group]
    sections = {i: ", ".join(f"{headers[j]} = {labels[i][j]}" for j, f in enumerate(layout.columns)
                             if f in layout.group) for i in [0] + breaks}
    return [headers[j] for j in keep], [[row[j] for j in keep] for row in rows], [], sections


def _configurations(tidy: pd.DataFrame, layout: Layout, summary: pd.DataFrame, fmt: str):
    """(key, label cells, the row's tidy rows by column) per configuration, in the table's order."""
    row_labels = _row_labeller(layout, tidy.get("neighbours", pd.Series(dtype=str)).unique(), summary, fmt)
    for _, rows in tidy.groupby(list(layout.rows), sort=False, dropna=False):
        key = {f: rows.iloc[0][f] for f in layout.rows}
        yield key, row_labels(key), rows.set_index("column")


def _cell(r: pd.Series, scale: int, digits: int, mark: str = "") -> tuple[str, str, bool, str]:
    """A mean +- std cell at 10^scale with `digits` decimals (no spread where it is not finite)."""
    f = 10.0 ** scale
    spread = _fmt(r["std"] * f, digits) if math.isfinite(r["std"]) and math.isfinite(r["mean"]) else ""
    return _fmt(r["mean"] * f, digits), spread, bool(r["best"]), mark


def _count(c: pd.Series) -> tuple[str, str, bool, str]:
    """The seeds / diverged / collapsed cell (+n unfinished, (n stopped))."""
    count = f"{c[M.SEEDS]}/{c[M.DIVERGED]}/{c[M.COLLAPSED]}"
    if c.get("unfinished", 0):
        count += f"+{c['unfinished']}"
    if c.get(M.STOPPED, 0) > 0:  # NaN in rows of groups without a stopped trial
        count += f" ({int(c[M.STOPPED])} stopped)"
    return count, "", False, ""


def _main_grid(tidy: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", fmt: str) -> Grid:
    """Loss and steps to +p % per configuration, mean +- std, and its s/d/c counts."""
    layout = layout_for(study, summary)
    ls, ss = loss_scale(summary), steps_scale(summary)
    unit, pct = TIMES[fmt], PCT[fmt]
    steps_title = ("\\# Steps" if fmt == "latex" else "Steps") + (f" {unit(ss)}" if ss else "")
    specs = [(M.FINAL_LOSS, ("Loss", unit(ls)), ls, 1)]
    specs += [(M.steps_to(p), (steps_title, f"+{p}{pct}"), -ss, 1 if ss else 0) for p in layout.thresholds]
    keys, labels, cells = [], [], []
    for key, row_labels, by_col in _configurations(tidy, layout, summary, fmt):
        row_cells = []
        for col, _, scale, digits in specs:
            r = by_col.loc[col]
            fewer = col.startswith(M.STEPS) and r.get(M.COLLAPSED, 0) > 0 and math.isfinite(r["mean"])
            row_cells.append(_cell(r, scale, digits, DAGGER[fmt] if fewer else ""))
        keys.append(key)
        labels.append(row_labels)
        cells.append(row_cells + [_count(by_col.iloc[0])])
    heads = [h for _, h, _, _ in specs] + [("Seeds", "s/d/c")]
    pm = [any(row[i][1] for row in cells) for i in range(len(heads))]
    headers, rows, breaks, sections = _label_columns(labels, layout, keys, fmt)
    return Grid(headers, heads, rows, cells, breaks, pm, sections)


def _topography_grid(tidy: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", fmt: str) -> Grid:
    """Two rows per configuration, so that the table fits a column: the loss ratio at shift +o (geometric
    mean) with the smoothness (mean +- std), marked where a seed collapsed (the counts are in the main
    table); below it the loss increase at shift +o (median) at the loss's display scale."""
    layout = layout_for(study, summary)
    ls = loss_scale(summary)
    offsets = [c.removeprefix(RATIO) for c in topography_columns(summary) if c.startswith(RATIO)]
    smooth = [c for c in topography_columns(summary) if c.startswith(SMOOTH) and c in set(tidy.column)]
    keys, labels, cells = [], [], []
    for key, row_labels, by_col in _configurations(tidy, layout, summary, fmt):
        mark = DDAGGER[fmt] if by_col.iloc[0][M.COLLAPSED] > 0 else ""  # competes for no bold in the smoothness
        ratios = [(_ratio(by_col.loc[f"{RATIO}{o}", "mean"]), "", False, "") for o in offsets]
        increases = [(_ratio(by_col.loc[f"{INCREASE}{o}", "mean"] * 10.0 ** ls), "", False, "") for o in offsets]
        keys.append(key)
        labels.append(row_labels)
        cells += [ratios + [_cell(by_col.loc[c], 0, 2, mark) for c in smooth],
                  increases + [("", "", False, "")] * len(smooth)]
    heads = [("Loss at shift", f"+{o}") for o in offsets]
    heads += [("Smooth." if len(smooth) > 1 else "Smoothness", c.removeprefix(SMOOTH) if len(smooth) > 1 else "")
              for c in smooth]
    pm = [any(row[i][1] for row in cells) for i in range(len(heads))]
    headers, rows, breaks, sections = _label_columns(labels, layout, keys, fmt)
    rows = [pair for row in rows for pair in (row + ["ratio"], [""] * len(row) + ["incr."])]
    return Grid(headers + [""], heads, rows, cells, [2 * b for b in breaks], pm,
                {2 * i: text for i, text in sections.items()})


def _grid(tidy: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", fmt: str, part: str) -> Grid:
    return (_main_grid if part == "main" else _topography_grid)(tidy, summary, study, fmt)


def _p(p: float) -> str:
    return "--" if not math.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _comparison_grid(comp: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", fmt: str) -> Grid:
    """One section per configuration (named in a row of its own, so the table stays narrow), one
    row per metric: difference, Welch CI, Holm-adjusted p within the metric's family, seeds averaged, and the
    verdict (primary) or "secondary" (the unadjusted p and Hedges' g are in the Parquet: the verdict needs the
    column's width)."""
    layout = layout_for(study, summary)
    ls, ss = loss_scale(summary), steps_scale(summary)
    pct = PCT[fmt]
    names = {M.FINAL_LOSS: ("Loss", ls, 1)}
    names.update({M.steps_to(p): (f"Steps +{p}{pct}", -ss, 1 if ss else 0) for p in layout.thresholds})
    row_labels = _row_labeller(layout, summary.get("neighbours", pd.Series(dtype=str)).unique(), summary, fmt)
    headers = _headers(layout, fmt)
    rows, cells, sections, previous = [], [], {}, None
    for _, r in comp.iterrows():
        key = {f: r[f] for f in layout.rows}
        if key != previous:
            sections[len(rows)] = ", ".join(v if f == "neighbours" else f"{h} = {v}" for f, h, v in
                                            zip(layout.columns, headers, row_labels(key)))
            previous = key
        prefix = next((p for p in (SMOOTH, CODES_USED) if r["column"].startswith(p)), "")
        if prefix:  # per level: the level named where there are several
            several = sum(c.startswith(prefix) for c in comp.column.unique()) > 1
            level = escape(r["column"].removeprefix(prefix), fmt) if several else ""
            title = f"{'Smoothness' if prefix == SMOOTH else 'Codes used'} {level}".strip()
            scale, digits = 0, (2 if prefix == SMOOTH else 0)  # codes used: whole numbers
        else:
            title, scale, digits = names.get(r["column"], (escape(r["column"], fmt), 0, 2))
        f = 10.0 ** scale
        ci = (f"[{_fmt(r['ci_low'] * f, digits)}, {_fmt(r['ci_high'] * f, digits)}]" if math.isfinite(r["ci_low"])
              else "--")
        rows.append([title])
        cells.append([(_fmt(r["diff"] * f, digits), "", False, ""), (ci, "", False, ""),
                      (_p(r["p_holm"]), "", False, ""),
                      (f"{r['n']}/{r['n_ref']}", "", False, ""),
                      (r["verdict"] if r["family"] == PRIMARY else SECONDARY, "", False, "")])
    latex = fmt == "latex"
    heads = [("$\\Delta$" if latex else "Δ", ""), (f"95{pct} CI", ""),
             ("$p_{\\mathrm{Holm}}$" if latex else "p Holm", ""),
             ("$n$" if latex else "n", ""), ("Verdict", "")]
    return Grid(["Metric"], heads, rows, cells, [], [False] * len(heads), sections)


def seeds_lines(comp: pd.DataFrame, summary: pd.DataFrame, fmt: str) -> list[str]:
    """Per primary comparison: its verdict and the seeds per arm 80 % power needs (plain text; the
    configuration's name, from data, escaped for `fmt`)."""
    if comp.empty:
        return []
    f = 10.0 ** loss_scale(summary)
    lines = []
    for r in comp[comp["family"] == PRIMARY].to_dict("records"):
        level = (f"; {_seeds(r['seeds_level'])} to show level within ±{r['margin'] * f:.2f} were the true difference 0 "
                 f"(TOST p now {_p(r['p_tost'])})" if math.isfinite(r["margin"]) else "")
        lines.append(f"{escape(r['label'], fmt)}: {r['verdict']} (Δ {r['diff'] * f:.2f}, Holm p {_p(r['p_holm'])}, "
                     f"{r['n']}/{r['n_ref']} seeds); for 80 % power {_seeds(r['seeds_difference'])} to show the "
                     f"observed difference{level}")
    return lines


def _seeds(n: float) -> str:
    return f"{int(n)} seeds per arm" if math.isfinite(n) else f"no number of seeds (no spread, or over {MAX_SEEDS:,})"


def to_latex(tidy: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", label: str | None = None,
             part: str = "main") -> str:
    """A booktabs table float for one column of a two-column paper; needs only \\usepackage{booktabs}.
    part: "main" (loss and steps) or "topography"."""
    grid = _grid(tidy, summary, study, "latex", part)
    return as_latex(grid, caption(tidy, summary, study, part, "latex"),
                  label or f"tab:{layout_for(study, summary).name}" + ("" if part == "main" else "-topography"))


def to_markdown(tidy: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", part: str = "main") -> str:
    """The table as GitHub Markdown (same cells as the LaTeX; bold in **), its caption below."""
    return as_markdown(_grid(tidy, summary, study, "md", part), caption(tidy, summary, study, part, "md"))


def to_text(tidy: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", part: str = "main") -> str:
    """The table for a terminal (at most 120 characters wide); bold cells are marked with *. Its note explains
    only the marks the table contains."""
    grid = _grid(tidy, summary, study, "text", part)
    bold = any(cell[2] for row in grid.cells for cell in row)
    marks = {cell[3] for row in grid.cells for cell in row}
    notes = (["* bold: best mean or not significantly worse, Welch + Holm, alpha 0.05"] if bold else []) + (
        ["† steps without collapsed seeds" if DAGGER["text"] in marks else "", "s/d/c = seeds/diverged/collapsed"]
        if part == "main" else
        ["loss ratio: shifted / unshifted validation loss, geometric mean over seeds", "increase: shifted - "
         "unshifted, median", "smoothness: lower = more ordered", "‡ a seed collapsed: never bold" if DDAGGER["text"]
         in marks else ""])
    return as_text(grid, f"({'; '.join(n for n in notes if n)})")


def comparison_latex(comp: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout") -> str:
    """The comparison table (each configuration minus the reference arm) as a booktabs float."""
    return as_latex(_comparison_grid(comp, summary, study, "latex"), comparison_caption(summary, study, "latex"),
                  f"tab:{layout_for(study, summary).name}-vs-reference")


def comparison_markdown(comp: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout") -> str:
    """The comparison table as Markdown, caption below."""
    seeds = seeds_lines(comp, summary, "md")
    return as_markdown(_comparison_grid(comp, summary, study, "md"), comparison_caption(summary, study, "md")) + (
        "\n\nSeeds per arm for 80 % power (primary; each test at alpha 0.05, before Holm's correction over the family):\n\n" + "\n".join(f"- {line}" for line in seeds) if seeds else "")


def comparison_text(comp: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout") -> str:
    """The comparison table for a terminal."""
    return "\n".join([as_text(_comparison_grid(comp, summary, study, "text"),
                              "(Δ = configuration - reference; 95% CI Welch; p Holm: two-sided Welch, Holm-adjusted "
                              "within its family, primary or secondary; verdict of the primary test)")]
                     + [textwrap.fill(line, TEXT_WIDTH, subsequent_indent="  ")
                        for line in seeds_lines(comp, summary, "text")])
