"""The Ray cluster under a sweep: which one it runs on, what its nodes hold, and noticing when it goes away.

`choose(address)` applies one rule to the cluster a sweep joins. An address the user gave (--address, else
RAY_ADDRESS) must answer within ANSWER_SECONDS, or the sweep is refused; an address found by discovery
(`auto`, or the address file of the cluster last started here when none is given) is joined only when it
answers and its processes on this node are this Unix user's, otherwise the sweep says which address it
ignored and why and starts a local cluster of its own. No address is ever joined untested, so a dead
cluster's address file cannot hang a sweep. `Watch` polls the cluster's GCS port once a second while the
trials run: a cluster that stops under the sweep (`ray stop`, a head that dies, a cluster another program
started and ended) is noticed within seconds instead of after Ray's own 60 s reconnection timeout.
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from models.config import ConfigError

# The autoscaling config that `ray up` puts on the head and cluster.yaml's head starts Ray with.
AUTOSCALING_CONFIG = Path("~/ray_bootstrap_config.yaml")
POLL_SECONDS = 1.0
LOST_AFTER = 3  # failed polls in a row: a GCS restarting under load still answers within that
ANSWER_SECONDS = 5.0  # an address that has not answered by then is taken as dead
LOCAL = "local"  # ray.init's address for a cluster that this process starts
ALLOWED = ("allowed: host:port of a running Ray cluster, 'auto' (one you started on this node), 'local', "
           "or none (a running cluster of yours on this node, else a local one)")
TOKEN_REFUSED = "uses token authentication and refused this driver (no token, or not the cluster's)"
TOKEN_ALLOWED = ("allowed: RAY_AUTH_MODE=token with the cluster's token in ~/.ray/auth_token (or RAY_AUTH_TOKEN), "
                 "as on its nodes")


@dataclass(frozen=True)
class Target:
    """The cluster a sweep runs on: `address` for ray.init (host:port, or LOCAL) and why, for its line."""
    address: str
    why: str


def choose(address: str | None) -> Target:
    """The cluster the sweep runs on, by the rule above; ConfigError (one line) for a given address that does
    not answer; prints one line for a discovered address it ignores."""
    given, source = (address, "--address") if address else (os.environ.get("RAY_ADDRESS") or None, "RAY_ADDRESS")
    if given == LOCAL:
        return Target(LOCAL, f"started by this sweep ({source}=local), it ends with it")
    if given and given != "auto":
        target = _canonical(given, source)
        problem = _answers(target)
        if problem:
            raise ConfigError(f"{source} {given} {problem}; "
                              f"{TOKEN_ALLOWED if problem == TOKEN_REFUSED else ALLOWED}")
        return Target(target, f"joined: given by {source}")
    found, where = _discover(given == "auto")
    if found is None:
        if given == "auto":
            raise ConfigError(f"{source} auto: no Ray cluster runs on this node; {ALLOWED}")
        return Target(LOCAL, "started by this sweep, it ends with it")
    owners = _owners(found)
    others = sorted(owners - {_me()})
    problem = f"runs as {', '.join(others)}, not as you" if others else _answers(found) or (
        None if owners else "has no process on this node")
    if problem:
        print(f"cluster: ignored {found} (found in {where}): it {problem}; starting a local cluster", flush=True)
        return Target(LOCAL, f"started by this sweep, it ends with it; {found} ignored")
    return Target(found, f"joined: found in {where}, running as you")


def _canonical(address: str, source: str) -> str:
    from ray._private.services import canonicalize_bootstrap_address

    try:
        return canonicalize_bootstrap_address(address)
    except (ValueError, ConnectionError, OSError) as e:
        raise ConfigError(f"{source} {address}: {str(e).splitlines()[0]}; {ALLOWED}") from None


def _discover(auto: bool) -> tuple[str | None, str]:
    """(address, where it was found) of the cluster Ray itself would join: the address file of the last
    `ray start` on this node; with `auto` also any raylet running here. (None, "") when there is none."""
    from ray._common.utils import get_ray_address_file
    from ray._private.services import find_gcs_addresses
    from ray._private.utils import read_ray_address

    found = read_ray_address()
    if found:
        return _canonical(found, get_ray_address_file(None)), get_ray_address_file(None)
    running = sorted(find_gcs_addresses()) if auto else []
    return (running[0], "the raylets running on this node") if running else (None, "")


def _answers(address: str) -> str | None:
    """None when the GCS at host:port answers a request within ANSWER_SECONDS; else what is wrong, in words
    (no answer, or a token the cluster does not accept: the setting to use)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=ANSWER_SECONDS).close()
    except (OSError, ValueError) as e:
        return f"does not answer within {ANSWER_SECONDS:g} s ({getattr(e, 'strerror', None) or e})"
    outcome: list = []  # the GCS's answer to one request, from a thread: Ray's client would retry for 40 s

    def ask():
        from ray._raylet import GcsClient

        try:
            GcsClient(address=address).internal_kv_get(b"session_name", namespace=b"session",
                                                        timeout=ANSWER_SECONDS)
            outcome.append(None)
        except Exception as e:  # noqa: BLE001 - any failure to answer is the answer
            outcome.append(e)

    with _quiet_stderr():  # Ray's C++ client logs each failed attempt on stderr: the sweep says it in one line
        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        asking.join(ANSWER_SECONDS)
    if not outcome:
        return f"does not answer within {ANSWER_SECONDS:g} s (its port is open, its GCS silent)"
    if outcome[0] is None:
        return None
    from ray.exceptions import AuthenticationError

    if isinstance(outcome[0], AuthenticationError):
        return TOKEN_REFUSED
    return f"does not answer within {ANSWER_SECONDS:g} s ({str(outcome[0]).splitlines()[0][:120]})"


@contextlib.contextmanager
def _quiet_stderr():
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _owners(address: str) -> set[str]:
    """The Unix users that the cluster's processes on this node (its GCS, the raylets joined to it) run as."""
    import psutil

    port = address.rpartition(":")[2]
    return {proc.info["username"] for proc in psutil.process_iter(["cmdline", "username"])
            if f"--gcs_server_port={port}" in (proc.info["cmdline"] or [])
            or f"--gcs-address={address}" in (proc.info["cmdline"] or [])}


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


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
    """How many worker bundles of `cpus` CPUs and `gpus` GPUs one node holds (inf: as many as asked)."""
    fit = _times(node.get("CPU", 0.0), cpus)
    return min(fit, _times(node.get("GPU", 0.0), gpus)) if gpus else fit


def _times(have: float, each: float) -> float:
    return have if math.isinf(have) else have // each  # inf // each is nan, which no count compares above


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
