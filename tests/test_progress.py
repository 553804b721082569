"""Progress output of a sweep: the ETA from training steps (slot packing checked by hand, the estimate on
hand-made trials with a controlled clock), line widths, the in-place status line of a terminal (rich), the
library log, and a real cpu-scale sweep whose every line's predicted end is checked against its real end."""
from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import re
import sys
import time
from types import SimpleNamespace

import pytest

from sweep import progress
from sweep.progress import WIDTH, Progress, library_log, pack
from sweep.trial import Trial, trial_config



def test_pack_by_hand():
    # slots end at 3 and 5; 4 s starts at 3 (ends 7), 4 s at 5 (ends 9), 2 s at 7 (ends 9)
    assert pack([3.0, 5.0], [4.0, 4.0, 2.0], 2) == 9.0
    assert pack([], [4.0, 4.0, 2.0], 2) == 6.0  # free slots start at once: 4 | 4, then 2 after the first
    assert pack([1.0], [], 3) == 1.0 and pack([], [], 2) == 0.0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _trial(i: int, steps: int = 100, status: str = "PENDING"):
    """A stand-in for Tune's Trial: the fields Progress reads (before its first report, Tune's own keys)."""
    return SimpleNamespace(trial_id=f"t{i}", status=status, last_result={"trial_id": f"t{i}"}, path=f"/runs/t{i}",
                           config=dataclasses.asdict(Trial({"steps": steps, "eval_every": 10}, {}, i)))


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress, "time", SimpleNamespace(time=c, strftime=time.strftime, gmtime=time.gmtime))
    return c


def _eta(line: str) -> float | None:
    m = re.search(r"ETA (?:≤ )?(?:(\d+) min )?(\d+) s", line)
    return None if m is None else 60 * int(m.group(1) or 0) + int(m.group(2))


def _result(step: int, val: float = 0.5) -> dict:
    return {"step": step, "metrics": {"val/loss": val}}


def _start_and_report_twice(p, trials, clock):
    """Every trial starts, then reports steps 10 and 20, 10 s apart: 1 s per step."""
    for t in trials:
        p.on_trial_start(0, trials, t)
    for step in (10, 20):
        clock.now += 10
        for t in trials:
            p.on_trial_result(0, trials, t, _result(step))


def test_eta_counts_steps_falls_with_time_and_never_rises_without_work(clock, capsys):
    """Three trials of 100 steps, two at once, 1 s per step after 5 s of start-up: the ETA is what is left of
    the running trials plus the third packed onto the first free slot; it falls second by second while no
    report comes, stops at the overdue trials' end instead of rising, and the status counts steps."""
    trials = [_trial(i) for i in range(3)]
    p = Progress(3, lambda c: f"arm seed={c['seed']}", trial_config, at_once=2)
    p.setup()
    for t in trials[:2]:
        t.status = "RUNNING"
        p.on_trial_start(0, trials, t)
    clock.now += 15  # 5 s start-up, 10 steps
    for t in trials[:2]:
        p.on_trial_result(0, trials, t, _result(10))
    assert p.eta(clock.now) is None  # no speed yet: no ETA
    clock.now += 10
    for t in trials[:2]:
        p.on_trial_result(0, trials, t, _result(20))
    # 1 s per step; running: 80 s left each; pending: 100 s (no start-up measured yet) after the first
    assert p.eta(clock.now) == pytest.approx(180.0)
    line = p.status()
    assert "0/3 done (0 diverged, 0 failed), 2 running, 13 % of steps | ETA 3 min 00 s" in line
    assert line.startswith("[00:00:25] ")
    etas = []
    for _ in range(100):  # no report for 100 s: overdue after 80 s
        clock.now += 1
        etas.append(p.eta(clock.now))
    assert all(b <= a for a, b in zip(etas, etas[1:])) and etas[0] == pytest.approx(179.0)
    assert etas[-1] == pytest.approx(100.0)  # the running ones overdue: the third trial's 100 s remain
    p.on_trial_result(0, trials, trials[0], _result(100))
    trials[0].last_result = {"step": 100, "metrics": {"val/best_loss": 0.3}}
    p.on_trial_complete(0, trials, trials[0])
    trials[0].status = "TERMINATED"
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "finished, best val 0.3000: arm seed=0"
    assert out[1].startswith("[00:02:05] 1/3 done (0 diverged, 0 failed), 1 running, 40 % of steps | ETA ")


