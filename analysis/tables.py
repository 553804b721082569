"""The paper's tables (1-4) for whatever a sweep ran, as tidy numbers, LaTeX and text.

A table has one row per configuration (the fields its study sweeps) and, per
column, the mean +- sample std (n - 1) over seeds of the final validation loss
and of the steps to reach +10 % / +20 % of it. The best mean per column is in
bold, within groups where the paper groups (Table 3: per N0 x update-0 pair;
Table 4: per neighbourhood kind). Where the trials measured their topography
(SPEC 6), extra columns give the validation loss with every code shifted by
+1..+3 on the grid and the smoothness ratio (lower = more ordered; lowest in
bold too). A last column counts seeds / diverged; diverged trials are counted
there and left out of the means.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.summary import CODE_USE_COLUMNS, TOPOGRAPHY_COLUMNS
from models import metrics as M

LOSS, STEPS = "final_loss", "steps_{}"
TOPOGRAPHY_OFFSETS = (1, 2, 3)  # offset 0 is the final model's own loss (in summary.parquet)


@dataclass(frozen=True)
class Layout:
    rows: tuple[str, ...]  # config fields that make a row, outermost first
    group: tuple[str, ...] = ()  # bold the best within groups of these fields
    thresholds: tuple[int, ...] = (10, 20)
    caption: str = ""


LAYOUTS = {
    "sensitivity": Layout(("n0", "update_empty"), (), (10,),
                          "Sensitivity of EMA-VQ to $N_k^{(0)}$ and update-0 (paper Table 1)."),
    "comparison": Layout(("neighbours",), (), (10, 20),
                         "Well-configured EMA-VQ against KSOM (paper Table 2)."),
    "robustness": Layout(("n0", "update_empty", "neighbours"), ("n0", "update_empty"), (10,),
                         "Robustness of KSOM under configurations sub-optimal for EMA-VQ (paper Table 3)."),
    "ablation": Layout(("neighbours", "grid_dim", "tau"), ("neighbours",), (10, 20),
                       "KSOM ablations: 1D/2D grid and shrink step $\\tau$ (paper Table 4)."),
}
HEADERS = {"n0": ("$N_k^{(0)}$", "N0"), "update_empty": ("Update-0", "Update-0"),
           "neighbours": ("Neighbours", "Neighbours"), "grid_dim": ("Grid", "Grid"), "tau": ("$\\tau$", "tau")}
ROW_ORDER = {"none": 0, "hard": 1, "gaussian": 2}
LABELS = {"neighbours": {"none": "EMA-VQ", "hard": "KSOM hard", "gaussian": "KSOM Gaussian"},
          "update_empty": {True: "Yes", False: "No"}, "grid_dim": {1: "1D", 2: "2D"}}


def layout_for(study: str, summary: pd.DataFrame) -> Layout:
    """The paper's layout for a known study; otherwise one row per combination of the fields that vary."""
    if study in LAYOUTS:
        return LAYOUTS[study]
    skip = {"run_id", "run_name", "seed", "ray_trial_id", "node_id", "status", "final_loss", "diverged",
            "parent_run_id"}
    varying = [c for c in summary.columns if c not in skip and not c.startswith(("steps_",) + CODE_USE_COLUMNS + TOPOGRAPHY_COLUMNS)
               and summary[c].nunique(dropna=False) > 1]
    return Layout(tuple(varying), (), (10, 20), f"Study {study}.")


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


