"""Study layouts come from the study files alone: the tables follow an edited study file, the
committed results re-render byte for byte from their summaries, no study is named in analysis/,
and a bad `layout:` block is refused with its file and line before anything runs."""
from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pandas as pd
import pytest
from helpers import assert_fits_a_column

from analysis.tables import Layout, comparison_markdown, comparison_numbers, table_numbers, to_latex, to_markdown
from plan import TableLayout
from sweep.plan import make_plan
from sweep.retable import retable
from sweep.study import SHIPPED, parse_study, shipped_names

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"  # sweeps' tables and summaries committed by docs/results/make.sh


def layout(study: str | Path) -> Layout:
    """The layout a sweep of `study` carries in its sweep.json (its plan)."""
    return Layout.from_plan(make_plan(study, "smoke", 2))


def test_the_tables_follow_an_edited_copy_of_robustness_yaml(tmp_path):
    """Robustness compares KSOM against EMA-VQ; a copy whose reference is KSOM compares EMA-VQ against
    KSOM: the same differences with the sign flipped, under a caption naming the new reference, and a
    caption edited in the copy is the table's caption."""
    summary = pd.read_parquet(RESULTS / "robustness" / "summary.parquet")
    text = (SHIPPED / "robustness.yaml").read_text()
    assert "reference: {neighbours: none}" in text and "(paper Table 3)." in text
    copy = tmp_path / "robustness-ksom.yaml"
    copy.write_text(text.replace("name: robustness", "name: robustness-ksom")
                    .replace("reference: {neighbours: none}", "reference: {neighbours: hard}")
                    .replace("(paper Table 3).", "(our Table 7)."))
    shipped, edited = layout("robustness"), layout(copy)
    assert edited.reference == {"neighbours": "hard"} and edited.caption.endswith("(our Table 7).")
    before, after = comparison_numbers(summary, shipped), comparison_numbers(summary, edited)
    assert set(before.neighbours) == {"hard"} and set(after.neighbours) == {"none"}
    key = ["n0", "update_empty", "column"]
    before, after = before.set_index(key).sort_index(), after.set_index(key).sort_index()
    assert len(after) == 4 * 4  # four N0 x update-0 pairs: loss, steps to +10 %, codes used, smoothness
    pd.testing.assert_series_equal(after["diff"], -before["diff"])
    pd.testing.assert_series_equal(after["p"], before["p"])
    assert after.n.tolist() == before.n_ref.tolist() and after.n_ref.tolist() == before.n.tolist()
    assert "each configuration minus the reference arm (Quantiser = KSOM hard)" in comparison_markdown(
        comparison_numbers(summary, edited), summary, edited)
    tidy = table_numbers(summary, edited)
    assert "\\caption{Robustness of KSOM (hard, 2D, $\\tau=0.1$) under configurations sub-optimal for EMA-VQ " \
           "(our Table 7). Scale cpu" in to_latex(tidy, summary, edited)
    assert "Robustness of KSOM (hard, 2D, τ=0.1) under configurations sub-optimal for EMA-VQ (our Table 7). " \
           "Scale cpu" in to_markdown(tidy, summary, edited)


@pytest.mark.parametrize("folder", sorted(p.name for p in RESULTS.iterdir() if (p / "tables").is_dir()))
def test_committed_results_re_render_byte_for_byte(folder, tmp_path):
    """docs/results/<folder>/tables were written by a sweep's report (or since by sweep.retable); its
    summary, set in the layout its study file gives today, writes the same text, Markdown and LaTeX, byte
    for byte, and the same numbers: every table, a random search's tuning-curve tables too (a TPE search's
    best-so-far curves need the search trials' metrics: no committed study has one)."""
    retable(RESULTS / folder, tmp_path)
    committed, tables = RESULTS / folder / "tables", tmp_path / "tables"
    written = {p.name for p in tables.iterdir()}
    assert written == {p.name for p in committed.iterdir()}
    for path in sorted(p for p in committed.iterdir() if p.name in written):
        if path.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(tables / path.name), pd.read_parquet(path))
        else:
            assert (tables / path.name).read_bytes() == path.read_bytes(), path.name
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["topography.png"]


