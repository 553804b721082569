"""Searched studies: the search block and its refusals, equal budgets, confirmation on fresh seeds, stopped
trials, the tuning-curve estimator, and a search killed mid-way (search and confirmation) that resumes."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.store import read_sweep
from analysis.summary import summarise
from analysis.tables import Layout, table_numbers, to_markdown
from analysis.tuning import (expected_best, expected_best_rows, median_band, order_probabilities, order_text,
                             tuning_curves, winners)
import metrics as M
from sweep.execute import winner
from sweep.plan import file_name, make_plan
from sweep.report import TrialReport
from sweep.run import main
from sweep.search import draws, from_uniform, uniforms
from sweep.trial import Trial
from test_studies import test_bad_grids_and_studies_on_the_command_line as refused_on_the_command_line
from test_studies import test_bad_study_files_are_refused_in_one_line_before_anything_runs as refused_in_one_line

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
name: my-search
description: "two arms searched"
search:
  algorithm: random
  samples: 4
  space:
    lr: {loguniform: [1.0e-4, 3.0e-3]}
    decay: {choice: [0.9, 0.99]}
arms:
  - {label: EMA-VQ, neighbours: none}
  - {label: KSOM, neighbours: hard, space: {tau: {uniform: [0.05, 0.5]}}}
reference: EMA-VQ
"""


