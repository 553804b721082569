"""A study's search: the space each arm is searched over, its budget, and its confirmation seeds.

    search:
      algorithm: random            # random (shared draws, below) | optuna (TPE), both seeded
      samples: 16                  # configurations per arm: every arm gets the same number
      space:                       # field -> one distribution
        lr: {loguniform: [1.0e-4, 3.0e-3]}
        decay: {choice: [0.8, 0.9, 0.95, 0.99, 0.999]}
        commitment: {uniform: [0.05, 1.0]}
        grid_dim: {randint: [1, 2]}   # whole numbers, both ends included
      tuning_seed: 0               # the seed of every search trial (default 0)
      confirm_seeds: 3             # the winner of each arm is trained again on 3 other seeds (default: 1, 2, 3)
      scheduler: {asha: {grace: 200, reduction_factor: 3}}   # optional early stopping on val/loss
    arms:
      - {label: KSOM hard 2D, neighbours: hard, space: {tau: {loguniform: [0.01, 1.0]}}}   # an arm's own fields

Parsed by sweep/study.py and checked before anything starts: a distribution Ray Tune has, bounds in
order and inside the field's range (TrialConfig) for every arm searched, a field searched once
and not also fixed, swept by an axis or set by the arm. `Search` is the study's block; the plan
holds it per arm (plan.SearchPlan, in sweep.json); `tune_space` hands a space to Ray Tune (TPE), `draws` the configurations of a
random search.

Shared draws (common random numbers). A random search draws each field from its own stream of uniform
numbers, seeded by the tuning seed and a stable hash of the field's name (not Python's `hash`, which is
salted per process); draw j of an arm maps the j-th uniform number of each of its fields through that
arm's distribution for the field. So every arm that searches a field gets the same numbers for it, in the
same order (equal values where the ranges are equal), and a field only one arm searches (tau) has a
stream of its own that shifts no other: arm against arm, draw by draw, only the rule differs. (Ray Tune's
own random search draws every field of a sample from one stream: an arm with one more field would shift
every later draw.) TPE chooses each draw from the arm's earlier results, so arms share no draws there.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from plan import Asha

ALGORITHMS = ("random", "optuna")
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
KEYS = ("algorithm", "samples", "space", "tuning_seed", "confirm_seeds", "scheduler")
ASHA_KEYS = tuple(f.name for f in dataclasses.fields(Asha))
DEFAULT_CONFIRM = 3


@dataclass(frozen=True)
class Search:
    """A validated search block; `space` maps a field to {distribution: arguments}, e.g. {"loguniform": [a, b]}."""

    algorithm: str
    samples: int
    space: dict = field(default_factory=dict)
    tuning_seed: int = 0
    confirm_seeds: list = field(default_factory=lambda: [1, 2, 3])
    asha: Asha | None = None  # early stopping (the study's `scheduler: {asha: ...}`)

    def with_overrides(self, algorithm: str | None = None, samples: int | None = None,
                       confirm: int | None = None) -> "Search":
        """The search with the command line's --search, --samples and --seeds (number of confirmation seeds)."""
        if algorithm is not None and algorithm not in ALGORITHMS:
            raise ValueError(f"--search {algorithm!r} is unknown; allowed: {', '.join(ALGORITHMS)}")
        if samples is not None and samples < 1:
            raise ValueError(f"--samples {samples} must be >= 1")
        if confirm is not None and confirm < 1:
            raise ValueError(f"--seeds {confirm} must be >= 1")
        return dataclasses.replace(
            self, algorithm=algorithm or self.algorithm, samples=samples or self.samples,
            confirm_seeds=self.confirm_seeds if confirm is None else other_seeds(confirm, self.tuning_seed))


def other_seeds(n: int, tuning_seed: int) -> list[int]:
    """The first n seeds >= 0 other than the tuning seed: the confirmation never reuses the search's seed."""
    return [s for s in range(n + 1) if s != tuning_seed][:n]


def parse_search(data, error, typed) -> Search:
    """A Search from a study's `search:` mapping (the space's fields checked later, with the arms).
    error(path, value, allowed, problem) makes the study's one-line error; typed(path, field, value) types a
    value as its field."""
    if not isinstance(data, dict):
        raise error(("search",), data, f"a mapping with keys {', '.join(KEYS)}")
    for key in data:
        if key not in KEYS:
            raise error(("search", key), data[key], f"the keys {', '.join(KEYS)}", f"key {key!r} is unknown")
    algorithm = data.get("algorithm", "random")
    if algorithm not in ALGORITHMS:
        raise error(("search", "algorithm"), algorithm, ", ".join(ALGORITHMS) + " (TPE)")
    samples = data.get("samples")
    if not _whole(samples) or samples < 1:
        raise error(("search", "samples"), samples, "a whole number >= 1 of configurations per arm")
    tuning_seed = data.get("tuning_seed", 0)
    if not _whole(tuning_seed) or tuning_seed < 0:
        raise error(("search", "tuning_seed"), tuning_seed, "a whole number >= 0")
    confirm = data.get("confirm_seeds", DEFAULT_CONFIRM)
    if _whole(confirm) and confirm >= 1:
        confirm = other_seeds(confirm, tuning_seed)
    elif not (isinstance(confirm, list) and confirm and all(_whole(s) and s >= 0 for s in confirm)
              and len(set(confirm)) == len(confirm) and tuning_seed not in confirm):
        raise error(("search", "confirm_seeds"), confirm, f"a number N >= 1 (the first N seeds other than the tuning "
                    f"seed {tuning_seed}) or a list of distinct seeds >= 0 without it")
    space = parse_space(data.get("space") or {}, ("search", "space"), error, typed)
    return Search(algorithm, samples, space, tuning_seed, list(confirm), _scheduler(data.get("scheduler"), error))


