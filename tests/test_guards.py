"""Guards against a second round of hostile use (beside test_faults.py, with its helpers): one driver per
sweep folder, resources nobody has, study files that would stall the planner, names that would collide,
a report that trusts nothing it reads, two sweeps creating one store, losing the Ray cluster, and image
folders that lie. Real Ray, real MLflow, real processes; every refusal checked for its exact line, exit 2
and that nothing was created.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sweep.execute import _new_folder, _new_sweep
from sweep.lock import DRIVER_LOCK, Locked, hold_sweep, release_sweep
from sweep.plan import make_plan
from test_faults import ROOT, assert_one_run_per_trial_with_every_step, error_lines, run, sweep_cmd, sweep_meta

HOST = socket.gethostname()


# ---------------------------------------------------------------- one driver per sweep folder


@pytest.mark.slow
def test_a_second_driver_of_a_running_sweep_is_refused(tmp_path):
    """While a sweep runs, `--resume` of its folder is refused: one line naming the driver (PID, host),
    exit 2, nothing trained or logged (the first driver's runs hold every step once); the lock goes with it."""
    results = tmp_path / "results"
    second = {}

    def resume_while_running(proc):
        meta = sweep_meta(results)
        second["meta"], second["pid"] = meta, proc.pid
        second["result"] = subprocess.run([sys.executable, "-m", "sweep.run", "--resume", meta.dir], cwd=ROOT,
                                          capture_output=True, text=True, timeout=300,
                                          env={**os.environ, "RAY_ADDRESS": "local"})

    code, out, err = run(sweep_cmd("sensitivity", results, "--max-concurrent", "2"), stop_at="plan:",
                         action=resume_while_running)
    assert code == 0, out[-2000:] + err[-3000:]
    meta, refused = second["meta"], second["result"]
    lock = meta.dir / DRIVER_LOCK
    assert refused.returncode == 2 and refused.stdout == "", refused.stdout + refused.stderr
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"python -m sweep.run: error: --resume {meta.dir}: another driver runs this sweep "
                           f"(PID {second['pid']} on host {HOST} since ")
    assert line.endswith(f"UTC; lock {lock}); allowed: one driver per sweep folder: wait for it to end, or stop it "
                         "(its lock is released when it exits)")
    assert_one_run_per_trial_with_every_step(meta, 4, [20, 40, 60, 80, 100])
    assert not lock.exists()


