"""cluster-onprem.yaml brought up for real: `ray up`, a sweep through `ray exec`, and scripts/onprem-down.sh,
on two loopback addresses of this machine (head 127.0.0.1, worker 127.0.0.2), each reached over SSH.

Everything runs as a throwaway Unix user whose home is inside the test's folder, against an sshd of the
test's own on a free port: Ray's bare `ray stop` (which `ray down` runs on the head) can signal only that
user's processes, and what `ray up` writes lands in its home. The cluster has its own ports and temp folders,
so other Ray clusters on the machine are never touched. The user cannot read the test runner's interpreter
when it lies under root's home (mode 700): it gets a hard-linked copy of it (same inodes, no extra space), on
whose site-packages, which hold the lock, the setup commands make the cluster's venv. Needs root and apt
(as CI has; openssh-server and rsync are installed where absent), else it skips with its reason.
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
HEAD, WORKER = "127.0.0.1", "127.0.0.2"
LIMIT_S = 360  # the whole test, setup and teardown included (4 minutes on 2 idle cores)
STUDY = """\
name: two-nodes
description: one EMA-VQ and one KSOM trial, one on each node
fixed: {grid_dim: 2, tau: 0.1}
axes:
  neighbours: [none, hard]
reference: {neighbours: none}
metrics: [final_loss]
"""
SWEEP = ("cd ~/kohonen && python -m sweep.run two-nodes.yaml --scale smoke --seeds 1 --set steps=40 "
         "--set eval_every=20 --cpus-per-trial 1 --storage ~/shared/sweeps --results-dir ~/shared/results "
         "--tracking-uri http://127.0.0.1:{port}")
WAIT_FOR_WORKER = ("python -c \"import ray, time; ray.init(); [time.sleep(1) for _ in range(150) "
                   "if sum(n['Alive'] for n in ray.nodes()) < 2]; print(sum(n['Alive'] for n in ray.nodes()), "
                   "'nodes')\"")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HEAD, 0))
        return s.getsockname()[1]


def _missing_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a throwaway Unix user and an sshd of its own)"
    needed = [pkg for pkg, tool in (("openssh-server", "/usr/sbin/sshd"), ("rsync", "rsync"))
              if not shutil.which(tool)]
    if needed and not shutil.which("apt-get"):
        return f"needs {', '.join(needed)} and has no apt-get to install them"
    if needed:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, timeout=120)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *needed], check=True,
                       capture_output=True, timeout=180, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    try:
        with socket.socket() as s:
            s.bind((WORKER, 0))
    except OSError as e:
        return f"cannot listen on {WORKER} ({e})"
    if sys.prefix != sys.base_prefix:
        return "runs in a virtual environment, which the throwaway user's interpreter copy does not cover"
    return None


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.time() + seconds

    def left(self) -> float:
        left = self.end - time.time()
        if left <= 0:
            raise AssertionError(f"the on-premise test ran past its {LIMIT_S} s")
        return left


@pytest.fixture
def machine():
    """A throwaway user (home inside the test's folder), its key, its interpreter and an sshd on HEAD and
    WORKER; all removed afterwards, with every process of the user."""
    reason = _missing_reason()
    if reason:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="op-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    folder.chmod(0o755)
    name = f"kv{secrets.token_hex(3)}"
    home = folder / "h"
    subprocess.run(["useradd", "--home-dir", str(home), "--no-create-home", "--shell", "/bin/bash", "--user-group",
                    name], check=True, capture_output=True)
    subprocess.run(["usermod", "--password", "*", name], check=True)  # no password, but not locked: sshd takes keys
    user = pwd.getpwnam(name)
    made_run_sshd = not Path("/run/sshd").exists()  # sshd's privilege separation folder
    sshd = None
    try:
        python = folder / "py"
        subprocess.run(["cp", "-al", sys.prefix, str(python)], check=True)  # hard links: instant, no space
        (home / ".ssh").mkdir(parents=True)
        (home / "tmp").mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id")], check=True)
        (home / ".ssh" / "authorized_keys").write_text((home / ".ssh" / "id.pub").read_text())
        port = free_port()
        (home / ".ssh" / "config").write_text(f"Host {HEAD} {WORKER}\n  Port {port}\n")
        lib = f"{python}/lib"  # the interpreter's RUNPATH names root's copy, which the user cannot read
        tools = folder / "bin"  # `ray` and `mlflow` as the interpreter's scripts are, less their shebang (root's)
        tools.mkdir()
        for tool, module in (("ray", "ray.scripts.scripts"), ("mlflow", "mlflow")):
            (tools / tool).write_text(f'#!/bin/sh\nexec python -m {module} "$@"\n')
            (tools / tool).chmod(0o755)
        (tools / "python").symlink_to(python / "bin" / "python3.11")
        path = f"{tools}:{python}/bin:/usr/bin:/bin"
        (home / ".bashrc").write_text(f'export PATH="{path}" LD_LIBRARY_PATH="{lib}" TMPDIR="$HOME/tmp"\n')
        sshd_dir = folder / "sshd"
        sshd_dir.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sshd_dir / "host_key")], check=True)
        (sshd_dir / "config").write_text(
            f"Port {port}\nListenAddress {HEAD}\nListenAddress {WORKER}\nHostKey {sshd_dir / 'host_key'}\n"
            f"PidFile {sshd_dir / 'pid'}\nAllowUsers {name}\nPasswordAuthentication no\nKbdInteractiveAuthentication"
            " no\nUsePAM no\nAuthorizedKeysFile .ssh/authorized_keys\nX11Forwarding no\n")
        subprocess.run(["chown", "-R", f"{name}:{name}", str(home)], check=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(sshd_dir / "config")],
                                stderr=open(sshd_dir / "log", "w"), start_new_session=True)
        for address in (HEAD, WORKER):
            for _ in range(100):
                with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
                    break
                time.sleep(0.1)
        env = {"HOME": str(home), "USER": name, "LOGNAME": name, "PATH": path,
               "LD_LIBRARY_PATH": lib, "TMPDIR": str(home / "tmp"), "RAY_AUTH_MODE": "token", "LANG": "C.UTF-8"}
        yield folder, user, env, port, _outside(folder, user.pw_uid)
    finally:
        _end_processes(user.pw_uid)
        if sshd is not None:
            os.killpg(sshd.pid, signal.SIGTERM)
            sshd.wait(timeout=30)
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
        if made_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)


def _outside(folder: Path, uid: int) -> set[str]:
    """What `uid` owns in the machine's shared temporary places, outside `folder` (earlier users of the same
    uid may have left some)."""
    return set(subprocess.run(["find", "/tmp", "/var/tmp", "/dev/shm", "/run", "-xdev", "-uid", str(uid), "-not",
                               "-path", f"{folder}*", "-prune"], capture_output=True, text=True).stdout.split())


def _processes_of(uid: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["uids", "cmdline", "status"])
            if p.info["uids"] and p.info["uids"].real == uid and p.info["status"] != psutil.STATUS_ZOMBIE]


def _end_processes(uid: int) -> None:
    procs = _processes_of(uid)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def _as_user(user, env: dict, command: str, cwd: Path, deadline: Deadline) -> tuple[float, str]:
    """Run a shell command as the throwaway user; (seconds it took, its output). Fails on a non-zero exit."""
    start = time.time()
    done = subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
                           "bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=deadline.left())
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return time.time() - start, done.stdout + done.stderr


def _cluster_config(name: str, ports: dict) -> dict:
    """cluster-onprem.yaml with this machine's addresses, user, key and free ports; one CPU per node (one trial
    each); the venv made on the interpreter's own site-packages, which hold the lock already."""
    config = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    config["provider"].update(head_ip=HEAD, worker_ips=[WORKER])
    config["auth"].update(ssh_user=name, ssh_private_key="~/.ssh/id")
    config["max_workers"] = 1

    def edit(command: str, agent: int) -> str:
        command = command.replace("--port=6379", f"--port={ports['gcs']}").replace(
            "$RAY_HEAD_IP:6379", f"$RAY_HEAD_IP:{ports['gcs']}").replace(
            "--dashboard-port=8265", f"--dashboard-port={ports['dashboard']}").replace(
            "--dashboard-agent-listen-port=52365", f"--dashboard-agent-listen-port={agent}").replace(
            "mlflow.sh 5000 ", f"mlflow.sh {ports['mlflow']} ")
        return command.replace(" --disable-usage-stats", " --num-cpus=1 --disable-usage-stats")

    config["head_start_ray_commands"] = [edit(c, ports["head_agent"]) for c in config["head_start_ray_commands"]]
    # On one machine Ray finds the worker's address by routing to the head (127.0.0.1), which it rewrites to the
    # machine's own address, the head's: the worker names its loopback address itself (machines of a lab differ).
    config["worker_start_ray_commands"] = [edit(c, ports["worker_agent"]).replace(
        "ray start --address", f"ray start --node-ip-address={WORKER} --address")
        for c in config["worker_start_ray_commands"]]
    config["setup_commands"] = [c.replace("-m venv ~/kohonen-venv", "-m venv --system-site-packages ~/kohonen-venv")
                                for c in config["setup_commands"]]
    return config


