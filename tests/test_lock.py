"""The lock (requirements.lock) and pyproject.toml must name the same dependencies.

A dependency added to pyproject.toml without regenerating the lock (bash scripts/lock.sh), or
left in the lock after leaving pyproject.toml, fails here, so a fresh machine always installs
what the suite was tested with.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, Requirement]:
    """Every requirement of the project: dependencies and all extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in reqs}


def locked() -> tuple[dict[str, str], set[str]]:
    """(name -> pinned version, names the lock says the project asks for directly)."""
    pins, direct, current = {}, set(), None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if pin:
            current = canonicalize_name(pin.group(1))
            pins[current] = pin.group(2)
        elif current and "kohonen-vq (pyproject.toml)" in line:
            direct.add(current)
    return pins, direct


def test_every_declared_dependency_is_locked_at_a_version_it_allows():
    pins, _ = locked()
    for name, req in declared().items():
        if name == "torch":
            continue  # installed first from scripts/torch.txt (CPU build), checked below
        assert name in pins, f"{name} is in pyproject.toml but not in requirements.lock: run bash scripts/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {req.specifier}"


def test_the_lock_asks_for_nothing_pyproject_does_not_declare():
    _, direct = locked()
    stale = sorted(direct - set(declared()))
    assert not stale, f"requirements.lock still lists {stale} for the project: run bash scripts/lock.sh"


def test_torch_pin_is_the_one_pyproject_allows_and_the_lock_leaves_out():
    pins, _ = locked()
    assert "torch" not in pins  # the CPU or CUDA build is the user's choice, installed first
    pin = Requirement((ROOT / "scripts/torch.txt").read_text().split("#")[0].strip())
    assert pin.name == "torch" and len(pin.specifier) == 1 and next(iter(pin.specifier)).operator == "=="
    assert declared()["torch"].specifier.contains(next(iter(pin.specifier)).version)
    assert "pip install --quiet -r scripts/torch.txt" in (ROOT / "scripts/test.sh").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme
    assert (ROOT / ".ci/run").read_text().strip().endswith("bash scripts/test.sh")
