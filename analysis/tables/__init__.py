"""The paper's tables (1-4) for whatever a sweep ran: tidy numbers, and LaTeX, Markdown and text in
the study's layout, each narrow enough for one column of a two-column paper.

Three tables per study, each from the per-trial summary (analysis.summary): main (loss and steps
per configuration), topography (loss ratio and increase at shift +o, smoothness) and vs reference (each
configuration minus the study's reference arm). One module per job:

layout     how a study's table is set (from its study file's `layout:` block and `reference`)
numbers    the tidy numbers: means, spreads, bold by Welch + Holm, differences to the reference
formats    one grid of cells set as LaTeX, Markdown or text
captions   what every column means, in LaTeX or plain text
render     the grids of the three tables, and the entry points below
"""
from analysis.tables.formats import TEXT_WIDTH, WRAP_WIDTH
from analysis.tables.layout import HEADERS, LABELS, Layout, layout_for, paper_order
from analysis.tables.numbers import (INCREASE, RATIO, SMOOTH, comparison_numbers, loss_scale, mark_best, steps_scale,
                                     table_numbers, topography_columns)
from analysis.tables.render import (comparison_latex, comparison_markdown, comparison_text, to_latex, to_markdown,
                                    to_text)

__all__ = ["TEXT_WIDTH", "WRAP_WIDTH", "HEADERS", "LABELS", "Layout", "layout_for", "paper_order", "INCREASE",
           "RATIO", "SMOOTH", "comparison_numbers", "loss_scale", "mark_best", "steps_scale", "table_numbers",
           "topography_columns", "comparison_latex", "comparison_markdown", "comparison_text", "to_latex",
           "to_markdown", "to_text"]