def test_start_up_and_wind_down_of_measured_trials_are_counted(clock):
    """A trial that starts after the speed is known measures the start-up (time to its first report beyond
    its steps); an ended trial the wind-down (last report to its end); both go into every remaining trial."""
    trials = [_trial(i, steps=20) for i in range(3)]
    p = Progress(3, lambda c: "arm", trial_config, at_once=1)
    p.setup()
    trials[0].status = "RUNNING"
    p.on_trial_start(0, trials, trials[0])
    for step in (10, 20):
        clock.now += 10
        p.on_trial_result(0, trials, trials[0], _result(step))
    clock.now += 4  # wind-down: 4 s
    trials[0].last_result = _result(20)
    p.on_trial_complete(0, trials, trials[0])
    trials[0].status, trials[1].status = "TERMINATED", "RUNNING"
    p.on_trial_start(0, trials, trials[1])
    clock.now += 13  # start-up 3 s + 10 steps at 1 s
    p.on_trial_result(0, trials, trials[1], _result(10))
    assert p.heads == [pytest.approx(3.0)] and p.tails == [pytest.approx(4.0)]
    # running: 10 steps + 4 s wind-down; pending: 3 + 20 + 4
    assert p.eta(clock.now) == pytest.approx(14.0 + 27.0)


def test_trials_tune_has_not_created_yet_count_as_pending(clock):
    """Tune creates a grid's trials as slots free: the two it has not made yet wait as trials of the mean steps."""
    trials = [_trial(0, steps=100, status="RUNNING"), _trial(1, steps=300, status="RUNNING")]
    p = Progress(4, lambda c: "arm", trial_config, at_once=2)
    p.setup()
    _start_and_report_twice(p, trials, clock)
    # running: 80 s and 280 s left; two unseen of 200 steps: 80 + 200 + 200 on the first slot
    assert p.eta(clock.now) == pytest.approx(480.0)
    assert "0/4 done (0 diverged, 0 failed), 2 running, 5 % of steps | ETA 8 min 00 s" in p.status()


def test_upper_bound_under_early_stopping_says_so(clock):
    trials = [_trial(0, status="RUNNING")]
    p = Progress(1, lambda c: "arm", trial_config, at_once=1, upper_bound=True)
    p.setup()
    _start_and_report_twice(p, trials, clock)
    assert "| ETA ≤ 1 min 20 s (upper bound: early stopping)" in p.status()


def test_ended_trial_lines_keep_their_result_within_the_width(clock, capsys):
    """A long run name is what gets cut, never the result in front of it; a failure gives its error file."""
    long = "lucidrains k-means + dead codes lr=0.0003 codebook_size=1024 commitment=0.25 decay=0.99 " * 2
    trials = [_trial(i, status="RUNNING") for i in range(3)]
    p = Progress(3, lambda c: long + str(c["seed"]), trial_config, at_once=2)
    p.setup()
    trials[0].last_result = {"step": 100, "metrics": {"val/best_loss": 0.1234}}
    p.on_trial_complete(0, trials, trials[0])
    trials[0].status = "TERMINATED"
    trials[1].last_result = {"step": 40, "status": "diverged", "metrics": {"val/loss": float("nan")}}
    p.on_trial_complete(0, trials, trials[1])
    trials[1].status = "TERMINATED"
    p.on_trial_error(0, trials, trials[2])
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= WIDTH for line in lines)
    assert lines[0].startswith("finished, best val 0.1234: lucidrains k-means") and lines[0].endswith("…")
    assert lines[2].startswith("DIVERGED at step 40: lucidrains")
    assert lines[4].startswith("FAILED: lucidrains") and lines[5] == "  see /runs/t2/error.txt"
    assert "2/3 done (1 diverged, 0 failed)" in lines[3] and "3/3 done (1 diverged, 1 failed)" in lines[6]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_status_line_is_redrawn_in_place(clock, monkeypatch):
    """rich draws the status line in place (cursor up and erase line), the ended trials go above it as plain
    lines, and closing leaves the last status as a plain line."""
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    trials = [_trial(i, status="RUNNING") for i in range(2)]
    p = Progress(2, lambda c: f"arm seed={c['seed']}", trial_config, at_once=2)
    p.setup()
    try:
        assert p.live is not None
        _start_and_report_twice(p, trials, clock)
        trials[0].last_result = {"step": 100, "metrics": {"val/best_loss": 0.25}}
        p.on_trial_complete(0, trials, trials[0])
        trials[0].status = "TERMINATED"
        p.live.refresh()
    finally:
        p.close()
    text = screen.getvalue()
    assert "\x1b[2K" in text  # the status line is erased and redrawn, not printed line after line
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "finished, best val 0.2500: arm seed=0" in plain
    last = plain.strip().splitlines()[-1]
    assert last.startswith("[00:00:20] 1/2 done (0 diverged, 0 failed), 1 running, 60 % of steps | ETA 1 min 20 s")


