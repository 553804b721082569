"""Every refusal a sweep can make before Ray starts.

`check(plan, ...)` raises ConfigError with one line naming the bad value and what is allowed, and
creates nothing: not the results folder, not the data folder, not a Ray session. It checks, in order:
the results dir (a writable folder, or creatable in one), the tracking URI (a known scheme; a server
that answers /health within TIMEOUT seconds), the image size the data set can give, the data set
(present and checked, or its download host reachable), the free disk space against an estimate of
what the sweep writes, and the GPUs a trial asks for (this machine's, or the cluster's, or the
cluster's autoscaler's node types).
"""
from __future__ import annotations

import math
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import torch
import yaml

from models.build import build_model
from models.config import ConfigError, TrialConfig
from models.data import CIFAR, IMAGE_FOLDERS, PHOTO_SHORT_SIDE, split_image_folder, verify_cifar

TIMEOUT = 3.0  # seconds a tracking server or the data set's host has to answer
# MLflow's tracking stores by URI scheme (mlflow.tracking._tracking_service.utils), "" = a local path.
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")
# The autoscaling config that `ray up` puts on the head and cluster.yaml's head starts Ray with.
AUTOSCALING_CONFIG = Path("~/ray_bootstrap_config.yaml")
PICTURES_BYTES = 2 << 20  # a trial's topography pictures, with room to spare
CHECKPOINT_COPIES = 3  # Tune's latest + the one being written, and the final one as an MLflow artifact


def check(plan, results_dir: Path | None, tracking_uri: str | None, address: str | None) -> None:
    """Refuse (ConfigError, one line) what would fail later; `results_dir` None for a resume."""
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
    check_gpus(plan.gpus, address)


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
            split_image_folder(cfg.data_dir)
        except (OSError, ValueError) as e:
            raise ConfigError(f"dataset={cfg.dataset}: {e}") from None


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


def check_gpus(gpus: float, address: str | None) -> None:
    """A trial's GPUs exist: on this machine, else in the Ray cluster (connected to here and left connected
    for the sweep), else among the node types its autoscaler may add (then it says so and goes on)."""
    if gpus <= 0 or torch.cuda.device_count() >= gpus:
        return
    import ray

    try:
        ray.init(address=address or "auto", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError):
        raise ConfigError(f"--gpus-per-trial {gpus:g}: this machine has {torch.cuda.device_count()} GPUs and no Ray "
                          "cluster was found; allowed: --gpus-per-trial 0 (e.g. --scale cpu), or --address of a "
                          "cluster with GPUs") from None
    have = ray.cluster_resources().get("GPU", 0)
    if have >= gpus:
        return
    scalable = _autoscaled_gpus()
    if scalable >= gpus:
        print(f"the cluster has {have:g} GPUs now; its autoscaler can add nodes with {scalable:g}: trials wait for "
              "them", flush=True)
        return
    ray.shutdown()
    raise ConfigError(f"--gpus-per-trial {gpus:g}: the cluster has {have:g} GPUs and its autoscaler adds none "
                      f"with more than {scalable:g}; allowed: at most {have:g}, or a cluster with GPU workers")


def _autoscaled_gpus() -> float:
    """The most GPUs of a node type the autoscaler may start (0 without an autoscaling config)."""
    path = AUTOSCALING_CONFIG.expanduser()
    if not path.is_file():
        return 0.0
    config = yaml.safe_load(path.read_text()) or {}
    types = config.get("available_node_types", {}).values()
    return max((t.get("resources", {}).get("GPU", 0) for t in types if t.get("max_workers", 0) > 0),
               default=0.0)
