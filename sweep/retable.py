"""Re-set a results folder's tables and topography figure from its summary.parquet alone, in the layout its
study file gives today: after a change to how analysis/tables sets a table, the committed results
(docs/results/<name>) follow without re-running a study or keeping its MLflow store.

    python -m sweep.retable docs/results/robustness docs/results/parity

The study is the summary's own (its `study` column, a shipped study's name). A searched study's tables
show its confirmation runs, as analysis.report sets them, with its winners and (random search) its tuning-curve
tables; its figures and best-so-far curves are left as they are (they need the search trials' metrics, which the
summary does not hold). The
other figures (loss, perplexity, codes used) are curves of the logged metrics, also not in the summary: left
as they are.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis.report import write_summary_outputs
from analysis.tables import Layout
import metrics as M
from models.config import ConfigError
from sweep.plan import make_plan


def retable(folder: str | Path, out: str | Path | None = None) -> None:
    """Write tables/ and figures/topography.png of `folder`'s summary.parquet into `out` (default: `folder`)
    as analysis.report does. Raises ConfigError when the summary names no shipped study."""
    folder, out = Path(folder), Path(out or folder)
    summary = pd.read_parquet(folder / "summary.parquet")
    names = summary[M.STUDY_TAG].unique() if M.STUDY_TAG in summary else []
    if len(names) != 1:
        raise ConfigError(f"{folder / 'summary.parquet'}: names studies {list(names)}; allowed: one shipped study")
    plan = make_plan(str(names[0]), "smoke", 2)  # the layout: no scale or seed enters it
    write_summary_outputs(summary, plan.study, Layout.from_plan(plan), plan, out,
                          figure_formats=("png",))  # committed results keep PNGs only


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweep.retable", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="results folders holding summary.parquet (e.g. docs/results/parity)")
    args = p.parse_args(argv)
    missing = [f for f in args.folders if not (Path(f) / "summary.parquet").is_file()]
    if missing:
        print(f"python -m sweep.retable: error: {missing[0]}: no summary.parquet there; allowed: a results folder "
              f"that holds one (docs/results/<name>)", file=sys.stderr)
        return 2
    for folder in args.folders:
        try:
            retable(folder)
        except ConfigError as e:
            print(f"python -m sweep.retable: error: {e}", file=sys.stderr)
            return 2
        print(f"re-set the tables and the topography figure of {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