def test_library_messages_go_to_the_log_and_errors_still_show(tmp_path, capfd, request):
    # Ray's logger at WARNING, as the sweep's ray.init(logging_level="WARNING") leaves it (an earlier test's
    # ray.init(logging_level="ERROR"), as in the GPU preflight, would drop the warning before any handler).
    ray_logger = logging.getLogger("ray")
    request.addfinalizer(lambda level=ray_logger.level: ray_logger.setLevel(level))
    ray_logger.setLevel(logging.WARNING)
    log = tmp_path / "sweep.log"
    with library_log(log):
        os.write(2, b"Token authentication is enabled for this Ray cluster.\n")
        logging.getLogger("ray").warning("a warning nobody acts on")
        logging.getLogger("ray.tune.execution.insufficient_resources_manager").warning("No trial is running\nmore")
        logging.getLogger("ray.tune").error("Trial task failed\nTraceback ...")
    print("after", file=sys.stderr)
    err = capfd.readouterr().err
    assert err.splitlines() == [
        "warning (ray.tune.execution.insufficient_resources_manager): No trial is running (details: sweep.log)",
        "error (ray.tune): Trial task failed (details: sweep.log)", "after"]
    assert "Token authentication" in log.read_text()


DURATION = re.compile(r"(?:(\d+) h )?(?:(\d+) min )?(\d+) s")


def _seconds(text: str) -> int:
    h, m, s = (int(x or 0) for x in DURATION.fullmatch(text).groups())
    return 3600 * h + 60 * m + s


@pytest.mark.slow
def test_a_cpu_sweeps_eta_predicts_its_end(user_study_sweep):
    """A cpu-scale sweep of six short trials, two at once, its output not a terminal: once a tenth of the
    steps are done, every status line's predicted end (time elapsed + ETA) lies within 25 % of the sweep's
    real end; no line is wider than 120 characters; Ray's token warning is in the sweep's log, not the output."""
    done, results = user_study_sweep
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert max(len(line.replace(str(results), "/tmp/x")) for line in lines) <= WIDTH  # but this test's long path
    status = [m for m in map(re.compile(r"\[(\d\d):(\d\d):(\d\d)\] (\d+)/6 done .*?(\d+) % of steps").match, lines)
              if m]
    *before, last = status
    assert last.group(4) == "6" and last.group(5) == "100"
    end = _seconds(f"{int(last.group(1))} h {int(last.group(2))} min {int(last.group(3))} s")
    checked = 0
    for m in before:
        if int(m.group(5)) < 10:
            continue
        eta = re.search(r"ETA (.+? s)(?: \(revised up .+?\))?(?: \||$)", m.string)  # a loaded machine revises
        assert eta, m.string
        elapsed = _seconds(f"{int(m.group(1))} h {int(m.group(2))} min {int(m.group(3))} s")
        predicted = elapsed + _seconds(eta.group(1))
        assert abs(predicted - end) <= 0.25 * end, (m.string, end, done.stdout)
        checked += 1
    assert checked >= 5, done.stdout
    assert "Token authentication" not in done.stdout + done.stderr  # Ray warns only where token auth is on
    (log,) = results.glob("lr-by-k-cpu-*/sweep.log")
    assert "Creating initial MLflow database tables" in log.read_text()  # library noise lands in the log


