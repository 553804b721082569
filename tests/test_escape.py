"""Text from a study file or a results folder reaches the tables and the terminal as written and never
acts: LaTeX with any printable label compiles (-no-shell-escape) and reads no file a label names, a
Markdown cell's pipe is escaped, a control character is refused at load (file and line) or shown
escaped, and a study's own LaTeX (caption, headers) is the checked subset (a sweep.json's plan too:
tests/test_results_data.py)."""
from __future__ import annotations

import shutil
import string
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.report import write_summary_outputs
from analysis.tables import Layout, table_numbers, to_markdown, to_text
from analysis.tables.formats import latex_text
from analysis.tuning import write_winners
import metrics as M
from sweep.plan import make_plan
from sweep.progress import fit
from sweep.run import main
from sweep.study import SHIPPED, parse_study

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
GOOD = "name: my-study\ndescription: a user's study\nfixed: {neighbours: none}\narms:\n"


@pytest.mark.parametrize("text, line", [
    (GOOD + '  - {label: "EMA-VQ\\nfinished, best val 0.0001: forged", n0: 0}\n  - {label: b, n0: 1}\n',
     ":5: arms[0].label='EMA-VQ\\nfinished, best val 0.0001: forged': a control character"),
    (GOOD.replace("a user's study", '"red \\e[31m study"') + "  - {n0: 0}\n",
     ":2: description='red \\x1b[31m study': a control character"),
    (GOOD + "  - {n0: 0}\ntable: \"Table\\0 3\"\n", ":6: table='Table\\x00 3': a control character"),
    (GOOD + '  - {label: "KSOM \\u202e2D", n0: 0}\n', ":5: arms[0].label='KSOM \\u202e2D': a control character"),
    (GOOD + "  - {n0: 0}\n  - {n0: 1}\nlayout: {headers: {\"n0\\e\": N}}\n",
     ":7: layout.headers.n0\\x1b='n0\\x1b': a control character"),
])
def test_control_characters_in_a_study_file_are_refused_with_file_and_line(text, line, tmp_path, capsys):
    study = tmp_path / "my-study.yaml"
    study.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main([str(study), "--dry-run"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"python -m sweep.run: error: {study}{line}; allowed: printable text on one line"]


LATEX_ALLOWED = "allowed: text with the LaTeX a table caption needs (math, Greek letters, \\textbf, \\emph; \\% for %)"


@pytest.mark.parametrize("layout, line", [
    ("{caption: '\\input{/etc/hostname}'}", ":7: layout.caption='\\\\input{/etc/hostname}': the command \\input is "
     "not allowed (allowed: Greek letters, math symbols such as \\pm \\times \\leq, \\mathrm \\textbf \\textit "
     "\\emph, escaped specials such as \\%)"),
    ("{headers: {n0: '^^5cinput{x}'}}", ":7: layout.headers.n0='^^5cinput{x}': '^^' (TeX's character codes) is not "
     "allowed"),
    ("{caption: 'Loss within 10% of the best'}", ":7: layout.caption='Loss within 10% of the best': an unescaped '%' "
     "(write \\%)"),
    ("{caption: 'my_study'}", ":7: layout.caption='my_study': an unescaped '_' outside $...$ (write \\_)"),
    ("{caption: '$x$ {'}", ":7: layout.caption='$x$ {': an unclosed '{'"),
])
def test_a_studys_own_latex_is_the_checked_subset(layout, line, tmp_path, capsys):
    """Caption and headers are LaTeX the study writes; they may not read files, define commands or leave a
    brace or a math shift open (what would stop pdflatex or pull a file into the reader's PDF)."""
    study = tmp_path / "my-study.yaml"
    study.write_text(GOOD + f"  - {{n0: 0}}\n  - {{n0: 1}}\nlayout: {layout}\n")
    with pytest.raises(SystemExit):
        main([str(study), "--dry-run"])
    assert capsys.readouterr().err.splitlines() == [f"python -m sweep.run: error: {study}{line}; {LATEX_ALLOWED}"]


def test_progress_lines_show_control_characters_escaped():
    """A run name or a data error (an image file's name) with a newline cannot forge a second line."""
    assert fit("FAILED (cannot read /data/x\nfinished, best val 0.0001: y.png\x1b[2J): EMA-VQ seed=0") == (
        "FAILED (cannot read /data/x\\nfinished, best val 0.0001: y.png\\x1b[2J): EMA-VQ seed=0")


def _labelled(labels: list[str]) -> tuple[pd.DataFrame, Layout]:
    """Robustness' committed trials, each configuration renamed to one of `labels` (one row field, "arm")."""
    summary = pd.read_parquet(RESULTS / "robustness" / "summary.parquet")
    configs = summary[["n0", "update_empty", "neighbours"]].astype(str).agg(" ".join, axis=1)
    names = dict(zip(configs.unique(), labels))
    return summary.assign(arm=configs.map(names)), Layout(("arm",), name="robustness")


def test_markdown_and_text_cells_escape_pipes_and_control_characters():
    """A label with a pipe stays one cell; with a newline or ESC (data read from a summary) one row on one
    line, the characters shown escaped."""
    labels = ["a | b", "two\nlines", "esc \x1b[2J", "back\\slash |", "<img src=x>", "*x*", "[l](u)", "plain"]
    summary, layout = _labelled(labels)
    tidy = table_numbers(summary, layout)
    md = to_markdown(tidy, summary, layout).split("\n\n")[0].splitlines()
    cells = [len(row.replace("\\|", "").split("|")) for row in md]
    assert len(md) == 2 + 8 and cells == [cells[0]] * len(md)
    assert sorted(row.split(" | ")[0] for row in md[2:]) == sorted([
        "| a \\| b", "| two\\\\nlines", "| esc \\\\x1b\\[2J", "| back\\\\slash \\|", "| \\<img src=x\\>", "| \\*x\\*",
        "| \\[l\\](u)", "| plain"])
    text = to_text(tidy, summary, layout).splitlines()
    assert len(text) == 2 + 8 + 1 and sorted(line.split("  ")[0] for line in text[2:10]) == sorted([
        "a | b", "two\\nlines", "esc \\x1b[2J", "back\\slash |", "<img src=x>", "*x*", "[l](u)", "plain"])
    assert not any(M.UNPRINTABLE.search(line) for line in text)


def test_latex_text_by_hand():
    assert latex_text("50% & a_b #1 $x$ ~^{}<>|\"[a]*--\\") == (
        "50\\% \\& a\\_b \\#1 \\$x\\$ \\textasciitilde{}\\textasciicircum{}\\{\\}\\textless{}\\textgreater{}"
        "\\textbar{}\"{[}a{]}{*}-{}-\\textbackslash{}")  # " is OT1's closing quote: it compiles
    assert latex_text("é ñ Å ß τ Σ ☃ ± \n") == "\\'{e} \\~{n} \\r{A} \\ss{} $\\tau$ $\\Sigma$ [U+2603] $\\pm$ " \
                                             "\\textbackslash{}n"
    assert latex_text("EMA-VQ N0=0 update-0=no") == "EMA-VQ N0=0 update-0=no"  # the committed labels are as they were


def _pdflatex(tex: list[str], folder: Path) -> subprocess.CompletedProcess:
    if shutil.which("pdflatex") is None:
        pytest.fail("pdflatex is missing: scripts/test.sh installs it (texlive-latex-base, -recommended) as root")
    (folder / "doc.tex").write_text("\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n"
                                    "\\begin{document}\n" + "\n\\clearpage\n".join(tex) + "\n\\end{document}\n")
    return subprocess.run(["pdflatex", "-no-shell-escape", "-recorder", "-interaction=nonstopmode", "-halt-on-error",
                           "doc.tex"], cwd=folder, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_tables_with_any_printable_labels_compile_and_read_no_file(tmp_path):
    """Parity's tables (main, topography, vs reference, factorial, collapse; equivalence added) and a winners
    table, every label, level, name and caption text made of LaTeX's specials, one label an \\input of a file
    beside the document: pdflatex -no-shell-escape compiles them, and its record of the files it read (-recorder)
    does not name that file."""
    (tmp_path / "secret.tex").write_text("\\errmessage{PULLED}\n")
    labels = [string.punctuation + " 100%", "\\input{secret} \\input secret \\csname input\\endcsname{secret}",
              "[x] * --- é τ ☃ ^^5c ~ $\\$ {"]
    study = yaml.safe_load((SHIPPED / "parity.yaml").read_text())
    names = dict(zip([arm["label"] for arm in study["arms"]], labels))
    for arm in study["arms"]:
        arm["label"] = names[arm["label"]]
    study.update(name="my_study", description="100% of {x} & y_z #1 $ \\input{secret}", table="T_1 & \\ %",
                 reference=labels[2], analysis={**study["analysis"], "equivalence": 0.05},
                 layout={"caption": "Own caption, $\\tau \\leq 1$, 5\\% \\& \\textbf{bold}",
                         "headers": {"decay": "$\\gamma$"}})
    plan = make_plan(parse_study(yaml.safe_dump(study), "my_study.yaml"), "smoke", 2)
    summary = pd.read_parquet(RESULTS / "parity" / "summary.parquet")
    summary = summary.assign(arm=summary.arm.map(names), scale="cpu_#1 &",
                             codebook_init=summary.codebook_init.map({"randn": "r&nd_%$",
                                                                      "uniform": "\\input{secret}"}))
    out = tmp_path / "out"
    out.mkdir()
    write_summary_outputs(summary, plan.study, Layout.from_plan(plan), plan, out)
    write_winners(pd.DataFrame({"arm": labels, "lr": [1e-3, float("nan"), 3e-4],
                                "codebook_init": ["\\input{secret}", "a_b&c%", float("nan")]}), "my_study",
                  out / "tables")
    tables = sorted((out / "tables").glob("*.tex"))
    assert [p.name for p in tables] == [f"my_study{s}.tex" for s in (
        "", "_collapse", "_equivalence", "_factorial", "_topography", "_vs_reference", "_winners")]
    done = _pdflatex([p.read_text() for p in tables], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "secret" not in (tmp_path / "doc.fls").read_text() and "PULLED" not in done.stdout
    main_table = (out / "tables" / "my_study.tex").read_text()
    assert "\\textbackslash{}input\\{secret\\}" in main_table and "100\\% of \\{x\\} \\& y\\_z" not in main_table
    assert "Own caption, $\\tau \\leq 1$, 5\\% \\& \\textbf{bold}" in main_table
