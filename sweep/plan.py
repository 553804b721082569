"""The plan of a sweep: a study's grid at a scale, with the user's overrides, as plain data.

`make_plan` validates everything (study file, scale, overrides, every trial's
config) and raises ConfigError naming the bad value before anything starts;
sweep/run.py (the command line) and sweep/execute.py (Ray Tune) both take a Plan,
and sweep.json stores it, so a resume runs exactly the same trials. No Ray or
MLflow here.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field

import metrics as M
from models.config import RENAMED, ConfigError, TrialConfig, field_names, renamed
from sweep.scales import SCALES, STARTUP_SECONDS, default_scale
from sweep.study import MAX_TRIALS, Study, load_study


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
    swept: list[str] = field(default_factory=list)  # what tells arms apart (fields, or "arm"), outermost first
    labels: list[str] = field(default_factory=list)  # per arm: its study arm's label ("" or none: unlabelled)
    reference: dict = field(default_factory=dict)  # the arm others are compared with (within the other axes)
    metrics: list[str] = field(default_factory=list)  # per-trial summaries the tables show
    analysis: dict = field(default_factory=dict)  # the study's `analysis:` block (analysis/factorial.py)
    layout: dict = field(default_factory=dict)  # the study's `layout:` block (analysis.tables.layout)
    table: str = ""  # the paper table the study mirrors
    description: str = ""
    source: str = ""  # the study file
    # A searched study: {"algorithm", "samples", "tuning_seed", "scheduler", "spaces": per arm field -> {dist: args}};
    # then `seeds` are the confirmation seeds, on which each arm's winner is trained again ({}: a grid).
    search: dict = field(default_factory=dict)

    def __post_init__(self):
        check_resources(self.cpus, self.gpus, self.workers)

    def trials(self) -> list[TrialConfig]:
        """Every trial's config, validated (raises ConfigError naming the bad value); of a searched study,
        each arm's confirmation trials at the arm's own values (the searched ones are drawn when it runs)."""
        return [TrialConfig.from_dict({**self.base, **arm, "seed": seed}) for arm in self.arms for seed in self.seeds]

    def n_trials(self) -> int:
        """How many trials the sweep runs: arms x seeds, or arms x (samples + confirmation seeds)."""
        return len(self.arms) * (self.search.get("samples", 0) + len(self.seeds))

    def expected_seconds(self, concurrent: int) -> float:
        """Expected wall time of the sweep with `concurrent` trials at a time, from the scale's measured
        seconds per step (0 when the scale has none): trials packed longest first onto the slots."""
        per_step = SCALES[self.scale].step_seconds if self.scale in SCALES else 0.0
        slots = [0.0] * max(1, concurrent)
        repeat = (self.search.get("samples", 0) + len(self.seeds)) // len(self.seeds)  # search trials too
        for seconds in sorted((cfg.steps * per_step for cfg in self.trials() * repeat), reverse=True):
            slots[slots.index(min(slots))] += seconds
        return max(slots) + STARTUP_SECONDS if per_step else 0.0

    def label(self, arm: dict) -> str:
        """The label of one of the plan's arms ("" when its study arm has none)."""
        return self.labels[self.arms.index(arm)] if self.labels else ""

    def arm_name(self, arm: dict) -> str:
        """An arm's name: its study label, else the VQ rule and what the study sweeps, e.g. 'KSOM hard N0=0'."""
        cfg = TrialConfig.from_dict({**self.base, **arm})
        fields = self.swept or sorted(set().union(*self.arms))  # sweeps planned before studies were files
        if "arm" not in fields:  # the VQ rule first, swept or not
            fields = ["neighbours"] + [f for f in fields if f not in ("neighbours", "quantizer")]
        parts = [self.label(arm) if name == "arm" else _short(name, cfg, fields, self._texts) for name in fields]
        return " ".join(p for p in parts if p)

    def run_name(self, arm: dict, seed: int, stage: str = "", values: dict | None = None) -> str:
        """A trial's MLflow run name: the arm's name, then the stage and the values a search drew, e.g.
        'KSOM hard N0=0 update-0=no seed=1', 'EMA-VQ search lr=0.00031 decay=0.95 seed=0'."""
        drawn = [f"{name}={v:.3g}" if isinstance(v, float) else f"{name}={v}" for name, v in (values or {}).items()]
        return " ".join([self.arm_name(arm)] + ([stage] if stage else []) + drawn + [f"seed={seed}"])

    @functools.cached_property
    def _texts(self) -> dict:
        """field -> {value: its text in run names} over the arms (metrics.value_texts: values that print
        alike with '%g' get the digits that tell them apart); the arms are fixed once planned."""
        fields = set().union(*self.arms) if self.arms else set()
        return {f: M.value_texts(arm.get(f, self.base.get(f)) for arm in self.arms) for f in fields}


