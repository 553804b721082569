"""Multi-worker trials: a trial as a Ray Train TorchTrainer of 2 processes inside the Tune sweep, killed
mid-way and resumed through `python -m sweep.run --resume`; the command-line options and their checks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from analysis.store import read_sweep
import metrics as M
from models.config import TrialConfig
from models.checkpoint import TrainState
from models.train import Progress, train
from sweep.plan import make_plan
from sweep.run import main

ROOT = Path(__file__).resolve().parents[1]
START = """
import sys
from pathlib import Path
from sweep.execute import run_sweep
from sweep.plan import make_plan
plan = make_plan("sensitivity", "smoke", seeds=1, workers=2,
                 overrides={"steps": 40, "eval_every": 10, "batch_size": 8})
plan.arms = plan.arms[:1]  # one trial: EMA-VQ N0=0 update-0=no
run_sweep(plan, results_dir=Path(sys.argv[1]))
"""


def _recorded_checkpoint(results: Path) -> bool:
    for snapshot in results.glob("*/ray/train-*/checkpoint_manager_snapshot.json"):
        try:
            return json.loads(snapshot.read_text()).get("latest_checkpoint_result") is not None
        except json.JSONDecodeError:  # being written
            return False
    return False


@pytest.mark.slow
def test_two_worker_trial_killed_midway_resumes_to_the_uninterrupted_end_state(tmp_path, photos):
    """Kill the sweep's driver (and its Ray) once the 2-worker trial has checkpointed, resume with
    `python -m sweep.run --resume`: the trial restarts from its checkpoint in every worker (its first report
    after the restart is the checkpoint's, flagged "resumed"), MLflow holds each validation once, and the
    end state equals that of an uninterrupted run (the one-process trainer with the whole batch, which
    tests/test_data_parallel.py shows equal to 2 workers)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", START, str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # wait until Ray Train has recorded a checkpoint in its run folder's snapshot
        deadline = time.time() + 400
        while not _recorded_checkpoint(tmp_path) and proc.poll() is None:
            assert time.time() < deadline, "no checkpoint within 400 s"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
        proc.wait()
    sweep_dir = next(tmp_path.glob("sensitivity-smoke-*"))
    meta = read_sweep(sweep_dir)
    assert meta.plan.workers == 2

    done = subprocess.run([sys.executable, "-m", "sweep.run", "--resume", str(sweep_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1/1 done (0 diverged, 0 failed)" in done.stdout

    results = [json.loads(line) for f in (sweep_dir / "ray").glob("run_workers_trial_*/result.json")
               for line in f.read_text().splitlines()]
    resumed = [r["step"] for r in results if r.get("resumed")]
    assert resumed and 10 <= resumed[0] < 40, results  # restarted from a checkpoint, not from step 0

    client = MlflowClient(meta.tracking_uri)
    (run,) = [r for r in client.search_runs([meta.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert run.data.tags[M.STATUS_TAG] == M.FINISHED and run.info.status == "FINISHED"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, M.VAL_LOSS))
    assert [s for s, _ in history] == [10, 20, 30, 40]
    state = TrainState.load(client.download_artifacts(run.info.run_id, "checkpoint/state.pt", str(tmp_path)))

    direct, end = [], {}

    def report(progress: Progress):
        direct.append((progress.step, progress.metrics[M.VAL_LOSS]))
        if progress.state is not None:
            end.update({k: v.clone() for k, v in progress.state.model.items()})

    train(TrialConfig.from_dict(run.data.params), report=report, data=photos, device="cpu")
    assert [v for _, v in history] == pytest.approx([v for _, v in direct], rel=1e-4)
    assert state.step == 40 and state.model.keys() == end.keys()
    for k, v in end.items():
        assert torch.allclose(state.model[k].double(), v.double(), rtol=1e-4, atol=1e-5), k


def test_workers_per_trial_option(capsys, tmp_path):
    """--workers-per-trial is in the plan and the dry run; 0 workers and a batch that does not split are
    refused before anything runs."""
    assert make_plan("sensitivity", "smoke").workers == 1
    assert main(["sensitivity", "--scale", "smoke", "--workers-per-trial", "4", "--cpus-per-trial", "4",
                 "--dry-run"]) == 0
    assert "4 CPU / 0 GPU each shared by 4 workers" in capsys.readouterr().out
    for argv, message in ((["--workers-per-trial", "0"], "--workers-per-trial 0: allowed: a whole number >= 1"),
                          (["--workers-per-trial", "3"], "batch_size=16 does not split over --workers-per-trial 3")):
        with pytest.raises(SystemExit) as exit_info:
            main(["sensitivity", "--scale", "smoke", *argv, "--results-dir", str(tmp_path)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_four_quarter_gpu_trials_share_one_gpu(tmp_path):
    """--gpus-per-trial 0.25 on a Ray that declares one (logical) GPU: the four trials of a sweep run at
    once, each reporting GPU 0 as its assignment."""
    import ray

    from sweep.execute import run_sweep

    plan = make_plan("sensitivity", "smoke", seeds=1, gpus=0.25, overrides={"steps": 10, "eval_every": 10})
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        sweep_dir = run_sweep(plan, results_dir=tmp_path)
    finally:
        ray.shutdown()
    results = [json.loads(f.read_text().splitlines()[0]) for f in (sweep_dir / "ray").glob("*/result.json")]
    assert len(results) == 4 and all(r["gpu_ids"] == ["0"] for r in results), results
    meta = read_sweep(sweep_dir)
    runs = [r for r in MlflowClient(meta.tracking_uri).search_runs([meta.experiment_id])
            if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 4 and all(r.data.tags[M.STATUS_TAG] == M.FINISHED for r in runs)
    assert max(r.info.start_time for r in runs) < min(r.info.end_time for r in runs)  # all four at once
