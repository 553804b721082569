"""Readable progress lines while a sweep runs (Ray's own tables are switched off)."""
from __future__ import annotations

import math
import time

from ray import tune

from models import metrics as M
from sweep.tracking import diverged


class Progress(tune.Callback):
    """One line when a trial ends, and a status line at most every `every` seconds."""

    def __init__(self, total: int, name_of, every: float = 15.0):
        self.total, self.name_of, self.every = total, name_of, every  # name_of: Ray trial config -> run name
        self._reset()

    def _reset(self):
        self.start = time.time()
        self.last_line = 0.0
        self.best = (math.inf, "")

    def __getstate__(self):  # pickled with the sweep; the clock restarts on resume
        return {"total": self.total, "name_of": self.name_of, "every": self.every}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def _print(self, text: str, trials, ending=None, end_status: str = ""):
        # Tune calls on_trial_complete / on_trial_error before it updates the trial's status.
        status = [end_status if t is ending else t.status for t in trials]
        n_diverged = sum(s == "TERMINATED" and diverged(t) for s, t in zip(status, trials))
        done = status.count("TERMINATED") + status.count("ERROR")
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - self.start))
        best = f"best val {self.best[0]:.4f} ({self.best[1]})" if math.isfinite(self.best[0]) else "no val yet"
        print(f"[{elapsed}] {done}/{self.total} done ({n_diverged} diverged, {status.count('ERROR')} failed), "
              f"{status.count('RUNNING')} running | {best} | {text}", flush=True)
        self.last_line = time.time()

    def _name(self, trial) -> str:
        return self.name_of(trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        val = result["metrics"].get(M.VAL_LOSS, math.nan)
        if math.isfinite(val) and val < self.best[0]:
            self.best = (val, self._name(trial))
        if time.time() - self.last_line >= self.every:
            self._print(f"{self._name(trial)}: step {result['step']} val {val:.4f}", trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        best = (trial.last_result or {}).get("metrics", {}).get(M.VAL_BEST_LOSS, math.nan)
        self._print(f"{'DIVERGED' if diverged(trial) else 'finished'} {self._name(trial)} (best val {best:.4f})",
                    trials, trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(f"FAILED {self._name(trial)}: see {trial.path}", trials, trial, "ERROR")
