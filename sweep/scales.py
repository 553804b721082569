"""The scales a study runs at: the same grid at seconds (smoke), minutes (cpu) or the paper's
settings (paper, Appendix A).

A scale is a dict of TrialConfig fields plus the resources one trial gets and the
default number of seeds, with per-data-set changes where the paper's experiments
differ (paper scale: VQ-VAE on CIFAR-10, 10 seeds; VQ-VAE-2 at 256 x 256, batch 128,
lr 3e-4 on ImageNet and CelebA-HQ/AFHQ, 5 seeds).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scale:
    name: str
    description: str
    config: dict  # TrialConfig fields
    seeds: int
    cpus: float  # per trial
    gpus: float  # per trial
    datasets: dict = field(default_factory=dict)  # data set -> (fields that differ from config, seeds)
    trial_seconds: float | None = None  # measured wall time of one trial on its resources (the plan's estimate)

    def settings(self, dataset: str | None) -> tuple[dict, int]:
        """(TrialConfig fields, default seeds) of this scale for `dataset` (None: the scale's own)."""
        dataset = dataset or self.config["dataset"]
        fields, seeds = self.datasets.get(dataset, ({}, self.seeds))
        return {**self.config, "dataset": dataset, **fields}, seeds


# The paper's VQ-VAE-2 experiments (Appendix A): 256 x 256 images, 5 seeds.
PAPER_VQVAE2 = (dict(model="vqvae2", image_size=256, batch_size=128, lr=3e-4), 5)


SCALES = {s.name: s for s in [
    Scale("smoke", "seconds per trial; for tests and CI",
          dict(dataset="photos", width=16, codebook_size=64, code_dim=16, batch_size=16, lr=1e-3,
               steps=40, eval_every=20), seeds=1, cpus=1, gpus=0),
    Scale("cpu", "minutes on a laptop CPU (the default without a GPU)",
          dict(dataset="photos", width=32, codebook_size=512, code_dim=64, batch_size=32, lr=1e-3,
               steps=800, eval_every=50), seeds=3, cpus=1, gpus=0,
          trial_seconds=16),  # robustness, 24 trials 2 at once on 2 cores: 3 min 09 s (README, Results)
    Scale("paper", "the paper's settings (Appendix A), one GPU per trial: CIFAR VQ-VAE, or VQ-VAE-2 on image folders",
          dict(dataset="cifar10", model="vqvae", image_size=32, width=128, codebook_size=512, code_dim=64,
               batch_size=256, lr=1e-3, steps=30_000, eval_every=1_000), seeds=10, cpus=4, gpus=1,
          datasets={"imagenet": PAPER_VQVAE2, "celeba_afhq": PAPER_VQVAE2, "imagefolder": PAPER_VQVAE2}),
]}


def default_scale() -> str:
    """"paper" where a GPU is visible, else "cpu"."""
    import torch
    return "paper" if torch.cuda.is_available() else "cpu"
