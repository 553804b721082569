"""A results folder is data: summary.parquet, sweep.json and run.txt never name what to read or run.
sweep.retable takes the study from the folder's sweep.json (checked as a resume checks it) or from the
shipped study names; a damaged, empty, truncated, wrong-column or mistyped summary is one line naming
the file and what is wrong, exit 2, nothing written; run.txt's command is parsed by sweep.run's parser;
the results README shows run.txt as a code block nothing in it can close."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.paper import run_block
from analysis.report import main as report_main
from sweep.plan import make_plan
from sweep.provenance import BadRunFile, run_command
from sweep.retable import main
from sweep.study import SHIPPED, shipped_names

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
SHIPPED_LIST = ", ".join(shipped_names())
SUMMARY_ALLOWED = "allowed: the summary.parquet a sweep's report wrote (python -m analysis.report SWEEP_DIR writes one)"
RUN_ALLOWED = "allowed: the run.txt docs/results/make.sh wrote (command:  python -m sweep.run STUDY ...)"


@pytest.fixture
def folder(tmp_path):
    """A copy of the committed robustness results folder's data: summary.parquet and run.txt."""
    out = tmp_path / "robustness"
    out.mkdir()
    for name in ("summary.parquet", "run.txt"):
        shutil.copy(RESULTS / "robustness" / name, out)
    return out


def _summary(folder: Path, change) -> None:
    frame = pd.read_parquet(folder / "summary.parquet")
    change(frame).to_parquet(folder / "summary.parquet")


def _cut(folder: Path, keep) -> None:
    data = (folder / "summary.parquet").read_bytes()
    (folder / "summary.parquet").write_bytes(keep(data))


