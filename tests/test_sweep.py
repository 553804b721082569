"""The sweep end to end with real components: Ray Tune (local, multi-node via
ray.cluster_utils.Cluster), an MLflow sqlite store and a real `mlflow server`,
a driver process killed and resumed, and the command-line checks."""
from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
from mlflow.tracking import MlflowClient

from analysis.store import read_sweep
from models.config import TrialConfig
from models.train import train
from sweep.execute import run_sweep
from sweep.plan import Plan, make_plan
from sweep.run import main, next_seeds
from sweep.scales import PAPER_CIFAR_RESOURCES
from sweep.tracking import file_name
from sweep.ui import wait_healthy

ROOT = Path(__file__).resolve().parents[1]


def child_runs(tracking_uri: str, study: str):
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id])
    return client, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def history(client, run, metric="val/loss"):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)]


@pytest.mark.slow
def test_smoke_sweep_logs_one_run_per_trial_and_records_divergence(smoke_sweep):
    """Every trial is one child run with all config fields as params and its validation curve, and its test
    loss where validation fell, whose value at the step validation chose is the run's test/final_loss and the
    final loss of its summary row (the best validation loss its selection loss); a trial whose loss becomes
    NaN is tagged diverged while the others finish."""
    meta = read_sweep(smoke_sweep)
    client, runs = child_runs(meta.tracking_uri, "robustness")
    assert len(runs) == 18  # 8 arms x 2 seeds + the diverging arm x 2 seeds
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {meta.parent_run_id}
    by_status = {}
    for r in runs:
        by_status.setdefault(r.data.tags["status"], []).append(r)
        cfg = TrialConfig.from_dict(r.data.params)  # params round-trip into the trial's config
        assert cfg.steps == 40 and cfg.width == 16 and r.data.tags["seed"] == str(cfg.seed)
        assert r.data.tags["study"] == "robustness" and r.data.tags["scale"] == "smoke"
    assert len(by_status["finished"]) == 16 and len(by_status["diverged"]) == 2
    rows = pd.read_parquet(smoke_sweep / "summary.parquet").set_index("run_id")  # the report's summary
    for bad in by_status["diverged"]:
        assert float(bad.data.params["lr"]) == 1e6 and "diverged" not in bad.data.metrics  # a status, not a curve
    for r in by_status["finished"]:
        curve = history(client, r)
        assert [s for s, _ in curve] == [20, 40]
        assert {"train/loss", "val/perplexity_vq", "val/codes_used_vq", "train/perplexity_vq"} <= set(r.data.metrics)
        # summaries: one point each, at step 0 (a bar per run in MLflow's UI)
        for summary in ("val/best_loss", "topography/loss_offset_3", "topography/smoothness_vq", "time/train_total_s"):
            assert [m.step for m in client.get_metric_history(r.info.run_id, summary)] == [0], summary
        assert r.data.metrics["val/best_loss"] == min(v for _, v in curve)
        # the test loss: logged where validation fell, and at the step validation chose as the summary
        val, test = dict(curve), {m.step: m.value for m in client.get_metric_history(r.info.run_id, "test/loss")}
        assert sorted(test) == [s for s in sorted(val) if val[s] < min([v for t, v in val.items() if t < s],
                                                                       default=math.inf)]
        assert r.data.metrics["test/final_loss"] == test[min(val, key=val.get)]
        assert rows.loc[r.info.run_id, "final_loss"] == r.data.metrics["test/final_loss"]
        assert rows.loc[r.info.run_id, "selection_loss"] == r.data.metrics["val/best_loss"]
        assert [a.path for a in client.list_artifacts(r.info.run_id, "checkpoint")] == ["checkpoint/state.pt"]
        assert [a.path for a in client.list_artifacts(r.info.run_id, "pictures")] == [
            "pictures/codebook_vq.png", "pictures/perturbation.png"]
        assert (smoke_sweep / "pictures" / file_name(r.info.run_name) / "perturbation.png").exists()
    # The curve logged is the trainer's own: rerun one trial directly and compare.
    ref = next(r for r in by_status["finished"] if r.data.params["neighbours"] == "hard")
    direct = []
    train(TrialConfig.from_dict(ref.data.params), report=lambda p: direct.append((p.step, p.metrics["val/loss"])))
    logged = history(client, ref)
    assert [s for s, _ in logged] == [s for s, _ in direct]
    assert [v for _, v in logged] == pytest.approx([v for _, v in direct], rel=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=600)  # minutes on a loaded 2-core machine
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=300)  # its workers end slowly on a loaded machine


