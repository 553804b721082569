"""Packs of trials trained as one fused model (sweep/packs.py): --fuse and the study's fuse: resolved to a pack
size with the rule that decided it, bad values refused in one line before anything starts, trials grouped only
where models.fused.check_pack allows, and (slow, real Ray and MLflow) a fused smoke sweep that the analysis
cannot tell from the unfused one, killed and resumed with nothing lost or doubled."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.store import read_sweep
from models.config import ConfigError
from plan import Plan as PlanRecord
from sweep.packs import pack_size, parse_fuse
from sweep.plan import make_plan, stored_error, validate
from sweep.run import main
from sweep.scales import gpu_figures

ROOT = Path(__file__).resolve().parents[1]
TWO_ARMS = """\
name: two-arms
description: EMA-VQ and KSOM hard, fused and apart
arms:
  - {neighbours: none}
  - {neighbours: hard, grid_dim: 2, tau: 0.1}
reference: {neighbours: none}
"""


def _refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "", "on"])
def test_bad_fuse_values_are_refused_in_one_line_before_anything(value, capsys, tmp_path):
    results = tmp_path / "results"
    err = _refused(["comparison", "--scale", "smoke", "--fuse", value, "--results-dir", str(results)], capsys)
    assert f"--fuse {value!r}: allowed: a whole number of trials per pack >= 1, auto" in err
    assert not results.exists()


def test_a_bad_fuse_in_a_study_file_names_its_line(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(TWO_ARMS + "fuse: 2.5\n")
    err = _refused([str(study), "--scale", "smoke", "--dry-run"], capsys)
    assert err.startswith(f"python -m sweep.run: error: {study}:7: fuse=2.5; allowed: a whole number")


def test_packs_need_one_process_per_trial(capsys):
    err = _refused(["comparison", "--scale", "smoke", "--fuse", "2", "--workers-per-trial", "2", "--dry-run"],
                   capsys)
    assert "a pack of trials trains in one process" in err and "allowed: --fuse off, or --workers-per-trial 1" in err


def test_parse_fuse():
    assert [parse_fuse(v) for v in ("off", "AUTO", "3", 4)] == ["off", "auto", 3, 4]
    for bad in (0, True, 2.0, "x"):
        with pytest.raises(ConfigError):
            parse_fuse(bad)


GPU_TXT = """\
## device check 2026-12-06 10:00 UTC: NVIDIA H100 80GB HBM3 (torch 2.11.0, CUDA 13.0, commit abc, 16 CPUs)
figure: fusion_pack_size = 16  (trials per fused pack)
figure: fusion_vs_processes = {gain}  (over 8 trainer processes)
"""


@pytest.mark.parametrize("gain, gpu, size, words", [
    (2.9, "NVIDIA H100 80GB HBM3", 16, "measured 2.90x the 8-process packing (at least 1.2x)"),
    (1.19, "NVIDIA H100 80GB HBM3", 1, "measured 1.19x the 8-process packing, under 1.2x"),
    (2.9, "NVIDIA H200", 1, "gpu.txt holds no fusion measurement on NVIDIA H200"),
    (2.9, None, 1, "no CUDA device"),
])
def test_auto_fuses_only_where_this_gpu_measured_a_gain(gain, gpu, size, words, tmp_path):
    (tmp_path / "gpu.txt").write_text(GPU_TXT.format(gain=gain))
    chosen, rule = pack_size("auto", "--fuse", gpu, gpu_figures(tmp_path / "gpu.txt"))
    assert chosen == size and rule.startswith("--fuse auto: ") and words in rule
    assert pack_size("auto", "--fuse", "NVIDIA H100 80GB HBM3", {}) == (
        1, "--fuse auto: gpu.txt holds no fusion measurement on NVIDIA H100 80GB HBM3, so every trial on its own")


def test_the_dry_run_lists_packs_that_split_on_shapes_and_says_the_rule(capsys):
    """Trials that differ only in values share packs; a shape (batch size) splits them; the plan keeps the pack
    size through sweep.json."""
    assert main(["comparison", "--scale", "smoke", "--seeds", "3", "--grid", "batch_size=16,32", "--fuse", "4",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "fusion: --fuse 4: packs of up to 4 trials; 6 Ray trials (one fused model each) for 18 trials" in out
    packs = [line for line in out.splitlines() if line.startswith("  pack ")]
    assert [line.split(": ", 1)[0] for line in packs] == [f"  pack {i} ({n})" for i, n in
                                                         enumerate([4, 4, 1, 4, 4, 1], 1)]
    assert all(("batch_size=16" in p) != ("batch_size=32" in p) for p in packs)  # no pack mixes batch sizes
    assert "EMA-VQ batch_size=16 seed=0 | EMA-VQ batch_size=16 seed=1" in packs[0]
    plan = make_plan("comparison", "smoke", seeds=3, fuse="4")
    assert PlanRecord.from_dict(plan.to_dict()).pack_size == 4
    assert main(["comparison", "--scale", "smoke", "--dry-run"]) == 0
    assert "fusion: no --fuse or study fuse:, so off: every trial on its own" in capsys.readouterr().out


def test_a_searched_study_runs_unfused_and_says_why(capsys):
    assert main(["tuned-comparison", "--scale", "smoke", "--fuse", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "fusion: --fuse 2: packs of up to 2 trials, but a searched study runs unfused: " in out
    plan = make_plan("tuned-comparison", "smoke", fuse="2", search="optuna")
    assert plan.pack_size == 1 and "TPE draws each sample from the results before it" in plan.fuse_rule


def test_a_study_file_sets_fuse_and_the_command_line_wins(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(TWO_ARMS + "fuse: 2\n")
    plan = make_plan(str(study), "smoke", seeds=2)
    assert plan.pack_size == 2 and plan.fuse_rule == f"{study} fuse: 2: packs of up to 2 trials"
    assert make_plan(str(study), "smoke", seeds=2, fuse="off").pack_size == 1


# ---------------------------------------------------------------- end to end (real Ray, MLflow)


def _sweep(study: Path, results: Path, *extra: str) -> Path:
    done = subprocess.run([sys.executable, "-m", "sweep.run", str(study), "--scale", "smoke", "--seeds", "2",
                           "--results-dir", str(results), *extra], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return next(results.glob("two-arms-smoke-*"))


def _runs(sweep_dir: Path) -> dict:
    """run name -> (params, tag keys, metric keys, status, validation steps) of a sweep's child runs."""
    meta = read_sweep(sweep_dir)
    client = MlflowClient(meta.tracking_uri)
    runs = client.search_runs([meta.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{meta.parent_run_id}'")
    assert len({r.info.run_name for r in runs}) == len(runs)
    return {r.info.run_name: (r.data.params, sorted(r.data.tags), sorted(r.data.metrics), r.data.tags["status"],
                              [m.step for m in client.get_metric_history(r.info.run_id, "val/loss")])
            for r in runs}


@pytest.mark.slow
def test_a_fused_sweep_gives_the_tables_and_runs_of_an_unfused_one(tmp_path):
    """Two arms x 2 seeds at smoke scale, unfused and as packs of 2 (--fuse 2: one Ray trial per arm): the same
    runs (names, params, tag keys, metric keys, statuses, validation steps), table rows and verdicts, final
    losses within 1e-3 relative (the fused step sums the members' gradients in another order)."""
    study = tmp_path / "two-arms.yaml"
    study.write_text(TWO_ARMS)
    apart, fused = _sweep(study, tmp_path / "apart"), _sweep(study, tmp_path / "fused", "--fuse", "2")
    assert _runs(fused) == _runs(apart)
    assert sorted(_runs(fused)) == ["EMA-VQ seed=0", "EMA-VQ seed=1", "KSOM hard seed=0", "KSOM hard seed=1"]
    for name in ("two-arms", "two-arms_vs_reference"):
        a, f = (pd.read_parquet(d / "tables" / f"{name}.parquet") for d in (apart, fused))
        keys = [c for c in a.columns if a[c].dtype == object or c in ("n", "seeds", "diverged", "collapsed")]
        pd.testing.assert_frame_equal(f[keys], a[keys])
        # the seeds a power analysis asks for go with 1 / difference^2: a difference near 0 magnifies the 1e-5
        numbers = [c for c in a.columns if c not in keys and not c.startswith("seeds_")]
        pd.testing.assert_frame_equal(f[numbers], a[numbers], rtol=1e-2)
    verdicts = pd.read_parquet(fused / "tables" / "two-arms_vs_reference.parquet").verdict
    assert list(verdicts) == list(pd.read_parquet(apart / "tables" / "two-arms_vs_reference.parquet").verdict)


@pytest.mark.slow
def test_a_killed_fused_sweep_resumes_with_nothing_lost_or_doubled(tmp_path):
    """Kill the driver of a fused sweep (2 packs of 2, 200 steps) once a pack has validated, resume: every member
    ends with one run whose curve has each validation once, as the uninterrupted unfused trial's."""
    study = tmp_path / "two-arms.yaml"
    study.write_text(TWO_ARMS)
    cmd = [sys.executable, "-m", "sweep.run", str(study), "--scale", "smoke", "--seeds", "2", "--fuse", "2",
           "--set", "steps=200", "--set", "eval_every=20", "--results-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    sweep_dir = None
    try:
        for line in proc.stdout:
            if line.startswith("sweep folder: "):
                sweep_dir = Path(line.split(": ", 1)[1].strip())
                break
        deadline = time.time() + 300
        while sweep_dir and not list(sweep_dir.rglob("members.json")) and time.time() < deadline:
            time.sleep(0.2)  # until a pack has checkpointed a validation
        checkpointed = sweep_dir and list(sweep_dir.rglob("members.json"))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert checkpointed
    before = _runs(sweep_dir)
    assert not all(status == "finished" for _, _, _, status, _ in before.values()), "killed too late"
    done = subprocess.run([sys.executable, "-m", "sweep.run", "--resume", str(sweep_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = _runs(sweep_dir)
    assert sorted(runs) == ["EMA-VQ seed=0", "EMA-VQ seed=1", "KSOM hard seed=0", "KSOM hard seed=1"]
    assert all(status == "finished" and steps == list(range(20, 201, 20)) for _, _, _, status, steps in
               runs.values())


def test_a_stored_plan_with_no_trials_per_pack_is_refused():
    plan = dataclasses.replace(make_plan("comparison", "smoke"), pack_size=0)
    with pytest.raises(ConfigError) as error:
        validate(plan, stored_error("DIR/sweep.json"))
    assert str(error.value) == "DIR/sweep.json: plan.pack_size=0: no trials per pack; allowed: a whole number >= 1"


@pytest.mark.slow
def test_a_diverging_member_is_run_diverged_while_its_pack_finishes(tmp_path):
    """One pack of two EMA-VQ trials, one with a learning rate that overflows Adam: its run is tagged diverged
    (curve up to its divergence), the other's finished with every validation, as unfused."""
    study = tmp_path / "two-arms.yaml"
    study.write_text("name: two-arms\ndescription: one arm diverges\narms:\n  - {neighbours: none, lr: 0.001}\n"
                     "  - {neighbours: none, lr: 1000000.0}\nreference: {lr: 0.001}\n")
    done = subprocess.run([sys.executable, "-m", "sweep.run", str(study), "--scale", "smoke", "--seeds", "1",
                           "--fuse", "2", "--results-dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = _runs(next(tmp_path.glob("two-arms-smoke-*")))
    assert {name: (status, steps) for name, (_, _, _, status, steps) in runs.items()} == {
        "EMA-VQ lr=0.001 seed=0": ("finished", [20, 40]), "EMA-VQ lr=1e+06 seed=0": ("diverged", [])}
