"""The plan of a sweep: a study's grid at a scale, with the user's overrides, as the record plan.Plan.

`make_plan` builds it from a study file (plan, in named steps) and `validate` checks it, once, before
anything starts: every trial's config, and the limits a run would otherwise meet only once its folder,
store and cluster exist (names the filesystem cannot hold, seeds NumPy or torch refuse, an ASHA grace
past a trial's steps); a resume checks the plan it reads from sweep.json the same way, and its
winners against the search spaces (`check_winners`). Every problem is a ConfigError of one line
naming the study file's key and line, or the sweep.json. sweep/run.py (the command line) and
sweep/execute.py (Ray Tune) both take a Plan, and sweep.json stores it, so a resume runs exactly the
same trials. No Ray or MLflow here.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from pathlib import Path

import metrics as M
from models.config import RENAMED, ConfigError, TrialConfig, field_names, renamed
from plan import Plan as PlanRecord, SearchPlan
from sweep.packs import AUTO, FUSE_ALLOWED, OFF, cuda_name, group, pack_size, parse_fuse, unfused_search
from sweep.scales import SCALES, STARTUP_SECONDS, default_scale
from sweep.study import MAX_TRIALS, Study, load_study, partial_error


class Plan(PlanRecord):
    """The plan record (plan.py) with what needs the trials' configs: the configs themselves, run names
    and the expected wall time."""

    def trials(self) -> list[TrialConfig]:
        """Every trial's config, validated (raises ConfigError naming the bad value); of a searched study,
        each arm's confirmation trials at the arm's own values (the searched ones are drawn when it runs)."""
        return [TrialConfig.from_dict({**self.base, **arm, "seed": seed}) for arm in self.arms for seed in self.seeds]

    def packs(self, seeds: list[int] | None = None) -> list[list[tuple[dict, int]]]:
        """The (arm, seed) trials of the grid, on `seeds` (default the plan's), in packs of up to pack_size,
        trials that differ only in values together (sweep/packs.py)."""
        seeds = seeds or self.seeds
        trials = [(arm, seed) for arm in self.arms for seed in seeds]
        configs = [TrialConfig.from_dict({**self.base, **arm, "seed": seed}) for arm, seed in trials]
        return group(trials, configs, self.pack_size)

    def expected_seconds(self, concurrent: int) -> float:
        """Expected wall time of the sweep with `concurrent` trials at a time, from the scale's measured
        seconds per step (0 when the scale has none): trials packed longest first onto the slots."""
        per_step = SCALES[self.scale].step_seconds if self.scale in SCALES else 0.0
        slots = [0.0] * max(1, concurrent)
        repeat = self.n_trials() // len(self.arms) // len(self.seeds)  # search trials too
        for seconds in sorted((cfg.steps * per_step for cfg in self.trials() * repeat), reverse=True):
            slots[slots.index(min(slots))] += seconds
        return max(slots) + STARTUP_SECONDS if per_step else 0.0

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
              samples: int | None = None, fuse: str | None = None) -> Plan:
    """A validated plan of `study` (a shipped name, a YAML path or a Study) at `scale`.

    overrides: field -> value for every trial (not for a swept field); grid: field -> values,
    an axis added to the study or replacing one; cpus, gpus, workers: per trial (None: the scale's);
    max_trials: the most trials (configurations x seeds) planned; search, samples: the algorithm and the
    samples per arm of a searched study (None: the study's); seeds of a searched study: the number of
    confirmation seeds; fuse: trials per pack, "auto" or "off" (None: the study's `fuse:`, else off;
    sweep/packs.py). Any problem raises ConfigError before anything starts.
    """
    study = _study(study, grid, max_trials, search, samples)
    scale = scale or default_scale()
    if scale not in SCALES:
        raise ConfigError(f"scale {scale!r} is unknown; allowed: {', '.join(SCALES)}")
    overrides = dict(overrides or {})
    dataset = overrides.get("dataset") or study.fixed.get("dataset")
    base = _base(study, SCALES[scale], dataset, overrides)
    searched, seed_list = _search(study, search, samples, seeds, SCALES[scale].settings(dataset)[1])
    default_cpus, default_gpus = SCALES[scale].resources(dataset)
    cpus, gpus = default_cpus if cpus is None else cpus, default_gpus if gpus is None else gpus
    workers = SCALES[scale].workers if workers is None else workers
    arms = study.grid()
    n = len(arms) * ((searched.samples if searched else 0) + len(seed_list))
    if n > max_trials:
        raise ConfigError(f"study {study.name!r}: {n:,} trials ({len(arms):,} configurations x {len(seed_list)} "
                          f"seeds), more than --max-trials {max_trials:,}; allowed: fewer seeds or configurations, "
                          f"or --max-trials {n}")
    arm_configs = configs(base, arms, study.source, study.name)
    plan = Plan(study.name, scale, base, arms, seed_list, cpus, gpus, workers, swept=_rows(study, arm_configs),
                labels=study.grid_labels() if study.labels else [], reference=dict(study.reference),
                metrics=list(study.metrics), analysis=study.analysis, layout=study.layout, table=study.table,
                description=study.description, source=study.source, search=searched)
    plan.pack_size, plan.fuse_rule = _pack_size(study, fuse)
    if searched and plan.pack_size > 1:
        plan.pack_size, plan.fuse_rule = 1, (f"{plan.fuse_rule}, but a searched study runs unfused: "
                                             f"{unfused_search(searched.algorithm, searched.asha is not None)}")
    validate(plan, partial_error(study), arm_configs)
    return plan


def _pack_size(study: Study, fuse: str | None) -> tuple[int, str]:
    """(trials per pack, the rule that chose it) from --fuse, else the study's `fuse:`, else off."""
    if fuse is not None:
        try:
            chosen, origin = parse_fuse(fuse), "--fuse"
        except ConfigError:
            raise ConfigError(f"--fuse {fuse!r}: allowed: {FUSE_ALLOWED}") from None
    elif study.fuse is not None:
        chosen, origin = study.fuse, f"{study.source} fuse:"
    else:
        chosen, origin = OFF, "no --fuse or study fuse:, so"
    return pack_size(chosen, origin, cuda_name() if chosen == AUTO else None)


def _study(study: str | Study, grid: dict | None, max_trials: int, search: str | None, samples: int | None) -> Study:
    """The study (loaded if named) with the command line's --grid axes and --max-trials."""
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
    return study


def _base(study: Study, scale, dataset: str | None, overrides: dict) -> dict:
    """The fields every trial shares: the scale's, the study's fixed ones, the command line's --set."""
    if "seed" in overrides:
        raise ConfigError("seed cannot be set with --set; use --seeds N (seeds 0..N-1)")
    searched = sorted(set(overrides) & set().union(*study.spaces())) if study.search else []
    if searched:
        raise ConfigError(f"--set {searched} would fix what study {study.name!r} searches; allowed: fields other "
                          f"than {sorted(set().union(*study.spaces()))}")
    config, _ = scale.settings(dataset)
    base = TrialConfig.from_dict({**config, **study.fixed, **overrides}).to_params()  # validates the types
    base.pop("seed")
    clash = sorted(set(study.swept()) & set(overrides))
    if clash:
        raise ConfigError(f"--set {clash} would override what study {study.name!r} sweeps; allowed: fields other "
                          f"than {sorted(study.swept())} (use --grid FIELD=V1,V2 to change an axis)")
    return base


def _search(study: Study, algorithm: str | None, samples: int | None, seeds: int | None,
            default_seeds: int) -> tuple[SearchPlan | None, list[int]]:
    """(the search of a searched study with the command line's --search and --samples, None for a grid;
    the seeds: a searched study's confirmation seeds, else --seeds, the study's or the scale's)."""
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds {seeds} must be >= 1")
    if not study.search:
        return None, list(range(seeds)) if seeds is not None else study.seeds or list(range(default_seeds))
    try:
        chosen = study.search.with_overrides(algorithm, samples, seeds)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return SearchPlan(chosen.algorithm, chosen.samples, chosen.tuning_seed, study.spaces(), chosen.asha), \
        chosen.confirm_seeds


def _rows(study: Study, arm_configs: list[TrialConfig]) -> list[str]:
    """What tells the arms apart in tables and run names: the study's rows, less swept fields whose values
    all come out alike (unlabelled arms)."""
    swept = study.swept()
    if study.labels:
        return study.rows()
    values = {name: {repr(getattr(c, name)) for c in arm_configs} for name in swept}
    return [n for n in swept if n in study.axes or len(values[n]) > 1]


def configs(base: dict, arms: list[dict], source: str, study: str) -> list[TrialConfig]:
    """Each arm's config (without its seed); ConfigError naming the study file when one is invalid."""
    try:
        return [TrialConfig.from_dict({**base, **arm}) for arm in arms]
    except ConfigError as e:
        raise ConfigError(f"{source}: a trial of study {study!r} is invalid: {e}") from None


# ------------------------------------------------------------------ the one check of a plan

NAME_MAX = 255  # bytes in a file or folder name (ext4, XFS, APFS, NTFS)
TABLE_SUFFIX = 32  # room for the longest name the report adds to the study's: '_vs_reference.parquet', and more
SEED_MAX = 2**32 - 1  # NumPy's RandomState (the searchers' seed) takes 0 .. 2^32 - 1; torch takes these too
TRIAL_ID = 16  # room for a Ray trial id ('a1b2c_00000') after a search trial's pictures folder
DRAWN = 10  # room for a drawn float in a run name ('%.3g': '-1.23e-05')


def validate(plan: Plan, error, arm_configs: list[TrialConfig] | None = None) -> None:
    """Everything a plan must satisfy before anything is created, checked once where it comes in: from a
    study file (make_plan) or from a sweep.json (a resume). `error(path, value, allowed, problem)` makes the
    one line naming the study file's key and line (or the sweep.json); `arm_configs`: each arm's config,
    when the caller built them already. Raises ConfigError."""
    check_resources(plan.cpus, plan.gpus, plan.workers)
    if plan.pack_size < 1:
        raise error(("pack_size",), plan.pack_size, "a whole number >= 1", "no trials per pack")
    if plan.pack_size > 1 and plan.workers > 1:
        raise ConfigError(f"a pack of trials trains in one process: fuse {plan.pack_size} with --workers-per-trial "
                          f"{plan.workers}; allowed: --fuse off, or --workers-per-trial 1")
    arm_configs = arm_configs or configs(plan.base, plan.arms, plan.source, plan.study)
    if plan.search:
        for arm, space in zip(plan.arms, plan.search.spaces):
            for name, dist in space.items():
                for value in next(iter(dist.values())):
                    try:
                        TrialConfig.from_dict({**plan.base, **arm, name: value})
                    except ConfigError as e:
                        raise ConfigError(f"{plan.source}: searched {name}={value!r} is invalid at this scale and "
                                          f"settings: {e}") from None
    if any(cfg.quantizer == "lucidrains" for cfg in arm_configs):
        from models.lucidrains import vector_quantize
        vector_quantize()  # the library is there, or a one-line error naming the extra
    for cfg in arm_configs:
        if cfg.precision == "bf16" and plan.gpus == 0:  # models/train.py refuses it on a CPU: say so before starting
            raise ConfigError("precision=bf16 needs GPU trials; allowed with --gpus-per-trial 0: precision=fp32")
        if cfg.dataset != "photos" and not cfg.data_dir:
            raise ConfigError(f"dataset={cfg.dataset} needs --data-dir (a folder that holds or will receive it)")
        if cfg.batch_size % plan.workers:
            raise ConfigError(f"batch_size={cfg.batch_size} does not split over --workers-per-trial {plan.workers}; "
                              f"allowed: a batch size divisible by {plan.workers}")
    _check_seeds(plan, error)
    _check_asha(plan, arm_configs, error)
    check_names(plan, error)


def _check_seeds(plan: Plan, error) -> None:
    """Every seed one that NumPy's RandomState and torch take (the searchers seed NumPy with the tuning seed)."""
    seeds = [(("seeds",), plan.seeds), (("added_seeds",), plan.added_seeds)]
    if plan.search:
        seeds = [(("search", "tuning_seed"), [plan.search.tuning_seed]), (("search", "confirm_seeds"), plan.seeds),
                 seeds[1]]
    for path, values in seeds:
        for seed in values:
            if not 0 <= seed <= SEED_MAX:
                raise error(path, seed, f"a seed from 0 to {SEED_MAX} (what NumPy's RandomState and torch take)",
                            "seed out of range")


def _check_asha(plan: Plan, arm_configs: list[TrialConfig], error) -> None:
    """ASHA stops a search trial at its rungs, grace steps and beyond, up to the trial's steps: a grace
    past an arm's steps is what Ray Tune refuses once the cluster runs."""
    if not (plan.search and plan.search.asha):
        return
    for arm, cfg in zip(plan.arms, arm_configs):
        grace = plan.search.asha.grace or cfg.eval_every
        if grace > cfg.steps:
            raise error(("search", "scheduler", "asha", "grace") if plan.search.asha.grace else
                        ("search", "scheduler"), grace, f"at most the steps of every arm searched ({cfg.steps} for "
                        f"{plan.arm_name(arm)})", "ASHA's grace period (the default: eval_every) is longer than a "
                        "trial")


def check_winners(plan: Plan, winners: dict, error) -> None:
    """The winners a searched sweep stored (arm index -> the values its search chose, or None): each a draw of
    its arm's space (every field once, every value inside its distribution) that makes a valid config."""
    if winners and not plan.search:
        raise error(("winners",), winners, "none: the plan has no search", "winners of a grid")
    for key, values in winners.items():
        if key not in [str(i) for i in range(len(plan.arms))]:
            raise error(("winners",), key, f"an arm index from 0 to {len(plan.arms) - 1}", "unknown arm")
        if values is None:
            continue
        space = plan.search.spaces[int(key)]
        if not isinstance(values, dict) or sorted(values) != sorted(space):
            raise error(("winners", key), values, f"a value of each of {', '.join(space)} (its arm's space)",
                        "not a draw of its arm's space")
        for name, value in values.items():
            (kind, args), = space[name].items()
            whole = isinstance(value, int) and not isinstance(value, bool)
            inside = (any(type(v) is type(value) and v == value for v in args) if kind == "choice" else
                      (whole if kind == "randint" else isinstance(value, float)) and args[0] <= value <= args[-1])
            if not inside:
                raise error(("winners", key, name), value, f"{kind} {args}", "outside its arm's search space")
        try:
            TrialConfig.from_dict({**plan.base, **plan.arms[int(key)], **values})
        except ConfigError as e:
            raise error(("winners", key), values, None, str(e)) from None


def stored_error(sweep_json: str | Path):
    """The one-line error maker of validate for a plan read from `sweep_json` (no study file, no lines)."""
    def error(path: tuple, value, allowed: str | None, problem: str | None = None) -> ConfigError:
        key = ".".join(str(p) for p in path)
        text = f"{sweep_json}: {key if path[0] == 'winners' else 'plan.' + key}={value!r}"
        return ConfigError(text + (f": {problem}" if problem else "") + (f"; allowed: {allowed}" if allowed else ""))
    return error


def file_name(run_name: str) -> str:
    """A run name as a folder name: 'KSOM hard 2D tau=0.1 N0=1 ...' -> 'KSOM-hard-2D-tau0.1-N01-...'."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", run_name.replace("=", "")).strip("-")


def check_names(plan: Plan, error) -> None:
    """Every configuration has a run name (and pictures folder) of its own, else ConfigError naming both; the
    study's folders and files, and every trial's pictures folder, within the filesystem's NAME_MAX bytes."""
    # sweep/execute.py's new folder, and with --storage Tune's folder of an arm's search beside it
    folder = f"{plan.study}-{plan.scale}-YYYYmmdd-HHMMSS-abcd" + (f"-{M.SEARCH}-{len(plan.arms)}" if plan.search
                                                                  else "")
    longest = max(len(folder.encode()), len(plan.study.encode()) + TABLE_SUFFIX)
    if longest > NAME_MAX:
        raise error(("name",), plan.study, f"a name of at most {len(plan.study.encode()) - longest + NAME_MAX} "
                    f"bytes", f"its sweep folder or table files would be named with {longest} bytes, more than the "
                    f"filesystem's {NAME_MAX}")
    seen: dict[str, dict] = {}
    for arm in plan.arms:
        name = plan.run_name(arm, plan.seeds[0])
        for key, what in ((name, "run name"), (file_name(name), "pictures folder")):
            if (key, what) in seen:
                raise ConfigError(f"study {plan.study!r}: configurations {seen[key, what]} and {arm} would share "
                                  f"the {what} {key!r}; allowed: labels or values that tell them apart in "
                                  "letters or digits")
            seen[key, what] = arm
        longest = _longest_pictures_folder(plan, arm)
        if len(longest.encode()) > NAME_MAX:
            label = plan.label(arm)
            raise error(("arms", plan.labels.index(label), "label") if label else ("arms",), label or arm,
                        f"a shorter label or fewer swept fields (a name of at most {NAME_MAX} bytes)",
                        f"a trial's pictures folder would be named with {len(longest.encode())} bytes, more than the "
                        f"filesystem's {NAME_MAX} ({longest[:40]}...)")


def _longest_pictures_folder(plan: Plan, arm: dict) -> str:
    """The longest pictures folder a trial of `arm` can get (sweep/tracking.py): its run name at the longest
    seed, and for a search trial the longest values its space can draw and the Ray trial id."""
    seeds = plan.seeds + plan.added_seeds + ([plan.search.tuning_seed] if plan.search else [])
    seed = max(seeds, key=lambda s: len(str(s)))
    names = [plan.run_name(arm, seed, M.CONFIRM if plan.search else "")]
    if plan.search:
        space = plan.search.spaces[plan.arms.index(arm)]
        widest = {name: "x" * max(DRAWN if isinstance(v, float) else len(str(v)) for v in values)
                  for name, dist in space.items() for values in dist.values()}
        names.append(plan.run_name(arm, seed, M.SEARCH, widest) + " " + "x" * TRIAL_ID)
    return max((file_name(n) for n in names), key=len)


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
