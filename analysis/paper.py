"""The paper's CIFAR-10 numbers (Tables 1-4) and its claims, checked against a sweep's tables.

The paper's numbers are data here (the only numbers typed in: they are the paper's);
every number of ours comes from a sweep's tables/<study>.parquet. Each claim is a
function of a tidy table (as analysis.tables.table_numbers makes), so it is
evaluated the same way on the paper's numbers and on ours:

    python -m analysis.paper docs/results      # writes docs/results/README.md

The folder holds one sub-folder per study with the sweep's tables/, figures/ and
run.txt (the command and its wall time), as docs/results/make.sh lays it out. The
tables are set in the layouts of the studies' files (--studies, default
sweep/studies: the shipped ones, read from the repository root).
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from analysis.stats import ALPHA, welch
from analysis.summary import CONVERGENCE_TOLERANCE, CONVERGENCE_WINDOW
from analysis.tables import INCREASE, LABELS, Layout, mark_best, to_markdown
from analysis.tables.formats import markdown_text
from analysis.tables.layout import read_layout
import metrics as M

STUDIES = ("sensitivity", "comparison", "robustness", "ablation")
LONG_STUDIES = ("robustness", "comparison")  # also run long enough to converge, into <study>-long/
# CIFAR-10 columns of the paper's tables: (row fields..., loss x10^3 mean, std, steps +10 % x10^3 mean, std
# [, steps +20 % mean, std]). Table 3's row N0 = 1, update-0 yes is Table 2's (the paper's well-configured case).
PAPER = {
    "sensitivity": (("n0", "update_empty"), [
        (0, False, 148.8, 11.0, 13.5, 0.7), (1, False, 68.3, 0.8, 16.3, 1.4),
        (0, True, 52.1, 0.6, 6.8, 0.6), (1, True, 51.9, 0.2, 5.4, 0.5)]),
    "comparison": (("neighbours",), [
        ("none", 51.9, 0.2, 5.4, 0.5, 3.7, 0.5), ("hard", 52.1, 0.2, 5.2, 0.6, 2.5, 0.5),
        ("gaussian", 51.8, 0.2, 5.2, 0.6, 3.0, 0.0)]),
    "robustness": (("n0", "update_empty", "neighbours"), [
        (0, False, "none", 148.8, 11.0, 13.5, 0.7), (0, False, "hard", 51.8, 0.2, 5.2, 0.6),
        (1, False, "none", 68.3, 0.8, 16.3, 1.4), (1, False, "hard", 52.1, 0.3, 4.8, 0.9),
        (0, True, "none", 52.1, 0.6, 6.8, 0.6), (0, True, "hard", 51.9, 0.2, 4.8, 0.6),
        (1, True, "none", 51.9, 0.2, 5.4, 0.5), (1, True, "hard", 52.1, 0.2, 5.2, 0.6)]),
    "ablation": (("neighbours", "grid_dim", "tau"), [
        ("hard", 1, 0.1, 52.0, 0.2, 5.3, 0.5, 3.1, 0.3), ("hard", 2, 1.0, 52.1, 0.4, 4.7, 0.7, 2.6, 0.5),
        ("hard", 2, 0.1, 52.0, 0.3, 4.9, 0.3, 2.4, 0.5), ("hard", 2, 0.01, 52.1, 0.3, 5.5, 0.7, 3.0, 0.0),
        ("gaussian", 1, 0.1, 51.9, 0.4, 5.2, 0.4, 3.1, 0.3), ("gaussian", 2, 1.0, 51.9, 0.2, 5.3, 0.5, 3.3, 0.5),
        ("gaussian", 2, 0.1, 51.8, 0.3, 5.1, 0.3, 3.1, 0.3), ("gaussian", 2, 0.01, 51.7, 0.2, 5.4, 0.5, 3.6, 0.5)]),
}
PAPER_SEEDS = 10
PAPER_STEPS = 30_000
STUDY_FILES = Path("sweep/studies")  # the shipped study files, from the repository root


def study_layouts(folder: str | Path = STUDY_FILES) -> dict[str, Layout]:
    """The layouts of the paper's studies, from their study files <folder>/<study>.yaml."""
    return {s: read_layout(Path(folder) / f"{s}.yaml") for s in STUDIES}


