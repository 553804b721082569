"""The scales a study runs at: the same grid at seconds (smoke), minutes (cpu) or the paper's
settings (paper, Appendix A).

A scale is a dict of TrialConfig fields plus the resources one trial gets and the
default number of seeds, with per-data-set changes where the paper's experiments
differ (paper scale: VQ-VAE on CIFAR-10, 10 seeds; VQ-VAE-2 at 256 x 256, batch 128,
lr 3e-4 on ImageNet and CelebA-HQ/AFHQ, 5 seeds).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

CPU_MACHINE = "measured on a 2-core CPU machine"


@dataclass(frozen=True)
class Scale:
    name: str
    description: str
    config: dict  # TrialConfig fields
    seeds: int
    cpus: float  # per trial
    gpus: float  # per trial (a fraction packs several trials on one GPU)
    workers: int = 1  # processes per trial (data parallel)
    datasets: dict = field(default_factory=dict)  # data set -> (fields that differ from config, seeds)
    step_seconds: float = 0.0  # wall seconds per training step of one trial, validation included (--dry-run)
    step_source: str = CPU_MACHINE  # where step_seconds (and a GPU scale's packing) come from
    dataset_resources: dict = field(default_factory=dict)  # data set -> (CPUs, GPUs) per trial where not the above
    # A trial's start-up (its actor, data and model) and wind-down (after its last report), in steps' time at the
    # speed measured between its reports: the ETA's (sweep/progress.py) until the sweep's trials have measured them.
    overhead_steps: tuple[float, float] = (0.0, 0.0)

    def settings(self, dataset: str | None) -> tuple[dict, int]:
        """(TrialConfig fields, default seeds) of this scale for `dataset` (None: the scale's own)."""
        dataset = dataset or self.config["dataset"]
        fields, seeds = self.datasets.get(dataset, ({}, self.seeds))
        return {**self.config, "dataset": dataset, **fields}, seeds

    def resources(self, dataset: str | None) -> tuple[float, float]:
        """(CPUs, GPUs) per trial of this scale for `dataset` (None: the scale's own)."""
        return self.dataset_resources.get(dataset or self.config["dataset"], (self.cpus, self.gpus))


# The paper's VQ-VAE-2 experiments (Appendix A): 256 x 256 images, 5 seeds; a whole GPU and 4 CPUs
# each (2 of them decode the image folder: models/data/loader.py).
PAPER_VQVAE2 = (dict(model="vqvae2", image_size=256, batch_size=128, lr=3e-4), 5)
PAPER_VQVAE2_RESOURCES = (4, 1)

# What the device check (python -m benchmarks.gpu) measured: its lines "figure: NAME = VALUE".
GPU_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "benchmarks" / "gpu.txt"
_FIGURE = re.compile(r"^figure: (\w+) = ([-+0-9.eE]+|nan|inf)\b")
_RUN = re.compile(r"^## device check [^:]*:\d\d [^:]*: (.+?) \(")


class Figure(NamedTuple):
    value: float
    device: str  # the GPU of the run that measured it ("" if its header is missing)


def gpu_figures(path: Path = GPU_RESULTS) -> dict[str, Figure]:
    """The newest measurement of each figure in the device check's output file ({} when there is none)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    figures, device = {}, ""
    for line in lines:
        if run := _RUN.match(line):
            device = run.group(1)
        elif figure := _FIGURE.match(line):
            figures[figure.group(1)] = Figure(float(figure.group(2)), device)
    return figures


# Without a measurement, the CIFAR VQ-VAE's packing is an arithmetic estimate: width 128, batch 256 is
# 0.26 GFLOP per image forward and backward (torch.utils.flop_counter), so 67 GFLOP per step, about 2 ms
# at 30 TFLOP/s sustained; about 0.23 GB of saved activations and 0.01 GB of weights and AdamW moments.
# Its small 32 x 32 kernels leave most of a modern GPU idle, so four trials share one (each under 1 GB
# with its CUDA context), each with 1 CPU (CIFAR is held in memory): four trials per 4-vCPU, 1-GPU node.
ESTIMATED_TRIALS_PER_GPU = 4
# step_seconds: wall seconds per training step of one trial (1 CPU thread), its validations and end-of-trial
# topography included, on the 2-core development machine: cpu from the robustness sweep's wall time over its
# trials' steps, less STARTUP_SECONDS (tests/data/robustness-epyc/run.txt: 24 trials of 800 steps, 2 at a time);
# smoke and paper from the same trainer timed at each scale (models.train.train, 1 thread). The paper
# scale's CPU figure stands until the device check has measured one trial's step on a GPU, packed as it
# recommends.
PAPER_CPU_STEP_SECONDS = 2.2
STARTUP_SECONDS = 15.0  # Ray start, MLflow store, and the report at the end
# A cpu trial's start-up and wind-down in steps' time, from the MLflow times of the 8 trials of
# `python -m sweep.verify docs/results/robustness --seeds 1` on the 2-core machine: a trial on a reused actor
# (all but the first two, whose start-up is over before the first ETA) starts within a few steps' time; the
# topography measurement and the end of the run took 0 to 70 steps' time, about 20 typically.
CPU_OVERHEAD_STEPS = (0.0, 20.0)
CPU_MODEL = dict(dataset="photos", width=32, codebook_size=512, code_dim=64, batch_size=32, lr=1e-3)


def cpu_scale(name: str, description: str, steps: int, eval_every: int) -> Scale:
    """The cpu model and resources (1 CPU, 3 seeds) trained for `steps` steps."""
    return Scale(name, description, dict(CPU_MODEL, steps=steps, eval_every=eval_every), seeds=3, cpus=1, gpus=0,
                 step_seconds=0.0503, overhead_steps=CPU_OVERHEAD_STEPS)


def paper_gpu(figures: dict[str, Figure] | None = None) -> tuple[float, float, str]:
    """(GPUs per trial, seconds per step, where both come from) of the paper scale's CIFAR trials:
    the device check's figures when gpu.txt has them, else the arithmetic estimate and the CPU step."""
    figures = gpu_figures() if figures is None else figures
    packing, step = figures.get("trials_per_gpu"), figures.get("paper_step_seconds")
    gpus = 1 / packing.value if packing else 1 / ESTIMATED_TRIALS_PER_GPU
    source = (f"{packing.value:g} trials per GPU measured on {packing.device}" if packing
              else f"{ESTIMATED_TRIALS_PER_GPU} trials per GPU by arithmetic estimate (not measured)")
    if step:
        return gpus, step.value, f"{source}; step time measured on {step.device} with that packing"
    return gpus, PAPER_CPU_STEP_SECONDS, f"{source}; step time {CPU_MACHINE} (a GPU is faster)"


PAPER_GPUS, PAPER_STEP_SECONDS, PAPER_SOURCE = paper_gpu()
PAPER_CIFAR_RESOURCES = (1, PAPER_GPUS)


SCALES = {s.name: s for s in [
    Scale("smoke", "seconds per trial; for tests and CI",
          dict(dataset="photos", width=16, codebook_size=64, code_dim=16, batch_size=16, lr=1e-3,
               steps=40, eval_every=20), seeds=1, cpus=1, gpus=0, step_seconds=0.031),
    cpu_scale("cpu", "minutes on a laptop CPU (the default without a GPU)", steps=800, eval_every=50),
    # The cpu settings run longer. At 3,000 steps both rules are still improving (docs/results/*-long),
    # so cpu-long is not where EMA-VQ has converged; cpu-xl (10,000 steps) asks whether it ends level
    # with KSOM (sweep/studies/convergence.yaml).
    cpu_scale("cpu-long", "the cpu settings for 3,000 steps (both rules still improving)", steps=3_000,
              eval_every=100),
    cpu_scale("cpu-xl", "the cpu settings for 10,000 steps: the convergence run", steps=10_000, eval_every=250),
    Scale("paper", f"the paper's settings (Appendix A): CIFAR VQ-VAE, {1 / PAPER_GPUS:g} trials per GPU, or VQ-VAE-2 "
                   "on image folders, one GPU per trial",
          dict(dataset="cifar10", model="vqvae", image_size=32, width=128, codebook_size=512, code_dim=64,
               batch_size=256, lr=1e-3, steps=30_000, eval_every=1_000), seeds=10,
          cpus=PAPER_CIFAR_RESOURCES[0], gpus=PAPER_CIFAR_RESOURCES[1],
          datasets={"imagenet": PAPER_VQVAE2, "celeba_afhq": PAPER_VQVAE2, "imagefolder": PAPER_VQVAE2},
          dataset_resources={"imagenet": PAPER_VQVAE2_RESOURCES, "celeba_afhq": PAPER_VQVAE2_RESOURCES,
                             "imagefolder": PAPER_VQVAE2_RESOURCES},
          step_seconds=PAPER_STEP_SECONDS, step_source=PAPER_SOURCE),
]}


def overhead_steps(scale: str) -> tuple[float, float]:
    """The scale's (start-up, wind-down) of a trial in steps' time; (0, 0) for a scale that has none measured."""
    return SCALES[scale].overhead_steps if scale in SCALES else (0.0, 0.0)


def default_scale() -> str:
    """"paper" where a GPU is visible, else "cpu"."""
    import torch
    return "paper" if torch.cuda.is_available() else "cpu"