def parse_space(data, path: tuple, error, typed) -> dict:
    """field -> {distribution: arguments (typed as the field)}; bounds in order, loguniform above 0."""
    if not isinstance(data, dict):
        raise error(path, data, "a mapping of config field -> {distribution: arguments}, e.g. "
                                "lr: {loguniform: [1.0e-4, 3.0e-3]}")
    space = {}
    for name, dist in data.items():
        at = path + (name,)
        if not isinstance(dist, dict) or len(dist) != 1:
            raise error(at, dist, f"one distribution: {{{' | '.join(DISTRIBUTIONS)}: [...]}}")
        (kind, args), = dist.items()
        if kind not in DISTRIBUTIONS:
            raise error(at + (kind,), kind, ", ".join(DISTRIBUTIONS), f"distribution {kind!r} is unknown")
        if not isinstance(args, list) or not args or (kind != "choice" and len(args) != 2):
            raise error(at + (kind,), args, "a list of values" if kind == "choice" else "[low, high]")
        values = [typed(at + (kind, i), name, v) for i, v in enumerate(args)]
        if kind == "choice":
            if len(set(map(repr, values))) != len(values):
                raise error(at + (kind,), args, "distinct values", "a value is repeated")
        else:
            low, high = values
            if isinstance(low, (bool, str)):
                raise error(at + (kind,), args, f"choice for {name} (it is not a number)")
            if kind == "randint" and not all(_whole(v) for v in values):
                raise error(at + (kind,), args, "whole numbers [low, high], both included")
            if kind != "randint" and isinstance(low, int):
                raise error(at + (kind,), args, f"randint or choice for {name} (a whole number)")
            if not low < high:
                raise error(at + (kind,), args, "low < high", "bounds out of order")
            if kind == "loguniform" and low <= 0:
                raise error(at + (kind,), args, "0 < low < high", "a log-uniform range must be above 0")
        space[name] = {kind: values}
    return space


def describe(space: dict) -> str:
    """'lr loguniform [0.0001, 0.003], decay choice {0.9, 0.99}' (for dry runs and the parent run)."""
    parts = []
    for name, dist in space.items():
        (kind, v), = dist.items()
        shown = "{" + ", ".join(map(str, v)) + "}" if kind == "choice" else f"[{v[0]}, {v[1]}]"
        parts.append(f"{name} {kind} {shown}")
    return ", ".join(parts) or "(empty)"


def stable_hash(name: str) -> int:
    """A 64-bit hash of a field's name that every process, machine and Python version agrees on."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def uniforms(name: str, tuning_seed: int, samples: int) -> np.ndarray:
    """The stream of field `name`: `samples` uniform numbers in [0, 1), seeded by the tuning seed and the name."""
    return np.random.default_rng([tuning_seed, stable_hash(name)]).random(samples)


def from_uniform(dist: dict, u: float):
    """A uniform number u in [0, 1) mapped through one distribution {kind: arguments} (inverse CDF)."""
    (kind, v), = dist.items()
    if kind == "loguniform":
        return float(math.exp(math.log(v[0]) + u * (math.log(v[1]) - math.log(v[0]))))
    if kind == "uniform":
        return float(v[0] + u * (v[1] - v[0]))
    if kind == "choice":
        return v[min(int(u * len(v)), len(v) - 1)]
    return int(v[0] + min(int(u * (v[1] - v[0] + 1)), v[1] - v[0]))  # randint, both ends included


def draws(space: dict, samples: int, tuning_seed: int) -> list[dict]:
    """The `samples` configurations a random search of `space` tries, in order: draw j takes the j-th number
    of each field's own stream (uniforms), so arms that search a field share its draws."""
    streams = {name: uniforms(name, tuning_seed, samples) for name in space}
    return [{name: from_uniform(dist, float(streams[name][j])) for name, dist in space.items()}
            for j in range(samples)]


def tune_space(space: dict) -> dict:
    """The space as Ray Tune domains, for TPE (randint's high is exclusive in Ray: both ends included here)."""
    from ray import tune

    make = {"loguniform": lambda v: tune.loguniform(*v), "uniform": lambda v: tune.uniform(*v),
            "choice": lambda v: tune.choice(list(v)), "randint": lambda v: tune.randint(v[0], v[1] + 1)}
    return {name: make[kind](values) for name, dist in space.items() for kind, values in dist.items()}


def _scheduler(value, error) -> Asha | None:
    if value in (None, "none"):
        return None
    if value == "asha":
        return Asha()
    if not (isinstance(value, dict) and list(value) == ["asha"] and isinstance(value["asha"] or {}, dict)):
        raise error(("search", "scheduler"), value, "asha, or {asha: {grace: STEPS, reduction_factor: R}}")
    options = value["asha"] or {}
    for key, v in options.items():
        if key not in ASHA_KEYS:
            raise error(("search", "scheduler", "asha", key), v, ", ".join(ASHA_KEYS), f"key {key!r} is unknown")
        if not _whole(v) or v < (1 if key == "grace" else 2):
            raise error(("search", "scheduler", "asha", key), v,
                        "training steps >= 1" if key == "grace" else "a whole number >= 2")
    return Asha(**options)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
