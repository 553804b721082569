"""The trial's report to Ray (sweep/report.py): what the trainables send is what the callbacks read back."""
from __future__ import annotations

from types import SimpleNamespace

from sweep.report import TrialReport, ending


def test_a_report_survives_ray_adding_its_own_keys():
    report = TrialReport(40, "finished", {"val/loss": 0.25, "val/best_loss": 0.2}, node_id="n1", gpu_ids=["0"],
                         dataset={"name": "photos", "digest": "ab12", "train": 7, "val": 480})
    result = {**report.to_result(), "training_iteration": 2, "trial_id": "t0", "time_this_iter_s": 1.5}
    assert TrialReport.from_result(result) == report
    assert result["metrics"] is not report.metrics  # Ray may keep the dict: the record is not aliased


def test_how_a_trial_ended():
    """The last report's status says diverged; any other report of a completed trial means finished,
    including one written before reports carried a status (a sweep begun earlier and resumed now)."""
    def trial(last_result):
        return SimpleNamespace(last_result=last_result)

    assert ending(trial(TrialReport(3, "diverged", {"train/loss": float("nan")}).to_result())) == "diverged"
    assert ending(trial(TrialReport(40, "finished", {"val/loss": 0.25}).to_result())) == "finished"
    legacy = {"step": 40, "metrics": {"val/loss": 0.25}, "node_id": "n1"}
    assert TrialReport.from_result(legacy).status == "running" and ending(trial(legacy)) == "finished"
    assert ending(trial({**legacy, "status": "diverged"})) == "diverged"
    assert ending(trial({})) == "finished"