def paper_table(study: str, layout: Layout) -> pd.DataFrame:
    """The paper's CIFAR-10 numbers of `study` as a tidy table (losses and steps in natural units),
    bold within the groups of the study's `layout`."""
    fields, rows = PAPER[study]
    columns = [M.FINAL_LOSS] + [M.steps_to(p) for p in layout.thresholds]
    records = []
    for row in rows:
        key, numbers = row[:len(fields)], row[len(fields):]
        for i, col in enumerate(columns):
            unit = 1e-3 if col == M.FINAL_LOSS else 1e3
            records.append({**dict(zip(fields, key)), "column": col, "mean": numbers[2 * i] * unit,
                            "std": numbers[2 * i + 1] * unit, "n": PAPER_SEEDS, M.SEEDS: PAPER_SEEDS, M.DIVERGED: 0,
                            M.COLLAPSED: 0})
    return mark_best(pd.DataFrame(records), layout)


PAPER_SUMMARY = pd.DataFrame({"steps": [PAPER_STEPS], M.SCALE_TAG: ["paper (CIFAR-10)"]})


def paper_markdown(study: str, layout: Layout) -> str:
    """The paper's CIFAR-10 table in our layout (bold by our rule on its mean, std and 10 seeds)."""
    return to_markdown(paper_table(study, layout), PAPER_SUMMARY, layout)


def _mean(tidy: pd.DataFrame, column: str = M.FINAL_LOSS, stat: str = "mean", **row) -> float:
    """The `stat` ("mean" or "std") of `column` in the table row whose fields equal `row`; NaN if absent."""
    sel = tidy[tidy.column == column]
    for field, value in row.items():
        sel = sel[sel[field] == value]
    return float(sel[stat].iloc[0]) if len(sel) else math.nan


@dataclass(frozen=True)
class Claim:
    study: str
    text: str
    check: Callable[[pd.DataFrame], tuple[bool, str]]  # tidy table -> (holds, the numbers behind it)
    on_paper: bool = True  # False: the paper shows it only in pictures


def _update0_off_worse(t):
    pairs = [(_mean(t, n0=n, update_empty=False), _mean(t, n0=n, update_empty=True)) for n in (0, 1)]
    text = "; ".join(f"N0={n}: {off * 1e3:.1f} off vs {on * 1e3:.1f} on" for n, (off, on) in zip((0, 1), pairs))
    return all(off > on for off, on in pairs), text


def _n0_zero_worse_and_unstable(t):
    m0, m1 = _mean(t, n0=0, update_empty=True), _mean(t, n0=1, update_empty=True)
    s0, s1 = (_mean(t, stat="std", n0=n, update_empty=True) for n in (0, 1))
    return m0 > m1 and s0 > s1, f"N0=0: {m0 * 1e3:.1f} ± {s0 * 1e3:.1f} vs N0=1: {m1 * 1e3:.1f} ± {s1 * 1e3:.1f}"


def _ksom_matches_best_ema(t, slack: float = 1.05):
    best = _mean(t, n0=1, update_empty=True, neighbours="none")
    ksom = t[(t.column == M.FINAL_LOSS) & (t.neighbours == "hard")]["mean"]
    worst = float(ksom.max())
    return worst <= slack * best, (f"worst KSOM config {worst * 1e3:.1f} vs best EMA-VQ {best * 1e3:.1f} "
                                   f"(within {100 * (slack - 1):.0f} % or better)")


def _ksom_beats_ema_in_every_config(t):
    wins = [_mean(t, n0=n, update_empty=u, neighbours="hard") < _mean(t, n0=n, update_empty=u, neighbours="none")
            for n in (0, 1) for u in (False, True)]
    return all(wins), f"KSOM lower in {sum(wins)} of 4 configurations"


def _ksom_faster_to_20(t):
    ema = _mean(t, M.steps_to(20), neighbours="none")
    ksom = {n: _mean(t, M.steps_to(20), neighbours=n) for n in ("hard", "gaussian")}
    return all(v < ema for v in ksom.values()), (f"EMA-VQ {ema:.0f}, hard {ksom['hard']:.0f}, "
                                                 f"Gaussian {ksom['gaussian']:.0f} steps")


