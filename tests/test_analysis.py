"""Analysis: summaries on hand-made histories with known answers, bold placement, and the
tables, Parquet files, LaTeX, figures and notebook produced from a real smoke sweep."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from analysis.load import load_sweep, read_parquet, write_parquet
from analysis.report import main as report_main
from analysis.store import read_sweep
from analysis.summary import NO_TEST_SPLIT, has_test_split, selection_loss, steps_to_threshold, summarise
from analysis.tables import (WRAP_WIDTH, Layout, comparison_latex, comparison_numbers, table_numbers, to_latex,
                             to_markdown, to_text)
from analysis.tables.layout import read_layout
from plan import Plan
from metrics import MissingMetric
from sweep.study import SHIPPED
from helpers import assert_fits_a_column

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("losses, final, p, expected", [
    ([1.0, 0.5, 0.3, 0.25, 0.2], 0.2, 10, 500),  # 0.25 > 0.22: only the final point qualifies
    ([1.0, 0.5, 0.3, 0.25, 0.2], 0.2, 20, 500),  # 0.25 > 0.24
    ([1.0, 0.23, 0.21, 0.2], 0.2, 10, 300),  # 0.21 <= 0.22
    ([1.0, 0.23, 0.21, 0.2], 0.2, 20, 200),  # 0.23 <= 0.24
    ([0.5, 0.2, 0.3, 0.4], 0.2, 10, 200),  # the first step within reach counts, not the last
    ([0.5, 0.4], float("nan"), 10, float("nan")),  # no final loss (diverged): no step
])
def test_steps_to_threshold(losses, final, p, expected):
    steps = [100 * (i + 1) for i in range(len(losses))]
    got = steps_to_threshold(steps, losses, final, p)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


def _hand_made():
    """Three seeds of config A (one diverged) and two of config B, with known curves."""
    trials = pd.DataFrame({
        "run_id": ["a0", "a1", "a2", "b0", "b1"], "status": ["finished", "finished", "diverged", "finished", "finished"],
        "neighbours": ["none", "none", "none", "hard", "hard"], "seed": [0, 1, 2, 0, 1], "steps": 300})
    curves = {"a0": [0.9, 0.5, 0.4], "a1": [0.8, 0.23, 0.2], "a2": [0.9], "b0": [0.7, 0.3, 0.25], "b1": [0.6, 0.33, 0.35]}
    rows = [(run, "val/loss", 100 * (i + 1), v) for run, c in curves.items() for i, v in enumerate(c)]
    rows += [(run, "val/perplexity_vq", 100 * len(c), 10.0 + i) for i, (run, c) in enumerate(curves.items())]
    return trials, pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])


def test_summary_and_table_numbers_by_hand():
    trials, metrics = _hand_made()
    s = summarise(trials, metrics).set_index("run_id")
    assert s.loc["a0", "final_loss"] == 0.4 and s.loc["a0", "steps_10"] == 300 and s.loc["a0", "steps_20"] == 300
    assert s.loc["a1", "final_loss"] == 0.2 and s.loc["a1", "steps_10"] == 300 and s.loc["a1", "steps_20"] == 200
    assert s.loc["b1", "final_loss"] == 0.33 and s.loc["b1", "steps_10"] == 200  # best, not last, loss
    assert s.loc["a2", "diverged"] and math.isnan(s.loc["a2", "final_loss"])
    assert s.loc["b0", "perplexity_vq"] == 13.0

    t = table_numbers(s.reset_index(), "comparison").set_index(["neighbours", "column"])
    a = t.loc[("none", "final_loss")]
    assert a["mean"] == pytest.approx(0.3) and a["std"] == pytest.approx(math.sqrt(0.02))  # sample std, n - 1
    assert (a["n"], a["seeds"], a["diverged"]) == (2, 3, 1)  # the diverged seed is counted, not averaged
    b = t.loc[("hard", "final_loss")]
    assert b["mean"] == pytest.approx(0.29) and b["std"] == pytest.approx(math.sqrt(2 * 0.04 ** 2))
    # 0.29 +- 0.057 against 0.30 +- 0.14 on 2 seeds each: not significantly different, both bold
    assert t.loc[("hard", "final_loss"), "best"] and t.loc[("none", "final_loss"), "best"]
    assert t.loc[("hard", "steps_10"), "mean"] == pytest.approx(250.0)  # (300 + 200) / 2
    assert t.loc[("none", "steps_10"), "p_vs_best"] > 0.05


def test_final_loss_is_the_test_loss_at_the_step_validation_chose():
    """A planted sweep whose validation and test disagree: run t0's validation is lowest at step 200 (0.3, then
    0.35), its test loss is measured at 100 and 200 (where validation fell) and would be lowest at 100 (0.5 <
    0.6): the final loss is 0.6, the test loss at step 200, the selection loss 0.3, and steps_to reads the
    validation curve against 0.3. t1 ties its best at 200 and 300: the first step chose (test 0.7). The
    tables say test loss; a summary without any test loss keeps its validation best, labelled."""
    trials = pd.DataFrame({"run_id": ["t0", "t1"], "status": "finished", "neighbours": ["none", "hard"],
                           "seed": 0, "steps": 300})
    val = {"t0": [0.4, 0.3, 0.35], "t1": [0.5, 0.2, 0.2]}
    test = {"t0": {100: 0.5, 200: 0.6}, "t1": {100: 0.9, 200: 0.7}}
    rows = [(run, "val/loss", 100 * (i + 1), v) for run, c in val.items() for i, v in enumerate(c)]
    rows += [(run, "test/loss", step, v) for run, c in test.items() for step, v in c.items()]
    metrics = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])
    s = summarise(trials, metrics).set_index("run_id")
    assert (s.loc["t0", "final_loss"], s.loc["t0", "selection_loss"]) == (0.6, 0.3)
    assert (s.loc["t1", "final_loss"], s.loc["t1", "selection_loss"]) == (0.7, 0.2)
    assert s.loc["t0", "steps_10"] == 200 and s.loc["t0", "steps_20"] == 200  # 0.4 > 1.2 * 0.3
    assert has_test_split(s) and list(selection_loss(s)) == [0.3, 0.2]
    tidy = table_numbers(s.reset_index(), "comparison")
    assert "test MSE on per-channel standardised images at the step of the best validation MSE" in (
        to_markdown(tidy, s.reset_index(), "comparison"))
    old = summarise(trials, metrics[metrics.metric != "test/loss"])  # a sweep of an earlier version
    assert not has_test_split(old) and list(old.final_loss) == [0.3, 0.2]
    assert f"{NO_TEST_SPLIT}: best validation MSE" in to_markdown(table_numbers(old, "comparison"), old, "comparison")


def test_a_missing_metric_is_named():
    """A store logged under other metric names (here the old val_loss) fails loudly, naming what is missing."""
    trials, metrics = _hand_made()
    old = metrics.assign(metric=metrics.metric.str.replace("/", "_"))
    with pytest.raises(MissingMetric, match=r"metric 'val/loss' is missing .*logged: val_loss, val_perplexity_vq"):
        summarise(trials, old)


def test_bold_is_per_group_in_the_robustness_table():
    """Table 3 bolds the better of EMA-VQ and KSOM within each N0 x update-0 pair."""
    rows = []
    for n0 in (0, 1):
        for upd in (False, True):
            for nb, loss in (("none", 0.5 + n0), ("hard", 0.4 + n0 if upd else 0.6 + n0)):
                for seed in (0, 1):
                    rows.append({"run_id": f"{n0}{upd}{nb}{seed}", "n0": n0, "update_empty": upd, "neighbours": nb,
                                 "seed": seed, "final_loss": loss + 0.01 * seed, "steps_10": 100.0, "diverged": False,
                                 "steps": 300})
    t = table_numbers(pd.DataFrame(rows), read_layout(SHIPPED / "robustness.yaml"))
    best = t[(t.column == "final_loss") & t.best]
    assert sorted(zip(best.n0, best.update_empty, best.neighbours)) == [
        (0, False, "none"), (0, True, "hard"), (1, False, "none"), (1, True, "hard")]
    assert t[t.column == "steps_10"].best.all()  # ties are all bold


@pytest.mark.slow
def test_sweep_writes_tables_figures_and_parquet(smoke_sweep):
    for name in ("trials.parquet", "metrics.parquet", "summary.parquet", "tables/robustness.parquet",
                 "tables/robustness.tex", "tables/robustness.md", "tables/robustness.txt",
                 "tables/robustness_topography.tex", "tables/robustness_topography.md",
                 "tables/robustness_vs_reference.parquet", "tables/robustness_vs_reference.tex",
                 "tables/robustness_vs_reference.md", "tables/robustness_vs_reference.txt",
                 "figures/loss.png", "figures/loss.pdf", "figures/perplexity.png", "figures/perplexity.pdf",
                 "figures/topography.png", "figures/perturbation.png", "figures/codebook_vq.pdf"):
        assert (smoke_sweep / name).stat().st_size > 0, name
    text = (smoke_sweep / "tables/robustness.txt").read_text()
    assert text.count("EMA-VQ") == 4 and text.count("KSOM ") == 4
    summary = pd.read_parquet(smoke_sweep / "summary.parquet")
    row = summary[(summary.neighbours == "none") & (summary.n0 == 1) & summary.update_empty]
    counts = f"{len(row)}/{int(row.diverged.sum())}/{int(row.collapsed.sum())}"
    assert counts.startswith("4/2/") and counts in text  # the two diverged trials are counted in their row
    tidy = pd.read_parquet(smoke_sweep / "tables/robustness.parquet")
    topography = {f"loss_{kind}_{o}" for kind in ("ratio", "increase") for o in (1, 2, 3)} | {"smoothness_vq"}
    assert len(tidy) == 8 * 9 and set(tidy.column) == {"final_loss", "steps_10"} | topography
    assert "Loss at shift" in (smoke_sweep / "tables/robustness_topography.txt").read_text()
    # every mean column has a bold cell per group (2 seeds each) unless a seed collapsed; ratio (geometric
    # mean) and increase (median) columns have none
    means = tidy[tidy["agg"] == "mean"].dropna(subset=["std"])
    out = means.column.str.startswith("smoothness") & (means.collapsed > 0)
    assert means[~out].groupby(["n0", "update_empty", "column"]).best.any().all() and not means[out].best.any()
    assert not tidy[tidy["agg"] != "mean"].best.any()
    comparison = pd.read_parquet(smoke_sweep / "tables/robustness_vs_reference.parquet")
    assert len(comparison) == 4 * 4 and set(comparison.neighbours) == {"hard"}  # KSOM - EMA-VQ, 4 configurations
    for name in ("robustness", "robustness_topography", "robustness_vs_reference"):
        assert max(map(len, (smoke_sweep / f"tables/{name}.txt").read_text().splitlines())) <= 120, name
    for picture in (smoke_sweep / "figures").glob("*.*"):
        assert picture.stat().st_size < 1_000_000, picture.name  # pictures included


@pytest.mark.slow
def test_parquet_round_trip(smoke_sweep, tmp_path):
    trials, metrics = load_sweep(smoke_sweep)
    assert len(trials) == 18 and set(trials.status) == {"finished", "diverged"}
    assert {"run_id", "metric", "step", "value"} == set(metrics.columns)
    assert trials.lr.dtype.kind == "f" and trials.update_empty.dtype == bool and trials.n0.dtype.kind == "i"
    write_parquet(trials, metrics, tmp_path)
    again = read_parquet(tmp_path)
    pd.testing.assert_frame_equal(again[0], trials)
    pd.testing.assert_frame_equal(again[1], metrics)
    pd.testing.assert_frame_equal(read_parquet(smoke_sweep)[0], trials)  # what the sweep wrote


@pytest.mark.slow
def test_every_generated_table_fits_a_column_of_a_two_column_paper(smoke_sweep, tmp_path):
    """All tables of the smoke sweep, and the four paper tables in our layout, compile in
    \\documentclass[twocolumn]{article} with booktabs alone and without any overfull box."""
    from analysis.paper import PAPER_SUMMARY, STUDIES, paper_table, study_layouts
    tables = [p.read_text() for p in sorted((smoke_sweep / "tables").glob("*.tex"))]
    assert len(tables) == 3
    layouts = study_layouts(SHIPPED)
    tables += [to_latex(paper_table(s, layouts[s]), PAPER_SUMMARY, layouts[s], label=f"tab:paper-{s}")
               for s in STUDIES]
    assert_fits_a_column(tables, tmp_path)


@pytest.mark.slow
def test_long_arm_names_wrap_and_still_fit_a_column(smoke_sweep, tmp_path):
    """A study file's arms can have long names ("lucidrains k-means + dead codes"): such a label column
    is a ragged-right paragraph column, so the main, topography and comparison tables still fit."""
    summary = pd.read_parquet(smoke_sweep / "summary.parquet")
    summary = summary.assign(arm=summary.neighbours + " quantiser with N0=" + summary.n0.astype(str)
                             + " and update-0=" + summary.update_empty.astype(str))
    reference = summary.arm.iloc[0]
    layout = Layout.from_plan(Plan("long-arms", "smoke", {}, [{}], [0], 1.0, 0.0, swept=["arm"],
                                   reference={"arm": reference}, metrics=["final_loss", "steps_10", "steps_20"],
                                   description="Long arm names"))
    tidy = table_numbers(summary, layout)
    tables = [to_latex(tidy, summary, layout, part=part) for part in ("main", "topography")]
    tables.append(comparison_latex(comparison_numbers(summary, layout), summary, layout))
    assert all(f"p{{{WRAP_WIDTH}}}" in t and f"\\raggedright {reference}" in t for t in tables[:2])
    assert_fits_a_column(tables, tmp_path)


def spread_cells(text: str) -> list[str]:
    """The "mean ± std" cells of a text table, sorted: the numbers whatever the rows' labels and order."""
    return sorted(re.findall(r"\d+(?:\.\d+)? ± \d+(?:\.\d+)?", text))


