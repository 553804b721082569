"""`python -m sweep.ui [RESULTS_DIR | --tracking-uri URI]`: browse a study's runs in MLflow's UI.

    python -m sweep.ui                       # the store in results/, on http://127.0.0.1:5000
    python -m sweep.ui results-copy --port 5001
    python -m sweep.ui --tracking-uri http://127.0.0.1:5000   # a running server: only the links

Starts `mlflow ui` on the results folder's embedded store (mlflow.db, artifacts served from
mlartifacts/), bound to 127.0.0.1, and prints for every study the deep link that opens its runs
table in the model-training view (`#/experiments/<id>/runs?workflowType=machine_learning`):
MLflow 3's UI otherwise opens an experiment on its GenAI overview. The server's own lines go to
mlflow-ui.log in the results folder. Stops with Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from analysis.store import ARTIFACTS, StoreMissing, check_store, embedded_database, embedded_uri

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
UI_LOG = "mlflow-ui.log"  # in the results folder: what the server prints


def runs_link(base_url: str, experiment_id: str) -> str:
    """The URL that opens an experiment's runs table in the model-training view of MLflow 3's UI."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def browse_hint(tracking_uri: str, experiment_id: str) -> str:
    """What a sweep prints so that its runs are one click away: the link, and for an embedded
    store the command that serves it."""
    database = embedded_database(tracking_uri)
    if database is None:
        return f"runs:    {runs_link(tracking_uri, experiment_id)}"
    return (f"runs:    python -m sweep.ui {database.parent}\n"
            f"         then {runs_link(f'http://{HOST}:{DEFAULT_PORT}', experiment_id)}")


def ui_command(tracking_uri: str, port: int) -> list[str]:
    """`mlflow ui` on an embedded store, serving its artifacts from the folder beside it."""
    destination = embedded_database(tracking_uri).parent / ARTIFACTS
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--artifacts-destination", str(destination), "--host", HOST, "--port", str(port), "--workers", "1"]


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise OSError("no free port")


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Return once `url`/health answers; raise if the server process ends or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with code {proc.returncode}")
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow ui at {url} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """End the server started by `proc` in its own session, with its workers."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def experiment_links(tracking_uri: str, base_url: str) -> list[str]:
    """One line per experiment with runs: its name and its runs link."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    lines = []
    for exp in client.search_experiments():
        if client.search_runs([exp.experiment_id], max_results=1):
            lines.append(f"  {exp.name}: {runs_link(base_url, exp.experiment_id)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweep.ui", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir", nargs="?", default="results", help="a results folder (default results/)")
    p.add_argument("--tracking-uri", help="an MLflow server (http://...) to link to instead; nothing is started")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (default {DEFAULT_PORT}, "
                                                                   "or a free one if taken)")
    args = p.parse_args(argv)
    if args.tracking_uri and not args.tracking_uri.startswith(("http://", "https://")):
        p.error(f"--tracking-uri {args.tracking_uri!r}: give a server's http(s) URL, or the results folder "
                "of an embedded store as RESULTS_DIR")
    if args.tracking_uri:
        print("\n".join(experiment_links(args.tracking_uri, args.tracking_uri)) or "no runs yet", flush=True)
        return 0
    tracking_uri = embedded_uri(args.results_dir)
    try:
        check_store(tracking_uri)
    except StoreMissing as e:
        p.error(str(e))
    # Ctrl-C, or a SIGTERM to this process, stops the server it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = free_port(args.port)
    url = f"http://{HOST}:{port}"
    # The server's own lines (its start-up and shutdown, its libraries' deprecation warnings) go to a log file.
    log_path = Path(args.results_dir) / UI_LOG
    with open(log_path, "a") as log:
        proc = subprocess.Popen(ui_command(tracking_uri, port), start_new_session=True, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        try:
            wait_healthy(url, proc)
        except (RuntimeError, TimeoutError) as e:
            print(f"python -m sweep.ui: error: {e}; its log: {log_path}", file=sys.stderr, flush=True)
            return 1
        print(f"MLflow UI on {url} (Ctrl-C stops it; server log: {log_path}); each study's runs:", flush=True)
        print("\n".join(experiment_links(tracking_uri, url)) or "  no runs yet", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