def _ablation_similar(t, spread: float = 1.10):
    losses = t[t.column == M.FINAL_LOSS]["mean"]
    ratio = float(losses.max() / losses.min())
    return ratio <= spread, f"max / min loss over the 8 variants = {ratio:.3f} (similar: <= {spread})"


def _ksom_topography(t):
    def increase(n):  # the loss with every code shifted by +o on the grid minus the unshifted loss (median)
        return [_mean(t, f"{INCREASE}{o}", neighbours=n) for o in (1, 2, 3)]

    def collapsed(n):
        return _mean(t, M.FINAL_LOSS, stat=M.COLLAPSED, neighbours=n) if M.COLLAPSED in t else 0

    rows = {n: (increase(n), _mean(t, M.column(M.smoothness("vq")), neighbours=n)) for n in ("none", "hard", "gaussian")}
    if any(math.isnan(v) for g, s in rows.values() for v in [*g, s]):
        return False, "not measured"
    ema, hard = rows["none"], rows["hard"]
    holds = all(a < b for a, b in zip(hard[0], ema[0])) and hard[1] < ema[1]
    text = "; ".join(f"{label}: loss +{g[0]:.3g} / +{g[1]:.3g} / +{g[2]:.3g} at shift +1/+2/+3, smoothness {s:.2f}"
                     + (f" ({collapsed(n):.0f} seeds collapsed)" if collapsed(n) else "")
                     for label, n, (g, s) in zip(("EMA-VQ", "hard", "Gaussian"), rows, rows.values()))
    return holds, text


CLAIMS = [
    Claim("sensitivity", "EMA-VQ with update-0 off is worse (Table 1)", _update0_off_worse),
    Claim("sensitivity", "EMA-VQ with N0 = 0 is worse and unstable (Sec. 4.1)", _n0_zero_worse_and_unstable),
    Claim("robustness", "KSOM is as good as the best EMA-VQ in every configuration (Table 3)",
          _ksom_matches_best_ema),
    Claim("robustness", "KSOM beats EMA-VQ in every configuration of Table 3", _ksom_beats_ema_in_every_config),
    Claim("comparison", "KSOM reaches +20 % of its final loss in fewer steps (Table 2)", _ksom_faster_to_20),
    Claim("ablation", "1D/2D grids and tau 1 / 0.1 / 0.01 perform similarly (Table 4)", _ablation_similar),
    Claim("comparison", "KSOM (hard 2D) codes are topologically ordered: shifting codes on the grid costs less "
          "than for EMA-VQ and grid neighbours decode to closer images (Sec. 4.3; pictures only in the paper)",
          _ksom_topography, on_paper=False),
]


def check_claims(ours: dict[str, pd.DataFrame], layouts: dict[str, Layout]) -> pd.DataFrame:
    """One row per claim: the paper's reading, ours, and whether they agree."""
    rows = []
    for c in CLAIMS:
        paper = c.check(paper_table(c.study, layouts[c.study])) if c.on_paper else (True, "shown in Figures 4-5")
        mine = c.check(ours[c.study]) if c.study in ours else (False, "study not run")
        rows.append({M.STUDY_TAG: c.study, "claim": c.text, "paper": paper[0], "paper_numbers": paper[1],
                     "ours": mine[0], "our_numbers": mine[1], "agrees": paper[0] == mine[0]})
    return pd.DataFrame(rows)


def _outcomes(tidy: pd.DataFrame) -> str:
    """'N trials, d diverged, c collapsed' from a tidy table's per-row counts."""
    rows = tidy[tidy.column == M.FINAL_LOSS]
    return (f"{int(rows.seeds.sum())} trials, {int(rows[M.DIVERGED].sum())} diverged, "
            f"{int(rows.get(M.COLLAPSED, pd.Series([0])).sum())} collapsed")


def _label(row: dict, fields: tuple[str, ...]) -> str:
    return ", ".join(f"{LABELS.get(f, {}).get(row[f], row[f])}" if f == "neighbours" else
                     f"{f.replace('update_empty', 'update-0').replace('n0', 'N0')}="
                     f"{LABELS.get(f, {}).get(row[f], row[f])}" for f in fields)


