"""Readable progress lines while a sweep runs (Ray's own tables are switched off): a plan line at
the start (trials, how many at once, seeds, the expected wall time), a line per ended trial with
an ETA from the trials ended so far, every line at most WIDTH characters."""
from __future__ import annotations

import math
import time

from ray import tune

import metrics as M
from sweep.report import TrialReport, ending

WIDTH = 120


def fit(line: str, width: int = WIDTH) -> str:
    """`line` cut to `width` characters (an ellipsis marks the cut)."""
    return line if len(line) <= width else line[:width - 1] + "…"


def duration(seconds: float) -> str:
    """'1 h 02 min', '3 min 09 s' or '42 s'."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def plan_line(plan, at_once: int) -> str:
    """'plan: 24 trials (8 arms x 3 seeds), 2 at once, cpu scale; expected wall time about 3 min 12 s'."""
    n = len(plan.arms) * len(plan.seeds)
    seconds = plan.expected_seconds(at_once)
    expected = f"expected wall time about {duration(seconds)}" if seconds else "no wall-time estimate for this scale"
    return fit(f"plan: {n} trials ({len(plan.arms)} arms x {len(plan.seeds)} seeds), {at_once} at once, "
               f"{plan.scale} scale; {expected}")


class Progress(tune.Callback):
    """One line when a trial ends (with an ETA), and a status line at most every `every` seconds."""

    def __init__(self, total: int, name_of, every: float = 15.0):
        self.total, self.name_of, self.every = total, name_of, every  # name_of: Ray trial config -> run name
        self._reset()

    def _reset(self):
        self.start = time.time()
        self.last_line = 0.0
        self.ended = 0  # trials ended since the clock started
        self.best = (math.inf, "")

    def __getstate__(self):  # pickled with the sweep; the clock restarts on resume
        return {"total": self.total, "name_of": self.name_of, "every": self.every}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def _print(self, text: str, trials, ended=None, end_status: str = ""):
        # Tune calls on_trial_complete / on_trial_error before it updates the trial's status.
        status = [end_status if t is ended else t.status for t in trials]
        n_diverged = sum(s == "TERMINATED" and ending(t) == M.DIVERGED for s, t in zip(status, trials))
        done = status.count("TERMINATED") + status.count("ERROR")
        elapsed = time.time() - self.start
        left = self.total - done
        eta = f"ETA {duration(elapsed / self.ended * left)} | " if self.ended and left else ""
        best = f"best val {self.best[0]:.4f} ({self.best[1]}) | " if math.isfinite(self.best[0]) else ""
        head = (f"[{time.strftime('%H:%M:%S', time.gmtime(elapsed))}] {done}/{self.total} done ({n_diverged} "
                f"diverged, {status.count('ERROR')} failed), {status.count('RUNNING')} running | {eta}")
        line = head + best + text
        print(fit(line if len(line) <= WIDTH else head + text), flush=True)  # the best run is dropped first
        self.last_line = time.time()

    def _name(self, trial) -> str:
        return self.name_of(trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        report = TrialReport.from_result(result)
        val = report.metrics.get(M.VAL_LOSS, math.nan)
        if math.isfinite(val) and val < self.best[0]:
            self.best = (val, self._name(trial))
        if time.time() - self.last_line >= self.every:
            self._print(f"{self._name(trial)}: step {report.step} val {val:.4f}", trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result
        best = TrialReport.from_result(last).metrics.get(M.VAL_BEST_LOSS, math.nan) if last else math.nan
        self.ended += 1
        word = "DIVERGED" if ending(trial) == M.DIVERGED else "finished"
        self._print(f"{word} {self._name(trial)} (best val {best:.4f})", trials, trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ended += 1
        self._print(f"FAILED {self._name(trial)}: see {trial.path}", trials, trial, "ERROR")
