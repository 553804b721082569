"""Studies as data: the YAML study files, their plans and their refusals."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.store import read_sweep
import metrics as M
from models.config import TrialConfig
from plan import Analysis
from sweep.plan import make_plan
from sweep.run import main
from sweep.scales import SCALES, STARTUP_SECONDS

ROOT = Path(__file__).resolve().parents[1]

# The paper's Tables 1-4 written out by hand, in the paper's row order:
# (neighbours, grid_dim, tau, n0, update_empty); EMA-VQ keeps the config's grid_dim 2 and tau 0.1,
# which it does not use (its neighbourhood is the identity, Remark 3.1).
EMA, HARD, GAUSS = ("none", 2, 0.1), ("hard", 2, 0.1), ("gaussian", 2, 0.1)
PAPER_TABLES = {
    "sensitivity": [(*EMA, 0, False), (*EMA, 0, True), (*EMA, 1, False), (*EMA, 1, True)],  # Table 1
    "comparison": [(*EMA, 1, True), (*HARD, 1, True), (*GAUSS, 1, True)],  # Table 2
    "robustness": [(*EMA, 0, False), (*HARD, 0, False), (*EMA, 0, True), (*HARD, 0, True),  # Table 3
                   (*EMA, 1, False), (*HARD, 1, False), (*EMA, 1, True), (*HARD, 1, True)],
    "ablation": [(n, d, t, 1, True) for n in ("hard", "gaussian")  # Table 4
                 for d, t in ((1, 0.1), (2, 1.0), (2, 0.1), (2, 0.01))],
}


@pytest.mark.parametrize("scale", ["smoke", "cpu"])
@pytest.mark.parametrize("study", list(PAPER_TABLES))
def test_paper_studies_plan_exactly_the_trials_of_tables_1_to_4(study, scale):
    """Each shipped paper study plans the trials the hard-coded grids planned (same order, same fields):
    its table's rows, each with every seed of the scale, on the scale's config."""
    plan = make_plan(study, scale)
    seeds = range(SCALES[scale].seeds)
    expected = [TrialConfig(**SCALES[scale].config, neighbours=n, grid_dim=d, tau=t, n0=n0, update_empty=u, seed=s)
                for n, d, t, n0, u in PAPER_TABLES[study] for s in seeds]
    assert plan.trials() == expected
    assert plan.seeds == list(seeds)


def test_paper_study_at_paper_scale_on_imagenet_is_vqvae2_with_five_seeds():
    plan = make_plan("robustness", "paper", overrides={"dataset": "imagenet", "data_dir": "/data"})
    trials = plan.trials()
    assert len(trials) == 8 * 5
    assert [(c.neighbours, c.grid_dim, c.tau, c.n0, c.update_empty) for c in trials[::5]] == PAPER_TABLES["robustness"]
    assert {(c.model, c.image_size, c.batch_size, c.lr) for c in trials} == {("vqvae2", 256, 128, 3e-4)}


def test_study_files_ship_inside_the_wheel(tmp_path):
    """`pip install .` (not editable) installs the study files: they are package data of the wheel."""
    source = tmp_path / "src"  # a copy, so that the build leaves nothing in the repository
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", "build", "results", "docs", "tests", "notebooks", "benchmarks"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), "-q"], check=True, capture_output=True)
    wheel = next(tmp_path.glob("kohonen_vq-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"sweep/studies/{p.name}" for p in (ROOT / "sweep" / "studies").glob("*.yaml")}
    assert {f"sweep/studies/{s}.yaml" for s in PAPER_TABLES} <= shipped <= names
    assert {"sweep/plan.py", "sweep/study.py", "sweep/scales.py"} <= names


# ---------------------------------------------------------------- refusals (before Ray, nothing created)

GOOD = """\
name: my-study
description: a user's study
fixed:
  neighbours: hard
axes:
  tau: [0.1, 1.0]
