"""analysis.headline: the README's Results table written from committed verdicts, on hand-made results."""
from __future__ import annotations

import pandas as pd
import pytest

from analysis.headline import BEGIN, END, main

ROW = dict(family="primary", diff=-0.0431, ci_low=-0.0475, ci_high=-0.0387, p=1e-5, g=-18.2, n=10, n_ref=10,
           p_holm=0.0004, verdict="better", std=0.002, std_ref=0.0017, p_tost=float("nan"), seeds_difference=2.0,
           seeds_level=float("nan"), margin=float("nan"))


def results(tmp_path, rows, *, test_split=True, headline=None):
    """A docs/results-like folder: study 'cmp' with a vs-reference Parquet of `rows`, and a README."""
    tables = tmp_path / "results/cmp/tables"
    tables.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(tables / "cmp_vs_reference.parquet")
    summary = {"final_loss": [0.05, 0.06], **({"selection_loss": [0.04, 0.05]} if test_split else {})}
    pd.DataFrame(summary).to_parquet(tmp_path / "results/cmp/summary.parquet")
    (tmp_path / "results/headline.yaml").write_text(
        headline or '- {study: cmp, arm: KSOM, question: "at 800 steps", versus: KSOM vs EMA-VQ}\n')
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    return tmp_path / "results", readme


def test_a_row_is_the_verdict_and_numbers_of_its_parquet(tmp_path):
    res, readme = results(tmp_path, [{**ROW, "label": "KSOM", "column": "final_loss"},
                                     {**ROW, "label": "KSOM", "column": "steps_10", "family": "secondary",
                                      "verdict": "", "diff": 99.0}])
    assert main([str(res), str(readme), "--check"]) == 1  # "old" is stale
    assert main([str(res), str(readme)]) == 0
    lines = readme.read_text().splitlines()
    assert lines[:3] == ["# R", "", BEGIN] and lines[-3:] == [END, "", "after"]
    # by hand: -0.0431 x 10^3 = -43.1, CI [-47.5, -38.7], Holm p 0.0004 -> <0.001, 10/10 seeds, 2 for 80 % power
    assert lines[5] == ("| at 800 steps | [KSOM vs EMA-VQ](results/cmp/tables/cmp_vs_reference.md) | **better** "
                        "| -43.1 [-47.5, -38.7] | <0.001 | 10/10 | 2 <!-- verdict: cmp/KSOM --> |")
    assert len(lines) == 3 + 2 + 1 + 3  # header, rule, one row: the secondary row is not a verdict
    assert main([str(res), str(readme), "--check"]) == 0


def test_a_margin_adds_the_seeds_equivalence_needs_and_old_runs_are_marked(tmp_path):
    row = {**ROW, "label": "KSOM", "column": "final_loss", "verdict": "undecided", "p_holm": 0.3456,
           "margin": 0.00147, "p_tost": 0.514, "seeds_difference": 20.0, "seeds_level": 22.0}
    res, readme = results(tmp_path, [row], test_split=False)
    assert main([str(res), str(readme)]) == 0
    line = readme.read_text().splitlines()[5]
    assert "(results/cmp/tables/cmp_vs_reference.md) † | **undecided** |" in line  # †: no test split
    assert line.endswith("| 0.346 | 10/10 | 20; equivalence ±1.47: 22 <!-- verdict: cmp/KSOM --> |")


@pytest.mark.parametrize("headline, expected", [
    ('- {study: cmp, arm: Kohonen, question: q, versus: c}\n', "arm 'Kohonen' not in cmp_vs_reference.parquet; "
                                                                   "allowed: KSOM"),
    ('- {study: nope, arm: KSOM, question: q, versus: c}\n', "headline row nope/KSOM: no "),
    ('- {study: cmp, arm: KSOM, question: "a | b", versus: c}\n', "each one line of text without '|'"),
    ('- {study: cmp, arm: KSOM, question: q}\n', "allowed: exactly the fields study, arm, question, versus"),
])
def test_a_bad_row_is_one_line_and_nothing_written(tmp_path, capsys, headline, expected):
    res, readme = results(tmp_path, [{**ROW, "label": "KSOM", "column": "final_loss"}], headline=headline)
    before = readme.read_text()
    assert main([str(res), str(readme)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and readme.read_text() == before
