"""What a running sweep shows (Ray's own tables are switched off): a plan line at the start, a line per
ended trial with its result, and a status line (trials done, share of the training steps done, ETA, best
validation loss so far). On a terminal the status line is updated in place (rich) with the ended trials
printed above it; elsewhere (CI, `ray exec`, a log file) it is printed as a plain line after each ended
trial and every `every` seconds. No line is longer than WIDTH characters. Library messages (Ray, MLflow)
go to the sweep's log file instead (`library_log`).

The ETA counts training steps, as the trainer reports them at each validation: a trial's speed is
measured between its own reports, its start-up and wind-down (the time outside its reports) from the
trials that had them, and the remaining trials are packed onto the slots that run at once, in Tune's
order. Until trials have measured them, start-up and wind-down are the plan's: the scale's `overhead`
(sweep/scales.py), in steps' time at the measured speed, so on a steady machine the predicted end falls
as time passes and moves only when a trial ends. When it moves up between two trial
ends (the machine slowed), the line says so: "(revised up N s)", against the earliest end predicted since
the last trial ended. Under early stopping it assumes every
remaining trial runs to its end, so it is an upper bound and says so.
"""
from __future__ import annotations

import atexit
import contextlib
import heapq
import logging
import math
import os
import sys
import time
from pathlib import Path

from ray import tune

import metrics as M
from plan import search_budget
from sweep.report import TrialReport, data_error, ending

WIDTH = 120
# Library warnings that ask the user to act (trials that cannot start) stay on the terminal.
SHOWN_LOGGERS = ("ray.tune.execution.insufficient_resources_manager",)


def fit(line: str, width: int = WIDTH) -> str:
    """`line` as one line of at most `width` characters (an ellipsis marks the cut): a control character in a
    name or error it quotes is shown escaped (metrics.printable), never forging a line or driving the terminal."""
    line = M.printable(line)
    return line if len(line) <= width else line[:width - 1] + "…"


def duration(seconds: float) -> str:
    """'1 h 02 min', '3 min 09 s' or '42 s'."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def plural(n: int, word: str) -> str:
    """'1 seed', '3 seeds'."""
    return f"{n} {word}{'s' if n != 1 else ''}"


def plan_line(plan, at_once: int) -> str:
    """'plan: 24 trials (8 arms x 3 seeds), 2 at once, cpu scale; expected wall time about 3 min 12 s'; of a searched
    study the budget (plan.search_budget) instead of the shape, last."""
    seconds = plan.expected_seconds(at_once)
    expected = f"expected wall time about {duration(seconds)}" if seconds else "no wall-time estimate for this scale"
    if plan.search:  # the budget last: the line is cut at WIDTH
        return fit(f"plan: {plan.n_trials()} trials, {at_once} at once, {plan.scale} scale; {expected}; "
                   f"{search_budget(plan)}")
    return fit(f"plan: {plan.n_trials()} trials ({len(plan.arms)} arms x {plural(len(plan.seeds), 'seed')}), "
               f"{at_once} at once, {plan.scale} scale; {expected}")


def pack(running: list[float], pending: list[float], slots: int) -> float:
    """Seconds until the last trial ends: `running` trials have these seconds left, `pending` ones take these
    seconds each and start, in order, on whichever of the `slots` frees first."""
    ends = sorted(running) + [0.0] * max(0, slots - len(running))
    heapq.heapify(ends)
    for seconds in pending:
        heapq.heapreplace(ends, ends[0] + seconds)
    return max(ends, default=0.0)


def _last(trial) -> TrialReport | None:
    """The trial's last report (None before its first: Tune's last_result then holds only Tune's own keys)."""
    last = trial.last_result
    return TrialReport.from_result(last) if last and "step" in last else None


