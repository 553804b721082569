"""The plan of a sweep: a study's grid at a scale, with the user's overrides, as plain data.

`make_plan` validates everything (study file, scale, overrides, every trial's
config) and raises ConfigError naming the bad value before anything starts;
sweep/run.py (the command line) and sweep/execute.py (Ray Tune) both take a Plan,
and sweep.json stores it, so a resume runs exactly the same trials. No Ray or
MLflow here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from models.config import ConfigError, TrialConfig, field_names
from sweep.scales import SCALES, default_scale
from sweep.study import Study, load_study


@dataclass
class Plan:
    """What a sweep runs: every arm of a study with every seed, on top of a base config."""

    study: str
    scale: str
    base: dict  # TrialConfig fields shared by all trials
    arms: list[dict]  # per-arm TrialConfig fields
    seeds: list[int]
    cpus: float  # per trial (shared evenly by its workers)
    gpus: float  # per trial (shared evenly by its workers)
    workers: int = 1  # processes per trial (data parallel, Ray Train); 1 = the trial in the Tune trial's process
    # What the analysis needs to know of the study (defaults: sweeps planned before studies were files).
    swept: list[str] = field(default_factory=list)  # fields that differ between arms, outermost first
    reference: dict = field(default_factory=dict)  # the arm others are compared with (within the other axes)
    metrics: list[str] = field(default_factory=list)  # per-trial summaries the tables show
    table: str = ""  # the paper table the study mirrors
    description: str = ""
    source: str = ""  # the study file

    def trials(self) -> list[TrialConfig]:
        """Every trial's config, validated (raises ConfigError naming the bad value)."""
        return [TrialConfig.from_dict({**self.base, **arm, "seed": seed}) for arm in self.arms for seed in self.seeds]


def make_plan(study: str | Study, scale: str | None = None, seeds: int | None = None, overrides: dict | None = None,
              cpus: float | None = None, gpus: float | None = None, grid: dict | None = None,
              workers: int | None = None) -> Plan:
    """A validated plan of `study` (a shipped name, a YAML path or a Study) at `scale`.

    overrides: field -> value for every trial (not for a swept field); grid: field -> values,
    an axis added to the study or replacing one; cpus, gpus, workers: per trial (None: the scale's).
    Any problem raises ConfigError before anything starts.
    """
    study = study if isinstance(study, Study) else load_study(study)
    for name, values in (grid or {}).items():
        study = study.with_axis(name, values)
    scale = scale or default_scale()
    if scale not in SCALES:
        raise ConfigError(f"scale {scale!r} is unknown; allowed: {', '.join(SCALES)}")
    sc = SCALES[scale]
    overrides = dict(overrides or {})
    if "seed" in overrides:
        raise ConfigError("seed cannot be set with --set; use --seeds N (seeds 0..N-1)")
    dataset = overrides.get("dataset") or study.fixed.get("dataset")
    config, default_seeds = sc.settings(dataset)
    base = TrialConfig.from_dict({**config, **study.fixed, **overrides}).to_params()  # validates the types
    base.pop("seed")
    swept = study.swept()
    clash = sorted(set(swept) & set(overrides))
    if clash:
        raise ConfigError(f"--set {clash} would override what study {study.name!r} sweeps; allowed: fields other "
                          f"than {sorted(swept)} (use --grid FIELD=V1,V2 to change an axis)")
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds {seeds} must be >= 1")
        seed_list = list(range(seeds))
    else:
        seed_list = study.seeds or list(range(default_seeds))
    default_cpus, default_gpus = sc.resources(dataset)
    cpus, gpus = default_cpus if cpus is None else cpus, default_gpus if gpus is None else gpus
    if cpus <= 0 or gpus < 0:
        raise ConfigError(f"--cpus-per-trial {cpus} must be > 0 and --gpus-per-trial {gpus} >= 0")
    workers = sc.workers if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers-per-trial {workers} must be >= 1")
    arms = study.grid()
    try:
        configs = [TrialConfig.from_dict({**base, **arm}) for arm in arms]
    except ConfigError as e:
        raise ConfigError(f"{study.source}: a trial of study {study.name!r} is invalid: {e}") from None
    for cfg in configs:
        if cfg.dataset != "photos" and not cfg.data_dir:
            raise ConfigError(f"dataset={cfg.dataset} needs --data-dir (a folder that holds or will receive it)")
        if cfg.batch_size % workers:
            raise ConfigError(f"batch_size={cfg.batch_size} does not split over --workers-per-trial {workers}; "
                              f"allowed: a batch size divisible by {workers}")
    values = {name: {repr(getattr(c, name)) for c in configs} for name in swept}
    return Plan(study.name, scale, base, arms, seed_list, cpus, gpus, workers,
                swept=[n for n in swept if n in study.axes or len(values[n]) > 1],
                reference=dict(study.reference), metrics=list(study.metrics), table=study.table,
                description=study.description, source=study.source)


def parse_overrides(pairs: list[str]) -> dict:
    """--set FIELD=VALUE pairs as a dict (values still strings; make_plan types them)."""
    return dict(_pairs(pairs, "--set", "FIELD=VALUE", field_names()))


def parse_grid(pairs: list[str]) -> dict:
    """--grid FIELD=V1,V2,... pairs as field -> list of values (strings; Study.with_axis types them)."""
    out = {}
    for key, text in _pairs(pairs, "--grid", "FIELD=V1,V2,...", [f for f in field_names() if f != "seed"]):
        if key in out:
            raise ConfigError(f"--grid {key} is given twice; allowed: one --grid per field")
        out[key] = [v.strip() for v in text.split(",") if v.strip()]
        if not out[key]:
            raise ConfigError(f"--grid {key}={text!r}: the axis is empty; allowed: one or more comma-separated values")
    return out


def _pairs(pairs: list[str], option: str, form: str, allowed: list[str]):
    """(field, text) of each FIELD=TEXT pair of `option`, the field checked against `allowed`."""
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"{option} {pair!r} is not {form}")
        if key not in allowed:
            raise ConfigError(f"{option} {key!r} is not a config field; allowed: {', '.join(allowed)}"
                              + (" (seeds: --seeds N)" if key == "seed" else ""))
        yield key, value
