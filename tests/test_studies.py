"""Studies as data: the YAML study files, their plans and their refusals."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from models.config import TrialConfig
from sweep.plan import make_plan
from sweep.scales import SCALES

ROOT = Path(__file__).resolve().parents[1]

# The paper's Tables 1-4 written out by hand, in the paper's row order:
# (neighbours, grid_dim, tau, n0, update_empty); EMA-VQ keeps the config's grid_dim 2 and tau 0.1,
# which it does not use (its neighbourhood is the identity, Remark 3.1).
EMA, HARD, GAUSS = ("none", 2, 0.1), ("hard", 2, 0.1), ("gaussian", 2, 0.1)
PAPER_TABLES = {
    "sensitivity": [(*EMA, 0, False), (*EMA, 0, True), (*EMA, 1, False), (*EMA, 1, True)],  # Table 1
    "comparison": [(*EMA, 1, True), (*HARD, 1, True), (*GAUSS, 1, True)],  # Table 2
    "robustness": [(*EMA, 0, False), (*HARD, 0, False), (*EMA, 0, True), (*HARD, 0, True),  # Table 3
                   (*EMA, 1, False), (*HARD, 1, False), (*EMA, 1, True), (*HARD, 1, True)],
    "ablation": [(n, d, t, 1, True) for n in ("hard", "gaussian")  # Table 4
                 for d, t in ((1, 0.1), (2, 1.0), (2, 0.1), (2, 0.01))],
}


@pytest.mark.parametrize("scale", ["smoke", "cpu"])
@pytest.mark.parametrize("study", list(PAPER_TABLES))
def test_paper_studies_plan_exactly_the_trials_of_tables_1_to_4(study, scale):
    """Each shipped paper study plans the trials the hard-coded grids planned (same order, same fields):
    its table's rows, each with every seed of the scale, on the scale's config."""
    plan = make_plan(study, scale)
    seeds = range(SCALES[scale].seeds)
    expected = [TrialConfig(**SCALES[scale].config, neighbours=n, grid_dim=d, tau=t, n0=n0, update_empty=u, seed=s)
                for n, d, t, n0, u in PAPER_TABLES[study] for s in seeds]
    assert plan.trials() == expected
    assert plan.seeds == list(seeds)


def test_paper_study_at_paper_scale_on_imagenet_is_vqvae2_with_five_seeds():
    plan = make_plan("robustness", "paper", overrides={"dataset": "imagenet", "data_dir": "/data"})
    trials = plan.trials()
    assert len(trials) == 8 * 5
    assert [(c.neighbours, c.grid_dim, c.tau, c.n0, c.update_empty) for c in trials[::5]] == PAPER_TABLES["robustness"]
    assert {(c.model, c.image_size, c.batch_size, c.lr) for c in trials} == {("vqvae2", 256, 128, 3e-4)}


def test_study_files_ship_inside_the_wheel(tmp_path):
    """`pip install .` (not editable) installs the study files: they are package data of the wheel."""
    source = tmp_path / "src"  # a copy, so that the build leaves nothing in the repository
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", "build", "results", "docs", "tests", "notebooks", "benchmarks"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), "-q"], check=True, capture_output=True)
    wheel = next(tmp_path.glob("kohonen_vq-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"sweep/studies/{p.name}" for p in (ROOT / "sweep" / "studies").glob("*.yaml")}
    assert {f"sweep/studies/{s}.yaml" for s in PAPER_TABLES} <= shipped <= names
    assert {"sweep/plan.py", "sweep/study.py", "sweep/scales.py"} <= names
