"""Re-run a committed study here and say whether it reproduces.

    python -m sweep.verify docs/results/robustness              # every seed it was run with
    python -m sweep.verify docs/results/robustness --seeds 1    # its first seed only (a third of the time)
    python -m sweep.verify docs/results/robustness --against results/verify/robustness-cpu-...   # no re-run

The study, scale and seeds come from the folder's summary.parquet (its `study`, `scale` and `seed` columns: a
shipped study, the one its run.txt ran, and a known scale; the summary checked as sweep.retable checks it;
nothing read there is run); the re-run is `python -m sweep.run STUDY --scale SCALE
--seeds N --address local` into --results-dir. Per arm it prints the committed and the re-run validation loss
(mean ± std over the same seeds), the re-run minus the committed mean with its Welch 95 % interval, whether
every number of the arm's trials is identical, and whether the verdicts agree: bold (best or not significantly
worse, as the tables set it), the collapsed seeds and the Welch comparison with the reference arm (Holm-adjusted,
as the _vs_reference table). On the CPU capability and lock the committed run used, every digit repeats; on
another CPU the digits differ (torch's kernels sum in another order) and the verdicts should not.

Exit status: 0 when the verdicts of every arm agree, 1 when one does not (or the re-run failed), 2 on bad input.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import metrics as M
from analysis.stats import ALPHA, describe, welch
from analysis.summary import (CODE_USE_COLUMNS, NO_TEST_SPLIT, TOPOGRAPHY_COLUMNS, BadSummary, has_test_split,
                              read_summary, selection_loss)
from analysis.tables import TEXT_WIDTH, Layout, comparison_numbers, table_numbers
from models.config import ConfigError
from sweep.machine import cpu
from sweep.plan import make_plan
from sweep.provenance import BadRunFile
from sweep.retable import shipped_study
from sweep.scales import SCALES

SUMMARY = "summary.parquet"
LOSS_SCALE = 1e3  # losses are shown x10^3, as in the tables


@dataclass(frozen=True)
class Verdict:
    """What a study concludes about one arm; two runs reproduce each other when these are equal."""
    bold: bool  # its loss is the best of its group or not significantly worse (Welch + Holm)
    collapsed: int  # seeds whose codebook collapsed
    vs_reference: str  # its loss against the reference arm: lower, higher, n.s., n/a (fewer than 2 seeds), ref


def arm_name(run_name: str) -> str:
    """'EMA-VQ N0=0 update-0=no seed=1' -> 'EMA-VQ N0=0 update-0=no'."""
    return run_name.rpartition(" seed=")[0] or run_name


def verdicts(summary: pd.DataFrame, layout: Layout) -> dict[str, Verdict]:
    """Each arm's verdict, from the numbers the tables compute (table_numbers' bold and collapsed counts of the
    loss, comparison_numbers' Holm-adjusted Welch test against the reference arm)."""
    tidy = table_numbers(summary, layout)
    tidy = tidy[tidy["column"] == M.FINAL_LOSS]
    comp = comparison_numbers(summary, layout)
    comp = comp[comp["column"] == M.FINAL_LOSS] if len(comp) else comp
    out = {}
    for name, trials in summary.groupby(summary["run_name"].map(arm_name), sort=False):
        key = {f: trials[f].iloc[0] for f in layout.rows}
        row = tidy[np.logical_and.reduce([tidy[f] == v for f, v in key.items()])].iloc[0]
        vs = "ref" if layout.reference else "n/a"
        if len(comp):
            mine = comp[np.logical_and.reduce([comp[f] == v for f, v in key.items()])]
            if len(mine):
                p, diff = mine["p_holm"].iloc[0], mine["diff"].iloc[0]
                vs = "n/a" if not math.isfinite(p) else "n.s." if p >= ALPHA else "lower" if diff < 0 else "higher"
        out[name] = Verdict(bool(row["best"]), int(row[M.COLLAPSED]), vs)
    return out


def measured(summary: pd.DataFrame) -> list[str]:
    """The columns of a summary a trial measured (loss, steps, late improvement, code use, topography)."""
    return [c for c in summary.columns if c in (M.FINAL_LOSS, M.LATE_IMPROVEMENT) or c.startswith(
        (M.STEPS,) + CODE_USE_COLUMNS + TOPOGRAPHY_COLUMNS)]