def check_resources(cpus: float, gpus: float, workers: int) -> None:
    """What a trial asks for is a finite number: CPUs > 0, GPUs >= 0, workers a whole number >= 1
    (whether the cluster has them is sweep/preflight.py's)."""
    for option, value, allowed in (("--cpus-per-trial", cpus, "a finite number > 0"),
                                   ("--gpus-per-trial", gpus, "a finite number >= 0 (0: no GPU)")):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or \
                value < 0 or (value == 0 and option == "--cpus-per-trial"):
            raise ConfigError(f"{option} {value}: allowed: {allowed}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"--workers-per-trial {workers}: allowed: a whole number >= 1")


def make_plan(study: str | Study, scale: str | None = None, seeds: int | None = None, overrides: dict | None = None,
              cpus: float | None = None, gpus: float | None = None, grid: dict | None = None,
              workers: int | None = None, max_trials: int = MAX_TRIALS, search: str | None = None,
              samples: int | None = None) -> Plan:
    """A validated plan of `study` (a shipped name, a YAML path or a Study) at `scale`.

    overrides: field -> value for every trial (not for a swept field); grid: field -> values,
    an axis added to the study or replacing one; cpus, gpus, workers: per trial (None: the scale's);
    max_trials: the most trials (configurations x seeds) planned; search, samples: the algorithm and the
    samples per arm of a searched study (None: the study's); seeds of a searched study: the number of
    confirmation seeds. Any problem raises ConfigError before anything starts.
    """
    if not isinstance(max_trials, int) or max_trials < 1:
        raise ConfigError(f"--max-trials {max_trials}: allowed: a whole number >= 1")
    study = dataclasses.replace(study, max_trials=max_trials) if isinstance(study, Study) else \
        load_study(study, max_trials)
    if (search is not None or samples is not None) and not study.search:
        option = "--search" if search is not None else "--samples"
        raise ConfigError(f"{option}: study {study.name!r} ({study.source}) has no search: block; allowed: a study "
                          "file with one (its space comes from the file, docs/studies.md#search)")
    for name, values in (grid or {}).items():
        study = study.with_axis(name, values)
    scale = scale or default_scale()
    if scale not in SCALES:
        raise ConfigError(f"scale {scale!r} is unknown; allowed: {', '.join(SCALES)}")
    sc = SCALES[scale]
    overrides = dict(overrides or {})
    if "seed" in overrides:
        raise ConfigError("seed cannot be set with --set; use --seeds N (seeds 0..N-1)")
    searched = sorted(set(overrides) & set().union(*study.spaces())) if study.search else []
    if searched:
        raise ConfigError(f"--set {searched} would fix what study {study.name!r} searches; allowed: fields other "
                          f"than {sorted(set().union(*study.spaces()))}")
    dataset = overrides.get("dataset") or study.fixed.get("dataset")
    config, default_seeds = sc.settings(dataset)
    base = TrialConfig.from_dict({**config, **study.fixed, **overrides}).to_params()  # validates the types
    base.pop("seed")
    swept = study.swept()
    clash = sorted(set(swept) & set(overrides))
    if clash:
        raise ConfigError(f"--set {clash} would override what study {study.name!r} sweeps; allowed: fields other "
                          f"than {sorted(swept)} (use --grid FIELD=V1,V2 to change an axis)")
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds {seeds} must be >= 1")
    searched_plan = {}
    if study.search:
        try:
            chosen = study.search.with_overrides(search, samples, seeds)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        seed_list = chosen.confirm_seeds
        searched_plan = {"algorithm": chosen.algorithm, "samples": chosen.samples, "tuning_seed": chosen.tuning_seed,
                         "scheduler": chosen.scheduler, "spaces": study.spaces()}
    elif seeds is not None:
        seed_list = list(range(seeds))
    else:
        seed_list = study.seeds or list(range(default_seeds))
    default_cpus, default_gpus = sc.resources(dataset)
    cpus, gpus = default_cpus if cpus is None else cpus, default_gpus if gpus is None else gpus
    workers = sc.workers if workers is None else workers
    check_resources(cpus, gpus, workers)
    arms = study.grid()
    n = len(arms) * (searched_plan.get("samples", 0) + len(seed_list))
    if n > max_trials:
        raise ConfigError(f"study {study.name!r}: {n:,} trials ({len(arms):,} configurations x {len(seed_list)} "
                          f"seeds), more than --max-trials {max_trials:,}; allowed: fewer seeds or configurations, "
                          f"or --max-trials {n}")
    try:
        configs = [TrialConfig.from_dict({**base, **arm}) for arm in arms]
    except ConfigError as e:
        raise ConfigError(f"{study.source}: a trial of study {study.name!r} is invalid: {e}") from None
    for arm, space in zip(arms, searched_plan.get("spaces", [])):
        for name, dist in space.items():
            for value in next(iter(dist.values())):
                try:
                    TrialConfig.from_dict({**base, **arm, name: value})
                except ConfigError as e:
                    raise ConfigError(f"{study.source}: searched {name}={value!r} is invalid at this scale and "
                                      f"settings: {e}") from None
    if any(cfg.quantizer == "lucidrains" for cfg in configs):
        from models.lucidrains import vector_quantize
        vector_quantize()  # the library is there, or a one-line error naming the extra
    for cfg in configs:
        if cfg.precision == "bf16" and gpus == 0:  # models/train.py refuses it on a CPU: say so before starting
            raise ConfigError("precision=bf16 needs GPU trials; allowed with --gpus-per-trial 0: precision=fp32")
        if cfg.dataset != "photos" and not cfg.data_dir:
            raise ConfigError(f"dataset={cfg.dataset} needs --data-dir (a folder that holds or will receive it)")
        if cfg.batch_size % workers:
            raise ConfigError(f"batch_size={cfg.batch_size} does not split over --workers-per-trial {workers}; "
                              f"allowed: a batch size divisible by {workers}")
    values = {name: {repr(getattr(c, name)) for c in configs} for name in swept}
    rows = study.rows() if study.labels else [n for n in swept if n in study.axes or len(values[n]) > 1]
    plan = Plan(study.name, scale, base, arms, seed_list, cpus, gpus, workers, swept=rows,
                labels=study.grid_labels() if study.labels else [],
                reference=dict(study.reference), metrics=list(study.metrics), analysis=dict(study.analysis),
                layout=dict(study.layout), table=study.table, description=study.description, source=study.source,
                search=searched_plan)
    check_names(plan)
    return plan


SHORT = {"n0": "N0={}", "update_empty": "update-0={}", "grid_dim": "{}D", "tau": "tau={}"}


def _short(name: str, cfg: TrialConfig, fields: list[str], texts: dict) -> str:
    """One swept field in a run name: the VQ rule for `neighbours`, else e.g. 'N0=1', 'tau=0.1', 'lr=0.0003'
    (floats as `texts` prints them)."""
    value = getattr(cfg, name)
    if name == "neighbours":
        return "lucidrains" if cfg.quantizer == "lucidrains" else "EMA-VQ" if value == "none" else f"KSOM {value}"
    if name == "quantizer" and "neighbours" in fields:
        return ""  # the rule already says it
    if isinstance(value, bool):
        value = "yes" if value else "no"
    elif isinstance(value, float):
        value = texts.get(name, {}).get(value, f"{value:g}")
    return SHORT.get(name, name + "={}").format(value)


def file_name(run_name: str) -> str:
    """A run name as a folder name: 'KSOM hard 2D tau=0.1 N0=1 ...' -> 'KSOM-hard-2D-tau0.1-N01-...'."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", run_name.replace("=", "")).strip("-")


def check_names(plan: Plan) -> None:
    """Every configuration has a run name (and pictures folder) of its own, else ConfigError naming both."""
    seen: dict[str, dict] = {}
    for arm in plan.arms:
        name = plan.run_name(arm, plan.seeds[0])
        for key, what in ((name, "run name"), (file_name(name), "pictures folder")):
            if (key, what) in seen:
                raise ConfigError(f"study {plan.study!r}: configurations {seen[key, what]} and {arm} would share "
                                  f"the {what} {key!r}; allowed: labels or values that tell them apart in "
                                  "letters or digits")
            seen[key, what] = arm


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
        if key in RENAMED:
            raise ConfigError(f"{option} {renamed(key)}")
        if key not in allowed:
            raise ConfigError(f"{option} {key!r} is not a config field; allowed: {', '.join(allowed)}"
                              + (" (seeds: --seeds N)" if key == "seed" else ""))
        yield key, value
