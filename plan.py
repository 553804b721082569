"""The plan of a sweep as one typed record: what a study file asks for at a scale, as the sweep runs it.

The study loader (sweep/study.py, sweep/plan.py's make_plan) makes it from a study file; sweep.json
stores it (`to_dict`) and gives it back (`Plan.from_dict`); the sweep and the analysis read its
fields by name. It sits beside metrics.py and imports nothing of the project but metrics, so that
both sweep/ and analysis/ share it without depending on each other.

`Plan.from_dict` is the structural check of an untrusted plan (a sweep.json): every field of the
type written here, no unknown key, and what a study file could not have given refused as its loader
refuses it (a control character in any text, a caption or header outside check_latex's LaTeX); what
a plan's values must satisfy beyond their types (every trial's config, names and seeds within what
the filesystem and the libraries take) is sweep.plan.validate's, which needs the configs. Optional
fields have defaults, so that a sweep.json written before a field existed still reads
(tests/data/sweep-2026-12-06.json).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field

import metrics as M


class PlanError(ValueError):
    """A plan (from a sweep.json) that is not what a sweep writes; str() is the one line to print."""


@dataclass(frozen=True)
class Asha:
    """ASHA early stopping of a search's trials on the validation loss (Li et al., 2020)."""

    grace: int | None = None  # training steps before a trial can be stopped (None: its eval_every)
    reduction_factor: int = 3  # a rung keeps the best 1 / reduction_factor of its trials


@dataclass(frozen=True)
class SearchPlan:
    """A searched study's budget: each arm searched over its own space with the same number of samples on
    the tuning seed; the plan's `seeds` are then the confirmation seeds each arm's winner is trained on."""

    algorithm: str  # random (Ray Tune's BasicVariantGenerator) or optuna (TPE), both seeded
    samples: int  # configurations searched per arm
    tuning_seed: int  # the seed of every search trial (and of the searcher)
    spaces: list[dict]  # per arm: config field -> {distribution: arguments} (sweep/search.py)
    asha: Asha | None = None  # early stopping (None: every search trial runs all its steps)


@dataclass(frozen=True)
class Analysis:
    """The study's `analysis:` block: the analyses beyond the tables (analysis/factorial.py)."""

    factorial: list[str] = field(default_factory=list)  # two-level axes of a linear model on log(final loss)
    equivalence: float | None = None  # TOST margin: a fraction of the reference arm's mean final loss
    primary: str = M.FINAL_LOSS  # the summary column of the primary comparison, each arm against the reference
    equivalence_margin: float | None = None  # TOST margin in the primary's own units (loss), instead of a fraction


@dataclass(frozen=True)
class TableLayout:
    """The study's `layout:` block (analysis/tables/layout.py): what is None is derived from the plan."""

    rows: list[str] | None = None  # the fields that make a row, outermost first (the sort order)
    order: list[str] | None = None  # display order of the row fields
    groups: list[str] | None = None  # bold and the reference comparison are within these fields
    thresholds: list[int] | None = None  # the steps to +p % shown
    caption: str | None = None  # LaTeX allowed: what check_latex passes
    headers: dict = field(default_factory=dict)  # row field -> column header (LaTeX allowed: as the caption)


