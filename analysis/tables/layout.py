"""How a study's tables are set: which config fields make a row and in which order, which groups
share a bold and a reference arm, which step thresholds are shown, the caption; and how config
fields and their values are named in tables and figures.

A layout comes from the study file alone: its optional `layout:` block (checked by the study loader,
sweep/study.py, so that a study file is refused with its file and line before anything runs) and its
`reference`, carried by the sweep's plan (plan.TableLayout) into sweep.json. Without a block the layout is derived
from the plan (`Layout.from_plan`); without a plan (a store read by study name) from the fields
that vary in the summary (`layout_for`).

    layout:
      rows: [n0, update_empty, neighbours]   # the fields that make a row, outermost first (sort order)
      order: [neighbours, n0, update_empty]  # display order of the row fields (default: the quantiser first)
      groups: [n0, update_empty]             # bold and the reference comparison are within these
      thresholds: [10]                       # steps to +p % shown (each needs steps_<p> in metrics)
      caption: "Robustness of KSOM (hard, 2D, $\\tau=0.1$) ... (paper Table 3)."   # LaTeX allowed
      headers: {n0: "$N_k^{(0)}$"}           # column headers of row fields (LaTeX allowed)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from analysis.summary import CODE_USE_COLUMNS, TOPOGRAPHY_COLUMNS
from analysis.tables.formats import escape, plain
import metrics as M
from plan import Analysis, Plan, TableLayout


@dataclass(frozen=True)
class Layout:
    """How a study's table is set: which config fields make a row, which groups share a bold
    and a reference arm, which step thresholds are shown."""
    rows: tuple[str, ...]  # config fields that make a row, outermost first (the sort order)
    group: tuple[str, ...] = ()  # bold and the reference comparison are within groups of these fields
    thresholds: tuple[int, ...] = M.THRESHOLDS
    caption: str = ""  # the study's own (LaTeX, checked: plan.check_latex); "": the title
    reference: dict = field(default_factory=dict)  # the reference arm of each group: field -> value
    order: tuple[str, ...] = ()  # display order of the row fields (default: rows)
    headers: dict = field(default_factory=dict)  # row field -> column header (LaTeX), over HEADERS

    name: str = ""  # the study's name (labels and captions)
    title: str = ""  # plain text (escaped where it is set): the study's description and paper table
    primary: str = M.FINAL_LOSS  # the primary endpoint: each arm against the reference, one Holm family
    margin: dict = field(default_factory=dict)  # the equivalence margin for "level": {"fraction": f} or {"loss": d}

    @property
    def columns(self) -> tuple[str, ...]:
        return self.order or self.rows

    @classmethod
    def from_plan(cls, plan: Plan) -> "Layout":
        """The layout of a sweep's plan (sweep.json): what the study's `layout:` block sets, the rest
        derived (`derive`)."""
        return cls.derive(plan.study, plan.layout, plan.reference, plan.swept, plan.metrics,
                          plan.description or plan.study, plan.table, plan.analysis)

    @classmethod
    def derive(cls, name: str, block: TableLayout, reference: dict, swept: list[str], metrics: list[str],
               description: str, table: str, analysis: Analysis = Analysis()) -> "Layout":
        """What the `layout:` block sets, the rest derived: rows = the swept fields, display order
        quantiser first, groups = the row fields outside the reference arm, thresholds from the
        steps_<p> metrics, title (plain text) from the description and paper table; the primary endpoint
        and the equivalence margin from the `analysis:` block."""
        rows = tuple(swept if block.rows is None else block.rows)
        thresholds = tuple(M.threshold(m) for m in metrics if m.startswith(M.STEPS)) or M.THRESHOLDS
        title = description + (f" ({table})." if table else ".")
        return cls(rows, tuple(f for f in rows if f not in reference) if block.groups is None else tuple(block.groups),
                   thresholds if block.thresholds is None else tuple(block.thresholds), block.caption or "",
                   dict(reference),
                   tuple(sorted(rows, key=lambda f: f != "neighbours") if block.order is None else block.order),
                   dict(block.headers), name, title, analysis.primary, margin_of(analysis))


def margin_of(analysis: Analysis) -> dict:
    """The equivalence margin the `analysis:` block declares: {"fraction": f} (of the reference arm's mean,
    `equivalence`), {"loss": d} (in the primary endpoint's units, `equivalence_margin`), or {} for none."""
    if analysis.equivalence_margin is not None:
        return {"loss": analysis.equivalence_margin}
    return {} if analysis.equivalence is None else {"fraction": analysis.equivalence}


def read_layout(study_file: str | Path) -> Layout:
    """The layout a study file sets by itself: its name, reference, metrics and `layout:` block, as
    yaml reads them (the sweep checked them when it ran). For a study whose block names its rows, as
    the paper's four do (their results folders hold no sweep.json); a sweep's layout is its plan's."""
    data = yaml.safe_load(Path(study_file).read_text())
    return Layout.derive(data["name"], TableLayout(**(data.get("layout") or {})), data.get("reference") or {}, [],
                         data.get("metrics", []), data["description"], data.get("table") or "",
                         Analysis(**(data.get("analysis") or {})))


# How config fields and their values are shown: headers and caption notes (LaTeX, plain), value labels.
HEADERS = {"n0": ("$N_k^{(0)}$", "N0"), "update_empty": ("Upd.-0", "Update-0"),
           "neighbours": ("Quantiser", "Quantiser"), "grid_dim": ("Grid", "Grid"), "tau": ("$\\tau$", "tau"),
           "decay": ("Decay", "Decay"), "codebook_init": ("Init", "Init"), "commitment": ("Commit.", "Commit.")}
FIELD_NOTES = {"n0": ("$N_k^{(0)}$: initial EMA count of every code", "N0: initial EMA count of every code"),
               "update_empty": ("Upd.-0: whether codes with no member in the batch are updated (update-0)",
                                "Update-0: whether codes with no member in the batch are updated"),
               "tau": ("$\\tau$: shrinking step of the neighbourhood", "tau: shrinking step of the neighbourhood")}
ROW_ORDER = {"none": 0, "hard": 1, "gaussian": 2}
LABELS = {"neighbours": {"none": "EMA-VQ", "hard": "KSOM hard", "gaussian": "KSOM Gauss."},
          "update_empty": {True: "Yes", False: "No"}, "grid_dim": {1: "1D", 2: "2D"}}
# Summary columns that never make a row: the trial's identity and status, and its measured numbers.
SKIP = {"run_id", "run_name", M.SEED_TAG, M.RAY_TRIAL_TAG, M.NODE_TAG, M.STATUS_TAG, "parent_run_id", M.RESULT,
        M.FINAL_LOSS, M.SELECTION_LOSS, M.DIVERGED, M.COLLAPSED, M.LATE_IMPROVEMENT, "start_time", M.STAGE_TAG,
        M.SEARCH_TAG, M.SEARCHED_TAG}


def header(layout: Layout, name: str, fmt: str) -> str:
    """The column header of row field `name` in format `fmt` ("latex", "md", "text"): the study's
    own (its `headers`, in LaTeX), else HEADERS, else the field's name."""
    if name in layout.headers:
        return layout.headers[name] if fmt == "latex" else escape(plain(layout.headers[name]), fmt)
    return HEADERS[name][0 if fmt == "latex" else 1] if name in HEADERS else escape(name, fmt)


def layout_for(study: "str | Layout", summary: pd.DataFrame) -> Layout:
    """The layout itself when given one (e.g. Layout.from_plan); for a study known only by name
    one row per combination of the fields that vary, no reference arm."""
    if isinstance(study, Layout):
        return study
    varying = [c for c in summary.columns if c not in SKIP and not c.startswith(
        (M.STEPS,) + CODE_USE_COLUMNS + TOPOGRAPHY_COLUMNS) and summary[c].nunique(dropna=False) > 1]
    return Layout(tuple(varying), (), M.THRESHOLDS, name=study, title=f"Study {study}.")


def paper_order(frame: pd.DataFrame, study: "str | Layout") -> pd.DataFrame:
    """Rows sorted as the paper's table: by the layout's fields, EMA-VQ before KSOM (stable otherwise)."""
    return frame.sort_values(list(layout_for(study, frame).rows), kind="stable",
                             key=lambda col: col.map(ROW_ORDER).fillna(col) if col.name == "neighbours" else col)