@pytest.mark.slow
def test_a_multi_node_sweep_logs_to_a_tracking_server(tmp_path, mlflow_server):
    """A head with no CPUs and two 1-CPU worker nodes: the two trials run one on each worker. --tracking-uri
    http://... sends the runs to the server instead of the local store; the trials run VQ-VAE-2
    (model=vqvae2), whose two levels are logged apart."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        plan = make_plan("sensitivity", "smoke", seeds=1, overrides={"model": "vqvae2"})
        plan.arms = plan.arms[:2]
        run_sweep(plan, results_dir=tmp_path / "results", tracking_uri=mlflow_server)
    finally:
        ray.shutdown()
        cluster.shutdown()
    client, runs = child_runs(mlflow_server, "sensitivity")
    assert len(runs) == 2 and all(r.data.tags["status"] == "finished" for r in runs)
    assert {r.data.tags["node_id"] for r in runs} == {w.node_id for w in workers}
    assert all([s for s, _ in history(client, r)] == [20, 40] for r in runs)
    for r in runs:
        assert r.data.params["model"] == "vqvae2"
        assert {"val/perplexity_top", "val/perplexity_bottom", "topography/smoothness_top",
                "topography/smoothness_bottom"} <= set(r.data.metrics)
        assert {a.path for a in client.list_artifacts(r.info.run_id, "pictures")} == {
            "pictures/codebook_top.png", "pictures/codebook_bottom.png", "pictures/perturbation.png"}
    assert not (tmp_path / "results" / "mlflow.db").exists()


@pytest.mark.slow
def test_killed_driver_resumes_with_nothing_lost_or_duplicated(tmp_path):
    """Kill the driver (and its local Ray) mid-sweep, resume: every trial ends with exactly one
    run whose curve has each validation step once, equal to an uninterrupted run's."""
    cmd = [sys.executable, "-m", "sweep.run", "sensitivity", "--scale", "smoke", "--seeds", "1",
           "--set", "steps=200", "--set", "eval_every=20", "--results-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "2/4 done" in line:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
        proc.wait()
    assert any("2/4 done" in line for line in seen), "".join(seen)
    assert any(line.startswith("plan: 4 trials (4 arms x 1 seed), 2 at once, smoke scale;") for line in seen)
    assert all(len(line.rstrip("\n")) <= 120 for line in seen if line.startswith(("[", "plan:"))), "".join(seen)
    assert any("ETA" in line for line in seen if line.startswith("[")), "".join(seen)
    sweep_dir = next(tmp_path.glob("sensitivity-smoke-*"))
    meta = read_sweep(sweep_dir)
    _, before = child_runs(meta.tracking_uri, "sensitivity")
    assert 2 <= sum(r.data.tags["status"] == "finished" for r in before) < 4

    # A changed grid is refused; the same grid (or --resume alone) continues.
    for changed in (cmd[:6] + ["--seeds", "3"], cmd[:3] + ["--set", "steps=100"]):
        bad = subprocess.run(changed + ["--resume", str(sweep_dir)], cwd=ROOT, capture_output=True, text=True)
        assert bad.returncode == 2 and "different grid" in bad.stderr, bad.stderr
    done = subprocess.run([sys.executable, "-m", "sweep.run", "--resume", str(sweep_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    client, runs = child_runs(meta.tracking_uri, "sensitivity")
    assert len(runs) == 4
    assert len({r.data.tags["ray_trial_id"] for r in runs}) == 4
    assert all(r.data.tags["status"] == "finished" and r.info.status == "FINISHED" for r in runs)
    for r in runs:
        assert [s for s, _ in history(client, r)] == list(range(20, 201, 20))
    ref = runs[0]
    direct = []
    train(TrialConfig.from_dict(ref.data.params), report=lambda p: direct.append((p.step, p.metrics["val/loss"])))
    logged = history(client, ref)
    assert [s for s, _ in logged] == [s for s, _ in direct]
    assert [v for _, v in logged] == pytest.approx([v for _, v in direct], rel=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["robustnes"], "study 'robustnes' is unknown"),
    (["robustness", "--scale", "huge"], "scale 'huge' is unknown"),
    (["robustness", "--set", "tau=0"], "tau=0.0 must be > 0"),
    (["robustness", "--set", "n0=1"], "would override what study 'robustness' sweeps"),
    (["robustness", "--set", "widht=3"], "'widht' is not a config field"),
    (["robustness", "--set", "lr"], "is not FIELD=VALUE"),
    (["robustness", "--set", "steps=ten"], "steps='ten' is not a valid int"),
    (["robustness", "--seeds", "0"], "--seeds 0 must be >= 1"),
    (["robustness", "--dataset", "cifar10"], "needs --data-dir"),
    (["robustness", "--dataset", "mnist", "--data-dir", "/tmp"], "dataset='mnist' is unknown"),
    (["robustness", "--scale", "smoke", "--set", "precision=bf16"], "precision=bf16 needs GPU trials"),
    (["robustness", "--set", "precision=fp16"], "precision='fp16' is unknown; allowed: fp32, bf16"),
    (["--resume", "/nonexistent/sweep"], "no sweep.json"),
    ([], "give a STUDY"),
    (["robustness", "--add-seeds", "2"], "--add-seeds: allowed only with --resume SWEEP_DIR"),
    (["--resume", "/nonexistent/sweep", "--add-seeds", "0"], "--add-seeds '0': allowed: a whole number of seeds >= 1"),
    (["--resume", "/nonexistent/sweep", "--add-seeds", "two"], "--add-seeds 'two': allowed: a whole number"),
    (["--resume", "/nonexistent/sweep", "--add-seeds", "1.5"], "--add-seeds '1.5': allowed: a whole number"),
])
def test_bad_command_lines_fail_before_anything_runs(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--results-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_dry_run_lists_every_trial(capsys):
    assert main(["ablation", "--scale", "smoke", "--seeds", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "16 trials (8 arms x 2 seeds)" in out
    assert out.count("KSOM gaussian") == 8 and out.count(" 1D ") == 4  # run names follow the swept axes


@pytest.mark.parametrize("dataset, model, size, batch, lr, seeds, cpus, gpus", [
    ("cifar10", "vqvae", 32, 256, 1e-3, 10, *PAPER_CIFAR_RESOURCES),  # gpus: measured packing, or 0.25 estimated
    ("imagenet", "vqvae2", 256, 128, 3e-4, 5, 4, 1),
    ("celeba_afhq", "vqvae2", 256, 128, 3e-4, 5, 4, 1),
])
def test_paper_scale_follows_the_data_set(dataset, model, size, batch, lr, seeds, cpus, gpus):
    """--scale paper is the paper's experiment for each of its data sets (Appendix A)."""
    plan = make_plan("robustness", "paper", overrides={"dataset": dataset, "data_dir": "/data"})
    base = plan.base
    assert (base["model"], base["image_size"], base["batch_size"], base["lr"]) == (model, size, batch, lr)
    assert (base["codebook_size"], base["code_dim"], base["width"], base["steps"]) == (512, 64, 128, 30_000)
    assert len(plan.seeds) == seeds and (plan.cpus, plan.gpus) == (cpus, gpus)


def test_added_seeds_follow_the_highest_and_skip_the_tuning_seed():
    assert next_seeds([0, 1, 2], 3) == [3, 4, 5]
    assert next_seeds([1, 2, 3], 2, skip=0) == [4, 5]
    assert next_seeds([1, 2, 3], 3, skip=5) == [4, 6, 7]  # a tuning seed above the confirmation seeds is skipped
    assert next_seeds([0, 1, 2, 7], 1) == [8]


LOCAL_RAY = {**os.environ, "RAY_ADDRESS": "local"}  # a Ray of its own, never another sweep's cluster on this node
TWO_ARMS = """\
name: two-arms
description: EMA-VQ and KSOM hard, one seed, to grow
arms:
  - {neighbours: none}
  - {neighbours: hard, grid_dim: 2, tau: 0.1}
reference: {neighbours: none}
"""


@pytest.mark.slow
def test_add_seeds_trains_only_the_new_seeds_of_a_finished_sweep(tmp_path):
    """A finished smoke sweep (2 arms x seed 0) given --add-seeds 1: refused while its parent run is not finished;
    then it trains seed 1 of both arms and nothing else (every old run and its history as it was, no run twice),
    records the seed in sweep.json's plan and remakes the tables (2 seeds per arm)."""
    study = tmp_path / "two-arms.yaml"
    study.write_text(TWO_ARMS)
    first = subprocess.run([sys.executable, "-m", "sweep.run", str(study), "--scale", "smoke", "--seeds", "1", "--set",
                            "steps=40", "--set", "eval_every=20", "--results-dir", str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=900, env=LOCAL_RAY)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    sweep_dir = next(tmp_path.glob("two-arms-smoke-*"))
    meta = read_sweep(sweep_dir)
    client, before = child_runs(meta.tracking_uri, "two-arms")
    old = {r.info.run_id: (r.info.end_time, r.data.params["seed"], history(client, r)) for r in before}
    assert sorted(seed for _, seed, _ in old.values()) == ["0", "0"]
    add = [sys.executable, "-m", "sweep.run", "--resume", str(sweep_dir), "--add-seeds", "1"]

    client.set_terminated(meta.parent_run_id, "KILLED")  # as a sweep stopped short leaves it
    refused = subprocess.run(add, cwd=ROOT, capture_output=True, text=True, timeout=300, env=LOCAL_RAY)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "has not finished (its parent run is KILLED)" in refused.stderr
    client.set_terminated(meta.parent_run_id, "FINISHED")

    done = subprocess.run(add, cwd=ROOT, capture_output=True, text=True, timeout=900, env=LOCAL_RAY)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"adding seeds 1 to {sweep_dir}" in done.stdout
    client, after = child_runs(meta.tracking_uri, "two-arms")
    assert len(after) == 4 and set(old) <= {r.info.run_id for r in after}
    for r in after:
        if r.info.run_id in old:
            assert (r.info.end_time, r.data.params["seed"], history(client, r)) == old[r.info.run_id]
        else:
            assert r.data.params["seed"] == "1" and r.data.tags["status"] == "finished"
            assert [s for s, _ in history(client, r)] == [20, 40]
    assert read_sweep(sweep_dir).plan.added_seeds == [1]
    table = pd.read_parquet(sweep_dir / "tables" / "two-arms.parquet")
    assert set(table.seeds) == {2}
    assert client.get_run(meta.parent_run_id).info.status == "FINISHED"