@dataclass
class Plan:
    """What a sweep runs: every arm of a study with every seed, on top of a base config, and what the
    analysis needs to know of the study (defaults: sweeps planned before studies were files)."""

    study: str
    scale: str
    base: dict  # TrialConfig fields shared by all trials
    arms: list[dict]  # per-arm TrialConfig fields
    seeds: list[int]  # of a searched study: its confirmation seeds
    cpus: float  # per trial (shared evenly by its workers)
    gpus: float  # per trial (shared evenly by its workers)
    workers: int = 1  # processes per trial (data parallel, Ray Train); 1 = the trial in the Tune trial's process
    swept: list[str] = field(default_factory=list)  # what tells arms apart (fields, or "arm"), outermost first
    labels: list[str] = field(default_factory=list)  # per arm: its study arm's label (none: unlabelled arms)
    reference: dict = field(default_factory=dict)  # the arm others are compared with: field -> value, or arm -> label
    metrics: list[str] = field(default_factory=list)  # per-trial summaries the tables show
    analysis: Analysis = field(default_factory=Analysis)
    layout: TableLayout = field(default_factory=TableLayout)
    table: str = ""  # the paper table the study mirrors
    description: str = ""
    source: str = ""  # the study file
    search: SearchPlan | None = None  # a searched study (None: a grid)
    added_seeds: list[int] = field(default_factory=list)  # seeds added to the sweep after it finished (--add-seeds)
    pack_size: int = 1  # trials fused into one model on a GPU (1: every trial its own; sweep/packs.py)
    fuse_rule: str = ""  # which rule chose pack_size, in words (the dry-run says it)

    def n_trials(self) -> int:
        """How many trials the sweep runs: arms x seeds, or arms x (samples + confirmation seeds), and arms x the
        seeds added after it finished."""
        return len(self.arms) * ((self.search.samples if self.search else 0) + len(self.seeds) + len(self.added_seeds))

    def label(self, arm: dict) -> str:
        """The label of one of the plan's arms ("" when its study arm has none)."""
        return self.labels[self.arms.index(arm)] if self.labels else ""

    def to_dict(self) -> dict:
        """The plan as plain data (JSON), as sweep.json stores it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data, where: str = "plan"):
        """The plan `data` (Plan.to_dict's form, or an older sweep.json's) as this record, every field of
        its type; PlanError naming `where`, the field and what is allowed otherwise."""
        plan = _read(cls, _upgrade(data), where, "plan")
        if not M.STUDY_NAME.fullmatch(plan.study):
            raise PlanError(f"{where}: plan.study={plan.study!r}: allowed: letters, digits, '-' and '_' (it names "
                            "folders and files)")
        found = M.find_unprintable(data)  # names, labels and texts reach terminals, tables and folder names
        if found:
            raise _bad(where, "plan" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in found[0]),
                       found[1], "printable text on one line", "a control character")
        latex = {f"plan.layout.headers.{k}": v for k, v in plan.layout.headers.items()}
        if plan.layout.caption is not None:
            latex["plan.layout.caption"] = plan.layout.caption
        for path, tex in latex.items():
            problem = check_latex(tex) if isinstance(tex, str) else "not a string"
            if problem:
                raise _bad(where, path, tex, LATEX_ALLOWED, problem)
        return plan


# The LaTeX a study file may write in its caption and headers: these commands (math symbols, Greek, a few
# text styles) and the escaped specials, with balanced braces and math shifts. Nothing that reads or writes
# a file (\\input, \\openin, \\write), defines a command or changes how characters are read (\\catcode, ^^).
LATEX_COMMANDS = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi pi rho sigma "
    "tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega pm mp times "
    "cdot div le leq ge geq neq approx sim propto infty ln log exp min max sqrt frac mathrm mathbf mathit textbf "
    "textit emph ldots dots cdots to rightarrow leftarrow dagger ddagger circ ell partial nabla sum prod".split())
LATEX_SYMBOLS = "%&_#${}'`\"^~,;! "  # \\% \\& ... (escaped specials, accents, spaces)


def check_latex(tex: str) -> str | None:
    """What is wrong with `tex` as a study file's caption or header (see LATEX_COMMANDS), or None: the study
    loader (sweep/study.py) and Plan.from_dict (a sweep.json's plan) refuse it."""
    if "^^" in tex:
        return "'^^' (TeX's character codes) is not allowed"
    depth, math = 0, False
    for m in re.finditer(r"\\([A-Za-z]+|.?)|[{}$%&#_^]", tex, re.S):
        token, name = m.group(), m.group(1)
        if name is not None and name.isalpha():
            if name not in LATEX_COMMANDS:
                return (f"the command \\{name} is not allowed (allowed: Greek letters, math symbols such as \\pm "
                        "\\times \\leq, \\mathrm \\textbf \\textit \\emph, escaped specials such as \\%)")
        elif name is not None:
            if not name or name not in LATEX_SYMBOLS:
                return f"{token!r} is not allowed (a backslash starts a command or escapes one of {LATEX_SYMBOLS[:-1]})"
        elif token in "%&#" or (token in "_^" and not math):
            return f"an unescaped {token!r}" + (" outside $...$" if token in "_^" else "") + f" (write \\{token})"
        elif token == "$":
            math = not math
        elif token in "{}":
            depth += 1 if token == "{" else -1
            if depth < 0:
                return "a '}' closes no '{'"
    if depth or math:
        return "an unclosed '{'" if depth else "an unclosed '$'"
    return None


LATEX_ALLOWED = "text with the LaTeX a table caption needs (math, Greek letters, \\textbf, \\emph; \\% for %)"


def search_budget(plan: Plan) -> str:
    """A searched plan's budget in words, wherever it is printed: 'per arm 12 random-search samples on
    seed 0, stopped early by ASHA (shared draws: ...), its best confirmed on seeds 1, 2, 3' (sweep/search.py:
    random search shares its draws between arms, TPE cannot)."""
    s = plan.search
    asha = ", stopped early by ASHA" if s.asha else ""
    shared = ("shared draws: each field one stream, the same values for every arm that searches it"
              if s.algorithm == "random" else "TPE adapts each draw to the arm's own results: the arms share no draws")
    return (f"per arm {s.samples} {s.algorithm}-search samples on seed {s.tuning_seed}{asha} ({shared}), its best "
            f"confirmed on seeds {', '.join(map(str, plan.seeds))}")


def _upgrade(data):
    """An older sweep.json's plan in today's form: a grid's search was {}, ASHA a `scheduler` mapping."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if data.get("search") == {}:
        data["search"] = None
    if isinstance(data.get("search"), dict) and "scheduler" in data["search"] and "asha" not in data["search"]:
        search = dict(data["search"])
        scheduler = search.pop("scheduler")
        search["asha"] = scheduler.get("asha", {}) if isinstance(scheduler, dict) and scheduler else None
        data["search"] = search
    return data


KINDS = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}


def _bad(where: str, path: str, value, allowed: str, problem: str = "") -> PlanError:
    return PlanError(f"{where}: {path}={value!r:.80}: " + (f"{problem}; " if problem else "") + f"allowed: {allowed} "
                     "(the plan a sweep wrote; restore sweep.json, or start the sweep again)")


def _read(hint, value, where: str, path: str):
    """`value` as type `hint` (a dataclass of this module, a builtin, list[X], dict, X | None)."""
    def bad(allowed: str) -> PlanError:
        return _bad(where, path, value, allowed)

    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise bad(f"a mapping of {', '.join(f.name for f in dataclasses.fields(hint))}")
        hints = typing.get_type_hints(hint)
        known = {f.name: f for f in dataclasses.fields(hint)}
        unknown = [k for k in value if k not in known]
        if unknown:
            raise bad(f"the keys {', '.join(known)} ({unknown[0]!r} is unknown)")
        missing = [name for name, f in known.items() if name not in value and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise bad(f"a mapping with {', '.join(missing)}")
        return hint(**{k: _read(hints[k], v, where, f"{path}.{k}") for k, v in value.items()})
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _read(inner, value, where, path)
    if origin is list:
        if not isinstance(value, list):
            raise bad("a list")
        return [_read(args[0], v, where, f"{path}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if hint is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise bad(KINDS.get(hint, hint.__name__))
    return value
