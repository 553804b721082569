"""Shared fixtures of the core test suite (tests of models/).

Independent reference of the neighbourhood matrix A^(t) (paper Eqs. 4-5),
written with plain Python loops so that the tests never check the code against itself.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Tiny models on a shared 2-core machine: intra-op threads only add contention (threads of one tiny
# step wait on each other and on the other tests' processes).
torch.set_num_threads(1)


def reference_coords(grid: tuple[int, ...]) -> list[tuple[int, ...]]:
    """G(k) = k in 1D and G(k) = (k mod W, k // W) on a W x H grid."""
    k_total = math.prod(grid)
    if len(grid) == 1:
        return [(k,) for k in range(k_total)]
    width = grid[0]
    return [(k % width, k // width) for k in range(k_total)]


def reference_matrix(kind: str, grid: tuple[int, ...], t: int, tau: float, form: str = "paper") -> torch.Tensor:
    """Dense A^(t) in float64 straight from Eqs. 4-5 (and the released Gaussian form), A_ii = 1."""
    g = reference_coords(grid)
    radius = 1.0 if len(grid) == 1 else math.sqrt(2.0)  # d(G): 2 neighbours in 1D, 8 in 2D
    shrink = 1.0 + t * tau
    a = torch.zeros(len(g), len(g), dtype=torch.float64)
    for i, gi in enumerate(g):
        for j, gj in enumerate(g):
            dist = math.dist(gi, gj)
            if i == j:
                a[i, j] = 1.0
            elif kind == "none":
                a[i, j] = 0.0
            elif kind == "hard":
                a[i, j] = 1.0 / shrink if dist <= radius + 1e-9 else 0.0
            elif form == "paper":
                a[i, j] = math.exp(-dist ** 2 / (1.0 / shrink))  # sigma(t)^2 = 1 / (1 + t tau)
            else:
                a[i, j] = math.exp(-dist * shrink / 10.0)
    return a


@pytest.fixture(scope="session")
def photos():
    """The embedded `photos` data set, loaded once for the whole session."""
    from models.data import load_photos
    return load_photos()


@pytest.fixture(scope="session")
def ref_matrix():
    """`reference_matrix(kind, grid, t, tau, form)`: the loop reference of A^(t)."""
    return reference_matrix


@pytest.fixture(scope="session")
def ref_coords():
    """`reference_coords(grid)`: the loop reference of the grid map G."""
    return reference_coords


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    """A real robustness sweep at smoke scale (2 seeds) on a local Ray with an embedded MLflow
    store, plus one extra trial whose huge learning rate makes it diverge; returns its folder."""
    import ray

    from sweep.execute import run_sweep
    from sweep.plan import make_plan

    plan = make_plan("robustness", "smoke", seeds=2)
    plan.arms.append({"neighbours": "none", "n0": 1, "update_empty": True, "lr": 1e6})  # Adam overflows in 2 steps
    plan.swept.append("lr")  # it differs between arms now: run names and tags show it
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        return run_sweep(plan, results_dir=tmp_path_factory.mktemp("results"))
    finally:
        ray.shutdown()


USER_STUDY = """\
# my question: how do the learning rate and the codebook size interact for KSOM?
name: lr-by-k
description: learning rate x codebook size, KSOM hard 2D
fixed: {neighbours: hard, grid_dim: 2, tau: 0.1}
axes:
  lr: [0.0003, 0.001, 0.003]
  codebook_size: [16, 64]
reference: {lr: 0.001}
metrics: [final_loss, steps_10]
"""


@pytest.fixture(scope="session")
def user_study_sweep(tmp_path_factory):
    """`python -m sweep.run lr-by-k.yaml`, a user's two-axis study (6 trials), at cpu scale with short trials
    (240 steps, validated every 20), in its own process as a user runs it, its output not a terminal;
    returns (the finished process, its results folder). The study test reads what it wrote, the progress
    test what it printed."""
    folder = tmp_path_factory.mktemp("user-study")
    study = folder / "lr-by-k.yaml"
    study.write_text(USER_STUDY)
    done = subprocess.run([sys.executable, "-m", "sweep.run", str(study), "--scale", "cpu", "--seeds", "1", "--set",
                           "steps=240", "--set", "eval_every=20", "--results-dir", str(folder / "results")], cwd=ROOT,
                          env={**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=900)
    return done, folder / "results"


@pytest.fixture
def moved(smoke_sweep, tmp_path):
    """The smoke sweep's whole results folder copied to a new place, the original out of reach
    (renamed away for the test, put back afterwards); yields the copy's sweep folder."""
    original = smoke_sweep.parent
    copy = tmp_path / "elsewhere" / "results-copy"
    shutil.copytree(original, copy)
    away = original.with_name(original.name + "-away")
    original.rename(away)
    try:
        yield copy / smoke_sweep.name
    finally:
        away.rename(original)


SWEEP_FIXTURES = {"smoke_sweep", "moved", "user_study_sweep"}  # each runs a real Ray sweep the first time a test asks for it


def pytest_collection_modifyitems(items):
    """A test that asks for a real sweep is an end-to-end test: `scripts/test.sh --fast` must leave it out."""
    for item in items:
        if SWEEP_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None:
            raise pytest.UsageError(f"{item.nodeid} runs a real sweep: mark it @pytest.mark.slow")