def table_numbers(summary: pd.DataFrame, study: str) -> pd.DataFrame:
    """Tidy table: one row per (configuration, column) with mean, std, n, seeds, diverged, best."""
    layout = layout_for(study, summary)
    columns = [LOSS] + [STEPS.format(p) for p in layout.thresholds] + topography_columns(summary)
    records = []
    for key, g in paper_order(summary, study).groupby(list(layout.rows), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[~g.diverged]
        for col in columns:
            values = ok[col].dropna()
            records.append({**dict(zip(layout.rows, key)), "column": col, "mean": values.mean(),
                            "std": values.std(ddof=1), "n": len(values), "seeds": len(g),
                            "diverged": int(g.diverged.sum())})
    return mark_best(pd.DataFrame(records), layout)


def mark_best(tidy: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Add the column `best`: the lowest mean of its column, within the layout's groups (ties all best)."""
    best = tidy.groupby(list(layout.group) + ["column"], dropna=False)["mean"].transform("min")
    return tidy.assign(best=tidy["mean"].notna() & (tidy["mean"] == best))


def topography_columns(summary: pd.DataFrame) -> list[str]:
    """The topography columns a summary has (SPEC 6): loss with codes shifted by 1..3, smoothness per level."""
    shifts = [M.column(M.offset_loss(o)) for o in TOPOGRAPHY_OFFSETS if M.column(M.offset_loss(o)) in summary]
    return shifts + sorted(c for c in summary.columns if c.startswith(M.column(M.smoothness(""))))


def _cell(mean: float, std: float, scale: int, pm: str, digits: int) -> str:
    if not math.isfinite(mean):
        return "--"
    f = 10.0 ** scale
    return f"{mean * f:.{digits}f}" if not math.isfinite(std) else f"{mean * f:.{digits}f} {pm} {std * f:.{digits}f}"


def _display(tidy: pd.DataFrame, summary: pd.DataFrame, study: str, latex: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, bold mask) with one row per configuration, labelled for LaTeX or for text."""
    layout = layout_for(study, summary)
    pm = "$\\pm$" if latex else "±"
    ls, ss = loss_scale(summary), steps_scale(summary)
    unit = (lambda e: f" ($\\times 10^{e}$)") if latex else (lambda e: f" (x10^{e})")
    pct = "\\%" if latex else "%"
    # column -> (title, power of ten shown, digits); raw step counts are whole numbers
    formats = {LOSS: (f"Loss{unit(ls)}", ls, 1)}
    # "Steps (x10^3)" as the paper: the cell times 10^3 is the step count, whereas "Loss (x10^3)" is the loss x 10^3.
    formats.update({STEPS.format(p): (f"Steps +{p}{pct}" + (unit(ss) if ss else ""), -ss, 1 if ss else 0)
                    for p in layout.thresholds})
    shift, smooth = M.column(M.offset_loss("")), M.column(M.smoothness(""))
    levels = [c.removeprefix(smooth) for c in topography_columns(summary) if c.startswith(smooth)]
    for col in topography_columns(summary):
        if col.startswith(shift):
            formats[col] = (f"Shift +{col.removeprefix(shift)}{unit(ls)}", ls, 1)
        else:
            level = col.removeprefix(smooth)
            formats[col] = ("Smoothness" + (f" {level}" if len(levels) > 1 else ""), 0, 2)
    names = {col: title for col, (title, _, _) in formats.items()}
    cells, bold = {}, {}
    for _, r in tidy.iterrows():
        key = tuple(LABELS.get(f, {}).get(r[f], f"{r[f]:g}" if isinstance(r[f], float) else r[f])
                    for f in layout.rows)
        _, scale, digits = formats[r["column"]]
        cells.setdefault(key, {})[names[r["column"]]] = _cell(r["mean"], r["std"], scale, pm, digits)
        bold.setdefault(key, {})[names[r["column"]]] = bool(r["best"])
        cells[key]["Seeds / diverged"] = f"{r['seeds']} / {r['diverged']}"
        bold[key]["Seeds / diverged"] = False
    index = pd.MultiIndex.from_tuples(list(cells), names=[HEADERS.get(f, (f, f))[0 if latex else 1]
                                                          for f in layout.rows])
    order = list(names.values()) + ["Seeds / diverged"]
    return (pd.DataFrame(list(cells.values()), index=index)[order],
            pd.DataFrame(list(bold.values()), index=index)[order])


def to_latex(tidy: pd.DataFrame, summary: pd.DataFrame, study: str, label: str | None = None) -> str:
    """A booktabs table float (pandas Styler); needs only \\usepackage{booktabs}."""
    cells, bold = _display(tidy, summary, study, latex=True)
    styler = cells.style.apply(lambda col: bold[col.name].map({True: "textbf: --rwrap;", False: ""}), axis=0)
    caption = layout_for(study, summary).caption + " Mean $\\pm$ sample std over seeds."
    return styler.to_latex(environment="table", hrules=True, position_float="centering", caption=caption,
                           label=label or f"tab:{study}", multirow_align="naive", column_format=None)


def to_text(tidy: pd.DataFrame, summary: pd.DataFrame, study: str) -> str:
    """The table for a terminal; bold cells are marked with *."""
    cells, bold = _display(tidy, summary, study, latex=False)
    marked = cells.where(~bold, cells + " *")
    return marked.to_string() + "\n(* best mean in its column" + (
        " and group)" if layout_for(study, summary).group else ")")


def to_markdown(tidy: pd.DataFrame, summary: pd.DataFrame, study: str) -> str:
    """The table as GitHub Markdown, best means in bold."""
    cells, bold = _display(tidy, summary, study, latex=False)
    marked = cells.where(~bold, "**" + cells + "**").reset_index()
    lines = ["| " + " | ".join(marked.columns) + " |", "|" + "---|" * len(marked.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in marked.itertuples(index=False)]
    return "\n".join(lines)
