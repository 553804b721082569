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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
from mlflow.tracking import get_tracking_uri

import metrics as M
from plan import Plan, PlanError

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


@dataclass
class Sweep:
    """A sweep's sweep.json, the one record the sweep writes (sweep/execute.py) and everyone reads:
    where its runs are (MLflow store, experiment, parent run), where Tune keeps its state, and the plan
    it runs (plan.Plan: the analysis reads its study's layout there without importing the sweep). Paths
    are as the folder is now; on disk they are relative to the results folder."""

    name: str  # the sweep folder's name, also its parent run's
    dir: Path  # the sweep folder (on disk: its name)
    plan: Plan
    tracking_uri: str  # on disk: null when the store is the results folder's own (`store`)
    experiment_id: str
    ray_storage: str  # on disk: null when it is the sweep folder
    ray_name: str
    parent_run_id: str
    winners: dict = field(default_factory=dict)  # a searched study: arm index -> its winner's values (or None)

    @property
    def study(self) -> str:
        return self.plan.study

    @property
    def results_dir(self) -> Path:
        """The results folder the sweep folder sits in (its MLflow store's, when embedded)."""
        return self.dir.parent

    @property
    def tune_path(self) -> str:
        """Where Tune keeps this sweep's experiment (what Tuner.restore takes)."""
        return f"{self.ray_storage.rstrip('/')}/{self.ray_name}"


class BadSweep(ValueError):
    """A sweep.json that is not what a sweep wrote, or names a store outside its results folder."""

    def __str__(self) -> str:
        return self.args[0]


# sweep.json: key -> the type every sweep writes there (the embedded store's file name, or the URI).
SWEEP_TYPES = {"dir": str, "plan": dict, "experiment_id": str, "parent_run_id": str,
               "ray_name": str, "store": (str, type(None)), "tracking_uri": (str, type(None)),
               "ray_storage": (str, type(None)), "winners": (dict, type(None))}
LOCAL_SCHEMES = ("", "sqlite", "file")  # stores that are files of this machine


def trust_notice(doing: str, verb: str, sweep_dir: str | Path, things: str = "sweep.json") -> str:
    """The line a command prints before it acts on a folder's sweep.json (and checkpoints)."""
    return f"{doing} {sweep_dir}: trusting its {things} ({verb} only folders your own sweeps wrote)"


def read_plan(data, where: str | Path, plan_type: type[Plan] = Plan) -> Plan:
    """The plan a sweep.json holds (as `plan_type`, the record or the sweep's own Plan); BadSweep naming
    `where` (the sweep.json) when it is not one."""
    try:
        return plan_type.from_dict(data, str(where))
    except PlanError as e:
        raise BadSweep(str(e)) from None


def read_sweep(sweep_dir: str | Path, check: bool = True, tracking_uri: str | None = None,
               plan_type: type[Plan] = Plan) -> Sweep:
    """The sweep.json of `sweep_dir` with its paths resolved where the folder is now: `dir` (the
    sweep folder), `tracking_uri` and `ray_storage`. Raises StoreMissing when the sweep has no
    sweep.json or (with `check`) its embedded store is missing, and BadSweep (one line) when the
    file is not what a sweep writes or names a store of this machine outside its results folder,
    which is opened only when the user passes it as `tracking_uri` (--tracking-uri): MLflow would
    write its schema into whatever SQLite file it names. The plan is read as `plan_type` (the record, or
    sweep.plan.Plan for a resume)."""
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    meta_file = sweep_dir / "sweep.json"
    if not meta_file.is_file():
        raise StoreMissing(f"no sweep.json in {sweep_dir}; give a folder a sweep printed at its start")
    allowed = "allowed: the sweep.json a sweep wrote (restore it, or start the sweep again)"
    try:
        record = json.loads(meta_file.read_bytes().decode("utf-8"))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadSweep(f"{meta_file} is not a sweep's ({type(e).__name__}: {e}); {allowed}") from None
    if not isinstance(record, dict):
        raise BadSweep(f"{meta_file} is not a sweep's (a JSON {type(record).__name__}); {allowed}")
    missing = [k for k, kind in SWEEP_TYPES.items() if not isinstance(record.get(k), kind)]
    if missing:
        raise BadSweep(f"{meta_file} lacks {missing} (or they are not what a sweep writes); {allowed}")
    plan = read_plan(record["plan"], meta_file, plan_type)
    found = M.find_unprintable({k: v for k, v in record.items() if k != "plan"})  # its name is printed too
    if found:
        raise BadSweep(f"{meta_file} is not a sweep's ({'.'.join(map(str, found[0]))} = {found[1]!r}: a control "
                       f"character); {allowed}")
    results_dir = sweep_dir.parent
    record.setdefault("store", None)  # a sweep logged to a tracking server has none
    if record["store"] is not None:  # the embedded store, a file name in the results folder
        if Path(record["store"]).name != record["store"] or record["store"] in ("", ".", ".."):
            raise BadSweep(f"{meta_file} names the store {record['store']!r}, not a file of its results folder "
                           f"{results_dir}; {allowed}")
        record["tracking_uri"] = f"sqlite:///{results_dir / record['store']}"
    elif record["tracking_uri"] is None:
        raise BadSweep(f"{meta_file} names no store (neither 'store' nor 'tracking_uri'); {allowed}")
    if tracking_uri:
        record["tracking_uri"] = tracking_uri  # the user's own choice
    elif record["store"] is None and urlparse(record["tracking_uri"]).scheme.split("+")[0] in LOCAL_SCHEMES:
        raise BadSweep(f"{meta_file} names the store {record['tracking_uri']}, outside its results folder "
                       f"{results_dir}; allowed: --tracking-uri {record['tracking_uri']} to open it (if you trust it), "
                       "or a sweep folder whose store lies beside it")
    sweep = Sweep(name=record.get("name", sweep_dir.name), dir=sweep_dir, plan=plan,
                  tracking_uri=record["tracking_uri"], experiment_id=record["experiment_id"], ray_storage=record.get("ray_storage") or str(sweep_dir),
                  ray_name=record["ray_name"], parent_run_id=record["parent_run_id"],
                  winners=record.get("winners") or {})
    if check:
        check_store(sweep.tracking_uri, f" (named by {meta_file})")
    return sweep


