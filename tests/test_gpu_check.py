"""The device check benchmarks/gpu.py: its path without a GPU (what CI runs), its measuring parts on the
CPU at toy sizes, and the reader of its output in sweep/scales.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import fusion, gpu
from models.config import TrialConfig
from sweep.scales import ESTIMATED_TRIALS_PER_GPU, GPU_RESULTS, PAPER_CPU_STEP_SECONDS, Figure, gpu_figures, paper_gpu

ROOT = Path(__file__).resolve().parents[1]
TOY = dict(width=16, codebook_size=64, code_dim=16, batch_size=16)  # paper-scale fields made small for a CPU


def run_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def snapshot(folder: Path) -> list:
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*")) if folder.exists() else []


def test_without_a_gpu_every_mode_prints_its_plan_writes_nothing_and_exits_4():
    before = GPU_RESULTS.read_bytes() if GPU_RESULTS.exists() else None
    paper_dir = ROOT / "docs/results/paper-steps"
    paper_before = snapshot(paper_dir)
    done = run_check()
    assert done.returncode == 4, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "nothing measured (exit 4): this check needs a CUDA GPU"
    out = done.stdout
    assert out.startswith("no GPU here")
    for part in ("1. the quantiser", "2. the paper-scale step (width 128, batch 256, K=512): fp32, bf16, "
                 "channels-last, bf16 + channels-last, and torch.compile", "3. 1, 2, 4, 8 paper-scale trials",
                 "4. a VQ-VAE-2 step at 256 px", "5. the KSOM / EMA-VQ step ratio at K = 512, 16384"):
        assert part in out
    figures = [line for line in out.splitlines() if "ms per training step of 16,384 vectors" in line]
    assert [line.split()[0] for line in figures] == ["EMA-VQ", "KSOM", "KSOM"]
    assert "cpu-scale step (width 32, batch 32): fp32 " in out and ", channels-last " in out
    assert (GPU_RESULTS.read_bytes() if GPU_RESULTS.exists() else None) == before

    paper = run_check("--paper-steps")
    assert paper.returncode == 4, paper.stderr
    assert ("comparison study, EMA-VQ and KSOM hard 2D on the photos, 30000 steps x batch 256, seeds 0-1: "
            "4 trials") in paper.stdout
    assert "no GPU here: nothing run" in paper.stdout
    assert snapshot(paper_dir) == paper_before

    fusion = run_check("--fusion")
    assert fusion.returncode == 4, fusion.stderr
    assert "F2. paper-length trials per GPU-hour at width 128, batch 256: one trial alone, 8 trainer processes, " \
           "packs of S = 4, 8, 16, 32 (fp32, fp32 + graph, bf16, bf16 + graph)" in fusion.stdout
    assert (GPU_RESULTS.read_bytes() if GPU_RESULTS.exists() else None) == before


def test_quantiser_comparison_of_a_device_with_itself_is_exact():
    """Part 1 on the CPU against a copy on the CPU: no code differs, the codebooks are equal."""
    for name in gpu.QUANTISERS:
        differ, total, diff, scale = gpu.quantiser_vs_cpu(name, torch.device("cpu"), k=64, n=512, steps=2)
        assert (differ, total, diff) == (0, 1024, 0.0) and scale > 0


def test_step_variant_measured_on_the_cpu():
    """Part 2's measurement runs the trainer's step: time per step, no CUDA syncs to count on a CPU."""
    torch.set_num_threads(1)
    r = gpu.measure_variant(gpu.PAPER.replace(**TOY, channels_last=True), torch.device("cpu"))
    assert r["ms"] > 0 and r["syncs"] == 0


def test_packing_arithmetic_by_hand():
    """A short trial of 300 steps, 3 s of training and one 2 s validation: a 30,000-step trial with a
    validation every 1,000 steps takes 30,000 x 0.01 + 30 x 2 = 360 s. The recommended packing is the fewest
    trials per GPU within 5 % of the best rate: 19.5 >= 0.95 x 20.5 = 19.475, so 2."""
    assert gpu.paper_trial_seconds({"train_s": 3.0, "steps": 300, "val_s": 2.0}) == pytest.approx(360.0)
    assert gpu.recommend({1: 10.0, 2: 19.5, 4: 20.0, 8: 20.5}) == 2
    assert gpu.recommend({1: 10.0, 2: 19.4, 4: 20.0, 8: 20.5}) == 4


SAMPLE = """## device check 2026-12-01 10:00 UTC: NVIDIA A100-SXM4-80GB (torch 2.11.0, CUDA 13.0, commit abc, 16 CPUs)
command: python -m benchmarks.gpu
figure: paper_step_ms_alone = 9.5  (bf16, one trial alone on the GPU)
figure: trials_per_gpu = 4  (paper-scale CIFAR VQ-VAE trials sharing one GPU)
figure: paper_step_seconds = 0.031  (one trial's wall seconds per step, 4 per GPU, validation included)

## device check 2026-12-02 11:30 UTC: NVIDIA H200 (torch 2.11.0+cu130, CUDA 13.0, commit def, 16 CPUs)
command: python -m benchmarks.gpu
   recommended: 8 trials per GPU (--gpus-per-trial 0.125): 120.0 paper-length trials per GPU-hour
figure: trials_per_gpu = 8  (paper-scale CIFAR VQ-VAE trials sharing one GPU)
"""


def test_gpu_figures_newest_of_each_with_its_device(tmp_path):
    """The newest line of each figure wins, with the GPU named in its run's header; a figure the newest
    run did not reach keeps its older measurement."""
    path = tmp_path / "gpu.txt"
    path.write_text(SAMPLE)
    figures = gpu_figures(path)
    assert figures == {"paper_step_ms_alone": Figure(9.5, "NVIDIA A100-SXM4-80GB"),
                       "trials_per_gpu": Figure(8.0, "NVIDIA H200"),
                       "paper_step_seconds": Figure(0.031, "NVIDIA A100-SXM4-80GB")}
    gpus, step, source = paper_gpu(figures)
    assert (gpus, step) == (0.125, 0.031)
    assert source == ("8 trials per GPU measured on NVIDIA H200; step time measured on NVIDIA A100-SXM4-80GB "
                      "with that packing")


def test_without_gpu_figures_the_estimate_is_named_as_such(tmp_path):
    assert gpu_figures(tmp_path / "absent.txt") == {}
    gpus, step, source = paper_gpu({})
    assert (gpus, step) == (1 / ESTIMATED_TRIALS_PER_GPU, PAPER_CPU_STEP_SECONDS)
    assert source.startswith(f"{ESTIMATED_TRIALS_PER_GPU} trials per GPU by arithmetic estimate (not measured)")


@pytest.mark.slow
def test_packing_part_writes_figures_scales_reads(tmp_path, monkeypatch):
    """Part 3 through trainer processes (no Ray) at toy size on the CPU, 1 and 2 trials at once: its lines go to
    the output file as measured, and the scales' reader takes its recommendation and step time from them."""
    monkeypatch.setattr(gpu, "ray_available", lambda: False)
    out = tmp_path / "gpu.txt"
    gpu.part_packing(gpu.Log(out), gpu.Box(600), steps=4, fields=TOY, levels=(1, 2))
    text = out.read_text()
    assert "as n trainer processes" in text and "recommended:" in text, text
    figures = gpu_figures(out)
    assert figures["trials_per_gpu"].value in (1, 2) and figures["paper_step_seconds"].value > 0
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert [int(row[0]) for row in rows] == [1, 2]


@pytest.mark.slow
def test_paper_steps_tables_from_trainer_processes(tmp_path, monkeypatch):
    """--paper-steps' tables from its trials' reports (toy size, 30 steps), without MLflow: the analysis's
    frames, summary and the comparison table with both rules."""
    plan = gpu.paper_steps_plan(2, "smoke", {"steps": 30, "eval_every": 10})
    configs = plan.trials()
    results = gpu.run_trials(configs, 2, gpu.Box(600), tmp_path / "reports.jsonl")
    assert [r["status"] for r in results] == ["finished"] * 4, results
    streamed = [json.loads(line) for line in (tmp_path / "reports.jsonl").read_text().splitlines()]
    assert sorted((run, step) for run, step, _ in streamed) == sorted(
        (gpu.run_name(c), step) for c in configs for step in (10, 20, 30))  # every validation, whole lines
    log = gpu.Log(tmp_path / "log.txt")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as on the lent GPU machines: the tables need no MLflow
    gpu.write_tables(plan, configs, results, tmp_path, log)
    table = (tmp_path / "comparison.txt").read_text()
    rows = table.splitlines()[2:4]  # after the two header lines: one row per rule, two seeds each
    assert [row.split()[0] for row in rows] == ["EMA-VQ", "KSOM"] and all(" 2/0/" in row for row in rows), table
    assert {"trials.parquet", "metrics.parquet", "summary.parquet", "comparison.md"} <= {
        p.name for p in tmp_path.iterdir()}


def test_paper_steps_plan_is_the_comparison_arms_at_paper_length():
    plan = gpu.paper_steps_plan(4)
    configs = plan.trials()
    assert [(c.rule, c.seed) for c in configs] == [("EMA-VQ", 0), ("EMA-VQ", 1), ("KSOM hard 2D", 0),
                                                   ("KSOM hard 2D", 1)]
    assert all((c.steps, c.batch_size, c.width, c.codebook_size, c.dataset) == (30_000, 256, 128, 512, "photos")
               for c in configs)
    assert plan.gpus == 0.25 and plan.study == "comparison"
    assert TrialConfig.from_dict(configs[2].to_params()).tau == 0.1


@pytest.mark.slow
def test_loader_and_ratio_parts_on_the_cpu(tmp_path, monkeypatch):
    """Parts 4 and 5 at toy size on the CPU: the loader-fed VQ-VAE-2 step against the same step on a ready batch,
    and the KSOM / EMA-VQ ratios for each K, written as measured."""
    monkeypatch.setattr(gpu, "PAPER", gpu.PAPER.replace(**TOY))
    monkeypatch.setattr(gpu, "PAPER_VQVAE2", gpu.PAPER_VQVAE2.replace(**{**TOY, "batch_size": 4}, image_size=64))
    monkeypatch.setattr(gpu, "LOADER_WORKERS", (1,))
    monkeypatch.setattr(gpu, "RATIO_KS", (64, 256))
    out = tmp_path / "gpu.txt"
    log, cpu = gpu.Log(out), torch.device("cpu")
    gpu.part_vqvae2(log, cpu, gpu.Box(300), {"channels_last": True}, images=16, steps=2)
    gpu.part_ratio(log, cpu, gpu.Box(300), {})
    lines = out.read_text().splitlines()
    assert lines[0].startswith("4. VQ-VAE-2 step at 64 px (batch 4")
    assert lines[1].startswith("   batch already on the GPU: ") and lines[2].startswith("    1 loader processes: ")
    assert lines[2].endswith(("keeps up", "does NOT keep up"))
    ratios = [line for line in lines if line.strip().startswith("K=")]
    assert [line.split(":")[0].replace(" ", "") for line in ratios] == ["K=64", "K=256"]
    assert all("KSOM hard 2D / EMA-VQ" in line and "KSOM gaussian 2D / EMA-VQ" in line for line in ratios)


@pytest.mark.slow
def test_fusion_parts_on_the_cpu(tmp_path, monkeypatch):
    """--fusion's parts at toy size on the CPU (packs of 2, 2 trainer processes): the equivalence lines, a rate per
    variant that runs here (CUDA graphs cannot: one line says why), and the figures scales reads."""
    monkeypatch.setattr(fusion, "SIZES", (2,))
    monkeypatch.setattr(fusion, "PROCESSES", 2)
    out = tmp_path / "gpu.txt"
    failed = fusion.run(gpu.Log(out), gpu.PAPER.replace(**TOY), torch.device("cpu"), gpu.Box,
                        lambda base, box: gpu.fusion_processes(base, box, steps=2))
    text = out.read_text()
    assert failed == [], text
    assert len([line for line in text.splitlines() if line.startswith("   step 1, ")]) == len(fusion.MIXED)
    assert len([line for line in text.splitlines() if line.startswith("   20 steps, ")]) == len(fusion.MIXED)
    rows = {" ".join(line[3:21].split()): line for line in text.splitlines() if line.startswith("   S=")}
    assert set(rows) == {f"S={s} {v}" for s in (1, 2) for v in ("fp32", "fp32 + graph")} | {
        "S=2 bf16", "S=2 bf16 + graph"}, text
    assert all("failed: " in rows[f"S={s} fp32 + graph"] for s in (1, 2)) and "failed: " not in rows["S=2 fp32"]
    assert "2 trainer processes sharing the GPU: " in text
    figures = gpu_figures(out)
    assert figures["fusion_pack_size"].value == 2 and figures["fusion_cuda_graphs"].value == 0
    assert figures["fusion_trials_per_gpu_hour"].value > 0 and figures["fusion_vs_processes"].value > 0
