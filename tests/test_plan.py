"""The plan is one typed record (plan.py): read from a sweep.json field by field, refused in one line when it
is not a sweep's, and read by name everywhere, never by a string key outside the record's own module and the
study file's loader; and the plan-time limits (names, seeds, ASHA's grace, a resumed sweep's winners) are
refused in one line before anything is created."""
from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

import plan as record
from plan import Asha, Plan, PlanError, SearchPlan
from sweep.run import main

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).with_name("data")
# The record's own module and the study file's loader (its search block, its layout block read alone for the
# paper's four studies, whose results folders hold no sweep.json) read the plan's fields by key; nothing else.
LOADERS = {"plan.py", "sweep/study.py", "sweep/search.py"}
LOADER_FUNCTIONS = {("analysis/tables/layout.py", "read_layout")}


def field_names() -> set[str]:
    """Every field of every record of plan.py."""
    records = [c for c in vars(record).values() if dataclasses.is_dataclass(c) and c.__module__ == record.__name__]
    return {f.name for c in records for f in dataclasses.fields(c)}


def string_keys(source: str, names: set[str], skip: set[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, form) of each `["name"]`, `.get("name"`, `getattr(…, "name"` and `"name":` in `source` whose
    name is one of `names`, outside the functions named in `skip`."""
    tree = ast.parse(source)
    skipped = {line for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name in skip
               for line in range(node.lineno, node.end_lineno + 1)}

    def named(node) -> str | None:
        return node.value if isinstance(node, ast.Constant) and node.value in names else None

    found = []
    for node in ast.walk(tree):
        hits = []
        if isinstance(node, ast.Subscript) and named(node.slice):
            hits.append(f'["{node.slice.value}"]')
        elif isinstance(node, ast.Call) and node.args:
            if isinstance(node.func, ast.Attribute) and node.func.attr == "get" and named(node.args[0]):
                hits.append(f'.get("{node.args[0].value}"')
            elif isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) > 1 \
                    and named(node.args[1]):
                hits.append(f'getattr(…, "{node.args[1].value}"')
        elif isinstance(node, ast.Dict):
            hits += [f'"{key.value}":' for key in node.keys if named(key)]
        found += [(node.lineno, hit) for hit in hits if node.lineno not in skipped]
    return found


def test_no_module_reads_a_plan_field_by_a_string_key():
    names = field_names()
    assert {"study", "arms", "seeds", "search", "samples", "tuning_seed", "spaces", "grace", "factorial",
            "equivalence", "primary", "added_seeds", "pack_size", "rows", "caption"} <= names
    files = [ROOT / "metrics.py", ROOT / "plan.py",
             *(p for d in ("models", "analysis", "sweep", "benchmarks") for p in (ROOT / d).rglob("*.py"))]
    found = []
    for path in files:
        name = path.relative_to(ROOT).as_posix()
        if name in LOADERS:
            continue
        skip = {function for module, function in LOADER_FUNCTIONS if module == name}
        found += [f"{name}:{line}: {hit}" for line, hit in string_keys(path.read_text(), names, skip)]
    assert found == []


def test_the_key_check_finds_each_form_and_not_an_attribute():
    source = ('def f(plan, d):\n    a = d["study"]\n    b = d.get("seeds", [])\n    c = getattr(plan, "arms")\n'
              '    e = {"samples": 1, "other": 2}\n    return plan.study, d["other"], d.get("x")\n'
              'def loader(d):\n    return d["study"]\n')
    assert string_keys(source, {"study", "seeds", "arms", "samples"}, skip={"loader"}) == [
        (2, '["study"]'), (3, '.get("seeds"'), (4, 'getattr(…, "arms"'), (5, '"samples":')]


# ---------------------------------------------------------------- the record from a sweep.json


def test_a_plan_round_trips_through_its_dict_and_an_older_form_reads():
    old = json.loads((DATA / "sweep-search-153a05c.json").read_text())["plan"]
    plan = Plan.from_dict(old, "sweep.json")
    assert isinstance(plan.search, SearchPlan) and plan.search.asha is None  # "scheduler": {} then
    assert Plan.from_dict(plan.to_dict()) == plan
    asha = {**old, "search": {**old["search"], "scheduler": {"asha": {"grace": 20}}}}
    assert Plan.from_dict(asha).search.asha == Asha(grace=20, reduction_factor=3)
    assert Plan.from_dict({**old, "search": {}}).search is None  # a grid's search was {}


@pytest.mark.parametrize("edit, line", [
    (lambda p: {**p, "seeds": [0, "1"]}, "plan.seeds[1]='1': allowed: a whole number"),
    (lambda p: {**p, "cpus": True}, "plan.cpus=True: allowed: a number"),
    (lambda p: {**p, "colour": "red"}, "plan={"),
    (lambda p: {**p, "search": {**p["search"], "scheduler": {"asha": {"grace": "x"}}}},
     "plan.search.asha.grace='x': allowed: a whole number"),
    (lambda p: {**p, "layout": []}, "plan.layout=[]: allowed: a mapping of rows, order, groups, thresholds, caption, "
                                    "headers"),
])
def test_a_plan_that_is_not_a_sweeps_is_one_line(edit, line):
    old = json.loads((DATA / "sweep-search-153a05c.json").read_text())["plan"]
    with pytest.raises(PlanError) as error:
        Plan.from_dict(edit(old), "DIR/sweep.json")
    assert str(error.value).startswith(f"DIR/sweep.json: {line}") and "\n" not in str(error.value)


# ---------------------------------------------------------------- limits before work


def _refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


LIMITS = [
    ("name: " + "n" * 240 + "\ndescription: a long name\narms: [{neighbours: none}, {neighbours: hard}]\n",
     "{f}:1: name='" + "n" * 240 + "': its sweep folder or table files would be named with 272 bytes, more than "
     "the filesystem's 255; allowed: a name of at most 223 bytes"),
    ("name: long-label\ndescription: a long label\narms:\n  - {label: " + "L" * 260 + ", neighbours: none}\n"
     "  - {label: short, neighbours: hard}\n",
     "{f}:4: arms[0].label='" + "L" * 260 + "': a trial's pictures folder would be named with 266 bytes, more "
     "than the filesystem's 255 (" + "L" * 40 + "...); allowed: a shorter label or fewer swept fields (a name of "
     "at most 255 bytes)"),
    ("name: big-seed\ndescription: a seed NumPy refuses\narms: [{neighbours: none}]\nseeds: [0, 4294967296]\n",
     "{f}:4: seeds=4294967296: seed out of range; allowed: a seed from 0 to 4294967295 (what NumPy's RandomState "
     "and torch take)"),
    ("name: big-tuning-seed\ndescription: a tuning seed torch refuses\narms: [{neighbours: none}]\nsearch:\n"
     "  samples: 2\n  tuning_seed: 18446744073709551616\n  space: {lr: {loguniform: [1.0e-4, 1.0e-3]}}\n",
     "{f}:6: search.tuning_seed=18446744073709551616: seed out of range; allowed: a seed from 0 to 4294967295 "
     "(what NumPy's RandomState and torch take)"),
    ("name: long-grace\ndescription: ASHA past the steps\narms: [{neighbours: none}]\nsearch:\n  samples: 2\n"
     "  space: {lr: {loguniform: [1.0e-4, 1.0e-3]}}\n  scheduler: {asha: {grace: 50}}\n",
     "{f}:7: search.scheduler.asha.grace=50: ASHA's grace period (the default: eval_every) is longer than a trial; "
     "allowed: at most the steps of every arm searched (40 for EMA-VQ)"),
]


@pytest.mark.parametrize("text, line", LIMITS, ids=["name", "label", "seed", "tuning-seed", "grace"])
def test_limits_found_only_after_work_starts_are_refused_at_plan_time(text, line, tmp_path, capsys):
    """A study name or label whose folder names the filesystem cannot hold, a seed NumPy or torch cannot take,
    an ASHA grace past the trial's steps: one line with the file and line, exit 2, by --dry-run too, and
    nothing created."""
    study = tmp_path / "study.yaml"
    study.write_text(text)
    results = tmp_path / "results"
    expected = f"python -m sweep.run: error: {line.format(f=study)}\n"
    assert _refused([str(study), "--scale", "smoke", "--dry-run"], capsys) == expected
    assert _refused([str(study), "--scale", "smoke", "--results-dir", str(results)], capsys) == expected
    assert not results.exists()


WINNERS = [
    ({"0": {"lr": 5.0, "decay": 0.9, "commitment": 0.35, "codebook_init": "kmeans"}},
     "winners.0.lr=5.0: outside its arm's search space; allowed: loguniform [0.0001, 0.003]"),
    ({"0": {"lr": 0.001, "decay": 0.5, "commitment": 0.35, "codebook_init": "kmeans"}},
     "winners.0.decay=0.5: outside its arm's search space; allowed: choice [0.8, 0.9, 0.95, 0.99, 0.999]"),
    ({"0": {"lr": 0.001}}, "winners.0={'lr': 0.001}: not a draw of its arm's space; allowed: a value of each of lr, "
                           "decay, commitment, codebook_init (its arm's space)"),
    ({"7": None}, "winners='7': unknown arm; allowed: an arm index from 0 to 3"),
]


@pytest.mark.parametrize("winners, line", WINNERS, ids=["range", "choice", "fields", "arm"])
def test_a_resume_checks_the_winners_against_the_search_spaces(winners, line, tmp_path, capsys):
    """sweep.json's winners are what the confirmation trains: a resume takes them only when each is a draw of
    its arm's space; otherwise one line naming sweep.json, exit 2, before the store or Ray is touched."""
    sweep_json = json.loads((DATA / "sweep-search-153a05c.json").read_text())
    folder = tmp_path / "results" / sweep_json["dir"]
    folder.mkdir(parents=True)
    (folder.parent / "mlflow.db").touch()
    (folder / "sweep.json").write_text(json.dumps({**sweep_json, "winners": {**sweep_json["winners"], **winners}}))
    before = (folder.parent / "mlflow.db").read_bytes()
    expected = f"python -m sweep.run: error: {folder / 'sweep.json'}: {line}\n"
    assert _refused(["--resume", str(folder), "--dry-run"], capsys) == expected
    assert (folder.parent / "mlflow.db").read_bytes() == before and sorted(p.name for p in folder.iterdir()) == [
        "sweep.json"]
