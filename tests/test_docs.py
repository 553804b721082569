"""Links that cannot rot: every relative link in README.md and docs/**/*.md points to a file or
folder tracked by git, and every number the README's results headline quotes appears in the
committed docs/results files that headline cites."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

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