def _project_copy(target: Path) -> None:
    """This checkout as a user's clone holds it: tracked and new files, nothing git ignores."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target / rel)


def test_ray_up_a_sweep_on_both_nodes_and_the_way_down(machine, capsys):
    """`ray up -y` (MLflow answering when it returns), the worker joined by the v1 autoscaler, a two-trial
    sweep through `ray exec` that joins the cluster through RAY_ADDRESS and runs one trial per node, the
    MLflow server on the head holding the parent and both trial runs, then scripts/onprem-down.sh: no
    process of the user (cluster, MLflow, SSH) remains, and nothing was written outside the test's folder
    except the SSH control folder Ray's launcher always makes under /tmp."""
    folder, user, env, ssh_port, before = machine
    deadline = Deadline(LIMIT_S - 30)  # the fixture's setup took some of it; teardown needs the rest
    src = folder / "src"
    _project_copy(src)
    (src / "two-nodes.yaml").write_text(STUDY)
    ports = {k: free_port() for k in ("gcs", "dashboard", "head_agent", "worker_agent", "mlflow")}
    config = src / "onprem-test.yaml"
    config.write_text(yaml.safe_dump(_cluster_config(user.pw_name, ports)))
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(src)], check=True)
    _as_user(user, env, "ray get-auth-token --generate > /dev/null", src, deadline)

    def said(line: str) -> None:
        with capsys.disabled():
            print(line, flush=True)

    up_s, up_out = _as_user(user, env, f"ray up -y {config.name}", src, deadline)
    said(f"\non-premise: ray up {up_s:.0f} s")
    tracking = f"http://127.0.0.1:{ports['mlflow']}"
    with socket.create_connection(("127.0.0.1", ports["mlflow"]), timeout=3):
        pass  # answering as `ray up` returns
    worker_s, nodes = _as_user(user, env, f"ray exec {config.name} {_quote(WAIT_FOR_WORKER)}", src, deadline)
    assert "2 nodes" in nodes, nodes[-3000:]
    said(f"on-premise: the worker had joined {worker_s:.0f} s later")
    sweep_s, out = _as_user(user, env, f"ray exec {config.name} {_quote(SWEEP.format(port=ports['mlflow']))}", src,
                            deadline)
    said(f"on-premise: sweep {sweep_s:.0f} s; " + "; ".join(line for line in out.splitlines()
                                                            if line.startswith(("cluster: ", "sweep done"))))
    assert "cluster: " in out and "(joined: given by RAY_ADDRESS)" in out, out[-4000:]

    trial_nodes = {json.loads(line)["node_ip"]
                   for result in (folder / "h" / "shared" / "sweeps").rglob("result.json")
                   for line in result.read_text().splitlines() if line.strip()}
    said(f"on-premise: trials ran on {sorted(trial_nodes)}")
    assert len(trial_nodes) == 2 and WORKER in trial_nodes, trial_nodes
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("two-nodes")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    assert parents[0].info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)

    down_s, down_out = _as_user(user, env, f"bash scripts/onprem-down.sh {config.name}", src, deadline)
    said(f"on-premise: the way down {down_s:.0f} s; " + "; ".join(line.strip() for line in down_out.splitlines()
                                                                if line.startswith("stopped ")))
    for _ in range(30):  # Ray's SSH control masters persist for 10 s after the last command
        if not _processes_of(user.pw_uid):
            break
        time.sleep(1)
    assert not _processes_of(user.pw_uid), [p.info["cmdline"] for p in _processes_of(user.pw_uid)]
    outside = sorted(_outside(folder, user.pw_uid) - before)
    assert [Path(p).name.startswith("ray_ssh_") and Path(p).parent == Path("/tmp") for p in outside] == [True], outside
    shutil.rmtree(outside[0])  # the launcher's SSH control sockets: /tmp/ray_ssh_USERHASH, a path fixed in Ray


def _quote(command: str) -> str:
    import shlex

    return shlex.quote(command)