@pytest.mark.slow
def test_report_cli_regenerates(smoke_sweep, tmp_path, capsys):
    """The report regenerated from a sweep folder rewrites the sweep's own tables byte for byte and prints
    the text ones; regenerated from the store alone (--tracking-uri, its layout derived from the runs) it
    holds the same numbers."""
    tables = {p.name: p.read_text() for p in (smoke_sweep / "tables").iterdir() if p.suffix in (".txt", ".md", ".tex")}
    assert {"robustness.txt", "robustness.md", "robustness.tex", "robustness_topography.tex"} <= set(tables)
    assert report_main([str(smoke_sweep)]) == 0
    out = capsys.readouterr().out
    assert "(×10³)" in out and "KSOM" in out and "collapsed (" in out and "diverged (2 of 18)" in out
    assert {name: (smoke_sweep / "tables" / name).read_text() for name in tables} == tables
    assert tables["robustness.txt"].strip() in out and tables["robustness_topography.txt"].strip() in out
    uri = read_sweep(smoke_sweep).tracking_uri
    assert report_main(["--tracking-uri", uri, "--study", "robustness", "--out", str(tmp_path / "r")]) == 0
    for name in ("robustness.txt", "robustness_topography.txt"):
        cells = spread_cells(tables[name])
        assert cells and spread_cells((tmp_path / "r/tables" / name).read_text()) == cells, name
    with pytest.raises(SystemExit):
        report_main(["--tracking-uri", uri, "--study", "nosuchstudy", "--out", str(tmp_path / "x")])
    assert "no MLflow experiment 'nosuchstudy'" in capsys.readouterr().err