@pytest.mark.slow
def test_every_committed_table_fits_a_column_of_a_two_column_paper(tmp_path):
    """Every LaTeX table under docs/results compiles in a two-column article without an overfull box
    (parity's four label columns once did not: its groups are now rows of their own)."""
    tables = sorted(RESULTS.glob("*/tables/*.tex"))
    assert len(tables) >= 30 and any("parity" in p.name for p in tables)
    assert_fits_a_column([p.read_text() + "\\clearpage" for p in tables], tmp_path)


def test_no_study_is_named_in_analysis():
    """No module of analysis/ spells a shipped study's name as a string (their layouts are the study
    files'), except analysis/paper.py, whose table of the paper's published numbers is by study."""
    names = set(shipped_names())
    found = []
    for path in sorted((ROOT / "analysis").rglob("*.py")):
        if path.name == "paper.py":
            continue
        for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if token.type == tokenize.STRING and token.string.strip("\"'rfbRFB") in names:
                found.append(f"{path.relative_to(ROOT)}:{token.start[0]}: {token.string}")
    assert not found, found
    assert {"sensitivity", "comparison", "robustness", "ablation"} <= names  # the test looks for real names


def test_study_without_a_layout_block_derives_its_layout():
    """shrink.yaml has no layout block: rows are its swept fields, the quantiser shown first, groups the
    fields outside its reference, thresholds its metrics', title its description (no caption of its own)."""
    got = layout("shrink")
    assert (got.rows, got.columns, got.group, got.thresholds, got.reference) == (
        ("neighbours", "tau"), ("neighbours", "tau"), ("neighbours",), (10, 20), {"tau": 0.1})
    assert (got.caption, got.title) == ("", "tau {0.01, 0.03, 0.1, 0.3, 1} x {hard, Gaussian} 2D (N0 1, update-0 yes).")


def test_an_axis_added_on_the_command_line_joins_the_layout():
    """--grid lr=... on robustness: lr makes a row of its own (innermost) and is compared within."""
    plan = make_plan("robustness", "smoke", grid={"lr": ["1e-3", "3e-4"]})
    got = Layout.from_plan(plan)
    assert got.rows == ("n0", "update_empty", "neighbours", "lr")
    assert got.columns == ("neighbours", "n0", "update_empty", "lr") and got.group == ("n0", "update_empty", "lr")


STUDY = ("name: my-study\ndescription: a user's study\nfixed: {neighbours: hard}\n"
         "axes: {tau: [0.1, 1.0], n0: [0, 1]}\nreference: {tau: 0.1}\n"
         "layout: {rows: [n0, tau], caption: 'My $\\tau$ study'}\n")


def test_a_good_layout_block_reaches_the_plan():
    """The checked block travels in the plan (and so in sweep.json); what it leaves out is derived.
    (Bad blocks: tests/test_studies.py, with the other refusals of a study file.)"""
    plan = make_plan(parse_study(STUDY, "my-study.yaml"), "smoke")
    assert plan.layout == TableLayout(rows=["n0", "tau"], caption="My $\\tau$ study")
    got = Layout.from_plan(plan)
    assert (got.rows, got.columns, got.group, got.caption) == (("n0", "tau"), ("n0", "tau"), ("n0",),
                                                                "My $\\tau$ study")


def test_retable_refuses_a_folder_without_a_summary_and_writes_nothing(tmp_path, capsys):
    from sweep.retable import main
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m sweep.retable: error: {tmp_path / 'empty'}: no summary.parquet there; allowed: a "
                   "results folder that holds one (docs/results/<name>)"]
    assert list((tmp_path / "empty").iterdir()) == []
