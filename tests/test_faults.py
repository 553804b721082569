"""Faults and hostile input: what a sweep refuses, how it stops, and that it resumes with nothing lost.

Real components throughout: checkpoints written by torch.save, Ray Tune (local, or a
ray.cluster_utils.Cluster), MLflow (sqlite store and a real `mlflow server` on 127.0.0.1), a real tmpfs
for the full disk. Every refusal is checked for its exit status (2), its one line, and that nothing was
created; every stopped sweep for its line, its exit status, how its runs are marked, and that the resume
ends with exactly one run per trial whose curve has every validation step once.
The CIFAR reader's own hostile-file tests are in test_data.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from analysis.report import write_report
from analysis.store import Sweep, read_sweep
import metrics as M
from models.checkpoint import TrainState
from models.config import ConfigError
from models.data import CIFAR
from sweep import cluster, preflight
from sweep.execute import _new_folder, retry_hint
from sweep.tune_state import complete, complete_sweep
from sweep.plan import make_plan
from sweep.run import main
from helpers import RunsCommand, write_fake_cifar

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--scale", "smoke", "--set", "steps=100", "--set", "eval_every=20"]  # 4 trials of 5 validations


def sweep_cmd(study: str, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sweep.run", study, *SMOKE, "--results-dir", str(results), *extra]


def run(cmd: list[str], env: dict | None = None, stop_at: str | None = None, action=None,
        timeout: float = 400) -> tuple[int, str, str]:
    """Run a command line (in its own session, as a terminal job, with a Ray of its own: RAY_ADDRESS=local,
    never a cluster someone else started on this machine); when a stdout line contains `stop_at`, call
    action(process). Returns (exit status, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RAY_ADDRESS": "local", **(env or {})}, start_new_session=True)
    out = []
    try:
        if stop_at:
            for line in proc.stdout:
                out.append(line)
                if stop_at in line:
                    action(proc)
                    break
        rest, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, "".join(out) + rest, err


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are the sweep's own (not Ray's or MLflow's log lines)."""
    return [line for line in stderr.splitlines() if line.startswith(("python -m", "error:", "interrupted:",
                                                                      "failed:"))]


def child_runs(tracking_uri: str, study: str, parent: str) -> list:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(study)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")


def assert_one_run_per_trial_with_every_step(meta: dict, n_trials: int, steps: list[int]):
    client = MlflowClient(meta.tracking_uri)
    runs = child_runs(meta.tracking_uri, meta.study, meta.parent_run_id)
    assert len(runs) == n_trials and len({r.data.tags["ray_trial_id"] for r in runs}) == n_trials
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.tags["status"] == "finished", r.info.run_name
        for metric in (M.VAL_LOSS, M.TRAIN_LOSS):
            logged = sorted(m.step for m in client.get_metric_history(r.info.run_id, metric))
            assert logged == steps, (r.info.run_name, metric, logged)  # each step once: nothing lost or doubled
    assert client.get_run(meta.parent_run_id).info.status == "FINISHED"


def sweep_meta(results: Path) -> Sweep:
    (found,) = results.glob("*/sweep.json")
    return read_sweep(found.parent)  # its paths resolved (sweep.json holds them relative to the results folder)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    """A state.pt replaced by someone who can write the checkpoint storage does not run on the worker;
    the trainer's own states (tensors, generator state, plain config) load."""
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "config": RunsCommand(marker)}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        TrainState.load(tmp_path / "evil.pt")
    assert not marker.exists()
    good = TrainState(model={"w": torch.ones(2)}, optimizer={"state": {}, "param_groups": [{"lr": 1e-3}]},
                      generator=torch.Generator().manual_seed(3).get_state(), step=4, best_val_loss=float("inf"),
                      train_time=1.5, eval_time=0.5, config={"dataset": "photos", "lr": 1e-3, "n0": 1},
                      metrics={"val/loss": 0.25})
    good.save(tmp_path / "state.pt")
    loaded = TrainState.load(tmp_path / "state.pt")
    assert torch.equal(loaded.generator, good.generator) and torch.equal(loaded.model["w"], good.model["w"])
    assert (loaded.optimizer, loaded.step, loaded.config, loaded.metrics) == (good.optimizer, 4, good.config,
                                                                             good.metrics)


