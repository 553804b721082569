"""The Ray cluster under a sweep: which one it runs on, what its nodes hold, and noticing when it goes away.

`find(address)` resolves an address as `ray.init` does (--address, else RAY_ADDRESS, else the cluster
last started on this node; None: Ray starts a local one), so that the preflight checks the cluster the
sweep will really use. `Watch` polls the cluster's GCS port once a second while the trials run: a cluster
that stops under the sweep (`ray stop`, a head that dies, a cluster another program started and ended)
is noticed within seconds instead of after Ray's own 60 s reconnection timeout.
"""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import torch
import yaml

from models.config import ConfigError

# The autoscaling config that `ray up` puts on the head and cluster.yaml's head starts Ray with.
AUTOSCALING_CONFIG = Path("~/ray_bootstrap_config.yaml")
POLL_SECONDS = 1.0
LOST_AFTER = 3  # failed polls in a row: a GCS restarting under load still answers within that


def find(address: str | None) -> str | None:
    """host:port of the running cluster the sweep joins, or None when Ray will start a local one here."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        return canonicalize_bootstrap_address(address)
    except (ValueError, ConnectionError) as e:
        raise ConfigError(f"--address {address}: {str(e).splitlines()[0]}; allowed: host:port of a running Ray "
                          "cluster, 'auto' (one running on this node), or no --address (a local cluster)") from None


def connect(address: str) -> None:
    """Connect this process to the running cluster at `address` (left connected for the sweep)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)


def local_node() -> dict[str, float]:
    """What Ray would give a local cluster started here: its CPU count (cgroup limits included) and GPUs."""
    from ray._private.utils import get_num_cpus

    return {"CPU": float(get_num_cpus()), "GPU": float(torch.cuda.device_count())}


def nodes() -> list[dict[str, float]]:
    """The resources of each live node of the connected cluster."""
    import ray

    return [node["Resources"] for node in ray.nodes() if node["Alive"]]


def autoscaled_types() -> list[tuple[dict[str, float], int]]:
    """(resources, max_workers) of each node type the cluster's autoscaler may start (none without its
    config); a type whose CPUs are not listed is taken to have as many as any trial asks for."""
    path = AUTOSCALING_CONFIG.expanduser()
    if not path.is_file():
        return []
    config = yaml.safe_load(path.read_text()) or {}
    return [({"CPU": float("inf"), **t.get("resources", {})}, int(t.get("max_workers", 0)))
            for t in config.get("available_node_types", {}).values() if t.get("max_workers", 0) > 0]


def workers_fitting(node: dict[str, float], cpus: float, gpus: float) -> float:
    """How many worker bundles of `cpus` CPUs and `gpus` GPUs one node holds."""
    fit = node.get("CPU", 0.0) // cpus
    return min(fit, node.get("GPU", 0.0) // gpus) if gpus else fit


def started_here() -> bool:
    """Whether this process's Ray started the cluster it is connected to (rather than joining one)."""
    import ray._private.worker as worker

    return bool(worker._global_node is not None and worker._global_node.head)


def gcs_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def reachable(address: str) -> bool:
    """Whether the GCS at host:port accepts a connection (the kernel answers for a busy one)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=POLL_SECONDS).close()
        return True
    except OSError:
        return False


class Watch:
    """While in the block, polls the GCS at `address` (host:port) every POLL_SECONDS in a daemon thread;
    after LOST_AFTER failed polls in a row it calls `on_lost()` (once), from that thread."""

    def __init__(self, address: str, on_lost):
        self.address, self.on_lost = address, on_lost
        self.stopped = threading.Event()

    def _poll(self):
        failed = 0
        while not self.stopped.wait(POLL_SECONDS):
            failed = 0 if reachable(self.address) else failed + 1
            if failed >= LOST_AFTER and not self.stopped.is_set():
                self.on_lost()
                return

    def __enter__(self):
        threading.Thread(target=self._poll, name="cluster-watch", daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
