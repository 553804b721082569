"""The trial's report to Ray Tune: built by the trainables (sweep/trainable.py) from the trainer's
Progress, read by the driver's callbacks (sweep/tracking.py, sweep/progress.py).

Ray carries it as a dict (`to_result`) and adds its own keys (training_iteration, trial_id, ...);
`from_result` takes back ours.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import metrics as M


@dataclass
class TrialReport:
    step: int
    status: str  # M.RUNNING, M.FINISHED (the last validation), M.DIVERGED (a NaN/inf loss at `step`) or
    # M.FAILED (its data cannot be used: `error` says why; the trial ends at once, without retries)
    metrics: dict[str, float]  # names from metrics.py
    node_id: str = ""  # the Ray node the trial ran on
    gpu_ids: list[str] = field(default_factory=list)  # the GPUs Ray assigned to it
    dataset: dict = field(default_factory=dict)  # models.data.fingerprint of its training data
    resumed: bool = False  # a multi-worker trial's report of its checkpoint again, after a restart
    error: str = ""  # one line, with status M.FAILED
    members: list[dict] = field(default_factory=list)  # of a pack: each member's latest report (to_result), in order

    def to_result(self) -> dict:
        return asdict(self)

    @classmethod
    def from_result(cls, result: dict) -> TrialReport:
        # A sweep begun before the reports had a status and resumed now: those that lack one did not diverge.
        return cls(**{"status": M.RUNNING, **{f.name: result[f.name] for f in fields(cls) if f.name in result}})


def ending(trial) -> str:
    """How a trial that Tune saw complete ended: M.DIVERGED or M.FAILED if its last report says so, M.STOPPED
    when its last report was an earlier validation (a search's scheduler, ASHA, stopped it), else M.FINISHED
    (the trainer returns after such a report or after its last validation)."""
    last = trial.last_result
    if not last or "status" not in last:  # no report, or a sweep begun before the reports had a status
        return M.FINISHED
    return ending_of(TrialReport.from_result(last))


def ending_of(report: TrialReport) -> str:
    """How a trial (or a pack's member) whose last report is `report` ended, as `ending`."""
    status = report.status
    return status if status in (M.DIVERGED, M.FAILED) else M.STOPPED if status == M.RUNNING else M.FINISHED


def data_error(trial) -> str:
    """The one line of a trial that ended on a data error ("" for any other)."""
    last = trial.last_result
    return TrialReport.from_result(last).error if last and ending(trial) == M.FAILED else ""