# ---------------------------------------------------------------- refusals before Ray starts


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable(url: str) -> bool:
    from urllib.parse import urlparse
    try:
        socket.create_connection((urlparse(url).hostname, 443), 3).close()
        return True
    except OSError:
        return False


def _malformed(tmp: Path, text: str) -> list[str]:
    folder = tmp / "old-sweep"
    folder.mkdir()
    (folder / "sweep.json").write_text(text)
    return ["--resume", str(folder)]


VALID_META = {"dir": "/x", "study": "sensitivity", "tracking_uri": "sqlite:////x/mlflow.db", "experiment_id": "1",
              "parent_run_id": "abc", "ray_storage": "/x", "ray_name": "ray"}


@pytest.mark.parametrize("case, argv, message", [
    ("offline-cifar", lambda t: ["robustness", "--dataset", "cifar10", "--data-dir", str(t / "empty")],
     "dataset=cifar10: {t}/empty/cifar-10-batches-py is absent and https://www.cs.toronto.edu is not reachable"),
    ("image-size-photos", lambda t: ["robustness", "--set", "image_size=300"],
     "image_size=300 is larger than the photos (short side 256 px); allowed: at most 256"),
    ("image-size-cifar", lambda t: ["robustness", "--dataset", "cifar10", "--data-dir", str(t), "--set",
                                    "image_size=64"], "image_size=64 is not what dataset=cifar10 gives; allowed: 32"),
    ("closed-port", lambda t: ["robustness", "--tracking-uri", f"http://127.0.0.1:{_closed_port()}"],
     "does not answer within 3 s"),
    ("unknown-scheme", lambda t: ["robustness", "--tracking-uri", "foo://bar"],
     "--tracking-uri foo://bar: scheme 'foo' is unknown; allowed: http://"),
    ("truncated-sweep-json", lambda t: _malformed(t, json.dumps(VALID_META)[:40]),
     "{t}/old-sweep/sweep.json is not a sweep's (JSONDecodeError"),
    ("sweep-json-missing-keys", lambda t: _malformed(t, json.dumps({"dir": "/x"})),
     "{t}/old-sweep/sweep.json lacks ['plan', 'experiment_id', 'parent_run_id', 'ray_name'] (or they are "
     "not what a sweep writes)"),
    ("sweep-json-bad-plan", lambda t: _malformed(t, json.dumps({**VALID_META, "plan": {"study": 3}})),
     "{t}/old-sweep/sweep.json: plan={{'study': 3}}: allowed: a mapping with scale, base, arms, seeds, cpus, gpus"),
    ("disk-too-small", lambda t: ["robustness", "--set", "width=40000"], "GB free, the sweep needs about"),
])
def test_refused_before_ray_starts(case, argv, message, tmp_path, capsys):
    """One line naming the value and what is allowed, exit 2, no results folder, no Ray."""
    if case == "offline-cifar" and _reachable(CIFAR["cifar10"]["url"]):
        pytest.skip("the CIFAR host is reachable from here, so the data set is not refused")
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv(tmp_path), "--scale", "smoke", "--results-dir", str(results)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("python -m sweep.run: error: "), err
    assert message.format(t=tmp_path) in err, err
    assert not results.exists() and not (tmp_path / "empty").exists()
    assert not ray.is_initialized()


