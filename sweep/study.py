"""A study as data: a YAML file naming the grid of configurations a sweep runs.

    name: robustness                      # the MLflow experiment; letters, digits, - and _
    description: "{EMA-VQ, KSOM hard 2D} x N0 {0,1} x update-0 {no,yes}"
    table: Table 3                        # the paper table it mirrors (optional)
    fixed: {}                             # TrialConfig fields shared by every trial (--set may change them)
    axes:                                 # field -> values; the grid is their product, first axis outermost
      n0: [0, 1]
      update_empty: [false, true]
    arms:                                 # explicit combinations, crossed with the axes (innermost);
      - {neighbours: none}                #   for what is not a product (EMA-VQ has no tau or grid)
      - {neighbours: hard, grid_dim: 2, tau: 0.1}
    seeds: 3                              # optional: N (seeds 0..N-1) or a list; default: the scale's
    reference: {neighbours: none}         # the arm the others are compared with, within the other axes
    metrics: [final_loss, steps_10]       # the per-trial summaries the tables show
    analysis:                             # optional analyses beyond the tables (analysis/factorial.py):
      factorial: [n0, update_empty]       #   a linear model on log(final loss) over these two-level axes
      primary: final_loss                 #   the primary test: each arm against the reference, one Holm family
      equivalence: 0.05                   #   its "level" margin: 5 % of the reference's loss (TOST; or
                                          #   equivalence_margin: 0.0015, in the primary's units)
    layout:                               # optional: how the tables are set (analysis/tables/layout.py);
      rows: [n0, update_empty, neighbours]  #   what is not given is derived from the study
      caption: "Robustness of KSOM ... (paper Table 3)."
    search: {...}                         # optional: each configuration searched, then confirmed (sweep/search.py)

Every trial is fixed <- one combination of the axes <- one arm. The four paper
studies (Tables 1-4) and the others shipped with the package live in
sweep/studies/*.yaml; `load_study` takes a shipped name or a path. Every problem
is a StudyError naming the file, the key, its line, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import yaml

import metrics as M
from models.config import RENAMED, ConfigError, TrialConfig, field_names, parse_value, renamed
from plan import LATEX_ALLOWED, Analysis, TableLayout, check_latex
from sweep.packs import FUSE_ALLOWED, parse_fuse
from sweep.search import Search, parse_search, parse_space

SHIPPED = Path(__file__).with_name("studies")
KEYS = ("name", "description", "table", "fixed", "axes", "arms", "seeds", "reference", "metrics", "analysis",
        "layout", "search", "fuse")
# the `analysis:` keys (analysis/factorial.py; the primary test and its margin: analysis.stats.verdict)
ANALYSES = ("factorial", "primary", "equivalence", "equivalence_margin")
REQUIRED = ("name", "description")
# Per-trial summaries a table can show: the final loss (the test loss at the step of the best validation
# loss) and the steps to reach +10 % / +20 % of the best validation loss (paper Sec. 4.1, Tables 1-4).
METRICS = M.SUMMARY_METRICS
# A grid larger than this is refused unless --max-trials raises it: a typo such as a thousand values on
# three axes would otherwise plan a billion trials without a word.
MAX_TRIALS = 10_000


class StudyError(ConfigError):
    """A study file is malformed or names a bad value; the message says where and what is allowed."""


@dataclass(frozen=True)
class Study:
    """A validated study; `grid()` lists its arms (one dict of TrialConfig fields per configuration)."""

    name: str
    description: str
    table: str = ""
    fixed: dict = field(default_factory=dict)
    axes: dict = field(default_factory=dict)  # field -> list of values (typed)
    arms: list = field(default_factory=list)  # list of dicts of fields
    labels: list = field(default_factory=list)  # the arms' display names (all or none)
    seeds: list | None = None  # None: the scale's default
    reference: dict = field(default_factory=dict)
    metrics: list = field(default_factory=lambda: list(METRICS[:2]))
    analysis: Analysis = field(default_factory=Analysis)  # the checked `analysis:` block
    layout: TableLayout = field(default_factory=TableLayout)  # the checked `layout:` block (analysis.tables.layout)
    search: Search | None = None  # each configuration of the grid searched, then confirmed (sweep/search.py)
    fuse: int | str | None = None  # trials per pack, "auto" or "off" (sweep/packs.py); None: not set
    arm_spaces: list = field(default_factory=list)  # per arm: the fields it adds to the search space
    source: str = ""  # the file it was read from
    from_grid: tuple = ()  # axes given on the command line (--grid), named so in messages
    lines: dict = field(default_factory=dict, repr=False, compare=False)  # key path -> line, for messages
    max_trials: int = field(default=MAX_TRIALS, repr=False, compare=False)  # the grid's cap (--max-trials)

    def grid(self) -> list[dict]:
        """Every configuration: each combination of the axes (first axis outermost) with each arm (innermost)."""
        combos = [dict(zip(self.axes, values)) for values in product(*self.axes.values())]
        return [{**combo, **arm} for combo in combos for arm in (self.arms or [{}])]

    def grid_labels(self) -> list[str]:
        """The arm label of each configuration of grid() ("" for unlabelled arms)."""
        n_combos = len(self.grid()) // max(1, len(self.arms))
        return (self.labels or [""] * max(1, len(self.arms))) * n_combos

    def spaces(self) -> list[dict]:
        """The search space of each configuration of grid(): the study's, plus its arm's own fields."""
        own = self.arm_spaces or [{}] * max(1, len(self.arms))
        return [{**self.search.space, **own[i % len(own)]} for i in range(len(self.grid()))] if self.search else []

    def rows(self) -> list[str]:
        """What tells configurations apart in tables and run names: the axes, then "arm" when the arms
        are labelled, else every field an arm sets."""
        return list(self.axes) + ["arm"] if self.labels else self.swept()

    def swept(self) -> list[str]:
        """The fields the axes and arms set, axes first, in the order they are written."""
        out = list(self.axes)
        for arm in self.arms:
            out += [k for k in arm if k not in out]
        return out

    def with_axis(self, name: str, values: list) -> "Study":
        """The study with axis `name` set to `values` (added last if new); the field leaves `fixed` and
        the arms, and arms that become identical are merged (first one kept)."""
        if name in set().union(*self.spaces()):
            raise StudyError(f"--grid {name}: {name} is searched by study {self.name!r}; allowed: a field its "
                             "search space does not hold")
        values = [_field_value(self, (f"--grid {name}",), name, v) for v in values]
        if not values:
            raise StudyError(f"--grid {name}=: the axis is empty; allowed: one or more comma-separated values")
        arms, labels = [], []
        for arm, label in zip(self.arms, self.labels or [""] * len(self.arms)):
            rest = {k: v for k, v in arm.items() if k != name}
            if rest not in arms:
                arms.append(rest)
                labels.append(label)
        arms, labels = ([], []) if arms == [{}] else (arms, labels)
        fixed = {k: v for k, v in self.fixed.items() if k != name}
        reference = {k: v for k, v in self.reference.items() if k != name}
        # an axis makes a row (a new one the innermost), and is compared within
        rows, order, groups = ([*names, name] if names is not None and name not in names else names
                               for names in (self.layout.rows, self.layout.order, self.layout.groups))
        layout = dataclasses.replace(self.layout, rows=rows, order=order, groups=groups)
        study = dataclasses.replace(self, fixed=fixed, axes={**self.axes, name: values}, arms=arms,
                                    labels=labels if any(labels) else [], reference=reference,
                                    from_grid=(*self.from_grid, name), layout=layout)
        _check_analysis(study, study.analysis)
        _check_grid(study)
        return study


def shipped_names() -> list[str]:
    """The studies shipped with the package (sweep/studies/<name>.yaml)."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def load_study(name_or_path: str | Path, max_trials: int = MAX_TRIALS) -> Study:
    """A shipped study by name, or a study file by path; raises StudyError on any problem (a grid of more
    than `max_trials` configurations among them)."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        if str(name_or_path) not in shipped_names():
            raise StudyError(f"study {str(name_or_path)!r} is unknown; allowed: a study file (.yaml) or one of "
                             f"{', '.join(shipped_names())}")
        path = SHIPPED / f"{name_or_path}.yaml"
    allowed = f"allowed: a readable UTF-8 .yaml file or one of {', '.join(shipped_names())}"
    if path.is_dir():
        raise StudyError(f"study file {path} is a folder; {allowed}")
    if not path.is_file():
        raise StudyError(f"study file {path} does not exist; {allowed}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise StudyError(f"study file {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                         f"{e.start}); {allowed}") from None
    except OSError as e:
        raise StudyError(f"study file {path} cannot be read ({e.strerror}); {allowed}") from None
    study = parse_study(text, str(path), max_trials)
    own = SHIPPED / f"{study.name}.yaml"
    if study.name in shipped_names() and path.resolve() != own.resolve():
        raise StudyError(f"{path}:{study.lines.get(('name',), '?')}: name={study.name!r} clashes with the shipped "
                         f"study of that name (same MLflow experiment); allowed: a name other than "
                         f"{', '.join(shipped_names())}")
    return study


def parse_study(text: str, source: str, max_trials: int = MAX_TRIALS) -> Study:
    """A Study from YAML text (read with yaml.safe_load); `source` names the file in messages. Aliases are
    refused: a few hundred bytes of nested aliases expand to billions of values."""
    try:
        alias = next((e for e in yaml.parse(text, Loader=yaml.SafeLoader) if isinstance(e, yaml.AliasEvent)), None)
        if alias is not None:
            raise StudyError(f"{source}:{alias.start_mark.line + 1}: YAML alias *{alias.anchor}: aliases are not "
                             "allowed in study files; allowed: each value written out where it is used")
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise StudyError(f"{where}: malformed YAML ({problem}); allowed: a YAML mapping with keys "
                         f"{', '.join(KEYS)}") from None
    partial = Study(name="", description="", source=source, lines=_lines(node) if node is not None else {},
                    max_trials=max_trials)
    if not isinstance(data, dict):
        raise _error(partial, (), data, f"a YAML mapping with keys {', '.join(KEYS)}", "the file")
    for key in data:
        if key not in KEYS:
            raise _error(partial, (key,), data[key], f"the keys {', '.join(KEYS)}", f"key {key!r} is unknown")
    unprintable = M.find_unprintable(data)  # names, labels and texts reach terminals, tables and folder names
    if unprintable:
        raise _error(partial, unprintable[0], unprintable[1], "printable text on one line", "a control character")
    for key in REQUIRED:
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise _error(partial, (key,), data.get(key), "a non-empty string", f"{key} is missing or empty")
    if not M.STUDY_NAME.fullmatch(data["name"]):
        raise _error(partial, ("name",), data["name"], "letters, digits, '-' and '_' (it names folders and the "
                                                       "MLflow experiment)")
    table = data.get("table") or ""
    if not isinstance(table, str):
        raise _error(partial, ("table",), table, "a string such as 'Table 3'")
    study = Study(name=data["name"], description=data["description"].strip(), table=table, source=source,
                  lines=partial.lines, max_trials=max_trials)
    fixed = _fields(study, "fixed", data.get("fixed") or {})
    axes = {}
    for name, values in _mapping(study, "axes", data.get("axes") or {}).items():
        _field_name(study, ("axes", name), name)
        if not isinstance(values, list) or not values:
            raise _error(study, ("axes", name), values, "a non-empty list of values, e.g. [0.01, 0.1, 1]",
                         "the axis is empty" if values == [] else "the axis is not a list")
        axes[name] = [_field_value(study, ("axes", name, i), name, v) for i, v in enumerate(values)]
    raw_arms = data.get("arms") or []
    if not isinstance(raw_arms, list):
        raise _error(study, ("arms",), raw_arms, "a list of mappings of config fields")
    labels = [arm.get("label") if isinstance(arm, dict) else None for arm in raw_arms]
    search = parse_search(data["search"], partial_error(study), partial_typed(study)) if "search" in data else None
    if search and "seeds" in data:
        raise _error(study, ("seeds",), data["seeds"], "search.confirm_seeds (a searched study's seeds are its "
                     "tuning seed and its confirmation seeds)", "seeds beside a search")
    arm_spaces = [parse_space(arm["space"], ("arms", i, "space"), partial_error(study), partial_typed(study))
                  if isinstance(arm, dict) and "space" in arm else {} for i, arm in enumerate(raw_arms)]
    if any(arm_spaces) and not search:
        i = next(i for i, s in enumerate(arm_spaces) if s)
        raise _error(study, ("arms", i, "space"), raw_arms[i]["space"], "an arm space in a study with a search: "
                     "block", "space without search")
    for i, label in enumerate(labels):
        if any(labels) and (not isinstance(label, str) or not label.strip() or labels.index(label) != i):
            raise _error(study, ("arms", i, "label") if label else ("arms", i), label,
                         "a distinct non-empty label on every arm, or on none", "bad arm label")
    arms = [_fields(study, ("arms", i), {k: v for k, v in arm.items() if k not in ("label", "space")}
                    if isinstance(arm, dict) else arm) for i, arm in enumerate(raw_arms)]
    study = dataclasses.replace(study, fixed=fixed, axes=axes, arms=arms, labels=labels if any(labels) else [],
                                search=search, arm_spaces=arm_spaces if any(arm_spaces) else [],
                                seeds=_seeds(study, data.get("seeds")),
                                metrics=_metrics(study, data.get("metrics", list(METRICS[:2]))))
    reference = data.get("reference") or {}
    if isinstance(reference, str):  # an arm's label
        if reference not in study.labels:
            raise _error(study, ("reference",), reference, f"the label of an arm: {', '.join(study.labels)}"
                         if study.labels else "a mapping of swept fields to values (the arms have no labels)",
                         "the reference arm matches no arm")
        study = dataclasses.replace(study, reference={"arm": reference})
    else:
        study = dataclasses.replace(study, reference=_fields(study, "reference", reference))
    study = dataclasses.replace(study, analysis=_analysis(study, data.get("analysis") or {}))
    if "fuse" in data:
        try:
            study = dataclasses.replace(study, fuse=parse_fuse(data["fuse"]))
        except ConfigError:
            raise _error(study, ("fuse",), data["fuse"], FUSE_ALLOWED) from None
    try:
        layout = check_block(data.get("layout") or {}, study.rows(), study.metrics)
    except LayoutError as e:
        raise _error(study, ("layout",) + e.path, e.value, e.allowed, e.problem) from None
    study = dataclasses.replace(study, layout=layout)
    _check_grid(study)
    _check_search(study)
    return study


def _analysis(study: Study, value) -> Analysis:
    """The `analysis:` block: factorial (a list of the study's two-level axes), primary (the summary column of
    the primary test, each arm against the reference: one of the study's metrics, default final_loss), and
    the equivalence margin of its verdict "level": equivalence (a fraction in (0, 1) of the reference arm's
    mean) or equivalence_margin (in the primary's own units, > 0), not both; a margin needs a reference arm."""
    value = _mapping(study, "analysis", value)
    for key in value:
        if key not in ANALYSES:
            raise _error(study, ("analysis", key), value[key], ", ".join(ANALYSES), f"analysis {key!r} is unknown")
    factors = value.get("factorial")
    if factors is not None and (not isinstance(factors, list) or not factors):
        raise _error(study, ("analysis", "factorial"), factors, "a non-empty list of the study's axes")
    primary = value.get("primary", M.FINAL_LOSS)
    if primary not in study.metrics:
        raise _error(study, ("analysis", "primary"), primary, f"one of the study's metrics: {', '.join(study.metrics)}")
    margin, units = value.get("equivalence"), value.get("equivalence_margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < 1):
        raise _error(study, ("analysis", "equivalence"), margin, "a fraction in (0, 1) of the reference arm's "
                     "mean final loss, e.g. 0.05")
    if units is not None and (isinstance(units, bool) or not isinstance(units, (int, float)) or not units > 0
                              or margin is not None):
        raise _error(study, ("analysis", "equivalence_margin"), units, "a number > 0 in the primary's units (e.g. "
                     "0.0015 of loss), without `equivalence` (a margin is one or the other)")
    analysis = Analysis(list(factors or []), None if margin is None else float(margin), primary,
                        None if units is None else float(units))
    _check_analysis(study, analysis)
    return analysis


def _check_analysis(study: Study, analysis: Analysis) -> None:
    """The analyses against the grid (again after --grid changes an axis): the factors two-level axes, a
    reference arm to be equivalent to."""
    factors = analysis.factorial
    if factors:
        for i, name in enumerate(factors):
            if name not in study.axes or len(study.axes[name]) != 2 or factors.index(name) != i:
                raise _error(study, ("analysis", "factorial", i), name, "distinct axes with two values each: "
                             + (", ".join(a for a, v in study.axes.items() if len(v) == 2) or "none here"),
                             "not a two-level axis of the study")
    for key, margin in (("equivalence", analysis.equivalence), ("equivalence_margin", analysis.equivalence_margin)):
        if margin is not None and not study.reference:
            raise _error(study, ("analysis", key), margin, "a study with a reference arm",
                         "equivalence to what? the study has no reference")


def _check_search(study: Study) -> None:
    """Each searched field: searched once, not also fixed, an axis or set by the arm; every end of its
    distribution (every choice) a valid value of the field for every configuration searched."""
    if not study.search:
        return
    for i, own in enumerate(study.arm_spaces):
        for name in own:
            if name in study.search.space:
                raise _error(study, ("arms", i, "space", name), own[name], f"a field the study's search.space does "
                             f"not hold (it searches {name})", f"{name} is searched twice")
    for i, (config, space) in enumerate(zip(study.grid(), study.spaces())):
        if not space:
            raise _error(study, ("search", "space"), {}, "at least one field to search for every arm",
                         f"configuration {study.grid_labels()[i] or config or 'of the study'} has nothing to search")
        for name, dist in space.items():
            path = next((("arms", i, "space", name) for i, own in enumerate(study.arm_spaces) if name in own
                         and own[name] is dist), ("search", "space", name))
            (kind, values), = dist.items()
            for where, setting in (("fixed", study.fixed), ("axes", study.axes), ("an arm", config)):
                if name in setting:
                    raise _error(study, path, dist, f"a field that is not {where} ({name} is set there)",
                                 f"{name} is both searched and {'set by ' if where == 'an arm' else ''}{where}")
            for value in values:
                try:
                    TrialConfig.from_dict({**study.fixed, **config, name: value})
                except ConfigError as e:
                    raise _error(study, path + (kind,), values, None, f"out of range for {config or 'the study'}: "
                                 f"{e}") from None


def partial_error(study: Study):
    """The study's one-line error maker, for the search parser."""
    return lambda path, value, allowed, problem=None: _error(study, path, value, allowed, problem)


def partial_typed(study: Study):
    """The study's value typing (field -> its type, one-line error), for the search parser."""
    def typed(path: tuple, name: str, value):
        _field_name(study, path[:-2], name)  # path: (..., field, distribution, index)
        return _field_value(study, path, name, value)
    return typed


def _check_grid(study: Study) -> None:
    """A grid within study.max_trials, fields set in two places, duplicate configurations and a reference
    that matches no arm."""
    n_configs = math.prod(len(v) for v in study.axes.values()) * max(1, len(study.arms))
    if n_configs > study.max_trials:
        source = f"{study.source} with --grid" if study.from_grid else study.source
        raise StudyError(f"{source}: the axes and arms make {n_configs:,} configurations, more than --max-trials "
                         f"{study.max_trials:,}; allowed: fewer axis values or arms, or --max-trials {n_configs} "
                         "(each configuration runs once per seed)")
    for i, arm in enumerate(study.arms):
        for name in arm:
            if name in study.fixed:
                raise _error(study, ("arms", i, name), arm[name], f"a field not in fixed ({name} is fixed at "
                             f"{study.fixed[name]!r})", f"{name} is both swept and fixed")
            if name in study.axes:
                raise _error(study, ("arms", i, name), arm[name], f"a field that is not an axis ({name} is "
                             f"swept by axes.{name})", f"{name} is set by both an axis and an arm")
    for name in study.axes:
        if name in study.fixed:
            raise _error(study, ("axes", name), study.axes[name], f"a field not in fixed ({name} is fixed at "
                         f"{study.fixed[name]!r})", f"{name} is both swept and fixed")
    seen: dict[tuple, dict] = {}
    for arm in study.grid():
        key = tuple(sorted((k, repr(v)) for k, v in arm.items()))
        if key in seen:
            where = next((("arms", i) for i, a in enumerate(study.arms) if a.items() <= arm.items()), ("axes",))
            where = ("axes", study.from_grid[-1]) if study.from_grid else where
            raise _error(study, where, arm, "each configuration once (repeated axis values or arms)",
                         "duplicate trials")
        seen[key] = arm
    for config in study.grid():
        merged = {**study.fixed, **config}
        try:
            TrialConfig.from_dict(merged)
        except ConfigError as e:
            name = next((n for n in merged if str(e).startswith(f"{n}=")), next(iter(merged), ""))
            raise _error(study, _where(study, name, config), merged.get(name), None, str(e)) from None
    rows = study.layout.rows
    if rows:
        seen = {}
        for config, label in zip(study.grid(), study.grid_labels()):
            key = tuple(repr(label if r == "arm" else config.get(r, study.fixed.get(r))) for r in rows)
            if key in seen:
                raise _error(study, ("layout", "rows"), rows, "row fields that tell every configuration apart",
                             f"{seen[key]} and {config} share a row")
            seen[key] = config
    swept = study.swept()
    if "arm" in study.reference:
        return
    for name, value in study.reference.items():
        if name not in swept:
            raise _error(study, ("reference", name), value, f"a field the axes or arms sweep: {', '.join(swept)}",
                         f"reference arm field {name} is not swept")
    if study.reference and not any(study.reference.items() <= arm.items() for arm in study.grid()):
        # an example from a configuration that sets every reference field (an arm may leave some unset)
        example = next((arm for arm in study.grid() if study.reference.keys() <= arm.keys()), study.grid()[0])
        raise _error(study, ("reference",), study.reference, "values of one configuration of the grid, e.g. "
                     f"{ {k: example[k] for k in study.reference if k in example} }",
                     "the reference arm matches no arm")


def _where(study: Study, name: str, config: dict) -> tuple:
    """The key path that sets field `name` in a configuration of the grid (for messages)."""
    if name in study.axes:
        return ("axes", name, study.axes[name].index(config[name]))
    arm = next((i for i, a in enumerate(study.arms) if a.items() <= config.items() and name in a), None)
    return ("arms", arm, name) if arm is not None else ("fixed", name)


def _error(study: Study, path: tuple | str, value, allowed: str | None, problem: str | None = None) -> StudyError:
    """One line: file:line: key=value: problem; allowed: ... (the line of the nearest key the parser placed)."""
    path = (path,) if isinstance(path, str) else tuple(path)
    if path[:1] == ("axes",) and len(path) > 1 and path[1] in study.from_grid:
        path, study = (f"--grid {path[1]}",), dataclasses.replace(study, source=f"{study.source} with --grid")
    line, at = study.lines.get(path), path
    while line is None and at:
        at = at[:-1]
        line = study.lines.get(at)
    where = f"{study.source}:{line}" if line else study.source
    text = f"{where}: {_key(path)}={value!r}" + (f": {problem}" if problem else "")
    return StudyError(M.printable(text + (f"; allowed: {allowed}" if allowed else "")))  # a key may be data too


def _key(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path)) \
        or "(top level)"


def _mapping(study: Study, key: str | tuple, value) -> dict:
    if not isinstance(value, dict):
        raise _error(study, key, value, "a mapping of config field: value")
    return value


def _field_name(study: Study, path: tuple, name) -> None:
    if name in RENAMED:
        raise _error(study, path, name, None, renamed(name))
    if name not in field_names():
        raise _error(study, path, name, ", ".join(field_names()), f"{name!r} is not a config field")
    if name == "seed":
        raise _error(study, path, name, "the study key 'seeds' (or --seeds N)", "seed is not a grid field")


def _field_value(study: Study, path: tuple, name: str, value):
    """The value typed as the field (ranges and cross-field rules: every configuration in _check_grid)."""
    if isinstance(value, (dict, list)) or value is None:
        raise _error(study, path, value, f"one plain value for {name}", "not a single value")
    known = {f.name: f for f in dataclasses.fields(TrialConfig)}
    try:
        typed = parse_value(known[name], value)
    except ConfigError as e:
        raise _error(study, path, value, None, str(e)) from None
    return typed


def _fields(study: Study, key: str | tuple, value) -> dict:
    path = (key,) if isinstance(key, str) else tuple(key)
    out = {}
    for name, v in _mapping(study, path, value).items():
        _field_name(study, path + (name,), name)
        out[name] = _field_value(study, path + (name,), name, v)
    return out


def _seeds(study: Study, value) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if (isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in value) and len(set(value)) == len(value)):
        return list(value)
    raise _error(study, ("seeds",), value, "a number N >= 1 (seeds 0..N-1) or a list of distinct seeds >= 0")


def _metrics(study: Study, value) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _error(study, ("metrics",), value, f"a non-empty list of {', '.join(METRICS)}")
    for i, m in enumerate(value):
        if m not in METRICS:
            raise _error(study, ("metrics", i), m, ", ".join(METRICS), "unknown metric")
    return list(value)


def _lines(node, path: tuple = ()) -> dict[tuple, int]:
    """Key path -> 1-based line of every key and list item in a composed YAML tree."""
    out = {path: node.start_mark.line + 1} if path else {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            out.update(_lines(value, sub))
            out[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.update(_lines(item, path + (i,)))
    return out


# ---------------------------------------------------------------- the layout: block (analysis/tables/layout.py)

BLOCK_KEYS = tuple(f.name for f in dataclasses.fields(TableLayout))


class LayoutError(ValueError):
    """A study's `layout:` block is malformed: `path` (keys below `layout`), the value, what is allowed."""

    def __init__(self, path: tuple, value, allowed: str, problem: str | None = None):
        super().__init__(path, value, allowed, problem)
        self.path, self.value, self.allowed, self.problem = path, value, allowed, problem


def check_block(block, rows: list[str], metrics: list[str]) -> TableLayout:
    """The `layout:` block of a study whose configurations are told apart by `rows` and whose
    tables show `metrics`, checked (that its rows still tell every configuration apart is the
    study's to check: it knows the grid); raises LayoutError naming the first bad key."""
    if not isinstance(block, dict):
        raise LayoutError((), block, f"a mapping with keys {', '.join(BLOCK_KEYS)}")
    for key in block:
        if key not in BLOCK_KEYS:
            raise LayoutError((key,), block[key], f"the keys {', '.join(BLOCK_KEYS)}", f"key {key!r} is unknown")
    out = {}
    if "rows" in block:
        out["rows"] = _names(block["rows"], ("rows",), rows, "the fields the study sweeps")
    shown = out.get("rows", rows)
    if "order" in block:
        out["order"] = _names(block["order"], ("order",), shown, "the row fields")
        if sorted(out["order"]) != sorted(shown):
            raise LayoutError(("order",), block["order"], f"each row field once: {', '.join(shown)}")
    if "groups" in block:
        out["groups"] = _names(block["groups"], ("groups",), shown, "the row fields", empty=True)
    if "thresholds" in block:
        value, shows = block["thresholds"], [M.threshold(m) for m in metrics if m.startswith(M.STEPS)]
        allowed = f"a list of the steps thresholds the study's metrics show: {shows}"
        if not isinstance(value, list) or not value:
            raise LayoutError(("thresholds",), value, allowed)
        for i, p in enumerate(value):
            if p not in shows or isinstance(p, bool) or value.index(p) != i:
                raise LayoutError(("thresholds", i), p, allowed, "not among the study's metrics, or repeated")
        out["thresholds"] = list(value)
    if "caption" in block:
        if not isinstance(block["caption"], str) or not block["caption"].strip():
            raise LayoutError(("caption",), block["caption"], "a non-empty string (LaTeX allowed)")
        if check_latex(block["caption"]):
            raise LayoutError(("caption",), block["caption"], LATEX_ALLOWED, check_latex(block["caption"]))
        out["caption"] = block["caption"].strip()
    if "headers" in block:
        headers = block["headers"]
        if not isinstance(headers, dict):
            raise LayoutError(("headers",), headers, "a mapping of row field: header (LaTeX allowed)")
        for name, text in headers.items():
            if name not in shown:
                raise LayoutError(("headers", name), name, f"a row field: {', '.join(shown)}", "not a row field")
            if not isinstance(text, str) or not text.strip():
                raise LayoutError(("headers", name), text, "a non-empty string (LaTeX allowed)")
            if check_latex(text):
                raise LayoutError(("headers", name), text, LATEX_ALLOWED, check_latex(text))
        out["headers"] = dict(headers)
    return TableLayout(**out)


def _names(value, path: tuple, allowed: list[str], what: str, empty: bool = False) -> list[str]:
    """A list of distinct names out of `allowed`."""
    text = f"a {'' if empty else 'non-empty '}list of distinct names out of {what}: {', '.join(allowed)}"
    if not isinstance(value, list) or (not value and not empty):
        raise LayoutError(path, value, text)
    for i, name in enumerate(value):
        if name not in allowed or value.index(name) != i:
            raise LayoutError(path + (i,), name, text, "unknown or repeated")
    return list(value)
