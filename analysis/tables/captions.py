"""Captions of a study's tables: the study's own caption (its layout), the scale, steps and seeds,
and a definition of every column, in LaTeX or plain text (Markdown and the terminal).
"""
from __future__ import annotations

import re

import pandas as pd

from analysis.stats import ALPHA
from analysis.summary import COLLAPSE_FRACTION, NO_TEST_SPLIT, has_test_split
from analysis.tables.formats import DAGGER, DDAGGER, PCT, PM, TIMES, escape, plain
from analysis.tables.layout import FIELD_NOTES, LABELS, Layout, header, layout_for
from analysis.tables.numbers import loss_scale, steps_scale
import metrics as M


def _scale_note(summary: pd.DataFrame) -> tuple[str, str]:
    """(scale name, steps per trial) for captions."""
    scale = str(summary[M.SCALE_TAG].iloc[0]) if M.SCALE_TAG in summary and len(summary) else "?"
    steps = int(summary["steps"].max()) if "steps" in summary and len(summary) else 0
    return scale, f"{steps:,}"


def _marked_steps(tidy: pd.DataFrame) -> bool:
    """Whether a steps cell of the main table is marked: a mean left with collapsed seeds out of it."""
    steps = tidy["column"].str.startswith(M.STEPS) if len(tidy) else pd.Series(dtype=bool)
    return bool((steps & (tidy.get(M.COLLAPSED, 0) > 0) & tidy["mean"].notna()).any()) if len(tidy) else False


def caption(tidy: pd.DataFrame, summary: pd.DataFrame, study: "str | Layout", part: str, fmt: str) -> str:
    """Caption defining every column of the main or topography table, for LaTeX or plain text."""
    layout = layout_for(study, summary)
    latex = fmt == "latex"
    pm, pct, dagger = PM[fmt], PCT[fmt], DAGGER[fmt]
    scale, steps = _scale_note(summary)
    seeds = sorted(set(tidy[M.SEEDS])) if len(tidy) else [0]
    seeds_text = "-".join(map(str, (seeds[0], seeds[-1]))) if len(seeds) > 1 else str(seeds[0])
    ls = loss_scale(summary)
    unit = TIMES[fmt]
    txt = (layout.caption if latex else plain(layout.caption)) if layout.caption else escape(layout.title, fmt)
    notes = [FIELD_NOTES[f][0 if latex else 1] for f in layout.columns if f in FIELD_NOTES]
    parts = [txt, f"Scale {escape(scale, fmt)}, {steps} training steps, {seeds_text} seeds per configuration."]
    parts += ["; ".join(notes) + "."] if notes else []
    enough = (tidy["n"] >= 2).any() if len(tidy) else False
    bold = (f"Bold: the lowest mean of its column{' and group' if layout.group else ''} and every configuration "
            f"not significantly different from it (two-sided Welch $t$-test, Holm correction over the table's "
            f"comparisons, $\\alpha={ALPHA}$); cells averaging fewer than 2 seeds are never bold."
            if enough else "No bold: fewer than 2 seeds per configuration, so no test can separate them.")
    if not latex:
        bold = bold.replace("$t$", "t").replace("$\\alpha=", "alpha = ").replace("$)", ")")
    if part == "main":
        thresholds = "/+".join(map(str, layout.thresholds))
        loss = (f"Loss {unit(ls)}: test MSE on per-channel standardised images at the step of the best validation "
                f"MSE (validation selects and the test split reports; the validation best, selection data, is the "
                f"summary's {escape(M.SELECTION_LOSS, fmt)}). Steps: first validated step whose validation MSE is within "
                f"+{thresholds}{pct} of that best" if has_test_split(summary) else
                f"Loss {unit(ls)}: {NO_TEST_SPLIT}: best validation MSE on per-channel standardised images. "
                f"Steps: first validated step within +{thresholds}{pct} of that loss")
        parts += [loss + (f", shown {unit(3)[1:-1]}" if steps_scale(summary) else "") + ".",
                  f"Mean {pm} sample std over the seeds that did not diverge (--: no seed left)" + (
                      f"; {dagger}: collapsed seeds are left out of that steps mean, which averages the s - d - c "
                      f"seeds of its row." if _marked_steps(tidy) else "."),
                  f"Seeds s/d/c: trials with a result / of them diverged / of them collapsed (fewer than "
                  f"{COLLAPSE_FRACTION:.0%} of the K codes used on validation at some level)".replace("%", pct)
                  + (" (+n: trials without a result)" if tidy.get("unfinished", pd.Series([0])).sum() else "")
                  + ("; (n stopped): trials a search's early stopping (ASHA) ended, in no mean."
                     if tidy.get(M.STOPPED, pd.Series([0])).sum() else "."),
                  bold]
    else:
        ddagger = DDAGGER[fmt]
        parts += ["Two rows per configuration. ratio: the validation loss with every code moved by (o, o) on the "
                  "grid (clamped at the border) at shift +o, divided by the same model's unshifted loss; geometric "
                  "mean over seeds (the ratio is multiplicative and spans orders of magnitude; its spread is in the "
                  "topography figure).",
                  f"incr. {unit(ls)}: the shifted minus the unshifted loss, median over seeds (a shift that "
                  f"decodes to noise makes one seed's increase dominate a mean). A collapsed model (fewer than "
                  f"{COLLAPSE_FRACTION:.0%} of the K codes used) has a high unshifted loss, so its ratio is small "
                  f"whatever its order: read it by its increase and smoothness.".replace("%", pct),
                  f"Smoothness: mean distance between decoded images of grid neighbours over that of random code "
                  f"pairs (1 = no order; lower = smoother), mean {pm} sample std. " + (bold.replace(
                      "cells averaging", f"configurations with a collapsed seed ({ddagger}; the counts are in the "
                      f"main table) and cells averaging") if (tidy.get(M.COLLAPSED, pd.Series([0])) > 0).any()
                      else bold)]
    return " ".join(parts)