def convergence_markdown(summary: pd.DataFrame, layout: Layout) -> str:
    """Per configuration (the rows of the study's `layout`): how many seeds converged (the best
    validation loss fell by at most CONVERGENCE_TOLERANCE over the last CONVERGENCE_WINDOW of the
    steps) and that late improvement."""
    fields = layout.rows
    lines = [f"| configuration | converged seeds | late improvement, mean (max) |", "|---|---:|---:|"]
    done = _results(summary)
    for key, g in done.groupby(list(fields), sort=False):
        row = dict(zip(fields, key if isinstance(key, tuple) else (key,)))
        late = g[M.LATE_IMPROVEMENT].dropna()
        ok = int((late <= CONVERGENCE_TOLERANCE).sum())
        lines.append(f"| {markdown_text(_label(row, fields))} | {ok} of {len(g)} | {100 * late.mean():.1f} % "
                     f"({100 * late.max():.1f} %) |")
    return "\n".join(lines)


def _results(summary: pd.DataFrame) -> pd.DataFrame:
    """The trials that are results and did not diverge."""
    return summary[summary.get(M.RESULT, True) & ~summary[M.DIVERGED]]


def _loss(values) -> str:
    return f"{1e3 * values.mean():.1f} ± {1e3 * values.std(ddof=1):.1f}"


def long_run_claims(summary: pd.DataFrame) -> list[tuple[str, bool, str]]:
    """The paper's central claims on a run long enough to converge, tested with Welch's t-test at
    ALPHA: the well-configured EMA-VQ (N0 = 1, update-0 yes) ends where KSOM hard ends (not
    significantly worse), and KSOM reaches +10 % / +20 % of its final loss in fewer steps."""
    done = _results(summary)
    well = done[(done.n0 == 1) & done.update_empty]
    ema, ksom = well[well.neighbours == "none"], well[well.neighbours == "hard"]
    w = welch(ema[M.FINAL_LOSS], ksom[M.FINAL_LOSS])
    caught_up = w.diff <= 0 or not w.p < ALPHA
    claims = [("EMA-VQ (N0 = 1, update-0 yes) catches up with KSOM hard 2D", caught_up,
               f"loss x10^3: EMA-VQ {_loss(ema[M.FINAL_LOSS])} vs KSOM {_loss(ksom[M.FINAL_LOSS])}; EMA-VQ - KSOM = "
               f"{1e3 * w.diff:.1f} (95 % CI {1e3 * w.ci_low:.1f} to {1e3 * w.ci_high:.1f}), p = {w.p:.3f}")]
    for p in M.THRESHOLDS:
        col = M.steps_to(p)
        ws = welch(ksom[col], ema[col])
        claims.append((f"KSOM reaches +{p} % of its final loss sooner", ws.diff < 0 and ws.p < ALPHA,
                       f"steps: KSOM {ksom[col].mean():.0f} ± {ksom[col].std(ddof=1):.0f} vs EMA-VQ "
                       f"{ema[col].mean():.0f} ± {ema[col].std(ddof=1):.0f}; difference {ws.diff:.0f} "
                       f"(95 % CI {ws.ci_low:.0f} to {ws.ci_high:.0f}), p = {ws.p:.3f}"))
    return claims


