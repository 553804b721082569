"""Every refusal a sweep can make before Ray starts.

`check(plan, ...)` raises ConfigError with one line naming the bad value and what is allowed, and
creates nothing: not the results folder, not the data folder, not a Ray session. It checks, in order:
the results dir (a writable folder, or creatable in one), the tracking URI (a known scheme; a server
that answers /health within TIMEOUT seconds), the image size the data set can give, the data set
(present and checked, or its download host reachable; every file of an image folder listed once and
its header read: sweep/images.py), the free disk space against an estimate of
what the sweep writes, the cluster the sweep runs on (sweep/cluster.py: `choose`), and the CPUs and GPUs a
trial asks for (a node of that cluster holds them, or a node type its autoscaler may add).
"""
from __future__ import annotations

import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import torch

from models.build import build_model
from models.config import ConfigError, TrialConfig
from models.data import CIFAR, IMAGE_FOLDERS, PHOTO_SHORT_SIDE, split_image_folder, verify_cifar
from models.data.folders import TEST_CAP, VAL_CAP
from sweep import cluster, images

TIMEOUT = 3.0  # seconds a tracking server or the data set's host has to answer
# MLflow's tracking stores by URI scheme (mlflow.tracking._tracking_service.utils), "" = a local path.
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")
PICTURES_BYTES = 2 << 20  # a trial's topography pictures, with room to spare
CHECKPOINT_COPIES = 3  # Tune's latest + the one being written, and the final one as an MLflow artifact


def check(plan, results_dir: Path | None, tracking_uri: str | None, address: str | None) -> cluster.Target:
    """Refuse (ConfigError, one line) what would fail later; `results_dir` None for a resume. Returns the
    cluster the sweep runs on (joined here when it is running)."""
    if results_dir is not None:
        check_results_dir(results_dir)
    if tracking_uri:
        check_tracking_uri(tracking_uri)
    configs = plan.trials()
    for cfg in {(c.dataset, c.data_dir, c.image_size): c for c in configs}.values():
        check_image_size(cfg)
        check_data(cfg)
    if results_dir is not None:
        check_disk(configs, results_dir)
    target = cluster.choose(address)
    check_resources(plan, target.address)
    return target


def _existing(path: Path) -> Path:
    """The path itself or its nearest existing ancestor."""
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return path


def check_results_dir(results_dir: Path) -> None:
    """A folder we may write in, or a path whose nearest existing ancestor is one (created later)."""
    results_dir = Path(results_dir)
    found = _existing(results_dir)
    if not found.is_dir():
        what = "is a file" if found == results_dir.resolve() else f"lies under the file {found}"
        raise ConfigError(f"--results-dir {results_dir} {what}; allowed: a folder (created if absent)")
    if not os.access(found, os.W_OK | os.X_OK):
        raise ConfigError(f"--results-dir {results_dir}: {found} is not writable; allowed: a folder you may write in")


def check_tracking_uri(uri: str) -> None:
    """A scheme MLflow knows; an http(s) server must answer /health, a database host accept a connection,
    and a sqlite file's folder exist, each within TIMEOUT seconds."""
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.split("+")[0]  # postgresql+psycopg2:// etc.
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(f"--tracking-uri {uri}: scheme {parsed.scheme!r} is unknown; allowed: "
                          f"{', '.join(s + '://' for s in TRACKING_SCHEMES)}")
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=TIMEOUT) as answer:
                ok = answer.status == 200
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise ConfigError(f"--tracking-uri {uri} does not answer within {TIMEOUT:g} s ({reason}); allowed: a "
                              "running MLflow server (see `mlflow server`), or no --tracking-uri for the local "
                              "store") from None
        if not ok:
            raise ConfigError(f"--tracking-uri {uri}: /health answered {answer.status}; allowed: an MLflow server")
    elif scheme == "sqlite":
        folder = Path(parsed.path[1:] if parsed.path.startswith("//") else parsed.path).parent
        if not folder.is_dir():
            raise ConfigError(f"--tracking-uri {uri}: folder {folder} does not exist; allowed: sqlite:///ABSOLUTE/"
                              "PATH/mlflow.db in an existing folder")
    elif scheme in ("postgresql", "mysql", "mssql"):
        try:
            socket.create_connection((parsed.hostname, parsed.port or {"postgresql": 5432, "mysql": 3306,
                                                                       "mssql": 1433}[scheme]), TIMEOUT).close()
        except OSError as e:
            raise ConfigError(f"--tracking-uri {uri}: {parsed.hostname} does not answer within {TIMEOUT:g} s "
                              f"({e}); allowed: a reachable database") from None


def check_image_size(cfg: TrialConfig) -> None:
    """CIFAR gives 32 x 32 images; crops of the photos are at most their short side (256)."""
    if cfg.dataset in CIFAR and cfg.image_size != 32:
        raise ConfigError(f"image_size={cfg.image_size} is not what dataset={cfg.dataset} gives; allowed: 32")
    if cfg.dataset == "photos" and cfg.image_size > PHOTO_SHORT_SIDE:
        raise ConfigError(f"image_size={cfg.image_size} is larger than the photos (short side {PHOTO_SHORT_SIDE} "
                          f"px); allowed: at most {PHOTO_SHORT_SIDE}, or an image-folder data set")


