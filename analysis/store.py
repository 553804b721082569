"""Where a results folder keeps its MLflow store, so that the folder can be copied or moved.

A results folder holds one embedded store (`mlflow.db` + `mlartifacts/`) and one folder per
sweep, each with a `sweep.json` that names the store and the sweep folder relative to the
results folder (the sweep folder's parent): nothing in it is an absolute path of this machine.

Artifacts use MLflow's own proxy scheme: experiments of the embedded store are created with the
artifact location `mlflow-artifacts:/<experiment>`, so the store records no file paths at all.
`mlflow ui --artifacts-destination <results>/mlartifacts` (what `python -m sweep.ui` starts)
serves `mlflow-artifacts:/P` from `<results>/mlartifacts/P`; this module registers the same
mapping with MLflow's artifact-repository registry for an MlflowClient on the `sqlite:` store
(which MLflow itself refuses: it serves that scheme only through a server). A sweep logged to a
tracking server (`--tracking-uri http://...`) keeps the server's own artifact location.
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
from mlflow.tracking import get_tracking_uri

DATABASE = "mlflow.db"
ARTIFACTS = "mlartifacts"
SCHEME = "mlflow-artifacts"


class StoreMissing(FileNotFoundError):
    """The MLflow store a sweep or command refers to is not there."""

    def __str__(self) -> str:
        return self.args[0]


def embedded_uri(results_dir: str | Path) -> str:
    """The tracking URI of the embedded store of `results_dir` (made absolute)."""
    return f"sqlite:///{Path(results_dir).expanduser().resolve() / DATABASE}"


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """The artifact location of a new experiment: `mlflow-artifacts:/<experiment>` in a sqlite
    store (no path of this machine), None (the server's own) elsewhere."""
    return f"{SCHEME}:/{experiment}" if embedded_database(tracking_uri) is not None else None


def embedded_database(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI; None for any other store."""
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def check_store(tracking_uri: str, refers: str = "") -> None:
    """Raise StoreMissing (one line, naming the path) when a sqlite store's file is absent,
    before anything opens it (opening would create an empty store there)."""
    database = embedded_database(tracking_uri)
    if database is not None and not database.is_file():
        raise StoreMissing(f"no MLflow store at {database}{refers}; give the results folder that holds "
                           f"{DATABASE} and {ARTIFACTS}/")


def read_sweep(sweep_dir: str | Path, check: bool = True) -> dict:
    """The sweep.json of `sweep_dir` with its paths resolved where the folder is now: `dir` (the
    sweep folder), `results_dir`, `tracking_uri` and `ray_storage`. Raises StoreMissing when the
    sweep has no sweep.json or (with `check`) its embedded store is missing."""
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    meta_file = sweep_dir / "sweep.json"
    if not meta_file.is_file():
        raise StoreMissing(f"no sweep.json in {sweep_dir}; give a folder a sweep printed at its start")
    meta = json.loads(meta_file.read_text())
    results_dir = sweep_dir.parent
    meta.update(dir=str(sweep_dir), results_dir=str(results_dir))
    if meta.get("store"):  # the embedded store, relative to the results folder
        meta["tracking_uri"] = f"sqlite:///{results_dir / meta['store']}"
    meta["ray_storage"] = meta.get("ray_storage") or str(sweep_dir)
    if check:
        check_store(meta["tracking_uri"], f" (named by {meta_file})")
    return meta


def write_sweep(meta: dict) -> Path:
    """Write sweep.json into meta["dir"] with the paths relative to the results folder: the sweep
    folder by its name, the embedded store as `store`, local Ray storage left out (it is the sweep
    folder). Returns the file."""
    sweep_dir = Path(meta["dir"])
    record = {k: v for k, v in meta.items() if k not in ("results_dir",)}
    record["dir"] = sweep_dir.name
    database = embedded_database(meta["tracking_uri"])
    if database is not None and database.parent == sweep_dir.parent:
        record.update(store=database.name, tracking_uri=None)
    if Path(meta["ray_storage"]) == sweep_dir:
        record["ray_storage"] = None
    (sweep_dir / "sweep.json").write_text(json.dumps(record, indent=2))
    return sweep_dir / "sweep.json"


def _artifact_repository(artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
    """`mlflow-artifacts:/P` on an embedded store: <results>/mlartifacts/P, as `mlflow ui
    --artifacts-destination <results>/mlartifacts` serves it; through a server: MLflow's own."""
    database = embedded_database(tracking_uri or get_tracking_uri())
    if database is None:
        return MlflowArtifactsRepository(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
    path = urlparse(artifact_uri).path.lstrip("/")
    return LocalArtifactRepository(str(database.parent / ARTIFACTS / path), tracking_uri, registry_uri)


_artifact_repository_registry.register(SCHEME, _artifact_repository)