def _simulate(clock, p, trials, slots: int, head: float, tail: float, seconds_per_step, eval_every: int = 10):
    """Run `trials` through Progress on the simulated clock, `slots` at a time in list order, as Tune calls it:
    each trial starts, reports every `eval_every` steps (at `seconds_per_step(now)` s per step) after `head`
    s of start-up, and ends `tail` s after its last report, its slot then taken by the next trial. Yields
    (time, predicted end or None, status line, whether a trial ended since the last yield), once a second."""
    queue, running, ended = list(trials), {}, False  # trial id -> (trial, next report time, next step)
    while queue or running:
        while queue and len(running) < slots:
            t = queue.pop(0)
            t.status = "RUNNING"
            p.on_trial_start(0, trials, t)
            running[t.trial_id] = [t, clock.now + head + eval_every * seconds_per_step(clock.now), eval_every]
        clock.now += 1
        for tid, (t, due, step) in list(running.items()):
            if step is None and clock.now >= due:  # wind-down over
                t.last_result = _result(t.config["base"]["steps"])
                p.on_trial_complete(0, trials, t)
                t.status = "TERMINATED"
                del running[tid]
                ended = True
            elif step is not None and clock.now >= due:
                p.on_trial_result(0, trials, t, _result(step))
                last = step == t.config["base"]["steps"]
                running[tid][1:] = [clock.now + tail, None] if last else \
                    [clock.now + eval_every * seconds_per_step(clock.now), step + eval_every]
        eta = p.eta(clock.now)
        yield clock.now, None if eta is None else clock.now + eta, p.status(), ended
        ended = False


def _rises(history) -> list[float]:
    """How far each predicted end lies above the earliest one predicted since the last trial ended."""
    lowest, rises = math.inf, []
    for _, end, _, ended in history:
        lowest = math.inf if ended else lowest
        if end is not None:
            lowest = min(lowest, end)
            rises.append(end - lowest)
    return rises


def test_on_a_steady_machine_the_predicted_end_only_moves_when_a_trial_ends(clock):
    """Seven trials of 100 steps, two at a time, 1 s per step, 12 s of start-up and 8 s of wind-down, as the
    plan's overhead says (12 and 8 steps' time): while no trial ends, the predicted end never rises by
    more than 2 s (the status line's rounding) and the line never says it was revised; every ETA is within 2 s
    of the real end. With no overhead in the plan (start-up and wind-down taken as zero until measured), the
    first ETA is more than a minute short and the predicted end creeps up during the first trials' wind-down."""
    def sweep(overhead):
        clock.now = 1000.0
        p = Progress(7, lambda c: "arm", trial_config, at_once=2, overhead=overhead)
        p.setup()
        return list(_simulate(clock, p, [_trial(i, steps=100) for i in range(7)], 2, head=12, tail=8,
                              seconds_per_step=lambda now: 1.0))

    history = sweep((12, 8))
    real_end = history[-1][0]
    assert max(_rises(history)) <= 2
    assert all(abs(end - real_end) <= 2 for _, end, _, _ in history if end is not None)
    assert not any("revised" in line for _, _, line, _ in history)
    naive = sweep((0.0, 0.0))
    first = next(end for _, end, _, _ in naive if end is not None)
    assert real_end - first > 60 and max(_rises(naive)) > 2


def test_on_a_machine_that_slows_the_line_says_the_eta_was_revised(clock):
    """The same sweep, its steps twice as slow from 100 s in: the predicted end rises between trial ends, and
    the status line says so."""
    trials = [_trial(i, steps=100) for i in range(5)]
    p = Progress(5, lambda c: "arm", trial_config, at_once=2, overhead=(12, 8))
    p.setup()
    start = clock.now
    lines = [line for _, _, line, _ in _simulate(clock, p, trials, 2, head=12, tail=8,
                                                 seconds_per_step=lambda now: 1.0 if now < start + 100 else 2.0)]
    revised = [line for line in lines if "(revised up " in line]
    assert revised and all(len(line) <= WIDTH for line in lines)
    assert re.search(r"\| ETA \d+ min \d\d s \(revised up \d+ (min \d\d )?s\)", revised[0])