def identical(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Every measured number of the same seeds equal to the last bit (NaN where the other has NaN)."""
    cols = measured(a)
    if cols != measured(b) or sorted(a[M.SEED_TAG]) != sorted(b[M.SEED_TAG]):
        return False
    x, y = (t.sort_values(M.SEED_TAG)[cols].to_numpy(dtype=float) for t in (a, b))
    return bool(np.array_equal(x, y, equal_nan=True))


def agree(committed, rerun) -> str:
    """'3' when both runs say 3, '3≠2' when they differ."""
    return f"{committed}" if committed == rerun else f"{committed}≠{rerun}"


def loss_cell(values) -> str:
    mean, std, n = describe(values)
    return "--" if n == 0 else f"{mean * LOSS_SCALE:.1f}" + (f" ± {std * LOSS_SCALE:.1f}" if n > 1 else "")


def compare(committed: pd.DataFrame, rerun: pd.DataFrame, layout: Layout) -> tuple[list[str], list[str]]:
    """(the lines of the per-arm comparison, the arms whose verdicts disagree or that only one run has)."""
    old, new = verdicts(committed, layout), verdicts(rerun, layout)
    lines = [f"{'arm':<28} {'committed':>13} {'re-run':>13} {'Δ [95 % CI]':>22}  {'digits':<6}  "
             f"{'bold':<7} {'collapsed':<9} vs reference"]
    bad = []
    arms = committed["run_name"].map(arm_name), rerun["run_name"].map(arm_name)
    for name in list(old) + [n for n in new if n not in old]:
        if name not in old or name not in new:
            lines.append(f"{name:<28} only in the {'re-run' if name in new else 'committed run'}")
            bad.append(name)
            continue
        a, b = committed[arms[0] == name], rerun[arms[1] == name]
        w = welch(b[M.FINAL_LOSS], a[M.FINAL_LOSS])
        ci = (f"{w.diff * LOSS_SCALE:+.1f} [{w.ci_low * LOSS_SCALE:+.1f}, {w.ci_high * LOSS_SCALE:+.1f}]"
              if math.isfinite(w.ci_low) else f"{w.diff * LOSS_SCALE:+.1f} [n/a]" if math.isfinite(w.diff) else "n/a")
        o, n = old[name], new[name]
        bold = agree("yes" if o.bold else "no", "yes" if n.bold else "no")
        lines.append(f"{name[:28]:<28} {loss_cell(a[M.FINAL_LOSS]):>13} {loss_cell(b[M.FINAL_LOSS]):>13} {ci:>22}  "
                     f"{'same' if identical(a, b) else 'differ':<6}  {bold:<7} "
                     f"{agree(o.collapsed, n.collapsed):<9} {agree(o.vs_reference, n.vs_reference)}")
        if o != n:
            bad.append(name)
    return lines, bad


def provenance(folder: Path) -> str:
    """The committed run's machine line(s) from its run.txt, as text ('' when absent)."""
    try:
        text = (folder / "run.txt").read_text(errors="replace")
    except OSError:
        return ""
    return " ".join(line.split(":", 1)[1].strip() for line in text.splitlines()[:8] if line.startswith("machine:"))


def rerun(study: str, scale: str, seeds: int, results_dir: Path) -> Path:
    """Run the study here (its progress and tables go to stderr); returns the new sweep folder.
    Raises RuntimeError naming the exit status when the sweep does not end with every trial a result."""
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "sweep.run", study, "--scale", scale, "--seeds", str(seeds),
                           "--results-dir", str(results_dir), "--address", "local"], stdout=sys.stderr)
    made = sorted((p.parent for p in results_dir.glob(f"{study}-*/sweep.json") if p.stat().st_mtime >= start - 1),
                  key=lambda p: p.stat().st_mtime)
    if done.returncode != 0 or not made or not (made[-1] / SUMMARY).is_file():
        raise RuntimeError(f"the re-run (python -m sweep.run {study} --scale {scale} --seeds {seeds}) exited with "
                           f"{done.returncode}" + (f"; resume with: python -m sweep.run --resume {made[-1]}" if made
                                                   else ""))
    return made[-1]