SMOKE = "smoke"  # the scale of tests and first tries (sweep/scales.py): never what the notebook opens unasked


def newest_sweep(results_dir: str | Path) -> tuple[Path, str]:
    """The sweep folder to open when none is named: the newest (by its sweep.json) under `results_dir` that is
    not a smoke run, else the newest smoke run; and a phrase saying which it is. Folders whose sweep.json cannot
    be read are passed over. Raises StoreMissing when `results_dir` holds no sweep."""
    found = []
    for meta in Path(results_dir).glob("*/sweep.json"):
        try:
            found.append((meta.stat().st_mtime, read_sweep(meta.parent, check=False)))
        except (StoreMissing, BadSweep):
            continue
    if not found:
        raise StoreMissing(f"no sweep under {Path(results_dir).resolve()}: run `python -m sweep.run robustness` first")
    found.sort(key=lambda pair: pair[0])
    real = [sweep for _, sweep in found if sweep.plan.scale != SMOKE]
    where = f"{sweep_label(real[-1] if real else found[-1][1])}: the newest sweep under {results_dir}"
    return (real[-1].dir, f"{where} that is not a smoke run") if real else \
        (found[-1][1].dir, f"{where} (only smoke runs there)")


def sweep_label(sweep: Sweep) -> str:
    """'robustness at cpu scale'."""
    return f"{sweep.plan.study} at {sweep.plan.scale} scale"


def write_sweep(sweep: Sweep) -> Path:
    """Write sweep.json into sweep.dir with the paths relative to the results folder: the sweep
    folder by its name, the embedded store as `store`, local Ray storage left out (it is the sweep
    folder). Returns the file."""
    record = {**asdict(sweep), "dir": sweep.dir.name}  # the plan too: asdict is plan.to_dict
    database = embedded_database(sweep.tracking_uri)
    if database is not None and database.parent == sweep.results_dir:
        record.update(store=database.name, tracking_uri=None)
    if Path(sweep.ray_storage) == sweep.dir:
        record["ray_storage"] = None
    if not sweep.winners:  # only a searched study has winners: a grid's sweep.json stays as it was
        del record["winners"]
    (sweep.dir / "sweep.json").write_text(json.dumps(record, indent=2))
    return sweep.dir / "sweep.json"


def _artifact_repository(artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
    """`mlflow-artifacts:/P` on an embedded store: <results>/mlartifacts/P, as `mlflow ui
    --artifacts-destination <results>/mlartifacts` serves it; through a server: MLflow's own."""
    database = embedded_database(tracking_uri or get_tracking_uri())
    if database is None:
        return MlflowArtifactsRepository(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
    path = urlparse(artifact_uri).path.lstrip("/")
    return LocalArtifactRepository(str(database.parent / ARTIFACTS / path), tracking_uri, registry_uri)


_artifact_repository_registry.register(SCHEME, _artifact_repository)