reference: {tau: 0.1}
"""


@pytest.mark.parametrize("text, expected", [
    (GOOD.replace("tau: [0.1, 1.0]", "widht: [16, 32]"), [":6:", "axes.widht='widht'", "not a config field",
                                                         "allowed: model, width"]),
    (GOOD.replace("[0.1, 1.0]", "[0.1, 0]"), [":6:", "axes.tau[1]=0", "tau=0.0 must be > 0"]),
    (GOOD.replace("[0.1, 1.0]", "[0.1, fast]"), [":6:", "axes.tau[1]='fast'", "is not a valid float"]),
    (GOOD.replace("[0.1, 1.0]", "[]"), [":6:", "axes.tau=[]", "the axis is empty", "allowed: a non-empty list"]),
    (GOOD.replace("neighbours: hard", "tau: 0.3"), [":6:", "tau is both swept and fixed", "allowed: a field not"]),
    (GOOD.replace("[0.1, 1.0]", "[0.1, 1.0, 0.1]"), ["duplicate trials", "allowed: each configuration once"]),
    (GOOD.replace("{tau: 0.1}", "{tau: 0.5}"), [":7:", "the reference arm matches no arm", "reference={'tau': 0.5}"]),
    (GOOD.replace("{tau: 0.1}", "{lr: 0.1}"), [":7:", "reference.lr=0.1", "not swept", "allowed: a field the axes"]),
    # a reference field that only some arms set: refused in one line, the example taken from an arm that sets it
    ("name: my-study\ndescription: d\narms:\n  - {neighbours: none}\n  - {neighbours: hard, lr: 0.002}\n"
     "reference: {lr: 0.001}\n",
     [":6:", "the reference arm matches no arm", "e.g. {'lr': 0.002}"]),
    (GOOD.replace("my-study", "robustness"), [":1:", "name='robustness' clashes with the shipped study",
                                              "allowed: a name other than"]),
    (GOOD.replace("[0.1, 1.0]", "[0.1, 1.0"), [":7:", "malformed YAML", "allowed: a YAML mapping"]),
    (GOOD + "seeds: 0\n", [":8:", "seeds=0", "allowed: a number N >= 1"]),
    (GOOD + "metric: [final_loss]\n", [":8:", "key 'metric' is unknown", "allowed: the keys name"]),
    (GOOD.replace("neighbours: hard", "neighbours: hard\n  quantizer: lucidrains"), [
        ":4:", "fixed.neighbours='hard'", "quantizer=lucidrains has no neighbourhood; allowed: none"]),
    (GOOD + "analysis: {factorial: [lr]}\n", [":8:", "analysis.factorial[0]='lr'", "not a two-level axis",
                                              "allowed: distinct axes with two values each: tau"]),
    (GOOD + "analysis: {equivalence: 5}\n", [":8:", "analysis.equivalence=5", "allowed: a fraction in (0, 1)"]),
    (GOOD.replace("reference: {tau: 0.1}\n", "") + "analysis: {equivalence: 0.05}\n", [
        "analysis.equivalence=0.05", "the study has no reference"]),
    (GOOD + "analysis: {anova: true}\n", [":8:", "analysis 'anova' is unknown",
                                         "allowed: factorial, primary, equivalence, equivalence_margin"]),
    (GOOD + "analysis: {primary: smoothness}\n", [":8:", "analysis.primary='smoothness'",
                                                  "allowed: one of the study's metrics: final_loss, steps_10"]),
    (GOOD + "analysis: {equivalence_margin: -1}\n", [":8:", "analysis.equivalence_margin=-1", "a number > 0"]),
    (GOOD + "analysis: {equivalence: 0.05, equivalence_margin: 0.001}\n", [
        "analysis.equivalence_margin=0.001", "without `equivalence` (a margin is one or the other)"]),
    (GOOD.replace("neighbours: hard", "neighbours: hard\n  kmeans_init: true"), [
        ":5:", "fixed.kmeans_init='kmeans_init'", "kmeans_init is no longer a config field: it is replaced by "
        "codebook_init (kmeans_init: true is codebook_init: kmeans; allowed: randn, uniform, kmeans)"]),
    # the layout block (analysis/tables/layout.py)
    (GOOD + "layout: [tau]\n", [":8:", "layout=['tau']", "allowed: a mapping with keys rows, order, groups"]),
    (GOOD + "layout:\n  row: [tau]\n", [":9:", "key 'row' is unknown", "allowed: the keys rows, order"]),
    (GOOD + "layout:\n  rows: []\n", [":9:", "layout.rows=[]", "allowed: a non-empty list of distinct names out "
                                                                 "of the fields the study sweeps: tau"]),
    (GOOD + "layout:\n  rows: [tau, lr]\n", [":9:", "layout.rows[1]='lr'", "unknown or repeated"]),
    (GOOD.replace("[0.1, 1.0]", "[0.1, 1.0]\n  n0: [0, 1]") + "layout:\n  rows: [tau]\n", [
        ":10:", "layout.rows=['tau']", "share a row", "allowed: row fields that tell every configuration apart"]),
    (GOOD + "layout:\n  order: [tau, tau]\n", [":9:", "layout.order[1]='tau'", "unknown or repeated"]),
    (GOOD + "layout:\n  groups: [n0]\n", [":9:", "layout.groups[0]='n0'", "out of the row fields: tau"]),
    (GOOD + "layout:\n  thresholds: [20]\n", [
        ":9:", "layout.thresholds[0]=20", "allowed: a list of the steps thresholds the study's metrics show: [10]"]),
    (GOOD + "layout:\n  caption: 3\n", [":9:", "layout.caption=3", "allowed: a non-empty string (LaTeX allowed)"]),
    (GOOD + "layout:\n  headers: {lr: x}\n", [":9:", "layout.headers.lr='lr'", "not a row field"]),
])
def test_bad_study_files_are_refused_in_one_line_before_anything_runs(text, expected, tmp_path, capsys):
    """Each refusal names the file, the key (and its line), the value and what is allowed; exit 2."""
    study = tmp_path / "my-study.yaml"
    study.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main([str(study), "--scale", "smoke", "--results-dir", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"python -m sweep.run: error: {study}")
    for part in expected:
        assert part in error, error
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("argv, message", [
    (["ablation", "--grid", "tau="], "--grid tau='': the axis is empty"),
    (["ablation", "--grid", "widht=1,2"], "--grid 'widht' is not a config field"),
    (["ablation", "--grid", "tau=0.1,0"], "with --grid: --grid tau=0.0: tau=0.0 must be > 0"),
    (["ablation", "--grid", "tau=0.1", "--set", "tau=1"], "would override what study 'ablation' sweeps"),
    (["robustness", "--grid", "n0=1,1"], "duplicate trials"),
    (["no-such-study"], "study 'no-such-study' is unknown; allowed: a study file (.yaml) or one of ablation"),
    (["missing.yaml"], "study file missing.yaml does not exist"),
    (["ablation", "--set", "kmeans_init=true"], "--set kmeans_init is no longer a config field: it is replaced by "
                                                "codebook_init"),
    (["ablation", "--grid", "kmeans_init=true,false"], "--grid kmeans_init is no longer a config field"),
    (["parity", "--grid", "decay=0.5,0.8,0.99"], "parity.yaml:19: analysis.factorial[0]='decay': not a two-level axis"),
])
def test_bad_grids_and_studies_on_the_command_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--scale", "smoke", "--results-dir", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_lucidrains_without_its_package_is_one_line_naming_the_extra(tmp_path):
    """With vector-quantize-pytorch unimportable, a study that uses it stops before Ray with the extra's name."""
    fake = tmp_path / "hide" / "vector_quantize_pytorch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named vector_quantize_pytorch')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'hide'}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-m", "sweep.run", "modern-baselines", "--scale", "smoke", "--results-dir",
                           str(tmp_path / "results")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(
        "quantizer=lucidrains needs vector-quantize-pytorch, which is not installed; install the bench extra: "
        "pip install 'kohonen-vq[bench]' (or pip install -e '.[bench]')")
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- grids, names, dry run