def without_test_split(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as a sweep without a test split has it: the final loss is the best validation loss."""
    return summary.assign(**{M.FINAL_LOSS: selection_loss(summary)}).drop(columns=[M.SELECTION_LOSS],
                                                                          errors="ignore")


def first_seeds(summary: pd.DataFrame, n: int) -> pd.DataFrame:
    return summary[summary[M.SEED_TAG].isin(sorted(summary[M.SEED_TAG].unique())[:n])]


def refuse(message: str) -> int:
    print(f"python -m sweep.verify: error: {message}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweep.verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="a committed study's results folder (docs/results/<name>: holds summary.parquet)")
    p.add_argument("--seeds", type=int, help="re-run and compare only its first N seeds (default: all it has)")
    p.add_argument("--against", metavar="FOLDER", help="compare with this finished re-run (a sweep folder or a "
                                                       "results folder holding summary.parquet) instead of running")
    p.add_argument("--results-dir", default="results/verify", help="where the re-run goes (default results/verify)")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    if not (folder / SUMMARY).is_file():
        return refuse(f"{folder}: no {SUMMARY} there; allowed: a results folder holding one (docs/results/<name>)")
    if args.against and not (Path(args.against) / SUMMARY).is_file():
        return refuse(f"--against {args.against}: no {SUMMARY} there; allowed: a finished sweep folder")
    try:
        committed = read_summary(folder / SUMMARY)
        plan = make_plan(shipped_study(folder, committed), "smoke", 2)  # the layout: no scale or seed enters it
        fresh = read_summary(Path(args.against) / SUMMARY) if args.against else None
    except (ConfigError, BadSummary, BadRunFile) as e:
        return refuse(M.printable(str(e)))
    scales = committed[M.SCALE_TAG].unique() if M.SCALE_TAG in committed else []
    if len(scales) != 1 or scales[0] not in SCALES:
        return refuse(f"{folder / SUMMARY}: scale {list(scales)}; allowed: one of {', '.join(SCALES)}")
    if M.STAGE_TAG in committed and committed[M.STAGE_TAG].eq(M.SEARCH).any():
        return refuse(f"{folder}: a searched study; allowed: a study without a search: block")
    have = committed[M.SEED_TAG].nunique()
    seeds = args.seeds or have
    if not 1 <= seeds <= have:
        return refuse(f"--seeds {args.seeds}; allowed: 1 to {have} (the seeds {folder} was run with)")
    study, scale = plan.study, str(scales[0])
    try:
        against = Path(args.against) if args.against else rerun(study, scale, seeds, Path(args.results_dir))
    except RuntimeError as e:
        print(f"python -m sweep.verify: {e}; nothing compared", file=sys.stderr)
        return 1
    fresh = read_summary(against / SUMMARY) if fresh is None else fresh
    committed, fresh = first_seeds(committed, seeds), first_seeds(fresh, seeds)
    loss = "test MSE at the best validation step" if has_test_split(committed) else "best validation MSE"
    if has_test_split(fresh) != has_test_split(committed):  # a run made before the test split: like with like
        committed, fresh = (without_test_split(committed), without_test_split(fresh))
        loss = f"best validation MSE (one run has no test split: {NO_TEST_SPLIT})"
    lines, bad = compare(committed, fresh, Layout.from_plan(plan))
    print(textwrap.fill(f"verify {study} ({scale} scale, {seeds} of {have} seeds): {folder} against {against}",
                        TEXT_WIDTH, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False))
    for who, what in (("committed on", provenance(folder) or "not recorded (no machine: line in run.txt)"),
                      ("compared on", cpu())):
        print(textwrap.fill(what, TEXT_WIDTH, initial_indent=f"  {who + ':':<14}", subsequent_indent=" " * 16))
    print(textwrap.fill(f"loss ×10³ ({loss}), mean ± std over seeds; Δ = re-run - committed, Welch 95 % CI",
                        TEXT_WIDTH))
    print("\n".join(lines))
    same = sum(identical(committed[committed.run_name.map(arm_name) == a], fresh[fresh.run_name.map(arm_name) == a])
               for a in committed.run_name.map(arm_name).unique())
    arms = committed.run_name.map(arm_name).nunique()
    if seeds == 1:
        print("with 1 seed no test can separate arms (no bold, no Welch): only the collapsed seeds were compared")
    if bad:
        print(f"verdicts differ in {len(bad)} of {arms} arms: {'; '.join(bad)}")
        return 1
    print(f"verdicts agree in all {arms} arms; every digit identical in {same} of {arms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
