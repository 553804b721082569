"""Links that cannot rot: every relative link in README.md and docs/**/*.md points to a file or
folder tracked by git; every number the README's results headline quotes, and every number of a
paragraph, list item or table row (of the README or any docs/ page) that cites committed docs/results
files, appears in the files it cites; the README is a front door of at most 150 lines whose Python
runs as written."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from analysis.headline import main as headline_main

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?")


def tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def folders(files: set[str]) -> set[str]:
    return {str(parent) for f in files for parent in PurePosixPath(f).parents if str(parent) != "."}


def relative_links(markdown: str) -> list[str]:
    """Targets of the Markdown links that point inside the repository (no URL, no pure anchor)."""
    targets = (m.group(1).split("#")[0] for m in LINK.finditer(markdown))
    return [t for t in targets if t and not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def resolve(page: str, target: str) -> str:
    """A link target as a repository path, relative to the page that holds it."""
    parts = []
    for part in (PurePosixPath(page).parent / target).parts:
        if part == "..":
            assert parts, f"{page}: link {target} leaves the repository"
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def markdown_pages(files: set[str]) -> list[str]:
    return sorted(f for f in files if f == "README.md" or (f.startswith("docs/") and f.endswith(".md")))


def test_every_relative_link_points_to_a_tracked_file_or_folder():
    files = tracked()
    known = files | folders(files)
    pages = markdown_pages(files)
    assert "README.md" in pages and any(p.startswith("docs/results/") for p in pages)
    broken = [f"{page}: {target}" for page in pages for target in relative_links((ROOT / page).read_text())
              if resolve(page, target).rstrip("/") not in known]
    assert not broken, "links to files git does not track:\n" + "\n".join(broken)


def results_headline() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Results\n(.*?)(?=^## )", readme, flags=re.S | re.M)
    assert match, "README.md has no '## Results' section"
    return match.group(1)


def numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in NUMBER.findall(text)}


def test_every_number_of_the_results_headline_is_in_the_files_it_cites():
    files = tracked()
    section = results_headline()
    cited = set()
    for target in relative_links(section):
        path = resolve("README.md", target).rstrip("/")
        cited |= {f for f in files if f == path or f.startswith(path + "/")}
    texts = [f for f in cited if f.endswith((".md", ".txt", ".tex"))]
    assert texts, "the results headline cites no committed text file"
    evidence = numbers("\n".join((ROOT / f).read_text() for f in texts))
    missing = sorted(numbers(section) - evidence, key=float)
    assert not missing, f"numbers quoted in README's results headline but in none of {sorted(texts)}: {missing}"


@pytest.mark.parametrize("page, target, expected", [
    ("README.md", "docs/results/README.md", "docs/results/README.md"),
    ("docs/results/README.md", "../../README.md", "README.md"),
    ("docs/results/README.md", "./robustness/tables/", "docs/results/robustness/tables"),
])
def test_resolve(page, target, expected):
    assert resolve(page, target) == expected


def test_relative_links_skip_urls_and_anchors():
    text = "[a](http://x.org/y) [b](#top) [c](docs/a.md#sec) [d](mailto:x@y) ![e](fig.png)"
    assert relative_links(text) == ["docs/a.md", "fig.png"]


def blocks(markdown: str) -> list[str]:
    """Paragraphs, list items and table rows: the units a citation belongs to (code blocks left out)."""
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        if lines and all(line.startswith("|") for line in lines):
            out += lines
        else:
            out += [item for item in re.split(r"\n(?=- )", paragraph) if item.strip()]
    return out


def cited_numbers_missing(page: str, files: set[str]) -> list[str]:
    """'page: number (not in cited files)' for each number of a block that cites docs/results text files."""
    missing = []
    for block in blocks((ROOT / page).read_text()):
        paths = {resolve(page, t).rstrip("/") for t in relative_links(block)}
        cited = [f for f in files for p in paths if (f == p or f.startswith(p + "/")) and f.startswith("docs/results/")
                 and f.endswith((".md", ".txt", ".tex"))]
        if cited:
            evidence = numbers("\n".join((ROOT / f).read_text() for f in cited))
            missing += [f"{page}: {n} in {block[:80]!r}" for n in sorted(numbers(block) - evidence, key=float)]
    return missing


def test_every_number_next_to_a_cited_result_is_in_what_it_cites():
    files = tracked()
    pages = [p for p in markdown_pages(files) if not p.startswith("docs/results/")]  # those are generated from it
    assert {"README.md", "docs/outputs.md", "docs/studies.md", "docs/operations.md", "docs/scaling.md",
            "docs/benchmarks.md"} <= set(pages)
    missing = [m for page in pages for m in cited_numbers_missing(page, files)]
    assert not missing, "numbers quoted beside a citation but in none of the files it cites:\n" + "\n".join(missing)


def test_blocks_split_paragraphs_items_and_rows():
    text = "a 1 [x](a.md)\nstill a\n\n- item 2\n- item 3\n\n|h|\n|r 4|\n\n```\n5\n```\n"
    assert blocks(text) == ["a 1 [x](a.md)\nstill a", "- item 2", "- item 3", "|h|", "|r 4|"]


def test_readme_is_a_front_door():
    """At most 150 lines; the paper and the authors' code linked; both commands and the fast loop named; a
    link to each docs/ page; the results headline with its table (as analysis.headline writes it from the
    committed verdicts) and one figure."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "(https://arxiv.org/abs/2302.07950)" in readme and "(https://github.com/IDSIA/kohonen-vae)" in readme
    assert "Topological Neural Discrete Representation Learning à la Kohonen" in readme  # the paper's title
    assert "bash scripts/test.sh\n" in readme and "bash scripts/test.sh --fast" in readme
    assert "python -m sweep.run robustness\n" in readme and "python -m sweep.ui" in readme
    for page in ("outputs", "studies", "operations", "scaling", "benchmarks"):
        assert f"](docs/{page}.md)" in readme, page
    headline = results_headline()
    assert headline.count("![") == 1 and "| question | comparison (its table) | verdict |" in headline
    assert headline_main([str(ROOT / "docs/results"), str(ROOT / "README.md"), "--check"]) == 0, "the README's results table is stale"


def test_the_readmes_python_runs(tmp_path):
    """The quantiser-alone example, run as a user pastes it."""
    readme = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    indices, perplexity, used = done.stdout.rsplit(" ", 2)
    assert indices.startswith("tensor([") and 1 <= float(perplexity) <= 64 and 1 <= int(used) <= 32


# A verdict word claims what the evidence decides; the verdict a study's committed vs-reference Parquet holds
# (analysis.stats.verdict) is the one it may claim. Negations ("not level") are claims too: say "undecided".
VERDICT_WORD = re.compile(r"\b(level|same|catch(?:es)?\s+up|caught\s+up|better|worse|not\s+significant)\b", re.I)
MEANS = {"level": "level", "same": "level", "catch up": "level", "catches up": "level", "caught up": "level",
         "better": "better", "worse": "worse", "not significant": "undecided"}
MARKER = re.compile(r"<!-- verdict: ([\w-]+)/(.+?) -->")


def committed_verdicts() -> dict[tuple[str, str], str]:
    """(results folder, comparison label) -> the verdict of its primary test, from docs/results/*/tables."""
    import pandas as pd
    out = {}
    for path in (ROOT / "docs/results").glob("*/tables/*_vs_reference.parquet"):
        table = pd.read_parquet(path)
        for row in table[table["family"] == "primary"].itertuples():
            out[(path.parents[1].name, row.label)] = row.verdict
    return out


def verdict_problems(page: str, text: str, verdicts: dict) -> list[str]:
    """Each block (paragraph, list item, table row) with a verdict word: it carries a marker naming a committed
    comparison, and each of its words means the verdict of one of the comparisons it marks."""
    problems = []
    for block in blocks(text):
        marks = MARKER.findall(block)
        words = [" ".join(w.lower().split()) for w in VERDICT_WORD.findall(MARKER.sub("", block))]
        unknown = [f"{s}/{a}" for s, a in marks if (s, a) not in verdicts]
        problems += [f"{page}: marker {m} names no committed comparison in {block[:80]!r}" for m in unknown]
        if words and not marks:
            problems.append(f"{page}: {words[0]!r} without a verdict marker in {block[:80]!r}")
        decided = {verdicts.get(m) for m in marks}
        problems += [f"{page}: {w!r} but the marked verdicts are {sorted(filter(None, decided))} in {block[:80]!r}"
                     for w in dict.fromkeys(words) if marks and MEANS[w] not in decided]
    return problems


def test_verdict_words_agree_with_the_committed_verdicts():
    verdicts = committed_verdicts()
    assert verdicts[("convergence", "EMA-VQ decay 0.8")] == "undecided"  # the test reads real verdicts
    problems = verdict_problems("README.md", results_headline(), verdicts)
    problems += verdict_problems("docs/findings.md", (ROOT / "docs/findings.md").read_text(), verdicts)
    assert not problems, "\n".join(problems)


def test_a_planted_level_sentence_is_rejected():
    verdicts = committed_verdicts()
    marked = "- EMA-VQ at decay 0.8 ends level with KSOM <!-- verdict: convergence/EMA-VQ decay 0.8 -->\n"
    assert "'level' but the marked verdicts are ['undecided']" in verdict_problems("x.md", marked, verdicts)[0]
    assert "'level' without a verdict marker" in verdict_problems("x.md", "- EMA-VQ ends level.\n", verdicts)[0]
    assert "names no committed comparison" in verdict_problems(
        "x.md", "- worse <!-- verdict: convergence/no such arm -->\n", verdicts)[0]
    honest = "- EMA-VQ at decay 0.99 ends worse <!-- verdict: convergence/EMA-VQ -->; decay 0.8 undecided\n"
    assert verdict_problems("x.md", honest, verdicts) == []