def test_search_block_plans_equal_budgets_and_fresh_confirmation_seeds(tmp_path, capsys):
    study = tmp_path / "my-search.yaml"
    study.write_text(GOOD)
    plan = make_plan(str(study), "smoke")
    assert plan.seeds == [1, 2, 3]  # confirm_seeds 3 by default: never the tuning seed 0
    assert plan.search.samples == 4 and plan.search.tuning_seed == 0
    assert plan.search.spaces == [
        {"lr": {"loguniform": [1e-4, 3e-3]}, "decay": {"choice": [0.9, 0.99]}},
        {"lr": {"loguniform": [1e-4, 3e-3]}, "decay": {"choice": [0.9, 0.99]}, "tau": {"uniform": [0.05, 0.5]}}]
    assert plan.n_trials() == 2 * (4 + 3)
    # the command line changes the algorithm, the budget and the number of confirmation seeds
    plan = make_plan(str(study), "smoke", seeds=2, search="optuna", samples=6)
    assert (plan.search.algorithm, plan.search.samples, plan.seeds) == ("optuna", 6, [1, 2])
    assert main([str(study), "--scale", "smoke", "--samples", "5", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    wall = next(i for i, line in enumerate(out) if line.startswith("expected wall time"))
    assert wall == 2 and out[1].startswith("  ") and all(len(line) <= 120 for line in out)  # wrapped, indented
    assert " ".join(line.strip() for line in out[:wall]).startswith(
        "my-search at smoke scale: 16 trials: per arm 5 random-search samples on seed 0 (shared draws: each field one "
        "stream, the same values for every arm that searches it), its best confirmed on seeds 1, 2, 3")
    assert out[3:] == ["  EMA-VQ: lr loguniform [0.0001, 0.003], decay choice {0.9, 0.99}",
                       "  KSOM: lr loguniform [0.0001, 0.003], decay choice {0.9, 0.99}, tau uniform [0.05, 0.5]",
                       "fusion: no --fuse or study fuse:, so off: every trial on its own"]


@pytest.mark.parametrize("text, expected", [
    (GOOD.replace("loguniform: [1.0e-4, 3.0e-3]", "lognormal: [1.0e-4, 3.0e-3]"),
     [":7:", "search.space.lr.lognormal='lognormal'", "distribution 'lognormal' is unknown", "allowed: loguniform"]),
    (GOOD.replace("[1.0e-4, 3.0e-3]", "[3.0e-3, 1.0e-4]"), [":7:", "bounds out of order", "allowed: low < high"]),
    (GOOD.replace("[1.0e-4, 3.0e-3]", "[0.0, 3.0e-3]"), [":7:", "a log-uniform range must be above 0"]),
    (GOOD.replace("[0.9, 0.99]", "[0.9, 1.5]"), [":8:", "search.space.decay.choice=[0.9, 1.5]", "out of range",
                                                 "decay=1.5 must be in (0, 1)"]),
    (GOOD.replace("[0.05, 0.5]", "[-0.5, 0.5]"), [":11:", "arms[1].space.tau.uniform=[-0.5, 0.5]",
                                                  "tau=-0.5 must be > 0"]),
    (GOOD.replace("arms:", "fixed: {lr: 0.001}\narms:"), [":7:", "search.space.lr=", "lr is both searched and fixed"]),
    (GOOD.replace("neighbours: hard,", "neighbours: hard, tau: 0.1,"), [
        ":11:", "tau is both searched and set by an arm"]),
    (GOOD.replace("space: {tau:", "space: {lr:"), [":11:", "lr is searched twice"]),
    (GOOD.replace("decay: {choice: [0.9, 0.99]}", "width: {uniform: [64, 128]}"), [
        ":8:", "allowed: randint or choice for width (a whole number)"]),
    (GOOD.replace("samples: 4", "samples: 0"), [":5:", "search.samples=0", "allowed: a whole number >= 1"]),
    (GOOD.replace("algorithm: random", "algorithm: grid"), [":4:", "search.algorithm='grid'", "allowed: random"]),
    (GOOD.replace("  samples: 4", "  samples: 4\n  confirm_seeds: [0, 1]"), [
        "search.confirm_seeds=[0, 1]", "without it"]),
    (GOOD.replace("  samples: 4", "  samples: 4\n  scheduler: hyperband"), ["search.scheduler='hyperband'",
                                                                             "allowed: asha"]),
    (GOOD + "seeds: 3\n", [":13:", "seeds beside a search", "allowed: search.confirm_seeds"]),
])
def test_bad_search_spaces_are_refused_before_ray_starts(text, expected, tmp_path, capsys):
    """A bad space names the file and line, the key, the value and what is allowed; exit 2, nothing created."""
    refused_in_one_line(text, expected, tmp_path, capsys)


@pytest.mark.parametrize("argv, message", [
    (["robustness", "--search", "random"], "--search: study 'robustness' ("),
    (["robustness", "--samples", "8"], "has no search: block; allowed: a study file with one"),
    (["tuned-comparison", "--samples", "0"], "--samples 0 must be >= 1"),
    (["tuned-comparison", "--set", "lr=0.001"], "--set ['lr'] would fix what study 'tuned-comparison' searches"),
])
def test_search_options_are_refused_where_they_do_not_apply(argv, message, tmp_path, capsys):
    refused_on_the_command_line(argv, message, tmp_path, capsys)


def test_expected_best_equals_the_hand_computed_case():
    """Losses {1, 2, 3}, n draws with replacement: E[min] = sum over k of P(min >= k)."""
    # n = 1: (1 + 2 + 3) / 3 = 2; n = 2: 1 + (2/3)^2 + (1/3)^2 = 14/9; n = 3: 1 + (2/3)^3 + (1/3)^3 = 4/3
    assert expected_best([3.0, 1.0, 2.0], [1, 2, 3]) == pytest.approx([2.0, 14 / 9, 4 / 3])
    # a diverged configuration (infinite loss) makes the expectation infinite; the median stays finite
    assert np.isinf(expected_best([1.0, 2.0, math.inf], [1, 2])).all()
    median, low, high = median_band([1.0, 2.0, math.inf, 0.5], [1, 2, 3, 4])
    assert median[-1] == 0.5 and (low <= median).all() and (median <= high).all()


def test_two_arms_of_a_random_search_get_identical_draws_of_their_shared_fields():
    """The tuned-comparison spaces: KSOM adds tau, which shifts none of the shared fields' draws; the streams
    are the same in a process with another hash seed (the name's hash is not Python's salted one); each
    draw lies in its arm's range, through that arm's own distribution."""
    shared = {"lr": {"loguniform": [1e-4, 3e-3]}, "decay": {"choice": [0.8, 0.9, 0.95, 0.99, 0.999]},
              "codebook_init": {"choice": ["randn", "uniform", "kmeans"]}}
    ema, ksom = draws(shared, 16, 0), draws({**shared, "tau": {"loguniform": [0.01, 1.0]}}, 16, 0)
    assert [{f: d[f] for f in shared} for d in ksom] == ema and len({d["lr"] for d in ema}) == 16
    assert all(0.01 <= d["tau"] <= 1.0 for d in ksom) and {d["decay"] for d in ema} <= {0.8, 0.9, 0.95, 0.99, 0.999}
    assert draws(shared, 16, 1) != ema  # another tuning seed, other draws
    # an arm with a narrower range maps the same uniform numbers through its own distribution
    narrow = draws({"lr": {"loguniform": [1e-3, 3e-3]}}, 16, 0)
    u = uniforms("lr", 0, 16)
    assert [d["lr"] for d in narrow] == pytest.approx(np.exp(np.log(1e-3) + u * np.log(3.0)))
    assert [d["lr"] for d in ema] == pytest.approx(np.exp(np.log(1e-4) + u * np.log(30.0)))
    code = "from sweep.search import uniforms; print(list(uniforms('lr', 0, 3)))"
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert other.strip() == str(list(u[:3]))
    assert from_uniform({"randint": [1, 2]}, 0.0) == 1 and from_uniform({"randint": [1, 2]}, 0.999) == 2


def test_tuning_curve_order_is_stated_only_where_the_bootstrap_gives_it_ninety_percent():
    # the resampled curves are Dodge et al.'s estimator row by row (the hand-computed case above)
    assert expected_best_rows(np.array([[3.0, 1.0, 2.0], [2.0, 2.0, 2.0]]), [1, 2, 3]) == pytest.approx(
        np.array([[2.0, 14 / 9, 4 / 3], [2.0, 2.0, 2.0]]))
    assert np.isinf(expected_best_rows(np.array([[1.0, 2.0, math.inf]]), [1, 2])).all()
    apart = summarise(*_search_frames({"A": [M.FINISHED] * 4, "B": [M.FINISHED] * 4},
                                      {"A": [0.10, 0.11, 0.12, 0.13], "B": [0.50, 0.51, 0.52, 0.53]}))
    order = order_probabilities(apart, resamples=200)
    assert order.n.tolist() == [1, 2, 3, 4] and (order.p_a_lower == 1.0).all()
    assert order_text(order) == ["A below B at n = 1-4"]
    mixed = summarise(*_search_frames({"A": [M.FINISHED] * 4, "B": [M.FINISHED] * 4},
                                      {"A": [0.10, 0.30, 0.50, 0.70], "B": [0.20, 0.30, 0.40, 0.60]}))
    assert order_text(order_probabilities(mixed, resamples=200))[0].startswith("A and B: no order shown")
    hand = pd.DataFrame({"a": "x", "b": "y", "n": [1, 2, 3, 4], "p_a_lower": [0.95, 0.6, 0.3, 0.05]})
    assert order_text(hand) == ["x and y cross: x below y at n = 1; y below x at n = 4"]
    # point estimates that cross (0.6 -> 0.2) are no crossing unless both orders reach 0.9
    assert order_text(hand.assign(p_a_lower=[0.95, 0.89, 0.5, 0.2])) == ["x below y at n = 1"]


def _search_frames(statuses: dict[str, list[str]], losses: dict[str, list[float]], stage: str = "search"):
    """(trials, metrics) of a searched sweep: per arm, runs with these statuses and best validation losses."""
    trials, points = [], []
    for arm, status in statuses.items():
        for i, (s, loss) in enumerate(zip(status, losses[arm])):
            run = f"{arm}-{stage}-{i}"
            trials.append({"run_id": run, "run_name": f"{arm} {stage} seed={i}", "status": s, "arm": arm,
                           "stage": stage, "search": "random", "searched": "lr", "lr": 1e-3 * (i + 1),
                           "seed": i, "codebook_size": 512, "start_time": i})
            steps = [100, 200] if s != M.STOPPED else [100]
            points += [(run, M.VAL_LOSS, step, loss + 0.1 * (len(steps) - k - 1)) for k, step in enumerate(steps)]
            points += [(run, M.TRAIN_LOSS, step, 1.0) for step in steps]
    return pd.DataFrame(trials), pd.DataFrame(points, columns=["run_id", "metric", "step", "value"])


def test_a_stopped_trial_is_counted_never_averaged_never_bold_never_a_tuning_sample():
    trials, metrics = _search_frames({"A": [M.FINISHED, M.FINISHED, M.STOPPED], "B": [M.FINISHED, M.FINISHED]},
                                     {"A": [0.5, 0.7, 0.01], "B": [0.52, 0.72]})
    summary = summarise(trials, metrics)
    assert summary.set_index("run_id").final_loss.isna()["A-search-2"]  # a stopped trial has no final loss
    tidy = table_numbers(summary, Layout(("arm",), name="t"))
    loss = tidy[tidy.column == "final_loss"].set_index("arm")
    assert loss.loc["A", "mean"] == pytest.approx(0.6) and loss.loc["A", "n"] == 2
    assert (loss.loc["A", "seeds"], loss.loc["A", "stopped"], loss.loc["A", "unfinished"]) == (2, 1, 0)
    markdown = to_markdown(tidy, summary, Layout(("arm",), name="t"))
    assert "| 2/0/0 (1 stopped) |" in markdown and "| 2/0/0 |" in markdown  # B: no stopped trial, no count
    # the stopped trial's 0.01 would be the best by far: it is neither bold nor in A's mean
    assert loss.loc["A", "best"] and loss.loc["B", "best"]  # 0.6 vs 0.62: not significantly different
    curves = tuning_curves(summary)
    assert list(curves[curves.arm == "A"].n) == [1, 2]  # two samples: the finished ones
    assert curves[curves.arm == "A"].expected_best.iloc[-1] == pytest.approx(0.5 + 0.25 * 0.2)


def test_the_winner_is_the_lowest_best_loss_among_finished_trials():
    def result(loss, status=M.FINISHED, error=None, lr=0.1):
        report = TrialReport(step=100, status=status, metrics={M.VAL_LOSS: loss, M.VAL_BEST_LOSS: loss})
        config = Trial({}, {"neighbours": "none"}, 0, M.SEARCH, {"lr": lr})  # as Ray holds it: a dict
        return SimpleNamespace(metrics=report.to_result(), config=dataclasses.asdict(config), error=error)

    found = [result(0.5, lr=0.1), result(0.01, status=M.RUNNING, lr=0.2), result(0.02, status=M.DIVERGED, lr=0.3),
             result(0.03, error=RuntimeError("x"), lr=0.4), result(0.4, lr=np.float64(0.5))]
    assert winner(found) == {"lr": 0.5} and type(winner(found)["lr"]) is float
    assert winner(found[1:4]) is None  # stopped (last report not the last validation), diverged, failed never win


def test_winners_table_lists_each_arms_confirmed_values():
    trials, _ = _search_frames({"A": [M.FINISHED] * 2}, {"A": [0.5, 0.6]}, stage="confirm")
    assert winners(trials.assign(stage="confirm")).to_dict("records") == [{"arm": "A", "lr": 1e-3}]


# -- real sweeps ------------------------------------------------------------------------------------------------

PLANTED = """\
name: planted-search
description: "lr 1e-7 and 1e-6 barely train: the search must find the planted 2e-3"
search:
  algorithm: {algorithm}
  samples: 4
  space:
    lr: {{choice: [1.0e-7, 1.0e-6, 2.0e-3]}}
  confirm_seeds: 2
arms:
  - {{label: EMA-VQ, neighbours: none}}
  - {{label: KSOM hard, neighbours: hard, space: {{tau: {{loguniform: [0.05, 0.5]}}}}}}
reference: EMA-VQ
"""
SMOKE = ["--scale", "smoke", "--set", "steps=60", "--set", "eval_every=20"]


def _sweep(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run a sweep command to its end; again (it resumes) when Ray's own start timed out on a busy machine."""
    for _ in range(3):
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "RAY_ADDRESS": "local"})
        if "node timed out during startup" not in done.stderr:
            break
        cmd = [sys.executable, "-m", "sweep.run", "--resume", str(_folder(done.stdout))]
    return done


def _folder(stdout: str) -> Path:
    return Path(next(line.split()[-1] for line in stdout.splitlines() if "resume with:" in line))


def _runs(meta: dict) -> list:
    client = MlflowClient(meta.tracking_uri)
    runs = client.search_runs([meta.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == meta.parent_run_id]


def _check_searched_sweep(sweep_dir: Path, samples: int, seeds: list[int], planted: float | None = None):
    """Each arm: exactly `samples` search runs on seed 0 (one per Ray trial), each confirmation (arm x seed) once,
    at the arm's winning values; every run finished (or stopped early)."""
    meta = read_sweep(sweep_dir)
    runs = _runs(meta)
    by = {}
    for r in runs:
        by.setdefault((r.data.tags["arm"], r.data.tags["stage"]), []).append(r)
    assert sorted(by) == [("EMA-VQ", "confirm"), ("EMA-VQ", "search"), ("KSOM hard", "confirm"),
                          ("KSOM hard", "search")]
    assert len({r.data.tags["ray_trial_id"] for r in runs}) == len(runs)
    for arm in ("EMA-VQ", "KSOM hard"):
        search, confirm = by[(arm, "search")], by[(arm, "confirm")]
        assert len(search) == samples and {r.data.params["seed"] for r in search} == {"0"}
        assert sorted(int(r.data.params["seed"]) for r in confirm) == seeds
        assert all(r.data.tags["status"] in (M.FINISHED, M.STOPPED) for r in search)
        assert all(r.data.tags["status"] == M.FINISHED and r.info.status == "FINISHED" for r in confirm)
        finished = [r for r in search if r.data.tags["status"] == M.FINISHED]
        best = min(finished, key=lambda r: r.data.metrics[M.VAL_BEST_LOSS])
        fields = search[0].data.tags["searched"].split(",")
        assert {(f, r.data.params[f]) for r in confirm for f in fields} == {(f, best.data.params[f]) for f in fields}
        if planted is not None:
            assert float(best.data.params["lr"]) == planted
    winners_json = json.loads((sweep_dir / "sweep.json").read_text())["winners"]
    assert len(winners_json) == 2
    # each finished search run's pictures in a folder of its own (two draws may print alike in a run name)
    searched = [r for r in runs if r.data.tags["stage"] == M.SEARCH and r.data.tags["status"] == M.FINISHED]
    for r in searched:
        assert (sweep_dir / "pictures" / file_name(f"{r.info.run_name} {r.data.tags['ray_trial_id']}")).is_dir()
    return meta, runs


@pytest.mark.slow
def test_random_search_finds_the_planted_best_confirms_it_and_reports_tuning_curves(tmp_path):
    study = tmp_path / "planted-search.yaml"
    study.write_text(PLANTED.format(algorithm="random"))
    done = _sweep([sys.executable, "-m", "sweep.run", str(study), *SMOKE, "--results-dir", str(tmp_path)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_dir = next(tmp_path.glob("planted-search-smoke-*"))
    meta, runs = _check_searched_sweep(sweep_dir, 4, [1, 2], planted=2e-3)
    # the main table is the confirmation: 2 seeds per arm, never the search's runs
    table = pd.read_parquet(sweep_dir / "tables" / "planted-search.parquet")
    assert set(table.seeds) == {2} and set(table.arm) == {"EMA-VQ", "KSOM hard"}
    confirm = {r.info.run_id: r for r in runs if r.data.tags["stage"] == "confirm"}
    loss = table[table.column == "final_loss"].set_index("arm")
    for arm in ("EMA-VQ", "KSOM hard"):  # the test loss at the step validation chose
        values = [r.data.metrics[M.TEST_FINAL_LOSS] for r in confirm.values() if r.data.tags["arm"] == arm]
        assert loss.loc[arm, "mean"] == pytest.approx(np.mean(values), rel=1e-6)
    winners_table = pd.read_parquet(sweep_dir / "tables" / "planted-search_winners.parquet")
    assert list(winners_table.lr) == [2e-3, 2e-3] and winners_table.tau.notna().tolist() == [False, True]
    curves = pd.read_parquet(sweep_dir / "tables" / "planted-search_tuning.parquet")
    assert curves.groupby("arm").n.max().to_dict() == {"EMA-VQ": 4, "KSOM hard": 4}
    for name in ("tuning_curve", "search_loss", "search_fields"):
        assert (sweep_dir / "figures" / f"{name}.png").stat().st_size > 5000
    client = MlflowClient(meta.tracking_uri)
    parent = client.get_run(meta.parent_run_id)
    note = parent.data.tags["mlflow.note.content"]
    assert "| search | per arm 4 random-search samples on seed 0 (shared draws: each field one stream" in note
    # draw j of both arms: the same lr (their shared field), whatever tau KSOM drew
    search = [r for r in runs if r.data.tags["stage"] == M.SEARCH]
    lr = {(r.data.tags["arm"], r.data.tags["draw"]): r.data.params["lr"] for r in search}
    assert sorted(r.data.tags["draw"] for r in search) == sorted(["0", "1", "2", "3"] * 2)
    assert all(lr[("EMA-VQ", d)] == lr[("KSOM hard", d)] for d in "0123")
    assert (sweep_dir / "tables" / "planted-search_paired.parquet").is_file()
    assert "Winning values of each arm's search" in note and "EMA-VQ" in note
    artifacts = {a.path for a in client.list_artifacts(meta.parent_run_id, "figures")}
    assert "figures/tuning_curve.png" in artifacts
    assert parent.data.params["trials"] == str(2 * (4 + 2)) and parent.data.params["search"] == "random"


def _stop_at(cmd: list[str], *marker: str) -> list[str]:
    """Run cmd, SIGKILL it (and the Ray it started) when a line contains each of `marker`; the lines seen.
    A run whose Ray timed out starting (a busy machine) is resumed instead, up to three times."""
    for _ in range(3):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env={**os.environ, "RAY_ADDRESS": "local"})
        seen = []
        try:
            for line in proc.stdout:
                seen.append(line)
                if all(m in line for m in marker):
                    break
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if not any("node timed out during startup" in line for line in seen):
            break
        cmd = [sys.executable, "-m", "sweep.run", "--resume", str(_folder("".join(seen)))]
    assert any(all(m in line for m in marker) for line in seen), "".join(seen)
    return seen


@pytest.mark.slow
def test_optuna_asha_search_killed_mid_search_and_mid_confirmation_resumes_with_n_per_arm(tmp_path):
    """Killed during the second arm's search, resumed (Tuner.restore with the searcher's state), killed during the
    confirmation, resumed: each arm ends with exactly N search runs and each confirmation once."""
    study = tmp_path / "planted-search.yaml"
    study.write_text(PLANTED.format(algorithm="optuna").replace(
        "  confirm_seeds: 2", "  confirm_seeds: 2\n  scheduler: {asha: {grace: 20, reduction_factor: 2}}"))
    cmd = [sys.executable, "-m", "sweep.run", str(study), *SMOKE, "--results-dir", str(tmp_path)]
    _stop_at(cmd, ": EMA-VQ search")  # the first arm's search: the first of its 4 samples ended
    sweep_dir = next(tmp_path.glob("planted-search-smoke-*"))
    resume = [sys.executable, "-m", "sweep.run", "--resume", str(sweep_dir)]
    seen = _stop_at(resume, " confirm seed=")  # the search ended; the confirmation runs
    assert any("resuming" in line for line in seen)
    meta = read_sweep(sweep_dir)
    assert 1 <= sum(r.data.tags["stage"] == "confirm" for r in _runs(meta)) <= 4
    done = _sweep(resume)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, runs = _check_searched_sweep(sweep_dir, 4, [1, 2])
    assert (sweep_dir / "figures" / "best_so_far.png").exists()  # TPE + ASHA: no expected tuning curve
    assert not (sweep_dir / "tables" / "planted-search_tuning.parquet").exists()
