"""A trial as Ray Tune holds it: the trial config Ray copies, resolves and stores, built and read here only.

Ray's trial config is {BASE: {...}, ARM: {...}, SEED: int}, and in a searched study also STAGE
(search or confirm) and SEARCH (the values drawn, or the winner's being confirmed), and of a random
search's trial DRAW (which of the shared draws it runs); the trial's
TrialConfig is base <- arm <- search <- seed. A pack of trials trained as one model (sweep/packs.py) is
one Ray trial whose config is {BASE: {...}, PACK: [{ARM: {...}, SEED: int}, ...]}: `members` gives its
trials. Ray Tune's grid and sampling need the config as a dict; everywhere else it is a `Trial`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ray import tune

import metrics as M
from models.config import TrialConfig
from sweep.search import draws, tune_space

if TYPE_CHECKING:  # the trainables import this module in every trial process: no study loader there
    from sweep.plan import Plan

BASE, ARM, SEED, STAGE, SEARCH, DRAW, PACK = "base", "arm", "seed", "stage", "search", "draw", "pack"  # keys of
# Ray's trial config


@dataclass(frozen=True)
class Trial:
    """One trial of a plan: an arm of the plan on a seed (and in a searched study its stage and values)."""

    base: dict  # the plan's base config
    arm: dict  # one of the plan's arms
    seed: int
    stage: str = ""  # M.SEARCH or M.CONFIRM in a searched study
    search: dict = field(default_factory=dict)  # config field -> the value drawn (search) or won (confirm)
    draw: int | None = None  # which of a random search's shared draws (sweep/search.py) a search trial runs

    @classmethod
    def of(cls, config: dict) -> "Trial":
        """The trial of a Ray trial config."""
        return cls(config[BASE], config[ARM], config[SEED], config.get(STAGE, ""), config.get(SEARCH, {}),
                   config.get(DRAW))

    def config(self) -> TrialConfig:
        return TrialConfig.from_dict({**self.base, **self.arm, **self.search, "seed": self.seed})

    def run_name(self, plan: Plan) -> str:
        """Its MLflow run name: the arm, the seed; of a searched study also the stage, and the values a search
        trial drew."""
        return plan.run_name(self.arm, self.seed, self.stage, self.search if self.stage == M.SEARCH else None)


def members(config: dict) -> list[Trial]:
    """The trials of a Ray trial config: a pack's members, in order, or the one trial."""
    if PACK in config:
        return [Trial(config[BASE], member[ARM], member[SEED]) for member in config[PACK]]
    return [Trial.of(config)]


def trial_config(config: dict) -> TrialConfig:
    """The TrialConfig of a Ray trial config (of a pack: its first member's, whose steps all share)."""
    return members(config)[0].config()


def grid_space(plan: Plan, seeds: list[int] | None = None) -> dict:
    """Ray's param space of a grid: every arm on every seed (of `seeds`, default the plan's); with a pack size
    above 1, one Ray trial per pack of them (plan.packs)."""
    if plan.pack_size > 1:
        packs = plan.packs(seeds or plan.seeds)
        return {BASE: plan.base, PACK: tune.grid_search([[{ARM: arm, SEED: seed} for arm, seed in pack]
                                                         for pack in packs])}
    return {BASE: plan.base, ARM: tune.grid_search(plan.arms), SEED: tune.grid_search(seeds or plan.seeds)}


def search_space(plan: Plan, i: int) -> dict:
    """Ray's param space of arm i's search trials: the arm on the tuning seed, its space's fields drawn; by a
    random search from the shared streams (sweep.search.draws: a grid over the draws, DRAW naming each), by
    TPE from Ray's domains."""
    out = {BASE: plan.base, ARM: plan.arms[i], SEED: plan.search.tuning_seed, STAGE: M.SEARCH}
    space = plan.search.spaces[i]
    if plan.search.algorithm == "optuna":
        return {**out, SEARCH: tune_space(space)}
    found = draws(space, plan.search.samples, plan.search.tuning_seed)
    return {**out, DRAW: tune.grid_search(list(range(len(found)))), SEARCH: tune.sample_from(
        functools.partial(_draw_of, found))}


def _draw_of(found: list, config: dict) -> dict:
    """The values of the draw a random-search trial runs (Ray resolves it after the grid)."""
    return found[config[DRAW]]


def confirm_space(plan: Plan, arms: list[dict], winners: list, seeds: list[int] | None = None) -> dict:
    """Ray's param space of the confirmation: each of `arms` at its winner's values (`winners`, per plan arm)
    on every confirmation seed (of `seeds`, default the plan's)."""
    return {BASE: plan.base, ARM: tune.grid_search(arms), STAGE: M.CONFIRM, SEED: tune.grid_search(seeds or plan.seeds),
            SEARCH: tune.sample_from(functools.partial(_winner_of, plan.arms, winners))}


def _winner_of(arms: list, winners: list, config: dict) -> dict:
    """The winner's values of the arm a confirmation trial runs (Ray resolves it after the grid)."""
    return winners[arms.index(config[ARM])]
