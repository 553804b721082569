"""Regenerate a sweep's tables and figures from what it logged.

    python -m analysis.report results/robustness-cpu-20261124-101500
    python -m analysis.report --tracking-uri sqlite:///results/mlflow.db --study robustness --out report/
    python -m analysis.report --tracking-uri ... --study robustness --all-sweeps   # pool equal sweeps

Writes trials.parquet, metrics.parquet, summary.parquet; tables/<study>.{parquet,tex,md,txt}
(loss and steps), tables/<study>_topography.{tex,md,txt} (loss ratio and increase at shift +1..+3,
smoothness, collapsed configurations marked;
its numbers are in <study>.parquet too), tables/<study>_vs_reference.{parquet,tex,md,txt} (each
configuration minus the study's reference arm: difference, Welch CI, p, Hedges' g); where the study
file asks for them (`analysis:`), tables/<study>_{factorial,collapse,equivalence}.{parquet,tex,md,txt}
(analysis/factorial.py); figures/{loss,topography,perplexity,codes_used}.{png,pdf} and the topography pictures of the
first seed of every configuration side by side, figures/{perturbation,codebook_<level>}.{png,pdf};
of a searched study (sweep/search.py) the tables and figures above show its confirmation runs, and
analysis/tuning.py adds tables/<study>_winners.{parquet,md,tex}, <study>_{tuning, tuning_order, paired (where arms
shared draws) or best_so_far}.{parquet,md} and
figures/{tuning_curve or best_so_far,search_loss,search_fields}.{png,pdf};
and prints the tables and the trials that diverged or collapsed. Only results (trials finished or
diverged) enter means, figures and pictures; the others are counted, and a line says what is missing.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import pandas as pd

from analysis.factorial import write_analysis
from analysis.figures import write_figures, write_topography
from analysis.load import load_runs, pooled_runs, write_parquet
from analysis.pictures import write_pictures
from analysis.sensitivity import write_sensitivity
from analysis.store import BadSweep, StoreMissing, read_sweep, trust_notice
from analysis.summary import RESULT_STATUSES, summarise
from analysis.tables import (Layout, comparison_latex, comparison_markdown, comparison_numbers, comparison_text,
                             RATIO, SMOOTH, TEXT_WIDTH, table_numbers, to_latex, to_markdown, to_text)
from analysis.tuning import is_searched, winners, write_tuning, write_tuning_tables, write_winners
import metrics as M
from plan import Plan


def write_report(trials: pd.DataFrame, metrics: pd.DataFrame, study: str, out: str | Path,
                 tracking_uri: str | None = None, plan: Plan | None = None) -> str:
    """Write every output for one study into `out`; returns the table as text, followed by a line on what
    is missing when not every trial is a result (figures and pictures show only results: finished or
    diverged trials). With the MLflow `tracking_uri` the trials' topography pictures are composed too; with
    the sweep's `plan` (sweep.json) the tables group by what its study sweeps (Layout.from_plan)."""
    out = Path(out)
    write_parquet(trials, metrics, out)
    if trials.empty:
        return f"no trials of {study!r} logged yet"
    name, study = study, Layout.from_plan(plan) if plan else study  # files are named by the study
    everything = summarise(trials, metrics)
    everything.to_parquet(out / "summary.parquet", index=False)
    texts, summary = write_summary_outputs(everything, name, study, plan, out)
    if is_searched(trials) and (progress := write_tuning(everything, metrics, name, out)):
        texts.append(progress)
    texts.append(outcomes(everything))
    text = "\n\n".join(texts)
    results = trials[trials.status.isin(RESULT_STATUSES) & trials.run_id.isin(summary.run_id)]
    figures = write_figures(results, metrics[metrics.run_id.isin(results.run_id)], study, out / "figures")
    write_sensitivity(summary[summary.status.isin(RESULT_STATUSES)], study, out / "figures")
    if tracking_uri:
        figures += write_pictures(results, study, tracking_uri, out / "figures")
    return text + missing_note(trials, bool(figures))


def write_summary_outputs(everything: pd.DataFrame, name: str, study: "str | Layout", plan: Plan | None, out: Path,
                          figure_formats=("png", "pdf")) -> tuple[list[str], pd.DataFrame]:
    """What the per-trial summary alone gives, into out/tables and out/figures: the tables (of a searched study
    its confirmation runs, never the search's best, its winners and its tuning-curve tables), the analyses of the
    plan's `analysis:` block (factorial, equivalence) and the topography figure. Returns the tables as text and the summary the
    tables show (sweep.retable re-sets committed results with it)."""
    searched = is_searched(everything)
    summary = everything[everything["stage"] == M.CONFIRM] if searched else everything
    texts = write_tables(summary, name, study, out / "tables")
    if plan:
        texts += write_analysis(summary, name, plan, out / "tables")
    win = winners(everything) if searched else pd.DataFrame()
    if len(win):
        texts.append(write_winners(win, name, out / "tables"))
    if searched:
        texts.append(write_tuning_tables(everything, name, out / "tables"))
    write_topography(summary[summary.status.isin(RESULT_STATUSES)], study, out / "figures", formats=figure_formats)
    return texts, summary