class Progress(tune.Callback):
    """The lines of a running sweep (see the module docstring). `name_of` and `config_of` map a Ray trial
    config to its run name and its TrialConfig (whose `steps` is the trial's work); `at_once` is how many
    trials run at the same time; `upper_bound` is set when a scheduler may stop trials early; `overhead` is the
    plan's (start-up, wind-down) of a trial in steps' time, until trials have measured them."""

    def __init__(self, total: int, name_of, config_of, at_once: int, upper_bound: bool = False,
                 every: float = 15.0, overhead: tuple[float, float] = (0.0, 0.0)):
        self.total, self.name_of, self.config_of, self.at_once = total, name_of, config_of, at_once
        self.upper_bound, self.every, self.overhead = upper_bound, every, overhead
        self._reset()

    def _reset(self):
        self.start = self.last_line = time.time()
        self.best = (math.inf, "")
        self.trials = []  # Tune's list, for the status line
        self.started = {}  # trial id -> (time, step) when it started in this session
        self.reported = {}  # trial id -> (time, step) of its last report in this session
        self.pairs = [0.0, 0.0]  # steps and seconds between consecutive reports of one trial
        self.heads, self.tails = [], []  # start to first report beyond its steps; last report to the end
        self.work = {}  # trial id -> its steps
        self.lowest = math.inf  # the earliest end predicted since the last trial ended (absolute time)
        self.live = None

    def __getstate__(self):  # pickled with the sweep; the clock restarts on resume
        return {k: getattr(self, k) for k in ("total", "name_of", "config_of", "at_once", "upper_bound", "every",
                                              "overhead")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    # ------------------------------------------------------------------ the estimate

    def _steps(self, trial) -> int:
        if trial.trial_id not in self.work:
            self.work[trial.trial_id] = self.config_of(trial.config).steps
        return self.work[trial.trial_id]

    def _step(self, trial) -> int:
        """Steps the trial has done, as far as its reports tell."""
        if trial.trial_id in self.reported:
            return self.reported[trial.trial_id][1]
        last = _last(trial)  # on resume, restored from the sweep's state
        return last.step if last else 0

    def _unseen(self) -> tuple[int, float]:
        """Trials Tune has not created yet (it makes them as slots free), and their steps: the mean of the rest."""
        n = max(0, self.total - len(self.trials))
        return n, (sum(self._steps(t) for t in self.trials) / len(self.trials) if n and self.trials else 0.0)

    def eta(self, now: float) -> float | None:
        """Seconds until the last trial ends, or None before any trial has reported twice."""
        if not self.pairs[0]:
            return None
        per_step = self.pairs[1] / self.pairs[0]
        head = sum(self.heads) / len(self.heads) if self.heads else self.overhead[0] * per_step
        tail = sum(self.tails) / len(self.tails) if self.tails else self.overhead[1] * per_step
        running, pending = [], []
        for t in self.trials:
            work = (self._steps(t) - self._step(t)) * per_step + tail
            if t.status == "RUNNING" and t.trial_id in self.reported:
                running.append(max(0.0, work - (now - self.reported[t.trial_id][0])))
            elif t.status == "RUNNING" and t.trial_id in self.started:
                running.append(max(0.0, head + work - (now - self.started[t.trial_id][0])))
            elif t.status in ("PENDING", "PAUSED", "RUNNING"):
                pending.append(head + work)
        unseen, steps = self._unseen()
        return pack(running, pending + [head + steps * per_step + tail] * unseen, self.at_once)

    def _eta_text(self, now: float) -> str:
        """' | ETA 7 min 02 s', with '(revised up N s)' while it predicts a later end than it did earlier
        since the last trial ended (more than 2 s: the seconds it rounds to)."""
        eta = self.eta(now)
        if eta is None:
            return ""
        self.lowest = min(self.lowest, now + eta)
        later = now + eta - self.lowest
        return (f" | ETA {'≤ ' if self.upper_bound else ''}{duration(eta)}"
                + (" (upper bound: early stopping)" if self.upper_bound else "")
                + (f" (revised up {duration(later)})" if later > 2 else ""))

    def status(self, ended=None, end_status: str = "") -> str:
        """'[00:01:23] 3/24 done (0 diverged, 0 failed), 2 running, 14 % of steps | ETA 7 min 02 s | best …'."""
        now = time.time()
        # Tune calls on_trial_complete / on_trial_error before it updates the trial's status.
        status = [end_status if t is ended else t.status for t in self.trials]
        endings = [ending(t) for s, t in zip(status, self.trials) if s == "TERMINATED"]
        n_diverged, n_stopped = endings.count(M.DIVERGED), endings.count(M.STOPPED)
        n_failed = status.count("ERROR") + endings.count(M.FAILED)  # a data error ends a trial
        done = status.count("TERMINATED") + status.count("ERROR")
        unseen, unseen_steps = self._unseen()
        steps = sum(self._steps(t) for t in self.trials) + unseen * unseen_steps
        done_steps = sum(self._steps(t) if s in ("TERMINATED", "ERROR") else self._step(t)
                         for s, t in zip(status, self.trials))
        share = f", {100 * done_steps / steps:.0f} % of steps" if steps else ""
        eta = self._eta_text(now) if done < self.total else ""
        stopped = f"{n_stopped} stopped, " if n_stopped else ""
        line = (f"[{time.strftime('%H:%M:%S', time.gmtime(now - self.start))}] {done}/{self.total} done "
                f"({n_diverged} diverged, {stopped}{n_failed} failed), {status.count('RUNNING')} running"
                f"{share}{eta}")
        best = f" | best val {self.best[0]:.4f} ({self.best[1]})" if math.isfinite(self.best[0]) else ""
        return fit(line + best if len(line + best) <= WIDTH else line)  # the best run is dropped first

    # ------------------------------------------------------------------ output

    def _emit(self, *lines: str, ended=None, end_status: str = ""):
        """Ended-trial lines, then the status line (in place on a terminal, a plain line elsewhere)."""
        if self.live is not None:
            for line in lines:
                self.live.console.print(fit(line), markup=False, highlight=False, soft_wrap=True)
            self.live.refresh()
            return
        for line in lines:
            print(fit(line), flush=True)
        print(self.status(ended, end_status), flush=True)
        self.last_line = time.time()

    def setup(self, **info):
        self._reset()
        if sys.stdout.isatty():
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            self.live = Live(get_renderable=lambda: Text(self.status(), no_wrap=True, overflow="ellipsis"),
                             console=Console(), refresh_per_second=1, transient=True)
            self.live.start()
            atexit.register(self.close)  # an aborted sweep leaves the terminal as it found it

    def close(self):
        """Stop updating the status line in place; its last state stays as a plain line."""
        if self.live is not None:
            live, self.live = self.live, None
            live.stop()
            print(self.status(), flush=True)

    def on_experiment_end(self, trials, **info):
        self.trials = trials
        self.close()

    def on_step_begin(self, iteration, trials, **info):
        self.trials = trials
        if self.live is None and time.time() - self.last_line >= self.every:
            self._emit()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.trials = trials
        self.started[trial.trial_id] = (time.time(), self._step(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        report = TrialReport.from_result(result)
        self.trials, now, step = trials, time.time(), report.step
        if trial.trial_id in self.reported:
            then, before = self.reported[trial.trial_id]
            if step > before:
                self.pairs = [self.pairs[0] + step - before, self.pairs[1] + now - then]
        elif trial.trial_id in self.started and self.pairs[0]:
            then, before = self.started[trial.trial_id]
            self.heads.append(max(0.0, now - then - (step - before) * self.pairs[1] / self.pairs[0]))
        if step >= self.reported.get(trial.trial_id, (now, 0))[1]:  # a restarted trial re-reports earlier steps
            self.reported[trial.trial_id] = (now, step)
        val = report.metrics.get(M.VAL_LOSS, math.nan)
        if math.isfinite(val) and val < self.best[0]:
            self.best = (val, self.name_of(trial.config))

    def _ended(self, trial):
        if trial.trial_id in self.reported:
            self.tails.append(time.time() - self.reported[trial.trial_id][0])
        self.lowest = math.inf  # a trial's end is news: the estimate may move either way

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.trials = trials
        self._ended(trial)
        last = _last(trial)
        best = last.metrics.get(M.VAL_BEST_LOSS, math.nan) if last else math.nan
        result = {M.DIVERGED: f"DIVERGED at step {self._step(trial)}", M.FAILED: f"FAILED ({data_error(trial)})",
                  M.STOPPED: f"stopped early at step {self._step(trial)}"}.get(ending(trial),
                                                                              f"finished, best val {best:.4f}")
        self._emit(f"{result}: {self.name_of(trial.config)}", ended=trial, end_status="TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.trials = trials
        self._ended(trial)
        self._emit(f"FAILED: {self.name_of(trial.config)}", f"  see {trial.path}/error.txt", ended=trial,
                   end_status="ERROR")


class _Shown(logging.StreamHandler):
    """Library log records the user must see, one line each: errors, and the warnings of SHOWN_LOGGERS."""

    def __init__(self, stream, log_name: str):
        super().__init__(stream)
        self.log_name = log_name

    def filter(self, record):
        return record.levelno >= logging.ERROR or record.name.startswith(SHOWN_LOGGERS)

    def format(self, record):
        first = record.getMessage().strip().split("\n")[0]
        return fit(f"{record.levelname.lower()} ({record.name}): {first}", WIDTH - len(self.log_name) - 11) + \
            f" (details: {self.log_name})"


@contextlib.contextmanager
def library_log(path: Path):
    """While the sweep runs, what libraries write to stderr (Ray's token-authentication warning, MLflow's
    progress bars, the log lines of Ray's own processes) goes to `path`; library errors, and the warnings
    that ask the user to act, are still shown on the terminal (one line each, the details in `path`).
    Yields the terminal's stderr, for a line that must reach the user from where no exception can."""
    sys.stderr.flush()
    terminal = os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 2)
    shown = _Shown(os.fdopen(os.dup(terminal), "w", buffering=1), path.name)
    loggers = [logging.getLogger(name) for name in ("", "ray", "mlflow")]  # Ray's and MLflow's do not propagate
    for logger in loggers:
        logger.addHandler(shown)
    try:
        yield shown.stream
    finally:
        for logger in loggers:
            logger.removeHandler(shown)
        shown.stream.close()
        sys.stderr.flush()
        os.dup2(terminal, 2)
        os.close(terminal)
