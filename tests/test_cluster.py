"""Which Ray cluster a sweep runs on (sweep/cluster.py: `choose`), with real clusters started by `ray start`.

A given address (--address, RAY_ADDRESS) that does not answer within 5 s is refused in one line; an address
found by discovery (Ray's address file) is joined only when it answers and runs as this Unix user, otherwise
the sweep says which address it ignored and why and starts a local cluster. Each test's cluster has its own
temp folder (RAY_TMPDIR, so its address file is not the machine's) and its own ports, and is stopped by the
PIDs of its own processes, never by `ray stop` (which would end every cluster of this user on the machine).
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from sweep import cluster
from sweep.run import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["sensitivity", "--scale", "smoke", "--set", "steps=20", "--set", "eval_every=10"]
ALLOWED = cluster.ALLOWED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_processes(folder: Path) -> list[psutil.Process]:
    """The processes whose command line names `folder` (a cluster's temp folder), with their children."""
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(folder) in arg for arg in proc.info["cmdline"] or []):
            for p in [proc, *proc.children(recursive=True)]:
                found[p.pid] = p
    return list(found.values())


def kill_all(procs: list[psutil.Process]) -> None:
    """SIGKILL each, then wait until each is gone (or a zombie: `ray start` daemons are no child of ours)."""
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(p) for p in procs):
        time.sleep(0.1)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def ray_tmpdir(monkeypatch) -> Path:
    """Ray's temp folder for this test (its address file is discovery's), and RAY_ADDRESS unset. A short
    path under /tmp: Ray's socket paths inside it must stay under the 107 characters a Unix socket allows."""
    folder = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    yield folder
    kill_all(own_processes(folder))
    shutil.rmtree(folder, ignore_errors=True)


def ray_start(ray_tmpdir: Path, **env) -> str:
    """`ray start --head` of one CPU on free ports, its address file in ray_tmpdir; its GCS address."""
    port = free_port()
    subprocess.run(["ray", "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                    f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                    "--disable-usage-stats"],
                   env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL, timeout=60)
    return (ray_tmpdir / "ray" / "ray_current_cluster").read_text().strip()


@pytest.mark.slow
def test_a_dead_clusters_address_is_refused_when_given_and_ignored_when_found(ray_tmpdir, tmp_path, capsys,
                                                                              monkeypatch):
    """A cluster started with `ray start`, then killed: its address file stays. Given (--address, RAY_ADDRESS)
    the sweep refuses it in one line, exit 2, nothing created; found by discovery it is ignored with one line
    and the sweep starts a local cluster of its own (a watchdog ends it after a minute: never a hang). While the
    cluster ran, the same address was joined, given or found, and the sweep said why."""
    address = ray_start(ray_tmpdir, RAY_AUTH_MODE="disabled")  # not token mode because ~/.ray/auth_token exists
    try:
        assert cluster.choose(None) == cluster.Target(
            address, f"joined: found in {ray_tmpdir}/ray/ray_current_cluster, running as you")
        assert cluster.choose(address) == cluster.Target(address, "joined: given by --address")
    finally:
        kill_all(own_processes(ray_tmpdir))
    assert (ray_tmpdir / "ray" / "ray_current_cluster").read_text().strip() == address  # what misled sweeps

    results = tmp_path / "results"
    for source in ("--address", "RAY_ADDRESS"):
        argv = SMOKE + ["--results-dir", str(results)]
        if source == "--address":
            argv += ["--address", address]
        else:
            monkeypatch.setenv("RAY_ADDRESS", address)
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == (f"python -m sweep.run: error: {source} {address} does not answer within "
                                           f"5 s (Connection refused); {ALLOWED}\n")
        assert not results.exists()
    monkeypatch.delenv("RAY_ADDRESS")

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sweep.run", *SMOKE, "--results-dir", str(results)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    watchdog = threading.Timer(60, os.killpg, (proc.pid, signal.SIGKILL))  # a hang ends the test in a minute
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("cluster: ") and "ignored" not in line.split("(")[0]:
                break
    finally:
        watchdog.cancel()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        kill_all(own_processes(ray_tmpdir))
    ignored = (f"cluster: ignored {address} (found in {ray_tmpdir}/ray/ray_current_cluster): it does not answer "
               "within 5 s (Connection refused); starting a local cluster")
    assert ignored in lines, lines
    joined = lines[-1]
    assert joined.startswith("cluster: ") and joined.endswith(
        f" (started by this sweep, it ends with it; {address} ignored)"), lines
    assert joined.split()[1] != address


@pytest.mark.slow
def test_a_cluster_that_refuses_the_drivers_token_is_named_with_the_setting_to_use(ray_tmpdir, capsys):
    """A cluster whose nodes use token authentication, a driver without its token: one line naming the
    setting (Ray alone waits 20 s and says only that it failed to connect)."""
    address = ray_start(ray_tmpdir, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="a" * 32)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(SMOKE + ["--address", address, "--results-dir", str(ray_tmpdir / "results")])
    finally:
        kill_all(own_processes(ray_tmpdir))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"python -m sweep.run: error: --address {address} uses token authentication and refused this driver (no "
        "token, or not the cluster's); allowed: RAY_AUTH_MODE=token with the cluster's token in ~/.ray/auth_token "
        "(or RAY_AUTH_TOKEN), as on its nodes\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another Unix user")
