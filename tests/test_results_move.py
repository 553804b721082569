"""A results folder that moves keeps working: sweep.json names the store and the sweep folder
relative to the results folder, artifacts are `mlflow-artifacts:` URIs resolved under the folder
the store is in now (analysis/store.py); a missing store is a one-line error that creates nothing.
Real components: the smoke sweep's sqlite store and artifacts, the report CLI, the notebook
(nbclient, in test_analysis.py) and the resume CLI, each in its own process as a user would run them."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from sweep.tracking import file_name

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every test reads the smoke sweep


def _run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def test_sweep_json_has_no_absolute_paths(smoke_sweep):
    raw = (smoke_sweep / "sweep.json").read_text()
    meta = json.loads(raw)
    assert str(smoke_sweep.parent) not in raw
    assert (meta["dir"], meta["store"], meta["tracking_uri"], meta["ray_storage"]) == (
        smoke_sweep.name, "mlflow.db", None, None)
    exp = MlflowClient(f"sqlite:///{smoke_sweep.parent / 'mlflow.db'}").get_experiment(meta["experiment_id"])
    assert exp.artifact_location == "mlflow-artifacts:/robustness"


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"))


def test_a_moved_results_folder_regenerates_its_report_and_artifacts(moved):
    """The report of the moved copy, regenerated from its store and artifacts alone, equals what the sweep
    wrote before the move: the same summary, tables (byte for byte, and printed) and figures (pixel for
    pixel; the codebook and perturbation pictures come from the copy's artifacts)."""
    assert not (moved / "sweep.json").read_text().count(str(moved.parent))
    summary = pd.read_parquet(moved / "summary.parquet")
    tables = {p.name: p.read_bytes() for p in (moved / "tables").iterdir()}
    figures = {p.name: pixels(p) for p in (moved / "figures").glob("*.png")}
    assert {"robustness.txt", "robustness.tex", "robustness.md"} <= set(tables)
    assert {"loss.png", "perturbation.png", "codebook_vq.png"} <= set(figures)
    for folder in ("figures", "tables"):
        shutil.rmtree(moved / folder)
    (moved / "summary.parquet").unlink()
    done = _run("-m", "analysis.report", str(moved))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"reporting {moved}: trusting its sweep.json (report only folders your own sweeps "
                                  "wrote)\n")
    pd.testing.assert_frame_equal(pd.read_parquet(moved / "summary.parquet"), summary)
    assert {p.name: p.read_bytes() for p in (moved / "tables").iterdir()} == tables
    assert tables["robustness.txt"].decode().strip() in done.stdout
    assert sorted(p.name for p in (moved / "figures").glob("*.png")) == sorted(figures)
    for name, before in figures.items():
        assert np.array_equal(pixels(moved / "figures" / name), before), name

    # the notebook on a moved copy: test_analysis.test_notebook_runs_top_to_bottom

    listing = _run("-c", "import sys; from analysis.store import read_sweep; from mlflow import MlflowClient\n"
                         "meta = read_sweep(sys.argv[1]); client = MlflowClient(meta.tracking_uri)\n"
                         "runs = client.search_runs([meta.experiment_id], 'tags.status = \"finished\"')\n"
                         "print(len(runs), [a.path for a in client.list_artifacts(runs[0].info.run_id, 'pictures')])\n"
                         "print(runs[0].info.run_name)\n"
                         "print(client.download_artifacts(runs[0].info.run_id, 'pictures/perturbation.png'))",
                   str(moved))
    assert listing.returncode == 0, listing.stderr[-3000:]
    count, run_name, local = listing.stdout.strip().splitlines()
    assert count == "16 ['pictures/codebook_vq.png', 'pictures/perturbation.png']"
    # The artifact read through the moved store is the picture the sweep also copied into its folder.
    assert Path(local).read_bytes() == (moved / "pictures" / file_name(run_name) / "perturbation.png").read_bytes()


def test_a_missing_store_is_one_line_and_creates_nothing(moved):
    results = moved.parent
    (results / "mlflow.db").unlink()
    before = sorted(p.relative_to(results) for p in results.rglob("*"))
    for args in (["-m", "analysis.report", str(moved)], ["-m", "sweep.run", "--resume", str(moved)]):
        done = _run(*args)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        last = done.stderr.strip().splitlines()[-1]
        assert f"no MLflow store at {results / 'mlflow.db'}" in last and "Traceback" not in done.stderr, done.stderr
    uri = f"sqlite:///{results / 'mlflow.db'}"
    done = _run("-m", "analysis.report", "--tracking-uri", uri, "--study", "robustness", "--out", str(results / "r"))
    assert done.returncode == 2 and f"no MLflow store at {results / 'mlflow.db'}" in done.stderr
    assert sorted(p.relative_to(results) for p in results.rglob("*")) == before  # nothing created
