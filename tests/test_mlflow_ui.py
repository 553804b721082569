"""`python -m sweep.ui` against a real `mlflow ui` on a moved copy of the smoke sweep's results,
its deep link opened in headless Chromium: the page is the runs table with the sweep's runs, not
MLflow 3's GenAI overview; the server serves the copy's artifacts; the parent run holds the answer."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis.store import read_sweep

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs it")
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium when run as root)")
    return found


def rendered_text(url: str, profile: Path) -> str:
    """The page's visible text after its scripts ran, from headless Chromium's DOM."""
    done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = re.sub(r"<(style|script)\b.*?</\1>", " ", done.stdout, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


@pytest.fixture
def ui(moved):
    """`python -m sweep.ui` on the moved copy; yields (sweep folder, base URL, deep link); stopped after, when
    it must have printed nothing on stderr (the server's own go to mlflow-ui.log in the results folder)."""
    proc = subprocess.Popen([sys.executable, "-m", "sweep.ui", str(moved.parent), "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "robustness: http" in line:
                break
        out = "".join(lines)
        base = re.search(r"MLflow UI on (http://127\.0\.0\.1:\d+)", out)
        link = re.search(r"robustness: (\S+)", out)
        assert base and link, out
        yield moved, base.group(1), link.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)  # sweep.ui stops the mlflow ui it started
        proc.wait(timeout=60)
    assert proc.stderr.read() == ""
    assert "Uvicorn running" in (moved.parent / "mlflow-ui.log").read_text()


@pytest.mark.slow
def test_deep_link_opens_the_runs_table_in_chromium(ui):
    sweep_dir, base, link = ui
    meta = read_sweep(sweep_dir)
    assert link == f"{base}/#/experiments/{meta.experiment_id}/runs?workflowType=machine_learning"
    text = rendered_text(link, sweep_dir.parent.parent / "chromium-profile")
    assert text.lstrip().startswith("Runs - Experiment"), text[:500]
    assert meta.name in text and "19 matching runs" in text, text[:3000]  # the parent and its 18 trials
    assert "Detect Issues" not in text and "Token Usage" not in text  # not the GenAI overview

    client = MlflowClient(base)  # the server serves the copy's artifacts (mlflow-artifacts: URIs)
    runs = client.search_runs([meta.experiment_id], "tags.status = 'finished'")
    assert len(runs) == 16
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id, "pictures")] == [
        "pictures/codebook_vq.png", "pictures/perturbation.png"]


def test_a_missing_store_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sweep.ui", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and f"no MLflow store at {tmp_path / 'mlflow.db'}" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_parent_run_holds_the_answer_and_child_runs_read(smoke_sweep):
    """The sweep's parent run: settings as params, a description with the grid and the main table, the
    report as artifacts, MLflow's source fields; child runs named by what the study sweeps, each a tag."""
    meta = read_sweep(smoke_sweep)
    client = MlflowClient(meta.tracking_uri)
    parent = client.get_run(meta.parent_run_id)
    params = parent.data.params
    assert (params["study"], params["scale"], params["seeds"], params["trials"]) == ("robustness", "smoke", "0,1", "18")
    assert params["swept"] == "n0,update_empty,neighbours,lr" and params["base.steps"] == "40"
    assert "neighbours" not in params and "base.neighbours" not in params  # swept, so not a shared setting
    note = parent.data.tags["mlflow.note.content"]
    table = (smoke_sweep / "tables" / "robustness.md").read_text().strip()
    assert "| grid | n0 {0, 1} x update_empty {False, True} x neighbours {none, hard} x lr {0.001, 1000000.0}" in note
    assert "18: 16 finished, 2 diverged, 0 failed or unfinished" in note and table in note
    assert parent.info.status == "FINISHED"
    # The sweep's wall time: at least the span of its trials, at most the parent run's life plus the store's
    # creation before the parent run (generous under load); the description shows the same value.
    wall = parent.data.metrics["time/sweep_wall_s"]
    children = client.search_runs([meta.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    span = (max(r.info.end_time for r in children) - min(r.info.start_time for r in children)) / 1e3
    assert span <= wall <= (parent.info.end_time - parent.info.start_time) / 1e3 + 60, (span, wall)
    assert f"| wall time | {wall / 60:.1f} min |" in note
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"tables", "figures", "summary.parquet", "sweep.json"} <= top
    assert "tables/robustness.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}
    for run in (parent, *client.search_runs([meta.experiment_id], "tags.status = 'finished'")):
        tags = run.data.tags
        assert tags["mlflow.user"] and tags["mlflow.source.name"] == "python -m sweep.run"
        assert len(tags["mlflow.source.git.commit"]) == 40
    child = client.search_runs([meta.experiment_id], "tags.n0 = '1' and tags.neighbours = 'hard' and "
                               "tags.update_empty = 'True' and tags.seed = '0'")
    assert [r.info.run_name for r in child] == ["KSOM hard N0=1 update-0=yes lr=0.001 seed=0"]
    (record,) = child[0].inputs.dataset_inputs  # the data set, once although every validation carries it
    assert (record.dataset.name, len(record.dataset.digest)) == ("photos", 16)
    assert json.loads(record.dataset.profile) == {"train_images": 7, "val_images": 192, "test_images": 168}
    assert all(r.inputs.dataset_inputs[0].dataset.digest == record.dataset.digest
               for r in client.search_runs([meta.experiment_id], "tags.status = 'finished'"))
    images = [a.path for a in client.list_artifacts(child[0].info.run_id, "images")]
    assert any(p.startswith("images/perturbation") for p in images), images  # log_image with a key