def test_text_marks_best_cells():
    trials, metrics = _hand_made()
    s = summarise(trials, metrics)
    text = to_text(table_numbers(s, "comparison"), s, "comparison")
    line = next(l for l in text.splitlines() if l.startswith("KSOM"))
    assert "290.0 ± 56.6 *" in line and "3/1/0" in text


def _topography_summary() -> pd.DataFrame:
    """EMA-VQ collapsed in every seed with a smoothness better than KSOM's; losses shifted by hand."""
    rows = []
    for nb, base, shifted, smooth, collapsed in (("none", 0.4, (0.5, 0.4, 0.4), 0.50, True),
                                                 ("hard", 0.05, (0.06, 0.10, 0.20), 0.90, False)):
        for seed in range(3):
            rows.append({"run_id": f"{nb}{seed}", "neighbours": nb, "seed": seed, "steps": 800, "diverged": False,
                         "collapsed": collapsed, "final_loss": base, "steps_10": 100.0, "steps_20": 50.0,
                         "loss_offset_0": base, **{f"loss_offset_{o}": shifted[o - 1] * (1 + seed) for o in (1, 2, 3)},
                         "smoothness_vq": smooth + 0.01 * seed})
    return pd.DataFrame(rows)


def test_topography_numbers_by_hand_and_a_collapsed_row_is_never_bold():
    s, layout = _topography_summary(), Layout(rows=("neighbours",))
    t = table_numbers(s, layout).set_index(["neighbours", "column"])
    # ratio: geometric mean of 0.5x(1, 2, 3) / 0.4 = 1.25 x 6^(1/3); increase: median of 0.5, 1.0, 1.5 minus 0.4
    assert t.loc[("none", "loss_ratio_1"), "mean"] == pytest.approx(1.25 * 6 ** (1 / 3))
    assert t.loc[("none", "loss_increase_1"), "mean"] == pytest.approx(1.0 - 0.4)
    assert t.loc[("hard", "loss_increase_3"), "mean"] == pytest.approx(0.40 - 0.05)
    assert t.loc[("none", "loss_increase_1"), "agg"] == "median" and math.isnan(t.loc[("none", "loss_increase_1"), "std"])
    assert t.loc[("none", "loss_ratio_2"), "mean"] < t.loc[("hard", "loss_ratio_2"), "mean"]  # the ratio flatters it
    # EMA-VQ's smoothness (0.51) is lower than KSOM's (0.91), but it collapsed: KSOM is the only bold
    assert not t.loc[("none", "smoothness_vq"), "best"] and t.loc[("hard", "smoothness_vq"), "best"]
    assert not t[t.index.get_level_values("column").str.startswith(("loss_ratio", "loss_increase"))].best.any()
    text = to_text(t.reset_index(), s, layout, part="topography")
    ema = text.splitlines()[2:4]
    assert ema[0].split()[:5] == ["EMA-VQ", "ratio", "2.27", "1.82", "1.82"] and ema[0].endswith("0.51 ± 0.01‡")
    assert ema[1].split() == ["incr.", "600", "400", "400"]  # x10^3, median
    assert "0.91 ± 0.01 *" in text.splitlines()[4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_readme_command_opens_the_notebook_in_jupyterlab(tmp_path):
    """The README's command (JupyterLab from the lock's `notebook` extra) serves the notebook from its own
    folder (so that its kernel finds ../results): its page and the notebook itself (the cell that opens the
    newest sweep) come back from the running server."""
    (command,) = re.findall(r"^(jupyter lab notebooks/analysis\.ipynb)\s", (ROOT / "README.md").read_text(), re.M)
    port, token = _free_port(), "test-token"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    proc = subprocess.Popen([*command.split(), "--no-browser", "--allow-root", f"--ServerApp.port={port}",
                             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                page = urllib.request.urlopen(f"{base}/lab/tree/analysis.ipynb?token={token}", timeout=10)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "jupyter lab did not start"
                time.sleep(1)
        assert page.status == 200 and "JupyterLab" in page.read().decode()
        request = urllib.request.Request(f"{base}/api/contents/analysis.ipynb",
                                         headers={"Authorization": f"token {token}"})
        model = json.load(urllib.request.urlopen(request, timeout=30))
        assert model["type"] == "notebook" and model["format"] == "json"
        sources = ["".join(c["source"]) for c in model["content"]["cells"]]
        assert any("\"\" for the newest sweep under results/ that is not a smoke run" in s for s in sources)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(moved, monkeypatch):
    """On the smoke sweep's results moved to another folder (the original out of reach): every cell runs and
    shows the sweep's numbers, tables and pictures, read through the copy's own store and artifacts."""
    nb = nbformat.read(ROOT / "notebooks/analysis.ipynb", as_version=4)
    monkeypatch.setenv("SWEEP_DIR", str(moved))
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
                      for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    assert f"sweep: {moved}\n  (named by SWEEP_DIR)" in outputs
    noise = [str(o)[:300] for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
             if o.get("name") == "stderr" or o.output_type == "error"]
    assert not noise, noise  # no warning, no download bar
    assert "robustness at smoke scale: 18 trials, 2 diverged" in outputs
    assert "trials match 'n0 == 1'" in outputs and "| KSOM |" in outputs and "Loss at shift" in outputs
    assert "95% CI" in outputs  # the comparison against the reference arm
    pictures = sum("image/png" in o.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
                   for o in cell.outputs)
    assert pictures == 6  # loss, perplexity, codes used, topography; perturbation and codebook side by side
    frames = "".join(str(o.get("data", {}).get("text/plain", "")) for cell in nb.cells if cell.cell_type == "code"
                     for o in cell.outputs)
    assert "loss_offset_3" in frames and "smoothness_vq" in frames