def test_the_lock_of_a_killed_driver_is_taken_over(tmp_path):
    """A driver killed with SIGKILL leaves its lock file, but the kernel released its lock: the next one
    takes it over (and names itself in the file); while the holder lived, the lock was refused."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from sweep.lock import hold_sweep; "
                               f"hold_sweep({str(tmp_path)!r}); print('held', flush=True); time.sleep(300)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(Locked, match=f"another driver runs this sweep \\(PID {holder.pid} on host {HOST} since"):
            hold_sweep(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / DRIVER_LOCK).exists()  # stale: its owner is gone
    hold_sweep(tmp_path)
    assert f'"pid": {os.getpid()}' in (tmp_path / DRIVER_LOCK).read_text()
    release_sweep(tmp_path)
    assert not (tmp_path / DRIVER_LOCK).exists()


# ---------------------------------------------------------------- two sweeps create one store


def _start_sweep(results: str, barrier, answers) -> None:
    plan = make_plan("sensitivity", "smoke", seeds=1)
    barrier.wait()
    try:
        answers.put(_new_sweep(plan, _new_folder(plan, Path(results)), None, None).experiment_id)
    except Exception as e:  # noqa: BLE001 - reported to the test
        answers.put(f"{type(e).__name__}: {e}"[:300])


@pytest.mark.slow
def test_sweeps_starting_at_once_into_a_new_results_folder_share_its_new_store(tmp_path):
    """Three drivers create their sweeps in one new results folder at the same moment (real processes,
    released by a barrier): each gets its sweep; one store, one experiment (without the store lock, MLflow's
    migrations collide: 'table _alembic_tmp_... already exists')."""
    results = tmp_path / "results"
    context = multiprocessing.get_context("spawn")
    barrier, answers = context.Barrier(3), context.Queue()
    procs = [context.Process(target=_start_sweep, args=(str(results), barrier, answers)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    ids = [answers.get(timeout=5) for _ in procs]
    assert len(set(ids)) == 1 and ids[0].isdigit(), ids
    assert len(list(results.glob("*/sweep.json"))) == 3


# ---------------------------------------------------------------- resources nobody has


def _local(n: float, unit: str) -> str:
    return f"{n:g} {unit}" + ("" if n == 1 else "s")


@pytest.mark.parametrize("argv, message", [
    (["--cpus-per-trial", "nan"], "--cpus-per-trial nan: allowed: a finite number > 0"),
    (["--cpus-per-trial", "inf"], "--cpus-per-trial inf: allowed: a finite number > 0"),
    (["--cpus-per-trial", "-1"], "--cpus-per-trial -1.0: allowed: a finite number > 0"),
    (["--gpus-per-trial", "nan"], "--gpus-per-trial nan: allowed: a finite number >= 0 (0: no GPU)"),
    (["--gpus-per-trial", "inf"], "--gpus-per-trial inf: allowed: a finite number >= 0 (0: no GPU)"),
    (["--cpus-per-trial", "64"], "--cpus-per-trial 64: this machine (Ray starts a local cluster on it) has {most}, "
                                 "and no autoscaler adds nodes; allowed: at most {most} per trial, or --address of a "
                                 "cluster with larger nodes"),
    (["--cpus-per-trial", "64", "--workers-per-trial", "2"],
     "--cpus-per-trial 64 over --workers-per-trial 2 (32 CPUs, 0 GPUs each): this machine (Ray starts a local "
     "cluster on it) has {most}, and no autoscaler adds nodes; allowed: at most {most} per worker, or --address of "
     "a cluster with larger nodes"),
])
def test_resources_nobody_has_are_refused(argv, message, tmp_path, capsys, monkeypatch):
    """NaN, inf, negative, or more than any node holds: one line naming what was asked and what exists,
    exit 2, no results folder and no Ray (a local cluster is judged by what Ray would give it)."""
    from sweep.cluster import local_node
    from sweep.run import main

    if local_node()["CPU"] >= 32:
        pytest.skip("this machine has 32 CPUs or more")
    monkeypatch.setenv("RAY_ADDRESS", "local")  # never another helper's cluster on this machine
    node = local_node()
    most = f"{_local(node['CPU'], 'CPU')} and {_local(node['GPU'], 'GPU')}"
    with pytest.raises(SystemExit) as exit_info:
        main(["sensitivity", "--scale", "smoke", *argv, "--results-dir", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"python -m sweep.run: error: {message.format(most=most)}\n"
    assert not (tmp_path / "results").exists()
    import ray
    assert not ray.is_initialized()


# ---------------------------------------------------------------- study files that would stall the planner

ALLOWED_STUDY = "allowed: a readable UTF-8 .yaml file or one of "


def _alias_bomb(path: Path) -> Path:
    """A few hundred bytes whose nested aliases expand to 10^9 values (the line-number walk would follow every
    path)."""
    lines = ["name: bomb", "description: nested aliases", "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _study(path: Path, axes: dict) -> Path:
    path.write_text("name: big\ndescription: a big grid\nfixed: {neighbours: hard, grid_dim: 2}\naxes:\n"
                    + "".join(f"  {k}: [{', '.join(map(str, v))}]\n" for k, v in axes.items()))
    return path


@pytest.mark.parametrize("make, argv, message", [
    (lambda t: _alias_bomb(t / "bomb.yaml"), [],
     "{t}/bomb.yaml:4: YAML alias *a0: aliases are not allowed in study files; allowed: each value written out "
     "where it is used"),
    (lambda t: _study(t / "big.yaml", {"lr": [1e-4 * (i + 1) for i in range(100)],
                                       "tau": [0.01 * (i + 1) for i in range(100)],
                                       "batch_size": list(range(2, 102))}), [],
     "{t}/big.yaml: the axes and arms make 1,000,000 configurations, more than --max-trials 10,000; allowed: fewer "
     "axis values or arms, or --max-trials 1000000 (each configuration runs once per seed)"),
    (lambda t: "sensitivity", ["--grid", "lr=" + ",".join(str(1e-5 * (i + 1)) for i in range(2501))],
     "{shipped}/sensitivity.yaml with --grid: the axes and arms make 10,004 configurations, more than --max-trials "
     "10,000; allowed: fewer axis values or arms, or --max-trials 10004 (each configuration runs once per seed)"),
    (lambda t: "sensitivity", ["--seeds", "3", "--max-trials", "10"],
     "study 'sensitivity': 12 trials (4 configurations x 3 seeds), more than --max-trials 10; allowed: fewer seeds "
     "or configurations, or --max-trials 12"),
    (lambda t: "sensitivity", ["--max-trials", "0"], "--max-trials 0: allowed: a whole number >= 1"),
    (lambda t: (t / "latin1.yaml").write_bytes(b"name: caf\xe9\n") and t / "latin1.yaml", [],
     "study file {t}/latin1.yaml is not UTF-8 text (byte 0xe9 at offset 9); " + ALLOWED_STUDY),
    (lambda t: (t / "folder.yaml").mkdir() or t / "folder.yaml", [], "study file {t}/folder.yaml is a folder; "
     + ALLOWED_STUDY),
])
def test_study_files_that_would_stall_the_planner_are_refused(make, argv, message, tmp_path, capsys):
    """Aliases, grids above --max-trials (from the file, from --grid, with the seeds), bad --max-trials, a file
    that is not UTF-8 or is a folder: one line, exit 2, at once (the dry run plans nothing)."""
    from sweep.run import main
    from sweep.study import SHIPPED

    study = make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(study), "--scale", "smoke", *argv, "--dry-run"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"python -m sweep.run: error: {message.format(t=tmp_path, shipped=SHIPPED)}"), err


def test_max_trials_raises_the_cap(capsys):
    from sweep.run import main

    assert main(["sensitivity", "--scale", "smoke", "--seeds", "3", "--max-trials", "12", "--dry-run"]) == 0
    assert "12 trials (4 arms x 3 seeds)" in capsys.readouterr().out


# ---------------------------------------------------------------- names that would collide


def test_values_that_print_alike_get_the_digits_that_tell_them_apart(capsys, tmp_path):
    """--grid lr=0.001,0.0010000001: two run names, two pictures folders, two table rows, each its own."""
    import metrics as M
    import pandas as pd
    from analysis.report import write_report
    from sweep.plan import file_name
    from sweep.run import main

    assert M.value_texts([0.001, 0.0010000001, 0.3]) == {0.001: "0.001", 0.0010000001: "0.0010000001",
                                                         0.3: "0.3"}
    assert M.value_texts([1e-3, 3e-4, True, "hard"]) == {1e-3: "0.001", 3e-4: "0.0003", True: "True", "hard": "hard"}
    assert main(["comparison", "--scale", "smoke", "--seeds", "1", "--grid", "lr=0.001,0.0010000001",
                 "--dry-run"]) == 0
    names = [ln.strip() for ln in capsys.readouterr().out.splitlines()[2:-1]]  # the last line: fusion
    assert names == [f"{rule} lr={lr} seed=0" for lr in ("0.001", "0.0010000001")
                     for rule in ("EMA-VQ", "KSOM hard", "KSOM gaussian")]
    assert len({file_name(n) for n in names}) == 6

    plan = make_plan("comparison", "smoke", seeds=1, grid={"lr": ["0.001", "0.0010000001"]})
    rows, points = [], []
    for i, arm in enumerate(plan.arms):
        run_id = f"r{i}"
        rows.append({"run_id": run_id, "run_name": plan.run_name(arm, 0), "status": "finished", "seed": 0,
                     "steps": 40, **arm})
        points += [(run_id, M.VAL_LOSS, 20, 0.5 + i), (run_id, M.VAL_LOSS, 40, 0.4 + i)]
    text = write_report(pd.DataFrame(rows), pd.DataFrame(points, columns=["run_id", "metric", "step", "value"]),
                        "comparison", tmp_path, plan=plan)
    rows = [line.split()[:2] for line in text.splitlines() if line.endswith("1/0/0")]
    assert len(rows) == 6 and ["EMA-VQ", "0.001"] in rows and ["EMA-VQ", "0.0010000001"] in rows, text
    sections = [line for line in text.splitlines() if line.startswith("KSOM hard, lr = ")]
    assert sections == ["KSOM hard, lr = 0.001", "KSOM hard, lr = 0.0010000001"], text


def test_configurations_whose_names_differ_only_in_punctuation_are_refused(tmp_path, capsys):
    from sweep.run import main

    study = tmp_path / "punct.yaml"
    study.write_text("name: punct\ndescription: two labels, one folder\narms:\n"
                     "  - {label: KSOM (hard), neighbours: hard}\n  - {label: KSOM hard, neighbours: gaussian}\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(study), "--scale", "smoke", "--dry-run"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "python -m sweep.run: error: study 'punct': configurations {'neighbours': 'hard'} and {'neighbours': "
        "'gaussian'} would share the pictures folder 'KSOM-hard-seed0'; allowed: labels or values that tell them "
        "apart in letters or digits\n")


# ---------------------------------------------------------------- the report trusts nothing it reads

PLAN = json.loads((Path(__file__).with_name("data") / "sweep-grid-153a05c.json").read_text())["plan"]
GOOD_SWEEP = {"dir": "old-sweep", "plan": PLAN, "experiment_id": "1", "parent_run_id": "abc", "ray_name": "ray",
              "store": "mlflow.db", "tracking_uri": None, "ray_storage": None}
ALLOWED_SWEEP = "allowed: the sweep.json a sweep wrote (restore it, or start the sweep again)"
PLAN_ALLOWED = "(the plan a sweep wrote; restore sweep.json, or start the sweep again)"


def _unrelated_database(folder: Path) -> Path:
    import sqlite3

    path = folder / "elsewhere" / "accounts.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("create table accounts (name text)")
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda t: json.dumps(GOOD_SWEEP)[:50], "{d}/sweep.json is not a sweep's (JSONDecodeError: Unterminated string "
                                            "starting at: line 1 column 40 (char 39)); " + ALLOWED_SWEEP),
    (lambda t: b"\xff\xfe", "{d}/sweep.json is not a sweep's (UnicodeDecodeError: 'utf-8' codec can't decode byte "
                            "0xff in position 0: invalid start byte); " + ALLOWED_SWEEP),
    (lambda t: "[1, 2]", "{d}/sweep.json is not a sweep's (a JSON list); " + ALLOWED_SWEEP),
    (lambda t: json.dumps({**GOOD_SWEEP, "parent_run_id": 7}),
     "{d}/sweep.json lacks ['parent_run_id'] (or they are not what a sweep writes); " + ALLOWED_SWEEP),
    (lambda t: json.dumps({**GOOD_SWEEP, "plan": {**PLAN, "study": "../../x"}}),
     "{d}/sweep.json: plan.study='../../x': allowed: letters, digits, '-' and '_' (it names folders and files)"),
    (lambda t: json.dumps({**GOOD_SWEEP, "plan": {**PLAN, "swept": 3}}),
     "{d}/sweep.json: plan.swept=3: allowed: a list " + PLAN_ALLOWED),
    (lambda t: json.dumps({**GOOD_SWEEP, "plan": {"study": "convergence", "swept": ["arm"]}}),
     "{d}/sweep.json: plan={{'study': 'convergence', 'swept': ['arm']}}: allowed: a mapping with scale, base, arms, "
     "seeds, cpus, gpus " + PLAN_ALLOWED),
    (lambda t: json.dumps({**GOOD_SWEEP, "plan": {**PLAN, "search": {"algorithm": "random"}}}),
     "{d}/sweep.json: plan.search={{'algorithm': 'random'}}: allowed: a mapping with samples, tuning_seed, spaces "
     + PLAN_ALLOWED),
    (lambda t: json.dumps({**GOOD_SWEEP, "store": "../elsewhere/accounts.db"}),
     "{d}/sweep.json names the store '../elsewhere/accounts.db', not a file of its results folder {r}; "
     + ALLOWED_SWEEP),
    (lambda t: json.dumps({**GOOD_SWEEP, "store": None, "tracking_uri": f"sqlite:///{t}/elsewhere/accounts.db"}),
     "{d}/sweep.json names the store sqlite:///{t}/elsewhere/accounts.db, outside its results folder {r}; allowed: "
     "--tracking-uri sqlite:///{t}/elsewhere/accounts.db to open it (if you trust it), or a sweep folder whose "
     "store lies beside it"),
    (lambda t: json.dumps(GOOD_SWEEP), "no MLflow store at {r}/mlflow.db (named by {d}/sweep.json); give the "
                                       "results folder that holds mlflow.db and mlartifacts/"),
])
def test_a_sweep_json_that_is_not_a_sweeps_is_refused_by_report_and_resume(edit, message, tmp_path, capsys):
    """The report validates sweep.json as --resume does: one line, exit 2, nothing written; a store outside
    the results folder is never opened (an unrelated SQLite file stays as it was) unless passed explicitly."""
    from analysis.report import main as report
    from sweep.run import main as sweep

    unrelated = _unrelated_database(tmp_path)
    before = unrelated.read_bytes()
    results = tmp_path / "results"
    folder = results / "old-sweep"
    folder.mkdir(parents=True)
    text = edit(tmp_path)
    (folder / "sweep.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    line = message.format(d=folder, r=results, t=tmp_path)
    for command, prog in ((report, "analysis.report"), (sweep, "sweep.run")):
        argv = [str(folder)] if prog == "analysis.report" else ["--resume", str(folder)]
        with pytest.raises(SystemExit) as exit_info:
            command(argv)
        captured = capsys.readouterr()
        assert exit_info.value.code == 2 and captured.out == "", captured.out
        expected = line if prog == "analysis.report" or "no MLflow store" not in line else f"--resume {folder}: {line}"
        assert captured.err == f"python -m {prog}: error: {expected}\n"
    assert sorted(p.name for p in folder.iterdir()) == ["sweep.json"] and sorted(results.iterdir()) == [folder]
    assert unrelated.read_bytes() == before


# ---------------------------------------------------------------- losing the cluster


@pytest.mark.slow
def test_losing_the_cluster_ends_the_sweep_and_resume_on_a_new_one_completes(tmp_path):
    """A sweep on a cluster its test started (ray.cluster_utils.Cluster) says which cluster it found; the
    cluster stops mid-run: within seconds one line (what was lost, how many trials finished, the resume
    command), exit 3, the sweep's run FAILED and unfinished trial runs KILLED. --resume on a new cluster
    completes: one run per trial, every validation step once."""
    import time

    from mlflow.tracking import MlflowClient
    from ray.cluster_utils import Cluster

    results = tmp_path / "results"
    first = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    address, lost_at = first.address, {}

    def stop_cluster(proc):
        first.shutdown()
        lost_at["t"] = time.time()

    try:
        code, out, err = run(sweep_cmd("sensitivity", results, "--address", address, "--max-concurrent", "2"),
                             stop_at="1/4 done", action=stop_cluster)
    finally:
        first.shutdown()
    took = time.time() - lost_at["t"]
    meta = sweep_meta(results)
    assert code == 3, out[-2000:] + err[-3000:]
    assert f"cluster: {address} (joined: given by --address)" in out, out
    (line,) = error_lines(err)
    ended = int(line.split("; ")[1].split()[0])
    assert 1 <= ended < 4
    assert line == (f"error: the Ray cluster at {address} went away; {ended} of 4 trials finished; sweep run "
                    f"FAILED, unfinished trial runs KILLED; resume with: python -m sweep.run --resume {meta.dir} "
                    "(on a running cluster: --address, or none for a local one)")
    assert took < 45, took  # Ray alone waits 60 s for a lost GCS, then aborts with its tracebacks
    assert MlflowClient(meta.tracking_uri).get_run(meta.parent_run_id).info.status == "FAILED"
    assert not (meta.dir / DRIVER_LOCK).exists()

    second = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    address = second.address
    try:
        code, out, err = run([sys.executable, "-m", "sweep.run", "--resume", meta.dir, "--address", address])
    finally:
        second.shutdown()
    assert code == 0, out[-3000:] + err[-3000:]
    assert f"cluster: {address} (joined: given by --address)" in out
    assert_one_run_per_trial_with_every_step(meta, 4, [20, 40, 60, 80, 100])


# ---------------------------------------------------------------- image folders that lie


def _images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = np.random.RandomState(seed + i).randint(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


def _sixteen_bit(path: Path) -> Path:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((40, 40), 40_000, dtype=np.uint16)).save(path)
    return path


def _refused_line(data: Path, capsys) -> str:
    from sweep.run import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sensitivity", "--scale", "smoke", "--dataset", "imagefolder", "--data-dir", str(data),
              "--results-dir", str(data.parent / "results")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert not (data.parent / "results").exists()
    return err.removeprefix("python -m sweep.run: error: ").removesuffix("\n")


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("RAY_ADDRESS", "local")
    return tmp_path / "cache"


OPEN_FAILS = "cannot be opened as an image (UnidentifiedImageError: cannot identify image file '{p}')"
ALLOWED_IMAGES = "; allowed: image files whose headers Pillow reads (fix or remove these)"


@pytest.mark.parametrize("spoil, problem", [
    (lambda p: p.write_bytes(b""), OPEN_FAILS),
    (lambda p: p.write_text("a text file named .png"), OPEN_FAILS),
    (_sixteen_bit, "mode I;16 does not convert to 8-bit RGB without losing its range; allowed: 8-bit modes"),
])
def test_an_image_file_whose_header_is_bad_is_refused_in_preflight(spoil, problem, tmp_path, own_cache, capsys):
    """A zero-byte file, a text file named .png, a 16-bit PNG: named with what is wrong, exit 2."""
    data = tmp_path / "images"
    _images(data / "train", 4)
    _images(data / "val", 2, seed=10)
    bad = data / "train" / "2.png"
    spoil(bad)
    assert _refused_line(data, capsys) == (f"dataset=imagefolder: 1 of 6 image files cannot be used: {bad} "
                                           f"({problem.format(p=bad)})" + ALLOWED_IMAGES)


def test_many_bad_files_are_counted_and_the_first_named(tmp_path, own_cache, capsys):
    data = tmp_path / "images"
    _images(data / "train", 6)
    _images(data / "val", 2, seed=10)
    for i in range(5):
        (data / "train" / f"{i}.png").write_bytes(b"")
    line = _refused_line(data, capsys)
    named = "; ".join(f"{data}/train/{i}.png ({OPEN_FAILS.format(p=data / 'train' / f'{i}.png')})" for i in range(3))
    assert line == f"dataset=imagefolder: 5 of 8 image files cannot be used: {named} and 2 more" + ALLOWED_IMAGES


def test_linked_folders_list_each_file_once_and_never_on_both_sides(tmp_path, own_cache, capsys):
    """A link from a folder to itself and one to its parent (which grew the listing without end): each file
    once, training and validation disjoint; a train/ and val/ that share a file are refused."""
    from models.data import split_image_folder

    flat = tmp_path / "flat"
    _images(flat, 41)
    (flat / "self").symlink_to(flat)
    (flat / "sub").mkdir()
    (flat / "sub" / "up").symlink_to(flat)
    train, val, test = split_image_folder(flat)
    assert len(train + val + test) == 41 and len(set(train + val + test)) == 41  # each file once, in one split
    assert all("self" not in p and "up" not in p for p in train + val + test)

    data = tmp_path / "images"
    _images(data / "train", 3)
    _images(data / "val", 2, seed=10)
    (data / "val" / "copy.png").symlink_to(data / "train" / "1.png")
    assert _refused_line(data, capsys) == (
        f"dataset=imagefolder: 1 image files are both in {data}/train and {data}/val (first: {data}/val/copy.png); "
        "allowed: training, validation and test folders that share no file")


def test_the_manifest_is_reused_for_unchanged_files(tmp_path, own_cache):
    """Verdicts are kept by path, size and modification time: a file changed behind an unchanged size and
    time is not read again (the cache is trusted); touching it makes it checked again."""
    from sweep.images import check_files

    paths = [str(p) for p in _images(tmp_path / "images", 3)]
    assert check_files(paths, str(tmp_path / "images")) == []
    assert len(list(own_cache.rglob("*.parquet"))) == 1
    victim = Path(paths[1])
    info = victim.stat()
    victim.write_bytes(b"x" * info.st_size)  # same size
    os.utime(victim, ns=(info.st_atime_ns, info.st_mtime_ns))  # same time
    assert check_files(paths, str(tmp_path / "images")) == []  # from the manifest
    os.utime(victim, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    ((path, problem),) = check_files(paths, str(tmp_path / "images"))
    assert path == paths[1] and problem.startswith("cannot be opened as an image")


def test_pixels_that_cannot_be_standardised_are_a_data_error(tmp_path):
    """A data set whose red channel is one value: a DataError naming it (the trial fails on it once, as a data
    error), not a division by zero that the first step would report as a diverged model."""
    import numpy as np
    from PIL import Image

    from models.data import DataError, load_image_folder

    for i in range(4):
        pixels = np.random.RandomState(i).randint(0, 256, (40, 40, 3), dtype=np.uint8)
        pixels[..., 0] = 128
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    with pytest.raises(DataError) as info:
        load_image_folder(tmp_path, size=32)
    assert str(info.value) == ("channel R of the training images has zero variance (every pixel 128), so they cannot "
                               "be standardised; allowed: images whose pixels vary in every channel")
