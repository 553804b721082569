"""Stop this node's processes of the Ray cluster whose temp folder is Ray's default here ($RAY_TMPDIR/ray, else
$TMPDIR/ray, else /tmp/ray) and the MLflow server that scripts/cluster/mlflow.sh started beside it, by their
PIDs: each process of this Unix user whose command line names a session folder inside that temp folder (the
GCS, raylet, autoscaler, dashboard and agents), their children (the workers), and the PID in mlflow.pid there.
Used instead of `ray stop`, which ends every Ray process this user may signal, other clusters included.

    python scripts/cluster/stop.py      # on a node: the start commands, scripts/onprem-down.sh
"""
from __future__ import annotations

import os
from pathlib import Path

import psutil

GRACE_SECONDS = 10  # after SIGTERM, as `ray stop`; then SIGKILL


def mlflow_server(temp: Path) -> psutil.Process | None:
    """The MLflow server named by mlflow.pid in `temp`, if that PID is still this user's MLflow server."""
    try:
        server = psutil.Process(int((temp / "mlflow.pid").read_text()))
        return server if server.uids().real == os.getuid() and "mlflow" in " ".join(server.cmdline()) else None
    except (OSError, ValueError, psutil.Error):
        return None


def cluster_processes(temp: Path) -> list[psutil.Process]:
    """This user's processes of the cluster in `temp` and its MLflow server, children included."""
    found = [p for p in psutil.process_iter(["cmdline", "uids"]) if p.info["uids"].real == os.getuid()
             and any(f"{temp}/session_" in arg for arg in p.info["cmdline"] or [])]
    server = mlflow_server(temp)
    if server is not None:
        found.append(server)
    every = {}
    for proc in found:
        try:
            for p in [proc, *proc.children(recursive=True)]:
                every[p.pid] = p
        except psutil.NoSuchProcess:
            pass
    return list(every.values())


def stop(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=GRACE_SECONDS)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def ray_temp() -> Path:
    """Ray's default temp folder here, as ray._common.utils.get_default_ray_temp_dir finds it (without the
    seconds `import ray` takes)."""
    return Path(os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp") / "ray"


if __name__ == "__main__":
    temp = ray_temp()
    with_mlflow = " and its MLflow server" if mlflow_server(temp) else ""
    procs = cluster_processes(temp)
    stop(procs)
    (temp / "mlflow.pid").unlink(missing_ok=True)
    print(f"stopped {len(procs)} processes of the Ray cluster in {temp}{with_mlflow}")