def test_grid_adds_an_axis_and_replaces_one():
    """--grid tau=... on ablation (tau set by its arms) makes tau an axis crossed with the 1D/2D arms;
    --grid n0=1 on robustness replaces its n0 axis."""
    plan = make_plan("ablation", "smoke", grid={"tau": ["0.01", "0.03", "0.1", "0.3", "1"]})
    got = [(c.neighbours, c.tau, c.grid_dim) for c in plan.trials()]
    assert got == [(n, t, d) for n in ("hard", "gaussian") for t in (0.01, 0.03, 0.1, 0.3, 1.0) for d in (1, 2)]
    assert plan.swept == ["neighbours", "tau", "grid_dim"]
    plan = make_plan("robustness", "smoke", grid={"n0": ["1"]})
    assert [(c.n0, c.update_empty, c.neighbours) for c in plan.trials()] == [
        (1, u, n) for u in (False, True) for n in ("none", "hard")]


@pytest.mark.parametrize("args", [["tuned-comparison"], ["modern-baselines", "--seeds", "10"], ["convergence"],
                                  ["parity", "--fuse", "4"]])
def test_every_dry_run_line_fits_in_120_characters(capsys, args):
    """Search spaces, packs and the seeds outlook (from the committed run) wrap, indented under their line."""
    assert main([*args, "--scale", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) > 3 and all(len(line) <= 120 for line in out), max(out, key=len)
    wrapped = [a for a, b in zip(out, out[1:]) if len(a) > 100 and b.startswith(" " * (len(a) - len(a.lstrip()) + 2))]
    assert wrapped  # each has long lines, continued two spaces further in


def test_dry_run_prints_run_names_count_and_expected_wall_time(capsys):
    assert main(["robustness", "--scale", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "robustness at cpu scale: 24 trials (8 arms x 3 seeds), 1 CPU / 0 GPU each"
    concurrent = max(1, os.cpu_count() or 1)
    rounds = -(-24 // concurrent)
    seconds = round(rounds * 800 * SCALES["cpu"].step_seconds + STARTUP_SECONDS)
    assert out[1].startswith(f"expected wall time about {seconds // 60} min {seconds % 60:02d} s, {concurrent} at a "
                             f"time (0.0503 s per step at cpu scale")
    assert all(len(line) <= 120 for line in out)  # as the status lines (sweep/progress.py WIDTH)
    assert out[2:5] == ["  EMA-VQ N0=0 update-0=no seed=0", "  EMA-VQ N0=0 update-0=no seed=1",
                        "  EMA-VQ N0=0 update-0=no seed=2"]
    assert out[-2] == "  KSOM hard N0=1 update-0=yes seed=2" and len(out) == 2 + 24 + 1
    assert out[-1] == "fusion: no --fuse or study fuse:, so off: every trial on its own"


def test_new_studies_plan_their_grids():
    """codebook-size, shrink and modern-baselines as the issue states them."""
    plan = make_plan("codebook-size", "smoke")
    assert [(c.codebook_size, c.neighbours) for c in plan.trials()] == [
        (k, n) for k in (128, 256, 512, 1024) for n in ("none", "hard")]
    plan = make_plan("shrink", "smoke")
    assert [(c.neighbours, c.tau) for c in plan.trials()] == [
        (n, t) for n in ("hard", "gaussian") for t in (0.01, 0.03, 0.1, 0.3, 1.0)]
    plan = make_plan("modern-baselines", "cpu")
    assert len(plan.trials()) == 6 * 3 and plan.swept == ["arm"] and plan.reference == {"arm": "KSOM hard 2D"}
    arms = {plan.label(a): TrialConfig.from_dict({**plan.base, **a}) for a in plan.arms}
    assert [(c.quantizer, c.neighbours, c.n0, c.update_empty) for c in arms.values()][:4] == [
        ("kohonen", "hard", 1, True), ("kohonen", "hard", 0, False), ("kohonen", "none", 1, True),
        ("kohonen", "none", 0, False)]
    lucid = arms["lucidrains k-means + dead codes"]
    assert (lucid.quantizer, lucid.decay, lucid.rotation_trick, lucid.commitment, lucid.codebook_init,
            lucid.dead_code_threshold) == ("lucidrains", 0.8, True, 1.0, "kmeans", 2.0)
    assert arms["lucidrains defaults"].codebook_init == "uniform"  # the library's own default


def test_parity_is_the_full_factorial_of_decay_init_and_commitment_for_three_rules():
    """{EMA-VQ, lucidrains without the rotation trick, KSOM hard 2D} x decay x codebook_init x commitment,
    3 seeds: 72 trials at cpu scale; the three rules differ only in the rule."""
    plan = make_plan("parity", "cpu")
    trials = plan.trials()
    assert len(trials) == 3 * 2 * 2 * 2 * 3 and plan.reference == {"arm": "KSOM hard 2D"}
    cells = {(c.decay, c.codebook_init, c.commitment) for c in trials}
    assert cells == {(d, i, a) for d in (0.8, 0.99) for i in ("randn", "uniform") for a in (0.25, 1.0)}
    rules = {(c.quantizer, c.neighbours, c.rotation_trick, c.n0, c.update_empty) for c in trials}
    assert rules == {("kohonen", "none", False, 1, True), ("lucidrains", "none", False, 1, True),
                     ("kohonen", "hard", False, 1, True)}
    assert {(c.steps, c.seed) for c in trials} == {(800, s) for s in range(3)}
    assert plan.analysis == Analysis(factorial=["decay", "codebook_init", "commitment"])  # carried into sweep.json


def test_convergence_runs_the_table_2_pair_and_parity_best_to_10000_steps():
    """cpu-xl: the cpu settings for 10,000 steps, validated every 250; the equivalence margin fixed in the file."""
    plan = make_plan("convergence", "cpu-xl")
    trials = plan.trials()
    assert len(trials) == 3 * 3 and {(c.steps, c.eval_every, c.batch_size, c.codebook_size) for c in trials} == {
        (10_000, 250, 32, 512)}
    arms = {plan.label(a): TrialConfig.from_dict({**plan.base, **a}) for a in plan.arms}
    assert [(c.neighbours, c.n0, c.update_empty, c.decay, c.codebook_init, c.commitment) for c in arms.values()] == [
        ("none", 1, True, 0.99, "randn", 0.25), ("none", 1, True, 0.8, "randn", 0.25),
        ("hard", 1, True, 0.99, "randn", 0.25)]
    assert plan.reference == {"arm": "KSOM hard 2D"} and plan.analysis == Analysis(equivalence=0.05)


# ---------------------------------------------------------------- a user's study, end to end


def _steps(mean: float) -> str:
    return f"{mean:.0f}" if math.isfinite(mean) else "--"


def assert_in_order(text: str, tokens: list[str], name: str) -> None:
    """Every token appears in text as a whole cell value, each after the one before."""
    at = 0
    for token in tokens:
        found = re.compile(rf"(?<![\d.]){re.escape(token)}(?![\d.])").search(text, at)
        assert found, f"{name}: {token!r} missing after position {at}"
        at = found.end()


@pytest.mark.slow
def test_a_user_written_two_axis_study_runs_end_to_end(user_study_sweep):
    """`python -m sweep.run my.yaml` (conftest.USER_STUDY, cpu scale): one MLflow run per trial named by the axes,
    the tables grouped by both axes with the reference comparison, the sensitivity figure for lr."""
    done, results = user_study_sweep
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_dir = next(results.glob("lr-by-k-cpu-*"))
    meta = read_sweep(sweep_dir)
    assert meta.plan.swept == ["lr", "codebook_size"] and meta.plan.reference == {"lr": 0.001}
    client = MlflowClient(meta.tracking_uri)
    exp = client.get_experiment_by_name("lr-by-k")
    runs = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.info.run_name for r in runs) == sorted(
        f"KSOM hard lr={lr} codebook_size={k} seed=0" for lr in ("0.0003", "0.001", "0.003") for k in (16, 64))
    for r in runs:
        assert r.data.tags["status"] == "finished" and r.data.tags["rule"] == "KSOM hard 2D"
        assert r.data.tags["topography"] == "measured"
        assert TrialConfig.from_dict(r.data.params).steps == 240
    tidy = pd.read_parquet(sweep_dir / "tables" / "lr-by-k.parquet")
    assert {(lr, k) for lr, k in zip(tidy.lr, tidy.codebook_size)} == {
        (lr, k) for lr in (0.0003, 0.001, 0.003) for k in (16, 64)}
    comparison = pd.read_parquet(sweep_dir / "tables" / "lr-by-k_vs_reference.parquet")
    assert set(comparison.lr) == {0.0003, 0.003}  # each against lr = 0.001 at the same K
    # Each rendering shows the tidy numbers, row by row in the tidy order: loss x10^3 and steps to +10 %.
    by_cell = tidy.set_index(["lr", "codebook_size", "column"])["mean"]
    cells = [token for lr, k in dict.fromkeys(zip(tidy.lr, tidy.codebook_size))
             for token in (f"{by_cell[lr, k, M.FINAL_LOSS] * 1e3:.1f}", _steps(by_cell[lr, k, M.steps_to(10)]))]
    for name, body_from in (("lr-by-k.txt", "(×10³)"), ("lr-by-k.md", "|---|"), ("lr-by-k.tex", "\\midrule")):
        text = (sweep_dir / "tables" / name).read_text()
        assert_in_order(text[text.index(body_from):], cells, name)
    for name in ("loss.png", "sensitivity_lr.png", "sensitivity_lr.pdf"):
        assert (sweep_dir / "figures" / name).exists()
    assert not (sweep_dir / "figures" / "sensitivity_codebook_size.png").exists()  # two values: the table's job


def test_the_dry_run_of_a_study_with_a_margin_says_what_its_seeds_can_show(tmp_path, capsys):
    """convergence declares a 5 % margin and has a committed run (3 seeds, stds 2.1 and 0.8 x10^-3): 3 seeds give
    the TOST of EMA-VQ decay 0.8 about 3 % power, 22 per arm 80 %; a study with a margin and no committed run
    says so; one without a margin says nothing of it."""
    assert main(["convergence", "--dry-run"]) == 0
    flat = " ".join(capsys.readouterr().out.split())  # its lines wrap at 120 characters
    assert "what 3 seeds per arm can show (spreads of the earlier run in " in flat and "cpu-xl scale" in flat
    line = flat[flat.index("EMA-VQ decay 0.8: power"):]
    assert "power 3% to show level within ±1.47 were the true difference 0, 22 seeds per arm for 80%" in line
    assert "power 12% to show a difference of -1.53 (that run's), 20 seeds per arm for 80%" in line
    study = tmp_path / "my-study.yaml"
    study.write_text(GOOD + "analysis: {equivalence_margin: 0.002}\n")
    assert main([str(study), "--dry-run", "--scale", "smoke"]) == 0
    assert "no committed run of my-study" in capsys.readouterr().out
    assert main(["robustness", "--dry-run"]) == 0
    assert "can show" not in capsys.readouterr().out