def comparison_caption(summary: pd.DataFrame, study: "str | Layout", fmt: str) -> str:
    """Caption of the comparison table."""
    layout = layout_for(study, summary)
    scale, steps = _scale_note(summary)
    # what comes from data (names, labels, the scale) stands in the text as a slot, filled once the LaTeX is
    # made plain for Markdown and the terminal, so that the plain-text replacements never touch it
    data = {"ref": ", ".join(f"{header(layout, f, fmt)} = {escape(LABELS.get(f, {}).get(v, v), fmt)}"
                             for f, v in layout.reference.items()),
            "within": f" within the same {', '.join(header(layout, f, fmt) for f in layout.group)}"
                      if layout.group else "",
            "name": escape(layout.name, fmt), "at": escape(scale, fmt),
            "endpoint": "the loss" if layout.primary == M.FINAL_LOSS else escape(layout.primary, fmt)}
    name, ref, within, scale, primary = (f"\0{key}\0" for key in ("name", "ref", "within", "at", "endpoint"))
    margin = (f"{layout.margin['fraction']:.0%} of the reference's mean loss" if "fraction" in layout.margin else
              f"{layout.margin['loss']:g} in loss units" if "loss" in layout.margin else "")
    level = (f"level when both one-sided Welch tests at the margin $\\pm\\delta$ ({margin}, fixed in the study file "
             f"before the run) reject at {ALPHA} (TOST; also when the difference is significant, as it then lies "
             f"inside the margin), else " if margin else "").replace("%", "\\%")
    text = (f"{name}: each configuration minus the reference arm ({ref}){within}; scale {scale}, {steps} steps. "
            f"$\\Delta$: difference of means (loss: {'test loss' if has_test_split(summary) else NO_TEST_SPLIT}; loss "
            f"and steps in the main table's units); 95\\% CI: Welch; "
            f"$p_{{\\mathrm{{Holm}}}}$: two-sided Welch $t$-test, Holm-adjusted within its family (the "
            f"unadjusted $p$ and Hedges' $g$ are in the Parquet): the primary test "
            f"({primary}, declared in the study file) over the table's configurations, and apart from it the "
            f"secondary family (every other row, marked secondary); $n$: seeds "
            f"averaged, configuration/reference (diverged left out; collapsed left out of steps). "
            f"-- where a side has fewer than 2 seeds. Verdict of the primary test: {level}better or worse when "
            f"$p_{{\\mathrm{{Holm}}}} < {ALPHA}$, undecided otherwise.")
    if fmt != "latex":
        text = text.replace("$\\Delta$", "Δ").replace("\\%", "%").replace("$p$", "p").replace("$t$", "t").replace(
            "$g$", "g").replace("$n$", "n").replace("p_{\\mathrm{Holm}}", "p Holm").replace(
            "$\\pm\\delta$", "±δ").replace("$", "")
    return re.sub("\0(\\w+)\0", lambda m: data[m.group(1)], text)