def check_data(cfg: TrialConfig) -> None:
    """CIFAR present and official (md5), or its archive's host reachable; an image folder with images."""
    if cfg.dataset in CIFAR:
        spec = CIFAR[cfg.dataset]
        folder = Path(cfg.data_dir) / spec["folder"]
        if folder.exists():
            try:
                verify_cifar(cfg.dataset, cfg.data_dir)
            except (OSError, ValueError) as e:
                raise ConfigError(f"dataset={cfg.dataset}: {e}") from None
            return
        if (Path(cfg.data_dir) / Path(spec["url"]).name).exists():
            return  # the archive is there; its md5 is checked before it is unpacked
        host = urllib.parse.urlparse(spec["url"])
        try:
            socket.create_connection((host.hostname, host.port or 443), TIMEOUT).close()
        except OSError as e:
            raise ConfigError(f"dataset={cfg.dataset}: {folder} is absent and {host.scheme}://{host.hostname} is not "
                              f"reachable ({e}); allowed: --data-dir holding {spec['folder']}/, or network access "
                              "to download it") from None
    elif cfg.dataset in IMAGE_FOLDERS:
        try:
            train, val, test = split_image_folder(cfg.data_dir)
        except (OSError, ValueError) as e:
            raise ConfigError(f"dataset={cfg.dataset}: {e}") from None
        used = sorted(train + val[:VAL_CAP] + test[:TEST_CAP])  # every file a trial reads, named in path order
        bad = images.check_files(used, cfg.data_dir)
        if bad:
            raise ConfigError(f"dataset={cfg.dataset}: {images.refusal(bad, len(used))}; allowed: image files "
                              "whose headers Pillow reads (fix or remove these)")


def estimate_bytes(configs: list[TrialConfig]) -> int:
    """What the sweep writes, about: per trial CHECKPOINT_COPIES checkpoints (model, its buffers and AdamW's
    two moments, float32) and its pictures. The models are built on the meta device (no memory)."""
    total = 0
    sizes: dict[tuple, int] = {}
    for cfg in configs:
        key = (cfg.model, cfg.width, cfg.codebook_size, cfg.code_dim)
        if key not in sizes:
            with torch.device("meta"):
                model = build_model(cfg)
            params = sum(p.numel() * p.element_size() for p in model.parameters())
            buffers = sum(b.numel() * b.element_size() for b in model.buffers())
            sizes[key] = 3 * params + buffers
        total += CHECKPOINT_COPIES * sizes[key] + PICTURES_BYTES
    return total


def check_disk(configs: list[TrialConfig], results_dir: Path) -> None:
    """The results dir's disk has room for `estimate_bytes`."""
    need = estimate_bytes(configs)
    free = shutil.disk_usage(_existing(results_dir)).free
    if free < need:
        raise ConfigError(f"--results-dir {results_dir}: its disk has {free / 1e9:.1f} GB free, the sweep needs about "
                          f"{need / 1e9:.1f} GB ({len(configs)} trials' checkpoints); allowed: a disk with more free "
                          "space, or fewer/smaller trials")


def check_resources(plan, address: str) -> None:
    """A trial's CPUs and GPUs (per worker: its share) fit a node of the cluster the sweep runs on (at
    `address`, connected to here and left connected; or this machine for cluster.LOCAL, where Ray will start
    a local one), or a node type its autoscaler may add (then it says so and goes on)."""
    per_cpu, per_gpu = plan.cpus / plan.workers, plan.gpus / plan.workers
    found = None if address == cluster.LOCAL else address
    if found is None:
        have, where = [cluster.local_node()], "this machine (Ray starts a local cluster on it)"
    else:
        cluster.connect(found)
        have, where = cluster.nodes(), f"the Ray cluster at {found}"
    if sum(cluster.workers_fitting(n, per_cpu, per_gpu) for n in have) >= plan.workers:
        return
    types = cluster.autoscaled_types() if found else []  # a local cluster has no autoscaler
    if sum(cluster.workers_fitting(t, per_cpu, per_gpu) * most for t, most in types) + \
            sum(cluster.workers_fitting(n, per_cpu, per_gpu) for n in have) >= plan.workers:
        print(f"{where} cannot hold a trial now; its autoscaler can add nodes that do: trials wait for them",
              flush=True)
        return
    if found is not None:
        import ray
        ray.shutdown()
    largest = max(have, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    most = f"{_count(largest.get('CPU', 0.0), 'CPU')} and {_count(largest.get('GPU', 0.0), 'GPU')}"
    asked = f"--cpus-per-trial {plan.cpus:g}" + (f" --gpus-per-trial {plan.gpus:g}" if plan.gpus else "") + \
        (f" over --workers-per-trial {plan.workers} ({per_cpu:g} CPUs, {per_gpu:g} GPUs each)" if plan.workers > 1
         else "")
    nodes = "has" if found is None else f"has {len(have)} nodes, the largest with" if len(have) > 1 else \
        "has 1 node with"
    scaler = "its autoscaler adds none larger" if types else "no autoscaler adds nodes"
    raise ConfigError(f"{asked}: {where} {nodes} {most}, and {scaler}; allowed: at most {most} per "
                      f"{'worker' if plan.workers > 1 else 'trial'}, or --address of a cluster with larger nodes")


def _count(n: float, unit: str) -> str:
    return f"{n:g} {unit}" + ("" if n == 1 else "s")
