"""python -m sweep.verify: a committed study re-run here, per arm committed vs re-run, exit 0 only when the verdicts
(bold, collapsed seeds, Welch against the reference arm) agree.

The robustness study as committed until 2026-12-06 (3 seeds on an AMD EPYC, before the test split; its
summary.parquet and run.txt kept in tests/data/robustness-epyc) is the fixture of the fast tests: against a copy whose
digits differ but whose verdicts cannot (every loss x (1 + 1e-9)), and against a planted disagreement. The slow
test makes a smoke sweep and verifies it by a real re-run: on one machine every digit repeats.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import metrics as M
from sweep.verify import main

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "tests/data/robustness-epyc"


def verify(*args) -> subprocess.CompletedProcess:
    """`python -m sweep.verify ARGS` in its own process, as a user runs it (the slow test: it re-runs a sweep)."""
    return subprocess.run([sys.executable, "-m", "sweep.verify", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local"})


def check(capsys, *args) -> subprocess.CompletedProcess:
    """sweep.verify's main in this process (no re-run: --against or bad input), as a finished process."""
    code = main([*map(str, args)])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def changed_copy(tmp_path: Path, change) -> Path:
    """A results folder holding the committed summary with `change(summary)` applied."""
    summary = pd.read_parquet(COMMITTED / "summary.parquet")
    folder = tmp_path / "rerun"
    folder.mkdir()
    change(summary).to_parquet(folder / "summary.parquet", index=False)
    return folder


def test_other_digits_same_verdicts_exit_0(capsys, tmp_path):
    """As on another CPU: every number a little different, every verdict the same."""
    other = changed_copy(tmp_path, lambda s: s.assign(**{M.FINAL_LOSS: s[M.FINAL_LOSS] * (1 + 1e-9)}))
    done = check(capsys, COMMITTED, "--against", other)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("EMA-VQ", "KSOM"))]
    assert len(rows) == 8 and all(" differ " in r and "≠" not in r for r in rows)
    assert "87.1 ± 1.7" in done.stdout and "44.0 ± 2.1" in done.stdout  # Table 3's cells, as committed
    assert done.stdout.splitlines()[-1] == "verdicts agree in all 8 arms; every digit identical in 0 of 8"
    assert "committed on: 2 cores (AMD EPYC)" in done.stdout and "torch CPU capability" in done.stdout
    assert max(map(len, done.stdout.splitlines())) <= 120


def test_a_planted_disagreement_exits_1_naming_the_arm(capsys, tmp_path):
    """KSOM N0=1 update-0=yes at three times its loss: no longer bold, higher than EMA-VQ instead of lower."""
    arm = "KSOM hard N0=1 update-0=yes"

    def plant(s):
        hit = s.run_name.str.startswith(arm)
        return s.assign(**{M.FINAL_LOSS: s[M.FINAL_LOSS].where(~hit, s[M.FINAL_LOSS] * 3)})

    done = check(capsys, COMMITTED, "--against", changed_copy(tmp_path, plant))
    assert done.returncode == 1
    (row,) = [line for line in done.stdout.splitlines() if line.startswith(arm)]
    assert "yes≠no" in row and "lower≠higher" in row
    assert done.stdout.splitlines()[-1].startswith("verdicts differ in ") and arm in done.stdout.splitlines()[-1]


def test_a_rerun_with_a_test_split_is_compared_on_the_committed_runs_validation_loss(capsys, tmp_path):
    """The committed runs predate the test split: a re-run's test losses are not compared with their validation
    losses; its selection (best validation) loss is, and here every digit is the same."""
    split = changed_copy(tmp_path, lambda s: s.assign(**{M.SELECTION_LOSS: s[M.FINAL_LOSS],
                                                         M.FINAL_LOSS: s[M.FINAL_LOSS] * 1.1}))
    done = check(capsys, COMMITTED, "--against", split)
    assert done.returncode == 0, done.stdout
    assert "one run has no test split" in done.stdout
    assert done.stdout.splitlines()[-1] == "verdicts agree in all 8 arms; every digit identical in 8 of 8"


def test_first_seeds_only_compare_those_seeds(capsys, tmp_path):
    """--seeds 2 compares seeds 0 and 1 of both runs: a re-run holding only those agrees to the digit."""
    two = changed_copy(tmp_path, lambda s: s[s.seed < 2])
    done = check(capsys, COMMITTED, "--seeds", 2, "--against", two)
    assert done.returncode == 0, done.stderr
    assert "2 of 3 seeds" in done.stdout and done.stdout.endswith("every digit identical in 8 of 8\n")


@pytest.mark.parametrize("args, says", [
    ((ROOT / "docs/results",), "no summary.parquet there"),
    ((COMMITTED, "--seeds", 4), "--seeds 4; allowed: 1 to 3"),
    ((COMMITTED, "--against", ROOT / "docs"), "/docs: no summary.parquet there"),
])
def test_bad_input_is_one_line_and_runs_nothing(capsys, args, says, tmp_path):
    done = check(capsys, *args, "--results-dir", tmp_path / "results")
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("python -m sweep.verify: error: ") and says in line
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_smoke_sweep_verified_by_a_real_rerun_repeats_every_digit(tmp_path):
    made = subprocess.run([sys.executable, "-m", "sweep.run", "robustness", "--scale", "smoke", "--seeds", "2",
                           "--results-dir", tmp_path / "committed", "--address", "local"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert made.returncode == 0, made.stderr[-2000:]
    (sweep_dir,) = [p.parent for p in (tmp_path / "committed").glob("robustness-*/summary.parquet")]
    done = verify(sweep_dir, "--results-dir", tmp_path / "rerun")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "smoke scale, 2 of 2 seeds" in done.stdout
    assert done.stdout.splitlines()[-1] == "verdicts agree in all 8 arms; every digit identical in 8 of 8"


def test_the_machine_line_names_the_cpu_its_vector_extensions_and_torchs_capability(tmp_path):
    """run.txt's machine line (sweep/machine.py) from a /proc/cpuinfo as Linux writes it (two processors)."""
    import torch

    from sweep.machine import cpu

    one = "processor\t: {}\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 sse4_2 avx avx2 fma bmi2 sha_ni\n\n"
    (tmp_path / "cpuinfo").write_text(one.format(0) + one.format(1))
    line = cpu(tmp_path / "cpuinfo")
    assert line.startswith("AMD EPYC 7B13 (") and "; vector extensions: sse4_2 avx avx2 fma; " in line
    assert line.endswith(f"torch CPU capability: {torch.backends.cpu.get_cpu_capability()}")