def long_run_section(sub: Path, study: str, layout: Layout) -> list[str]:
    """README lines for a study's long run in folder `sub` (<study>-long/)."""
    summary = pd.read_parquet(sub / "summary.parquet")
    steps = int(summary.steps.max())
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    lines = ["", f"## {study}, long run ({steps:,} steps)", "", *run_block(sub), "",
             (sub / "tables" / f"{study}.md").read_text().strip(), ""]
    if (sub / "tables" / f"{study}_vs_reference.md").exists():
        lines += [(sub / "tables" / f"{study}_vs_reference.md").read_text().strip(), ""]
    lines += [f"Converged? A seed has converged when its best validation loss fell by at most "
              f"{100 * CONVERGENCE_TOLERANCE:.0f} % over the last {100 * CONVERGENCE_WINDOW:.0f} % of the steps "
              f"(late improvement = (best loss up to step {(1 - CONVERGENCE_WINDOW) * steps:,.0f} - final) / final):",
              "", convergence_markdown(summary, layout), "",
              f"The paper's central claims on this run (Welch's t-test, alpha = {ALPHA}; diverged seeds left out):",
              "", "| claim | holds | numbers |", "|---|---|---|"]
    lines += [f"| {text} | **{yes(holds)}** | {numbers} |" for text, holds, numbers in long_run_claims(summary)]
    figures = sorted((sub / "figures").glob("*.png"))
    lines += ["", " ".join(f"[{p.stem}]({sub.name}/figures/{p.name})" for p in figures)]
    if (sub / "figures" / "loss.png").exists():
        lines += ["", f"![{study} long run: loss]({sub.name}/figures/loss.png)"]
    return lines


def run_block(sub: Path) -> list[str]:
    """The folder's run.txt as a Markdown code block: data, shown as written (control characters escaped) inside
    a fence longer than any run of backticks it holds, so that nothing in it closes the block."""
    run = (sub / "run.txt").read_text(errors="replace").strip() if (sub / "run.txt").exists() else ""
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall("`+", run)), default=0))
    return [fence, *(M.printable(line) for line in run.splitlines()), fence]


def write_readme(folder: str | Path, header: str = "", layouts: dict[str, Layout] | None = None) -> Path:
    """docs/results/README.md from the studies' outputs in `folder`, set in `layouts` (default: the
    shipped study files'); returns its path."""
    folder, layouts = Path(folder), layouts or study_layouts()
    ours = {s: pd.read_parquet(folder / s / "tables" / f"{s}.parquet") for s in STUDIES
            if (folder / s / "tables" / f"{s}.parquet").exists()}
    claims = check_claims(ours, layouts)
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    lines = [header.strip(), "", "## Where the orderings agree with the paper, and where they do not", "",
             "| claim | paper (CIFAR-10) | ours (cpu scale) | agrees |", "|---|---|---|---|"]
    lines += [f"| {r.claim} | {yes(r.paper)}: {r.paper_numbers} | {yes(r.ours)}: {r.our_numbers} | "
              f"**{yes(r.agrees)}** |" for r in claims.itertuples()]
    for study in STUDIES:
        if study not in ours:
            continue
        sub = folder / study
        lines += ["", f"## {study} ({layouts[study].caption.split('(')[-1].rstrip(').')})", "", *run_block(sub), "",
                  f"Ours ({_outcomes(ours[study])}):", "", (sub / "tables" / f"{study}.md").read_text().strip(), ""]
        for extra in (f"{study}_topography", f"{study}_vs_reference"):
            if (sub / "tables" / f"{extra}.md").exists():
                lines += [(sub / "tables" / f"{extra}.md").read_text().strip(), ""]
        lines += ["The paper (CIFAR-10, 10 seeds; bold by the same Welch + Holm rule on its published means and "
                  "stds, so it can differ from the paper's own bold):", "", paper_markdown(study, layouts[study]), ""]
        figures = sorted((sub / "figures").glob("*.png"))
        lines += [" ".join(f"[{p.stem}]({study}/figures/{p.name})" for p in figures)]
        for name in ("topography", "perturbation"):
            if (sub / "figures" / f"{name}.png").exists():
                lines += ["", f"![{study} {name}]({study}/figures/{name}.png)"]
    for study in LONG_STUDIES:
        if (folder / f"{study}-long" / "summary.parquet").exists():
            lines += long_run_section(folder / f"{study}-long", study, layouts[study])
    out = folder / "README.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.paper", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="e.g. docs/results: one sub-folder per study")
    p.add_argument("--header", type=Path, help="a Markdown file to put on top of the README")
    p.add_argument("--studies", type=Path, default=STUDY_FILES,
                   help=f"the folder of the studies' files, whose layouts set the tables (default {STUDY_FILES})")
    args = p.parse_args(argv)
    header = args.header.read_text() if args.header else "# Results"
    print(f"wrote {write_readme(args.folder, header, study_layouts(args.studies))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
