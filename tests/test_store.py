"""sweep.json as one record (analysis.store.Sweep, its plan a plan.Plan): read with its paths resolved where
the folder is now, older files with the plan's defaults, and written back as the same sweep (its refusals:
tests/test_guards.py); and a report read from the MLflow store alone sets the tables as the sweep folder's
does."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from analysis.report import main as report_main
from analysis.store import StoreMissing, Sweep, newest_sweep, read_sweep, write_sweep
from analysis.tables import Layout
import metrics as M
from plan import Analysis, Plan, TableLayout
from sweep.plan import Plan as SweepPlan, check_winners, stored_error, validate

DATA = Path(__file__).with_name("data")

# A sweep.json as sweeps wrote it before Sweep was a record (and before plans carried a layout):
# keys in this order, the embedded store by name, Tune's storage left out (the sweep folder's own).
OLD = {"name": "robustness-smoke-20261129-203934-53ce", "study": "robustness", "scale": "smoke",
       "dir": "robustness-smoke-20261129-203934-53ce", "base": {"lr": 0.001, "steps": 40},
       "plan": {"study": "robustness", "scale": "smoke", "base": {"lr": 0.001, "steps": 40},
                "arms": [{"n0": 0, "update_empty": False, "neighbours": "none"}], "seeds": [0, 1], "cpus": 1,
                "gpus": 0, "workers": 1, "swept": ["n0", "update_empty", "neighbours"], "labels": [],
                "reference": {"neighbours": "none"}, "metrics": ["final_loss", "steps_10"], "table": "Table 3",
                "description": "robustness", "source": "/somewhere/else/sweep/studies/robustness.yaml"},
       "tracking_uri": None, "experiment_id": "3", "ray_storage": None, "ray_name": "ray",
       "parent_run_id": "df480390048040c48fe41a963b0a410f", "store": "mlflow.db"}


def test_an_old_sweep_json_loads_where_its_folder_is_now_and_writes_back_the_same_sweep(tmp_path):
    folder = tmp_path / "moved-results" / OLD["dir"]
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps(OLD, indent=2))
    sweep = read_sweep(folder, check=False)  # no store here: check=True would refuse (StoreMissing)
    assert isinstance(sweep, Sweep) and isinstance(sweep.plan, Plan)
    assert (sweep.dir, sweep.results_dir, sweep.ray_storage) == (folder, folder.parent, str(folder))
    assert sweep.tracking_uri == f"sqlite:///{folder.parent / 'mlflow.db'}"
    assert (sweep.name, sweep.study, sweep.plan.scale, sweep.experiment_id, sweep.parent_run_id, sweep.ray_name) == (
        OLD["name"], "robustness", "smoke", "3", OLD["parent_run_id"], "ray")
    assert sweep.plan.to_dict() == {**OLD["plan"], "cpus": 1.0, "gpus": 0.0, "analysis": dataclasses.asdict(Analysis()),
                                    "layout": dataclasses.asdict(TableLayout()), "search": None, "added_seeds": [],
                                    "pack_size": 1, "fuse_rule": ""}  # what the record added since, at its defaults
    assert sweep.tune_path == f"{folder}/ray"
    (folder / "sweep.json").unlink()
    write_sweep(sweep)
    assert read_sweep(folder, check=False) == sweep  # written back, it reads as the same sweep


@pytest.mark.parametrize("fixture", ["sweep-grid-153a05c.json", "sweep-search-153a05c.json"])
def test_a_sweep_json_written_before_the_plan_record_reads_with_its_defaults(fixture, tmp_path):
    """sweep.json files a sweep wrote at commit 153a05c (a grid with a reference and an equivalence margin; a
    random search with its winners), before the plan was a record: they read, the fields added since at
    their defaults, and resume would take them (sweep.plan.validate, the winners against their spaces)."""
    record = json.loads((DATA / fixture).read_text())
    folder = tmp_path / record["dir"]
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps(record))
    sweep = read_sweep(folder, check=False, plan_type=SweepPlan)
    assert sweep.plan.study == record["plan"]["study"] and sweep.plan.arms == record["plan"]["arms"]
    assert (sweep.plan.added_seeds, sweep.plan.pack_size, sweep.plan.analysis.primary) == ([], 1, M.FINAL_LOSS)
    validate(sweep.plan, stored_error(folder / "sweep.json"))
    check_winners(sweep.plan, sweep.winners, stored_error(folder / "sweep.json"))
    if record["plan"]["search"]:
        assert sweep.plan.search.asha is None and sweep.plan.search.samples == record["plan"]["search"]["samples"]
        assert len(sweep.winners) == len(sweep.plan.arms)
    else:
        assert sweep.plan.search is None and sweep.plan.analysis.equivalence == 0.05
        assert sweep.plan.reference == {"arm": "KSOM hard 2D"}
    assert Layout.from_plan(sweep.plan).reference == record["plan"]["reference"]


def test_a_sweep_on_a_tracking_server_keeps_its_uri_and_storage(tmp_path):
    folder = tmp_path / OLD["dir"]
    folder.mkdir()
    record = {**OLD, "tracking_uri": "http://tracking:5000", "ray_storage": "s3://bucket/sweeps",
              "ray_name": OLD["name"]}
    del record["store"]
    (folder / "sweep.json").write_text(json.dumps(record, indent=2))
    sweep = read_sweep(folder)  # a server: nothing to check on this machine
    assert (sweep.tracking_uri, sweep.ray_storage) == ("http://tracking:5000", "s3://bucket/sweeps")
    assert sweep.tune_path == f"s3://bucket/sweeps/{OLD['name']}"
    write_sweep(sweep)
    written = json.loads((folder / "sweep.json").read_text())
    assert (written["tracking_uri"], written["ray_storage"], written["ray_name"]) == (
        "http://tracking:5000", "s3://bucket/sweeps", OLD["name"])


def test_the_notebook_opens_the_newest_sweep_that_is_not_a_smoke_run(tmp_path):
    """A cpu sweep, then two smoke runs after it (as the README's Quick start leaves them) and a folder whose
    sweep.json is no sweep's: the cpu sweep is opened, and said to be; with only smoke runs, the newest of them."""
    def sweep(name: str, scale: str, when: int) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "sweep.json").write_text(json.dumps({**OLD, "name": name, "dir": name, "scale": scale,
                                                                   "plan": {**OLD["plan"], "scale": scale}}))
        os.utime(tmp_path / name / "sweep.json", (when, when))

    sweep("robustness-cpu-1", "cpu", 1000)
    sweep("robustness-smoke-2", "smoke", 2000)
    sweep("robustness-smoke-3", "smoke", 3000)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "sweep.json").write_text("{")
    assert newest_sweep(tmp_path) == (tmp_path / "robustness-cpu-1", f"robustness at cpu scale: the newest sweep "
                                                                       f"under {tmp_path} that is not a smoke run")
    (tmp_path / "robustness-cpu-1" / "sweep.json").unlink()
    folder, which = newest_sweep(tmp_path)
    assert folder == tmp_path / "robustness-smoke-3" and which.endswith("(only smoke runs there)")
    with pytest.raises(StoreMissing, match="no sweep under"):
        newest_sweep(tmp_path / "empty")


@pytest.mark.slow
def test_report_from_the_store_alone_sets_the_tables_as_the_sweep_folder(smoke_sweep, tmp_path):
    """--tracking-uri --study reads the sweep's plan from its parent run (the sweep.json uploaded with its
    report), so its tables are the sweep folder's, byte for byte (the study file's layout and caption)."""
    uri = read_sweep(smoke_sweep).tracking_uri
    assert report_main(["--tracking-uri", uri, "--study", "robustness", "--out", str(tmp_path / "r")]) == 0
    ours = sorted(p.name for p in (smoke_sweep / "tables").glob("*.*") if p.suffix != ".parquet")
    assert len(ours) == 9 and sorted(p.name for p in (tmp_path / "r/tables").glob("*.*")
                                     if p.suffix != ".parquet") == ours
    for name in ours:
        assert (tmp_path / "r/tables" / name).read_bytes() == (smoke_sweep / "tables" / name).read_bytes(), name
    assert "(paper Table 3)" in (tmp_path / "r/tables/robustness.tex").read_text()