def write_tables(summary: pd.DataFrame, name: str, study: "str | Layout", tables: Path) -> list[str]:
    """Write tables/<name>{,_topography,_vs_reference}.{parquet,tex,md,txt} of a per-trial summary in the
    layout `study` (a Layout, or a study known only by name); returns the tables as text."""
    tidy = table_numbers(summary, study)
    tables.mkdir(exist_ok=True)
    tidy.to_parquet(tables / f"{name}.parquet", index=False)
    texts = []
    for part, file in (("main", name), ("topography", f"{name}_topography")):
        if part == "topography" and not tidy.column.str.startswith((RATIO, SMOOTH)).any():
            continue
        (tables / f"{file}.tex").write_text(to_latex(tidy, summary, study, part=part))
        (tables / f"{file}.md").write_text(to_markdown(tidy, summary, study, part=part) + "\n")
        texts.append(to_text(tidy, summary, study, part=part))
        (tables / f"{file}.txt").write_text(texts[-1] + "\n")
    comp = comparison_numbers(summary, study)
    if len(comp):
        file = f"{name}_vs_reference"
        comp.to_parquet(tables / f"{file}.parquet", index=False)
        (tables / f"{file}.tex").write_text(comparison_latex(comp, summary, study))
        (tables / f"{file}.md").write_text(comparison_markdown(comp, summary, study) + "\n")
        texts.append(comparison_text(comp, summary, study))
        (tables / f"{file}.txt").write_text(texts[-1] + "\n")
    return texts


def missing_note(trials: pd.DataFrame, any_figure: bool) -> str:
    """A line on the trials that are not results (by status) and on figures that could not be drawn."""
    statuses = trials.status.value_counts()
    not_results = {s: int(n) for s, n in statuses.items() if s not in RESULT_STATUSES}
    lines = []
    if not_results:
        counts = M.printable(", ".join(f"{n} {s or 'no status'}" for s, n in sorted(not_results.items())))
        lines.append(f"missing: {sum(not_results.values())} of {len(trials)} trials are not results ({counts}); "
                     "they are counted but in no mean, figure or picture")
    if not any_figure:
        lines.append("missing: no figures (no trial has a validation curve)")
    return "".join("\n" + line for line in lines)


def outcomes(summary: pd.DataFrame) -> str:
    """The trials that diverged or collapsed, by configuration and seeds (or that none did)."""
    lines = []
    for flag in (M.DIVERGED, M.COLLAPSED):
        hit = summary[summary[flag].astype(bool)] if flag in summary else summary.iloc[:0]
        configs = {}
        for name in hit.get("run_name", pd.Series(dtype=str)).astype(str):
            config, _, seed = name.rpartition(" seed=")
            configs.setdefault(config or name, []).append(seed)
        named = M.printable("; ".join(f"{c} (seeds {', '.join(s)})" for c, s in configs.items()))  # names: data
        lines.append(textwrap.fill(f"{flag} ({len(hit)} of {len(summary)}): {named or 'none'}", TEXT_WIDTH,
                                   subsequent_indent="  "))
    return "\n".join(lines)


def report_sweep(sweep_dir: str | Path, tracking_uri: str | None = None) -> str:
    """Tables and figures of the sweep in sweep_dir (read from its MLflow runs, in `tracking_uri` when given)
    into that folder. Raises StoreMissing (naming the path) when the folder or its store is not there,
    BadSweep when its sweep.json is not a sweep's or names a store outside the results folder."""
    sweep = read_sweep(sweep_dir, tracking_uri=tracking_uri)
    trials, metrics = load_runs(sweep.tracking_uri, sweep.study, sweep.parent_run_id)
    return write_report(trials, metrics, sweep.study, sweep.dir, sweep.tracking_uri, sweep.plan)


def refuse(message: str):
    """Bad input: one line on stderr, exit status 2 (nothing written)."""
    print(f"python -m analysis.report: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", nargs="?", help="a sweep folder (holds sweep.json)")
    p.add_argument("--tracking-uri", help="read the newest sweep of --study from this MLflow store instead (its "
                                          "tables set as the plan its parent run holds says); with a sweep folder: "
                                          "the store to read it from (needed when its sweep.json names a store "
                                          "outside its results folder)")
    p.add_argument("--study", help="the study (MLflow experiment) to read with --tracking-uri")
    p.add_argument("--out", default="report", help="output folder with --tracking-uri (default report/)")
    p.add_argument("--all-sweeps", action="store_true", help="with --tracking-uri: pool every sweep of --study "
                                                             "(refused unless they share one base config)")
    args = p.parse_args(argv)
    if args.sweep_dir:
        try:
            sweep = read_sweep(args.sweep_dir, tracking_uri=args.tracking_uri)
        except (StoreMissing, BadSweep) as e:
            refuse(str(e))
        print(trust_notice("reporting", "report", sweep.dir))
        print(report_sweep(args.sweep_dir, args.tracking_uri))
        print(f"written into {sweep.dir}")
    elif args.tracking_uri and args.study:
        try:
            trials, metrics, what, plan = pooled_runs(args.tracking_uri, args.study, args.all_sweeps)
        except (ValueError, StoreMissing) as e:
            refuse(str(e))
        print(M.printable(f"reading {what}"))  # the sweeps' run names come from the store
        print(write_report(trials, metrics, args.study, args.out, args.tracking_uri, plan))
        print(f"written into {Path(args.out).resolve()}")
    else:
        p.error("give a sweep folder, or --tracking-uri with --study")
    return 0


if __name__ == "__main__":
    sys.exit(main())