CASES = {
    "damaged": (lambda f: _cut(f, lambda d: d[:1000] + bytes(500) + d[1500:]), "{s}: not a readable Parquet file"),
    "empty": (lambda f: _cut(f, lambda d: b""), "{s}: not a readable Parquet file (Parquet file size is 0 bytes); "
                                                + SUMMARY_ALLOWED),
    "truncated": (lambda f: _cut(f, lambda d: d[:len(d) // 2]), "{s}: not a readable Parquet file (Parquet magic "
                  "bytes not found in footer. Either the file is corrupted or this is not a parquet file.); "
                  + SUMMARY_ALLOWED),
    "no rows": (lambda f: _summary(f, lambda s: s.iloc[:0]), "{s}: holds no trials; " + SUMMARY_ALLOWED),
    "wrong column": (lambda f: _summary(f, lambda s: s.rename(columns={"final_loss": "loss"})),
                     "{s}: no column final_loss; " + SUMMARY_ALLOWED),
    "mistyped": (lambda f: _summary(f, lambda s: s.assign(final_loss=s.final_loss.astype(str))),
                 "{s}: column 'final_loss' holds str values, not numbers; " + SUMMARY_ALLOWED),
    "list column": (lambda f: _summary(f, lambda s: s.assign(n0=s.n0.map(lambda v: [v]))),
                    "{s}: column 'n0' holds object values, not text, numbers or true/false; " + SUMMARY_ALLOWED),
    "row field gone": (lambda f: _summary(f, lambda s: s.drop(columns="update_empty")),
                       "{s}: no column update_empty, which the tables of study 'robustness' set in rows; allowed: the "
                       "summary.parquet a sweep of it wrote"),
    "searched names no column": (lambda f: _summary(f, lambda s: s.assign(stage="confirm", searched="lr,/etc/passwd")),
                                 "{s}: its 'searched' column names fields it has no column for (['/etc/passwd']); "
                                 + SUMMARY_ALLOWED),
    "study is a path": (lambda f: _summary(f, lambda s: s.assign(study=str(SHIPPED / "robustness.yaml"))),
                        "{s}: its study column holds ['" + str(SHIPPED / "robustness.yaml") + "']; allowed: one "
                        f"shipped study ({SHIPPED_LIST}), or a sweep folder with its sweep.json"),
    "study is a system file": (lambda f: _summary(f, lambda s: s.assign(study="/etc/passwd")),
                               "{s}: its study column holds ['/etc/passwd']; allowed: one shipped study "
                               f"({SHIPPED_LIST}), or a sweep folder with its sweep.json"),
    "two studies": (lambda f: _summary(f, lambda s: s.assign(study=["robustness", "ablation"] * (len(s) // 2))),
                    "{s}: its study column holds ['robustness', 'ablation']; allowed: one shipped study "
                    f"({SHIPPED_LIST}), or a sweep folder with its sweep.json"),
    "run.txt runs another study": (lambda f: (f / "run.txt").write_text("command:  python -m sweep.run ablation\n"),
                                   "{r} ran study 'ablation', but {s} holds study 'robustness'; allowed: a folder "
                                   "whose files come from one sweep"),
    "run.txt runs a path": (lambda f: (f / "run.txt").write_text("command:  python -m sweep.run /tmp/x/robustness.yaml "
                                                                 "--seeds 3\n"),
                            "{r}: command 'python -m sweep.run /tmp/x/robustness.yaml --seeds 3': study "
                            f"'/tmp/x/robustness.yaml' is not a shipped study ({SHIPPED_LIST}); " + RUN_ALLOWED),
    "run.txt runs a shell": (lambda f: (f / "run.txt").write_text("command:  touch /tmp/pwned; python -m sweep.run "
                                                                  "robustness\n"),
                             "{r}: command 'touch /tmp/pwned; python -m sweep.run robustness' is not python -m "
                             "sweep.run; " + RUN_ALLOWED),
    "run.txt has an unknown option": (lambda f: (f / "run.txt").write_text("command:  python -m sweep.run robustness "
                                                                           "--exec 'rm -rf /'\n"),
                                      "{r}: command \"python -m sweep.run robustness --exec 'rm -rf /'\": unrecognized "
                                      "arguments: --exec rm -rf /; " + RUN_ALLOWED),
}


@pytest.mark.parametrize("case", list(CASES))
def test_retable_refuses_a_folder_whose_data_is_not_a_sweeps_in_one_line(case, folder, capsys):
    damage, line = CASES[case]
    damage(folder)
    before = sorted(p.name for p in folder.iterdir())
    assert main([str(folder)]) == 2
    err = capsys.readouterr().err.splitlines()
    expected = "python -m sweep.retable: error: " + line.format(s=folder / "summary.parquet", r=folder / "run.txt")
    assert len(err) == 1 and err[0].startswith(expected), err
    assert "root:" not in err[0]  # no line of the system file it named
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


def test_every_committed_run_txt_runs_its_folders_study():
    """The committed run.txt files read as data: each command parses, its study is its folder's."""
    folders = sorted(p for p in RESULTS.iterdir() if (p / "tables").is_dir())  # what make.sh tables re-sets
    assert len(folders) >= 10
    assert [run_command(p / "run.txt").study for p in folders] == [p.name.removesuffix("-long") for p in folders]
    with pytest.raises(BadRunFile, match="is not python -m sweep.run"):
        run_command(RESULTS / "paper-steps" / "run.txt")  # a GPU check's log, not a sweep's


def test_run_txt_shows_in_the_readme_as_a_code_block_nothing_closes(tmp_path):
    (tmp_path / "run.txt").write_text("command:  python -m sweep.run robustness\n```\n<script>alert(1)</script>\n"
                                      "`````x\x1b[2J\n")
    assert run_block(tmp_path) == ["``````", "command:  python -m sweep.run robustness", "```",
                                   "<script>alert(1)</script>", "`````x\\x1b[2J", "``````"]
    (tmp_path / "run.txt").write_text("command:  python -m sweep.run robustness\n")
    assert run_block(tmp_path) == ["```", "command:  python -m sweep.run robustness", "```"]  # as before


@pytest.fixture
def sweep_folder(tmp_path):
    """A sweep folder of robustness as its report leaves it: sweep.json (its store a server's, so that
    nothing local is opened) and summary.parquet."""
    out = tmp_path / "robustness-smoke-20261201-000000"
    out.mkdir()
    shutil.copy(RESULTS / "robustness" / "summary.parquet", out)
    plan = make_plan("robustness", "smoke", 2).to_dict()
    record = {"name": out.name, "dir": out.name, "plan": plan, "experiment_id": "1", "parent_run_id": "p",
              "ray_name": "r", "store": None, "tracking_uri": "http://127.0.0.1:9", "ray_storage": None}
    (out / "sweep.json").write_text(json.dumps(record))
    return out, record


def test_retable_of_a_sweep_folder_sets_its_own_plans_tables(sweep_folder, capsys):
    """The study and layout are the sweep's plan (a caption the study file does not have), never its summary's."""
    out, record = sweep_folder
    record["plan"]["layout"]["caption"] = "The sweep's own caption, $\\tau=0.1$."
    (out / "sweep.json").write_text(json.dumps(record))
    _summary(out, lambda s: s.assign(study="/etc/passwd"))  # the summary's study is not read
    assert main([str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"re-set the tables and the topography figure of {out}"]
    tex = (out / "tables" / "robustness.tex").read_text()
    assert "\\caption{The sweep's own caption, $\\tau=0.1$. Scale cpu" in tex


PLAN_ALLOWED = "(the plan a sweep wrote; restore sweep.json, or start the sweep again)"


@pytest.mark.parametrize("change, problem", [
    ({"labels": ["EMA-VQ\nforged line"]}, ": plan.labels[0]='EMA-VQ\\nforged line': a control character; allowed: "
     f"printable text on one line {PLAN_ALLOWED}"),
    ({"layout": {"caption": "\\input{/etc/passwd}"}}, ": plan.layout.caption='\\\\input{/etc/passwd}': the command "
     "\\input is not allowed (allowed: Greek letters, math symbols such as \\pm \\times \\leq, \\mathrm \\textbf "
     "\\textit \\emph, escaped specials such as \\%); allowed: text with the LaTeX a table caption needs (math, Greek "
     f"letters, \\textbf, \\emph; \\% for %) {PLAN_ALLOWED}"),
    ({"study": "../../etc/passwd"}, ": plan.study='../../etc/passwd': allowed: letters, digits, '-' and '_' (it "
     "names folders and files)"),
    ({"name": "robustness\x1b[2J"}, " is not a sweep's (name = 'robustness\\x1b[2J': a control character); allowed: "
     "the sweep.json a sweep wrote (restore it, or start the sweep again)"),  # beside the plan
])
def test_a_sweep_json_a_study_file_could_not_give_is_refused(change, problem, sweep_folder, capsys):
    """sweep.retable and the report (and the notebook, through analysis.store.read_sweep) refuse a sweep.json
    whose plan holds a control character, a caption outside the checked LaTeX or another study's name."""
    out, record = sweep_folder
    (record if "name" in change else record["plan"]).update(change)
    (out / "sweep.json").write_text(json.dumps(record))
    line = f"{out / 'sweep.json'}{problem}"
    assert main([str(out)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"python -m sweep.retable: error: {line}"]
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(out)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"python -m analysis.report: error: {line}"]
    assert not (out / "tables").exists()
