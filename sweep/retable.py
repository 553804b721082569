"""Re-set a results folder's tables and topography figure from its summary.parquet alone, in the layout its
study file gives today: after a change to how analysis/tables sets a table, the committed results
(docs/results/<name>) follow without re-running a study or keeping its MLflow store.

    python -m sweep.retable docs/results/robustness docs/results/parity
    python -m sweep.retable results/my-study-cpu-20261201-101500      # a sweep folder: its own plan

The folder's files are data, never a name of what to read: the study is the sweep's own plan where the
folder is a sweep's (its sweep.json, checked as a resume checks it), else the summary's `study` column,
which must name a shipped study (and agree with the command in the folder's run.txt, when it has one). A
damaged or foreign summary.parquet is one line naming it and what is wrong. A searched study's tables
show its confirmation runs, as analysis.report sets them, with its winners and (random search) its
tuning-curve tables; its figures and best-so-far curves are left as they are (they need the search
trials' metrics, which the summary does not hold). The other figures (loss, perplexity, codes used) are
curves of the logged metrics, also not in the summary: left as they are.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis.report import write_summary_outputs
from analysis.summary import BadSummary, read_summary
from analysis.tables import Layout
import metrics as M
from models.config import ConfigError
from sweep.plan import Plan, make_plan
from sweep.provenance import BadRunFile, run_command
from sweep.run import read_sweep_json
from sweep.study import shipped_names


def retable(folder: str | Path, out: str | Path | None = None) -> None:
    """Write tables/ and figures/topography.png of `folder`'s summary.parquet into `out` (default: `folder`)
    as analysis.report does. Raises ConfigError (one line) when the summary, the sweep.json or the run.txt
    is not what a sweep wrote, or they name no shipped study."""
    folder, out = Path(folder), Path(out or folder)
    summary = read_summary(folder / "summary.parquet")
    plan = study_plan(folder, summary)
    layout = Layout.from_plan(plan)
    missing = [f for f in layout.rows if f not in summary]
    if missing:
        raise ConfigError(f"{folder / 'summary.parquet'}: no column {', '.join(missing)}, which the tables of study "
                          f"{plan.study!r} set in rows; allowed: the summary.parquet a sweep of it wrote")
    write_summary_outputs(summary, plan.study, layout, plan, out,
                          figure_formats=("png",))  # committed results keep PNGs only


def study_plan(folder: Path, summary: pd.DataFrame) -> Plan:
    """The plan that sets a results folder's tables: its sweep.json's (checked as a resume checks it), else
    that of the shipped study its summary holds (shipped_study), at any scale and seeds (none enters a layout)."""
    if (folder / "sweep.json").is_file():
        return read_sweep_json(folder.resolve(), check=False)[0]
    return make_plan(shipped_study(folder, summary), "smoke", 2)


def shipped_study(folder: Path, summary: pd.DataFrame) -> str:
    """The shipped study a results folder without a sweep.json holds: its summary's one `study`, which its
    run.txt (when there is one) ran."""
    names = list(summary[M.STUDY_TAG].unique())
    if len(names) != 1 or names[0] not in shipped_names():
        shown = M.printable(repr([str(n)[:60] for n in names[:3]]))
        raise ConfigError(f"{folder / 'summary.parquet'}: its study column holds {shown}; allowed: one shipped "
                          f"study ({', '.join(shipped_names())}), or a sweep folder with its sweep.json")
    if (folder / "run.txt").is_file():
        ran = run_command(folder / "run.txt").study
        if ran != names[0]:
            raise ConfigError(f"{folder / 'run.txt'} ran study {ran!r}, but {folder / 'summary.parquet'} holds "
                              f"study {names[0]!r}; allowed: a folder whose files come from one sweep")
    return names[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweep.retable", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="results folders holding summary.parquet (e.g. docs/results/parity)")
    args = p.parse_args(argv)
    missing = [f for f in args.folders if not (Path(f) / "summary.parquet").is_file()]
    if missing:
        print(M.printable(f"python -m sweep.retable: error: {missing[0]}: no summary.parquet there; allowed: a "
                          "results folder that holds one (docs/results/<name>)"), file=sys.stderr)
        return 2
    for folder in args.folders:
        try:
            retable(folder)
        except (ConfigError, BadSummary, BadRunFile) as e:
            print(f"python -m sweep.retable: error: {M.printable(str(e))}", file=sys.stderr)
            return 2
        print(M.printable(f"re-set the tables and the topography figure of {folder}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
