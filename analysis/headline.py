"""The README's Results table, written from the committed verdicts (never typed by hand).

Which comparisons the table shows, and the question each answers, is data: `docs/results/headline.yaml`
lists rows of (study, arm, question, versus). Every number and word of a row comes from the study's
committed `tables/<study>_vs_reference.parquet` (its primary test, analysis.stats.verdict): the verdict,
the difference arm - reference with its 95 % Welch interval, the Holm-adjusted p within the primary family,
the seeds run, and the seeds per arm 80 % power would need (to show the observed difference; with a
declared margin, also to show level). The loss a row compares is the test loss at the validation-chosen
step, or, for a study run before the test split, the validation (selection) loss (marked †).

    python -m analysis.headline docs/results README.md          # rewrite the table in README.md
    python -m analysis.headline docs/results README.md --check  # exit 1 if README.md's table is stale

The table sits between BEGIN and END (HTML comments, invisible on GitHub); each row carries the
`<!-- verdict: STUDY/ARM -->` marker the docs test checks its words against.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from analysis.summary import has_test_split
from analysis.tables.numbers import PRIMARY, loss_scale

BEGIN = "<!-- results table: written by python -m analysis.headline from docs/results/headline.yaml; do not edit -->"
END = "<!-- end of results table -->"
ROWS = "headline.yaml"
FIELDS = ("study", "arm", "question", "versus")


@dataclass(frozen=True)
class Row:
    """One line of headline.yaml: which committed comparison, and what it answers."""
    study: str        # a folder of docs/results
    arm: str          # the comparison's label in <study>_vs_reference.parquet
    question: str     # what the row answers, in a few words
    versus: str       # "arm vs reference" in words


class HeadlineError(ValueError):
    """A headline.yaml row or a results folder that cannot make the table (one line: what, and what is allowed)."""


def read_rows(path: Path) -> list[Row]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, list) or not data:
        raise HeadlineError(f"{path}: a list of rows, each with {', '.join(FIELDS)}; got {type(data).__name__}")
    rows = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or sorted(item) != sorted(FIELDS) or not all(
                isinstance(v, str) and v and "|" not in v and "\n" not in v for v in item.values()):
            raise HeadlineError(f"{path}: row {i} = {item!r}; allowed: exactly the fields {', '.join(FIELDS)}, "
                                f"each one line of text without '|'")
        rows.append(Row(**item))
    return rows


def _seeds(n: float) -> str:
    return str(int(n)) if math.isfinite(n) else "over 10,000"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _line(row: Row, results: Path, readme_dir: Path) -> tuple[str, int]:
    """The Markdown row and the loss scale (10^k) its numbers are shown at."""
    tables = results / row.study / "tables"
    path = tables / f"{row.study}_vs_reference.parquet"
    if not path.is_file():
        raise HeadlineError(f"headline row {row.study}/{row.arm}: no {path}; allowed: a folder of {results} "
                            f"whose study has a reference")
    comp = pd.read_parquet(path)
    found = comp[(comp["family"] == PRIMARY) & (comp["label"] == row.arm)]
    if len(found) != 1:
        raise HeadlineError(f"headline row {row.study}/{row.arm}: arm {row.arm!r} not in {path.name}; allowed: "
                            f"{', '.join(comp.loc[comp['family'] == PRIMARY, 'label'])}")
    r = found.iloc[0]
    summary = pd.read_parquet(results / row.study / "summary.parquet")
    scale = loss_scale(summary)
    f = 10.0 ** scale
    link = os.path.relpath(tables.resolve() / f"{row.study}_vs_reference.md", readme_dir)
    dagger = "" if has_test_split(summary) else " †"
    power = _seeds(r["seeds_difference"])
    if math.isfinite(r["margin"]):
        power += f"; equivalence ±{r['margin'] * f:.2f}: {_seeds(r['seeds_level'])}"
    cells = [row.question, f"[{row.versus}]({link}){dagger}", f"**{r['verdict']}**",
             f"{r['diff'] * f:.1f} [{r['ci_low'] * f:.1f}, {r['ci_high'] * f:.1f}]", _p(r["p_holm"]),
             f"{r['n']}/{r['n_ref']}", f"{power} <!-- verdict: {row.study}/{row.arm} -->"]
    return "| " + " | ".join(cells) + " |", scale


def table(results: Path, readme_dir: Path) -> str:
    """The block between BEGIN and END (markers included)."""
    lines, scales = zip(*(_line(row, results, readme_dir) for row in read_rows(results / ROWS)))
    if len(set(scales)) != 1:
        raise HeadlineError(f"{results / ROWS}: rows at loss scales {sorted(set(scales))}; allowed: one scale")
    head = (f"| question | comparison (its table) | verdict | Δ loss ×10{'³' if scales[0] == 3 else '⁴'} [95 % CI] "
            f"| p Holm | seeds | seeds for 80 % power |")
    return "\n".join([BEGIN, head, "|---|---|---|---:|---:|---:|---|", *lines, END])


def rewrite(readme: str, block: str) -> str:
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise HeadlineError(f"the README has no results table between {BEGIN!r} and {END!r}; allowed: a README "
                            f"holding both lines")
    return readme[:start] + block + readme[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.headline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="the results folder holding headline.yaml (docs/results)")
    p.add_argument("readme", type=Path, help="the Markdown file whose table to write (README.md)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the table is not up to date")
    args = p.parse_args(argv)
    try:
        text = args.readme.read_text()
        new = rewrite(text, table(args.results, args.readme.resolve().parent))
    except (HeadlineError, OSError) as e:
        print(f"python -m analysis.headline: error: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"{args.readme}: its results table differs from the committed verdicts; rewrite it with: "
                  f"python -m analysis.headline {args.results} {args.readme}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.readme.write_text(new)
    print(f"{args.readme}: results table written from {args.results / ROWS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
