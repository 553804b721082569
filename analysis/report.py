"""Regenerate a sweep's tables and figures from what it logged.

    python -m analysis.report results/robustness-cpu-20261124-101500
    python -m analysis.report --tracking-uri sqlite:///results/mlflow.db --study robustness --out report/

Writes trials.parquet, metrics.parquet, summary.parquet; tables/<study>.{parquet,tex,md,txt}
(loss and steps), tables/<study>_topography.{tex,md,txt} (loss ratio at shift +1..+3, smoothness;
its numbers are in <study>.parquet too), tables/<study>_vs_reference.{parquet,tex,md,txt} (each
configuration minus the study's reference arm: difference, Welch CI, p, Hedges' g);
figures/{loss,topography,perplexity,codes_used}.{png,pdf} and the topography pictures of the
first seed of every configuration side by side, figures/{perturbation,codebook_<level>}.{png,pdf};
and prints the tables and the trials that diverged or collapsed.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import pandas as pd

from analysis.figures import write_figures
from analysis.load import load_runs, write_parquet
from analysis.pictures import write_pictures
from analysis.store import StoreMissing, read_sweep
from analysis.summary import summarise
from analysis.tables import (comparison_latex, comparison_markdown, comparison_numbers, comparison_text,
                             RATIO, SMOOTH, TEXT_WIDTH, table_numbers, to_latex, to_markdown, to_text)


def write_report(trials: pd.DataFrame, metrics: pd.DataFrame, study: str, out: str | Path,
                 tracking_uri: str | None = None) -> str:
    """Write every output for one study into `out`; returns the table as text.
    With the MLflow `tracking_uri` the trials' topography pictures are composed too."""
    out = Path(out)
    write_parquet(trials, metrics, out)
    if trials.empty:
        return f"no trials of {study!r} logged yet"
    summary = summarise(trials, metrics)
    summary.to_parquet(out / "summary.parquet", index=False)
    tidy = table_numbers(summary, study)
    tables = out / "tables"
    tables.mkdir(exist_ok=True)
    tidy.to_parquet(tables / f"{study}.parquet", index=False)
    texts = []
    for part, name in (("main", study), ("topography", f"{study}_topography")):
        if part == "topography" and not tidy.column.str.startswith((RATIO, SMOOTH)).any():
            continue
        (tables / f"{name}.tex").write_text(to_latex(tidy, summary, study, part=part))
        (tables / f"{name}.md").write_text(to_markdown(tidy, summary, study, part=part) + "\n")
        texts.append(to_text(tidy, summary, study, part=part))
        (tables / f"{name}.txt").write_text(texts[-1] + "\n")
    comp = comparison_numbers(summary, study)
    if len(comp):
        name = f"{study}_vs_reference"
        comp.to_parquet(tables / f"{name}.parquet", index=False)
        (tables / f"{name}.tex").write_text(comparison_latex(comp, summary, study))
        (tables / f"{name}.md").write_text(comparison_markdown(comp, summary, study) + "\n")
        texts.append(comparison_text(comp, summary, study))
        (tables / f"{name}.txt").write_text(texts[-1] + "\n")
    texts.append(outcomes(summary))
    text = "\n\n".join(texts)
    write_figures(trials, metrics, study, out / "figures")
    if tracking_uri:
        write_pictures(trials, study, tracking_uri, out / "figures")
    return text


def outcomes(summary: pd.DataFrame) -> str:
    """The trials that diverged or collapsed, by configuration and seeds (or that none did)."""
    lines = []
    for flag in ("diverged", "collapsed"):
        hit = summary[summary[flag].astype(bool)] if flag in summary else summary.iloc[:0]
        configs = {}
        for name in hit.get("run_name", pd.Series(dtype=str)).astype(str):
            config, _, seed = name.rpartition(" s")  # run names end with the seed: 'KSOM hard N0=1 u0=yes s0'
            configs.setdefault(config or name, []).append(seed)
        named = "; ".join(f"{c} (seeds {', '.join(s)})" for c, s in configs.items())
        lines.append(textwrap.fill(f"{flag} ({len(hit)} of {len(summary)}): {named or 'none'}", TEXT_WIDTH,
                                   subsequent_indent="  "))
    return "\n".join(lines)


def report_sweep(sweep_dir: str | Path) -> str:
    """Tables and figures of the sweep in sweep_dir (read from its MLflow runs) into that folder.
    Raises StoreMissing (naming the path) when the folder or its store is not there."""
    meta = read_sweep(sweep_dir)
    trials, metrics = load_runs(meta["tracking_uri"], meta["study"], meta["parent_run_id"])
    return write_report(trials, metrics, meta["study"], meta["dir"], meta["tracking_uri"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", nargs="?", help="a sweep folder (holds sweep.json)")
    p.add_argument("--tracking-uri", help="read every sweep of --study from this MLflow store instead")
    p.add_argument("--study", help="the study (MLflow experiment) to read with --tracking-uri")
    p.add_argument("--out", default="report", help="output folder with --tracking-uri (default report/)")
    args = p.parse_args(argv)
    if args.sweep_dir:
        try:
            print(report_sweep(args.sweep_dir))
        except StoreMissing as e:
            p.error(str(e))
        print(f"written into {Path(args.sweep_dir).resolve()}")
    elif args.tracking_uri and args.study:
        try:
            trials, metrics = load_runs(args.tracking_uri, args.study)
        except (ValueError, StoreMissing) as e:
            p.error(str(e))
        print(write_report(trials, metrics, args.study, args.out, args.tracking_uri))
        print(f"written into {Path(args.out).resolve()}")
    else:
        p.error("give a sweep folder, or --tracking-uri with --study")
    return 0


if __name__ == "__main__":
    sys.exit(main())