@pytest.mark.parametrize("make, message", [
    (lambda t: t.joinpath("file").write_text("x") and t / "file", "{t}/file is a file; allowed: a folder"),
    (lambda t: t.joinpath("file").write_text("x") and t / "file" / "sub", "{t}/file/sub lies under the file"),
])
def test_results_dir_that_is_no_folder_is_refused(make, message, tmp_path, capsys):
    results = make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["sensitivity", "--scale", "smoke", "--results-dir", str(results)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message.format(t=tmp_path) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder, so none is unwritable here")
def test_unwritable_results_dir_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(SystemExit):
        main(["sensitivity", "--scale", "smoke", "--results-dir", str(locked / "results")])
    assert "is not writable" in capsys.readouterr().err and list(locked.iterdir()) == []


def test_cifar_that_is_not_the_official_files_is_refused_without_running_them(tmp_path, capsys):
    """A CIFAR folder whose data_batch_1 would run a command: refused by md5 before Ray starts, nothing runs."""
    write_fake_cifar(tmp_path / "data", "cifar10")
    marker = tmp_path / "pwned"
    import pickle
    (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1").write_bytes(
        pickle.dumps({b"data": RunsCommand(marker), b"labels": []}))
    with pytest.raises(SystemExit) as exit_info:
        main(["sensitivity", "--scale", "smoke", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
              "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "data_batch_1 has md5" in err and f"not the official {CIFAR['cifar10']['files']['data_batch_1']}" in err
    assert not marker.exists() and not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def gpu_less_cluster():
    """A Ray cluster of this test's own with CPUs and no GPU."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_gpus_the_cluster_lacks_are_refused(gpu_less_cluster, tmp_path, capsys, monkeypatch):
    """--gpus-per-trial 1 on a cluster without GPUs: refused at once instead of waiting forever."""
    monkeypatch.setattr(cluster, "AUTOSCALING_CONFIG", tmp_path / "absent.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["sensitivity", "--scale", "smoke", "--gpus-per-trial", "1", "--address", gpu_less_cluster.address,
              "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert err == (f"python -m sweep.run: error: --cpus-per-trial 1 --gpus-per-trial 1: the Ray cluster at "
                   f"{gpu_less_cluster.address} has 1 node with 1 CPU and 0 GPUs, and no autoscaler adds nodes; "
                   "allowed: at most 1 CPU and 0 GPUs per trial, or --address of a cluster with larger nodes\n")
    assert not (tmp_path / "results").exists() and not ray.is_initialized()


@pytest.mark.slow
def test_gpus_an_autoscaler_can_add_are_awaited(gpu_less_cluster, tmp_path, capsys, monkeypatch):
    """The same cluster with an autoscaling config whose GPU worker type may be started: it says so and goes on."""
    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text((ROOT / "cluster.yaml").read_text())
    monkeypatch.setattr(cluster, "AUTOSCALING_CONFIG", config)
    try:
        preflight.check_resources(make_plan("sensitivity", "smoke", gpus=1, cpus=4), gpu_less_cluster.address)
        assert capsys.readouterr().out == (f"the Ray cluster at {gpu_less_cluster.address} cannot hold a trial now; "
                                           "its autoscaler can add nodes that do: trials wait for them\n")
    finally:
        ray.shutdown()


def test_sweeps_started_in_the_same_second_get_their_own_folders(tmp_path):
    plan = make_plan("sensitivity", "smoke", seeds=1)
    folders = [_new_folder(plan, tmp_path) for _ in range(3)]
    assert len(set(folders)) == 3 and all(f.is_dir() and f.parent == tmp_path for f in folders)


# ---------------------------------------------------------------- stopping, failing and resuming


@pytest.mark.slow
def test_sigterm_and_ctrl_c_stop_cleanly_and_resume_completes(tmp_path):
    """SIGTERM to the sweep's whole process group (what `timeout`, service managers and `kill -TERM -PGID`
    send: it also ends the local cluster the sweep started), then Ctrl-C (SIGINT to the group, as a terminal
    sends it) each stop the sweep with the one line, exit 143 / 130, the sweep's run KILLED and unfinished
    trial runs KILLED (status interrupted); `--resume` says it trusts the folder and completes: one run per
    trial, every step once."""
    results = tmp_path / "results"
    cmd = sweep_cmd("sensitivity", results, "--max-concurrent", "2")
    code, out, err = run(cmd, stop_at="1/4 done", action=lambda p: os.killpg(p.pid, signal.SIGTERM))
    meta = sweep_meta(results)
    assert code == 143, out[-2000:] + err[-2000:]
    (line,) = error_lines(err)
    assert line.startswith("interrupted: ") and line.endswith(f"resume with: python -m sweep.run --resume {meta.dir}")
    ended = int(line.split()[1])
    assert 1 <= ended < 4 and f"interrupted: {ended} of 4 trials finished; " in line
    client = MlflowClient(meta.tracking_uri)
    assert client.get_run(meta.parent_run_id).info.status == "KILLED"
    runs = child_runs(meta.tracking_uri, "sensitivity", meta.parent_run_id)
    assert sum(r.data.tags["status"] == "finished" for r in runs) == ended
    assert all(r.info.status == "KILLED" for r in runs if r.data.tags["status"] != "finished")
    assert not (meta.dir / "tables").exists()  # no report of a half-run sweep

    resume = [sys.executable, "-m", "sweep.run", "--resume", meta.dir]
    code, out, err = run(resume, stop_at=f"{ended + 1}/4 done",
                         action=lambda p: os.killpg(p.pid, signal.SIGINT))
    assert f"resuming {meta.dir}: trusting its sweep.json and checkpoints" in out
    if code != 0:  # stopped before the last trial ended (else the sweep had finished by then)
        assert code == 130, out[-2000:] + err[-2000:]
        (line,) = error_lines(err)
        assert line.startswith("interrupted: ") and "resume with: python -m sweep.run --resume" in line
        code, out, err = run(resume)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "Traceback" not in err
    assert_one_run_per_trial_with_every_step(meta, 4, [20, 40, 60, 80, 100])


def _broken_training_images(root: Path) -> Path:
    """An image folder whose validation and test images are fine and whose training files are truncated PNGs:
    their headers pass the preflight, their pixels do not decode. (With a test/ subfolder the test split is not
    drawn from train/, so every training file stays a training file.)"""
    for i in range(3):
        pixels = np.random.RandomState(i).randint(0, 256, (40, 40, 3), dtype=np.uint8)
        for split in ("val", "test"):
            (root / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / split / f"{i}.png")
        (root / "train").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(root / "train" / f"{i}.png")
        whole = (root / "train" / f"{i}.png").read_bytes()
        (root / "train" / f"{i}.png").write_bytes(whole[:len(whole) // 2])
    return root


@pytest.fixture(scope="module")
def one_store(tmp_path_factory):
    """A results dir (one MLflow store) shared by the sweeps of the outcome tests below."""
    return tmp_path_factory.mktemp("store")


def test_a_tune_state_cut_short_by_a_full_disk_is_completed_from_the_drivers_staging_copy(tmp_path, monkeypatch):
    """The copy Tune makes of its state into the sweep folder was cut short (a prefix of the staging file the
    driver left in Ray's temp folder): it is completed from that copy, and only from the copy it is a prefix of
    (every sweep's experiment folder has the same name); one still cut short refuses the resume in one line."""
    state = json.dumps({"trial_data": ["x" * 500], "runner_data": {}}).encode()
    experiment = tmp_path / "sweep" / "ray"
    experiment.mkdir(parents=True)
    (experiment / "experiment_state-2026-11-30_00-55-33.json").write_bytes(state[:300])  # cut short
    (experiment / "tuner.pkl").write_bytes(b"")  # the copy had not begun
    (experiment / "basic-variant-state-2026-11-30_00-55-33.json").write_bytes(b"searcher")  # whole
    temp = tmp_path / "ray-temp"
    ours = temp / "session_2026-11-30_00-55-30_1" / "artifacts" / "2026-11-30_00-55-33" / "ray" / "driver_artifacts"
    other = temp / "session_2026-11-30_00-55-31_2" / "artifacts" / "2026-11-30_00-55-33" / "ray" / "driver_artifacts"
    for folder, text in ((ours, state), (other, state.replace(b"x", b"y"))):
        folder.mkdir(parents=True)
        (folder / "experiment_state-2026-11-30_00-55-33.json").write_bytes(text)
        (folder / "tuner.pkl").write_bytes(b"tuner of " + text[:20])
        (folder / "basic-variant-state-2026-11-30_00-55-33.json").write_bytes(b"searcher")
    assert complete(experiment, temp) == ["experiment_state-2026-11-30_00-55-33.json", "tuner.pkl"]
    assert (experiment / "experiment_state-2026-11-30_00-55-33.json").read_bytes() == state
    assert (experiment / "tuner.pkl").read_bytes() == b"tuner of " + state[:20]
    assert sorted(p.name for p in experiment.iterdir()) == [  # nothing else written
        "basic-variant-state-2026-11-30_00-55-33.json", "experiment_state-2026-11-30_00-55-33.json", "tuner.pkl"]
    assert complete(experiment, temp) == []  # whole: nothing to do

    (experiment / "experiment_state-2026-11-30_00-55-33.json").write_bytes(state[:300])
    with pytest.raises(ConfigError, match=r"experiment_state-2026-11-30_00-55-33.json: Ray Tune's state of this "
                                          r"sweep is cut short .* no whole copy of it is left in .*ray-elsewhere"):
        complete(experiment, tmp_path / "ray-elsewhere")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "temp-parent"))  # Ray's temp folder is $RAY_TMPDIR/ray
    shutil.copytree(temp, tmp_path / "temp-parent" / "ray")
    assert complete_sweep(str(tmp_path / "sweep"), "ray") == ["ray/experiment_state-2026-11-30_00-55-33.json"]
    assert complete_sweep("s3://bucket/sweep", "ray") == []  # a remote storage is Tune's to copy


def test_the_last_line_says_which_failed_trials_a_resume_retries():
    """A resume retries trials that crashed, never a data error nor a trial that failed the same way on every
    try: the failed sweep's line says so for each kind, and for a mix names the counts."""
    hint = "resume with: python -m sweep.run --resume R"
    data = "fix the data and start the sweep again (a resume does not retry a data error)"
    study = "fix the study (a resume would fail them again)"
    assert retry_hint(2, 0, 0, hint) == f"{hint} (retries them)"
    assert retry_hint(0, 3, 0, hint) == data
    assert retry_hint(2, 3, 0, hint) == f"{hint} (retries the 2 that crashed); for the 3 with a data error: {data}"
    assert retry_hint(0, 0, 1, hint) == f"for the 1 that failed the same way on every try: {study}"
    assert retry_hint(1, 0, 2, hint) == (f"{hint} (retries the 1 that crashed); for the 2 that failed the same way "
                                         f"on every try: {study}")


def test_a_trial_that_failed_the_same_way_on_every_try_is_not_offered_a_retry(tmp_path):
    """Ray appends each try's error to the trial's error.txt ('Failure # N (occurred at ...)', then the error):
    the same last line on every try (more than one) is a trial the study makes fail; a differing one, or a
    single try, may be an infrastructure fault a resume can get past."""
    from types import SimpleNamespace

    from sweep.execute import _data_error, _same_every_time

    def tries(*errors):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        (folder / "error.txt").write_text("".join(
            f"Failure # {i} (occurred at 2026-12-06_09-00-0{i})\nray::run_trial() (pid=1, ip=127.0.0.1)\n"
            f"  File \"x.py\", line 3, in f\n{error}\n" for i, error in enumerate(errors, 1)))
        return SimpleNamespace(path=str(folder))

    same = "OSError: [Errno 36] File name too long: 'pictures/KSOM-xxxxxxxx'"
    assert _same_every_time(tries(same, same, same))
    assert not _same_every_time(tries(same))
    assert not _same_every_time(tries("ray.exceptions.RayActorError: The actor died unexpectedly", same, same))
    died = "The actor died unexpectedly before finishing this task.\nThe actor never ran - it was cancelled"
    (tmp_path / "died").mkdir()  # Ray's word that the trial's process died (no traceback of its code): a resume
    (tmp_path / "died" / "error.txt").write_text("".join(f"Failure # {i} (occurred at 2026)\n{died}\n" for i in (1, 2)))
    assert not _same_every_time(SimpleNamespace(path=str(tmp_path / "died")))  # may get past it
    assert not _same_every_time(SimpleNamespace(path=str(tmp_path / "none")))
    assert _data_error(SimpleNamespace(metrics={"trial_id": "a1b2c_00000"})) == ""  # it never reported: no data error


@pytest.mark.slow
def test_failed_trials_fail_the_sweep_and_the_report_still_comes(one_store, tmp_path):
    """Every trial fails inside Ray on its data (training files that decode only halfway): each once, without
    retries or tracebacks; exit 1, one line naming the trials and the file, the sweep's run FAILED, the
    trials' runs FAILED; the report is written, says what is missing."""
    data = _broken_training_images(tmp_path / "images")
    cmd = [*sweep_cmd("sensitivity", one_store, "--dataset", "imagefolder", "--data-dir", str(data)),
           "--seeds", "1"]
    code, out, err = run(cmd)
    assert code == 1, out[-2000:] + err[-3000:]
    (line,) = error_lines(err)
    assert line.startswith(f"failed: 4 of 4 trials: EMA-VQ N0=0 update-0=no seed=0 (cannot read image "
                           f"{data}/train/0.png: ") and "Traceback" not in err
    assert line.endswith("; fix the data and start the sweep again (a resume does not retry a data error)")
    meta = read_sweep(next(p for p in one_store.glob("*/sweep.json")).parent)
    client = MlflowClient(meta.tracking_uri)
    assert client.get_run(meta.parent_run_id).info.status == "FAILED"
    runs = child_runs(meta.tracking_uri, "sensitivity", meta.parent_run_id)
    assert len(runs) == 4 and all(r.info.status == "FAILED" and r.data.tags["status"] == "failed" for r in runs)
    assert all(r.data.tags["error"].startswith(f"cannot read image {data}/train/0.png: ") for r in runs)
    assert not list(meta.dir.rglob("error.txt"))  # no trial raised: none was retried
    assert "missing: 4 of 4 trials are not results (4 failed)" in out
    assert (meta.dir / "tables" / "sensitivity.txt").exists()


@pytest.mark.slow
def test_all_diverged_is_an_outcome_and_pooling_other_sweeps_is_refused(one_store):
    """Every trial diverges (lr 1e6): exit 0 and a report that says there is nothing to plot; the store now
    holds two sensitivity sweeps of different base configs (the failed one of the test above, which runs
    first in file order): the report reads the newest by default and refuses to pool them."""
    code, out, err = run([*sweep_cmd("sensitivity", one_store, "--set", "lr=1e6"), "--seeds", "1"])
    assert code == 0, out[-2000:] + err[-3000:]
    assert "4 trials, 0 failed" in out and "missing: no figures" in out
    assert out.count(" 1/1/") == 4  # per configuration: 1 seed with a result, 1 diverged; no mean
    uri = f"sqlite:///{one_store / 'mlflow.db'}"
    report = [sys.executable, "-m", "analysis.report", "--tracking-uri", uri, "--study", "sensitivity"]
    code, out, err = run([*report, "--out", str(one_store / "report")])
    assert code == 0, err[-3000:]
    assert "reading sweep sensitivity-smoke-" in out and "(the newest of 2)" in out
    trials = pd.read_parquet(one_store / "report" / "trials.parquet")
    assert len(trials) == 4 and set(trials.status) == {"diverged"}  # not the failed sweep's runs
    code, out, err = run([*report, "--all-sweeps", "--out", str(one_store / "pooled")])
    assert code == 2 and not (one_store / "pooled").exists()
    (line,) = [ln for ln in err.splitlines() if ln.startswith("python -m analysis.report: error:")]
    assert "differ in their base config (" in line and "lr: 1000000.0 vs 0.001" in line.replace("1e+06", "1000000.0")


@pytest.mark.parametrize("case", ["all-diverged", "all-failed", "one-seed", "some-interrupted"])
def test_report_writes_what_exists_for_any_outcome(case, tmp_path):
    """Hand-made outcomes: the report never raises; unfinished trials are counted but in no mean."""
    rows, points = [], []
    for nb in ("none", "hard"):
        for seed in ((0,) if case == "one-seed" else (0, 1)):
            status = {"all-diverged": "diverged", "all-failed": "failed"}.get(case, "finished")
            if case == "some-interrupted" and seed == 1:
                status = "interrupted"
            run_id = f"{nb}{seed}"
            rows.append({"run_id": run_id, "run_name": run_id, "status": status, "neighbours": nb, "seed": seed,
                         "steps": 40, "n0": 1, "update_empty": True})
            for step, loss in ((20, 0.5), (40, 0.4 if status == "finished" else 0.001)):
                points += [(run_id, M.VAL_LOSS, step, loss), (run_id, M.train_perplexity("vq"), step, 5.0)]
    trials, metrics = pd.DataFrame(rows), pd.DataFrame(points, columns=["run_id", "metric", "step", "value"])
    text = write_report(trials, metrics, "comparison", tmp_path)
    tidy = pd.read_parquet(tmp_path / "tables" / "comparison.parquet")
    loss = tidy[tidy.column == "final_loss"]
    if case in ("one-seed", "some-interrupted"):
        assert list(loss["mean"]) == [0.4, 0.4] and list(loss["n"]) == [1, 1]  # 0.001 of the unfinished: never
        assert (tmp_path / "figures" / "loss.png").exists()
    else:  # no mean, nothing bold; diverged trials' curves up to their NaN are still drawn, failed ones' never
        assert loss["mean"].isna().all() and not loss["best"].any()
        assert ("missing: no figures" in text) == (case == "all-failed")
    if case in ("all-failed", "some-interrupted"):
        n = 4 if case == "all-failed" else 2
        assert f"missing: {n} of 4 trials are not results" in text


# ---------------------------------------------------------------- outages


def _start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240  # generous: seconds when idle, much longer on a loaded 2-core machine
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    _stop(proc)
    raise RuntimeError("mlflow server did not become healthy")


def _stop(proc: subprocess.Popen):
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


@pytest.mark.slow
def test_tracking_server_outage_ends_resumable_and_resume_loses_nothing(tmp_path):
    """The MLflow server stops mid-sweep for longer than the client retries (set short here with MLflow's own
    MLFLOW_HTTP_REQUEST_* variables): one line naming the server and the resume command, exit 3, runs left as
    they were. With the server back on the same store, --resume completes with every point exactly once."""
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}  # a stopped server refuses
                                                                                        # at once; a busy one is slow
    server = _start_mlflow_server(tmp_path, port)
    try:
        code, out, err = run(sweep_cmd("sensitivity", tmp_path / "results", "--tracking-uri", url,
                                       "--max-concurrent", "2"), env=env, stop_at="1/4 done",
                             action=lambda p: _stop(server))
    finally:
        if server.poll() is None:
            _stop(server)
    assert code == 3, out[-2000:] + err[-3000:]
    (line,) = error_lines(err)
    meta = sweep_meta(tmp_path / "results")
    assert line == (f"error: MLflow tracking server {url} unreachable beyond its retries; runs left RUNNING in the "
                    f"store; resume with: python -m sweep.run --resume {meta.dir}")
    server = _start_mlflow_server(tmp_path, port)
    try:
        code, out, err = run([sys.executable, "-m", "sweep.run", "--resume", meta.dir], env=env)
        assert code == 0, out[-3000:] + err[-3000:]
        assert_one_run_per_trial_with_every_step(meta, 4, [20, 40, 60, 80, 100])
    finally:
        _stop(server)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs of this test's own (needs the right to mount: root in a container that allows it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}), so no disk can be filled")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(folder: Path):
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


@pytest.mark.slow
def test_full_disk_ends_resumable_and_resume_loses_nothing(small_disk):
    """The results disk fills up mid-sweep: one line saying so with the resume command, non-zero exit;
    once space is freed, --resume completes with every point exactly once."""
    results = small_disk / "results"
    code, out, err = run(sweep_cmd("sensitivity", results, "--max-concurrent", "2", "--max-failures", "0"),
                         stop_at="1/4 done", action=lambda p: _fill(small_disk))
    assert code in (1, 3), out[-2000:] + err[-3000:]  # the store (3) or a trial's checkpoint (1) hit it first
    (line,) = error_lines(err)
    meta = sweep_meta(results)
    assert line.endswith(f"python -m sweep.run --resume {meta.dir}") or "(retries them)" in line
    assert code == 1 or line.startswith("error: disk full")
    (small_disk / "filler").unlink()
    (state,) = (meta.dir / "ray").glob("experiment_state-*.json")
    state.write_bytes(state.read_bytes()[:64])  # as the full disk cut it
    code, out, err = run([sys.executable, "-m", "sweep.run", "--resume", meta.dir])
    assert code == 0, out[-3000:] + err[-3000:]
    assert f"completed ray/{state.name}: the stopped driver's copy of it was cut short" in out
    assert_one_run_per_trial_with_every_step(meta, 4, [20, 40, 60, 80, 100])