def test_a_found_cluster_of_another_unix_user_is_ignored(ray_tmpdir, capsys):
    """Discovery finds an address whose GCS process on this node runs as another user (`nobody`): ignored,
    with whose it is, before anything is sent to it."""
    port = free_port()
    other = subprocess.Popen(["setpriv", f"--reuid={pwd.getpwnam('nobody').pw_uid}", "--clear-groups", "sh", "-c",
                              "sleep 60; :", f"--gcs_server_port={port}"], start_new_session=True)
    try:
        (ray_tmpdir / "ray").mkdir()
        (ray_tmpdir / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
        deadline = time.time() + 10
        # until it runs as nobody: setpriv itself, with the same command line, runs as root until it execs
        while time.time() < deadline and not any(f"--gcs_server_port={port}" in (p.info["cmdline"] or [])
                                                 and p.info["username"] == "nobody"
                                                 for p in psutil.process_iter(["cmdline", "username"])):
            time.sleep(0.1)
        target = cluster.choose(None)
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()
    address = target.why.split("; ")[1].split()[0]
    assert address.endswith(f":{port}")
    assert target == cluster.Target(cluster.LOCAL, f"started by this sweep, it ends with it; {address} ignored")
    assert capsys.readouterr().out == (f"cluster: ignored {address} (found in {ray_tmpdir}/ray/ray_current_cluster):"
                                       " it runs as nobody, not as you; starting a local cluster\n")


def test_a_node_type_without_a_cpu_count_holds_any_trial(tmp_path, monkeypatch):
    """The on-premise provider's one node type lists no resources (Ray counts each machine's at start): it
    holds as many workers as asked for, as its max_workers allows, while a type with too few CPUs holds none."""
    config = tmp_path / "bootstrap.yaml"
    config.write_text("available_node_types:\n  local.cluster.node: {resources: {}, min_workers: 1, max_workers: 1}\n"
                      "  small: {resources: {CPU: 2}, max_workers: 3}\n  idle: {resources: {CPU: 64}, max_workers: 0}\n")
    monkeypatch.setattr(cluster, "AUTOSCALING_CONFIG", config)
    types = cluster.autoscaled_types()
    assert [(most, cluster.workers_fitting(node, 4, 0)) for node, most in types] == [(1, float("inf")), (3, 0.0)]
    assert cluster.workers_fitting(types[0][0], 4, 1) == 0.0  # no GPU listed: none
    assert cluster.workers_fitting({"CPU": 5.0, "GPU": 2.0}, 2, 1) == 2.0


def test_stopping_a_cluster_ends_its_processes_and_its_mlflow_and_nothing_else(tmp_path):
    """scripts/cluster/stop.py (the start commands and the on-premise way down run it instead of a bare
    `ray stop`): it ends the processes whose command line names a session in this node's Ray temp folder, their
    children and the MLflow server named by mlflow.pid there; a process of another cluster's temp folder, and
    a PID file naming a process that is no MLflow server, are left alone."""
    mine, other = tmp_path / "mine" / "ray", tmp_path / "other" / "ray"
    mine.mkdir(parents=True)

    def start(*argv: str) -> subprocess.Popen:
        return subprocess.Popen(["sh", "-c", "sleep 60 & wait", *argv], start_new_session=True)

    raylet = start(f"--session_dir={mine}/session_1")
    mlflow = start("mlflow", "server")
    unrelated = start(f"--session_dir={other}/session_1")
    try:
        (mine / "mlflow.pid").write_text(str(mlflow.pid))
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "cluster" / "stop.py")], capture_output=True,
                              text=True, env={**os.environ, "RAY_TMPDIR": str(tmp_path / "mine")}, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"stopped 4 processes of the Ray cluster in {mine} and its MLflow server\n"
        assert raylet.wait(timeout=10) is not None and mlflow.wait(timeout=10) is not None
        assert unrelated.poll() is None and not (mine / "mlflow.pid").exists()
        (mine / "mlflow.pid").write_text(str(unrelated.pid))  # a PID reused by something else: not ended
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "cluster" / "stop.py")], capture_output=True,
                              text=True, env={**os.environ, "RAY_TMPDIR": str(tmp_path / "mine")}, timeout=120)
        assert done.stdout == f"stopped 0 processes of the Ray cluster in {mine}\n" and unrelated.poll() is None
    finally:
        for proc in (raylet, mlflow, unrelated):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
