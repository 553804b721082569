"""Data-throughput benchmark: can the image-folder loader feed a VQ-VAE-2 training step?

Run from the repository root:

    python -m benchmarks.data_throughput                 # about 2 minutes on 2 idle cores
    python -m benchmarks.data_throughput --quick         # smoke run
    python -m benchmarks.data_throughput --out docs/results/benchmarks/data_throughput.txt

It measures, and prints:

1. Loader images/s at 256 px (models/data/loader.py: the Dataset + DataLoader the trainer uses for
   image folders) with 0, 1 and 2 loader processes (--workers), on a generated folder of
   --images JPEGs of 500 x 375 px (ImageNet's typical size; smooth random content, quality 90),
   batch --batch: decode, RGB, resize of the shorter side to 256, centre crop, collate. Timed over
   --batches batches after one warm-up batch (which starts the loader processes).
2. The VQ-VAE-2 training step's own images/s on this CPU (models/train.py's step: forward,
   loss, backward, clipping, AdamW; paper settings: width 128, K = 512, d = 64, 256 px), at
   batch --step-batch, and its FLOPs per image (torch.utils.flop_counter).
3. How many loader processes a GPU would need: the GPU step rate is estimated as
   --gpu-tflops (default 30: an A100-class GPU at about a fifth of its TF32 peak, a common
   sustained rate for convolutional nets of this size) / FLOPs per image, and divided by the
   images/s of one loader process (the 1-process figure).

The header names the command, the commit, the CPU count and the wall time.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from models.build import build_model
from models.config import TrialConfig
from models.data import ImageFiles, find_images
from models.data.loader import image_batches

ROOT = Path(__file__).resolve().parents[1]

SIZE, PHOTO = 256, (500, 375)
PAPER_VQVAE2 = TrialConfig(model="vqvae2", image_size=SIZE, width=128, codebook_size=512, code_dim=64,
                           batch_size=128, lr=3e-4)


def write_jpegs(folder: Path, n: int) -> ImageFiles:
    """n JPEGs of 500 x 375 px with smooth random content (upsampled noise), as photographs compress."""
    g = np.random.default_rng(0)
    for i in range(n):
        small = g.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize(PHOTO, Image.Resampling.BICUBIC).save(folder / f"img{i:04d}.jpg", quality=90)
    return ImageFiles(tuple(find_images(folder)), SIZE)


def loader_rate(files: ImageFiles, workers: int, batch: int, batches: int) -> float:
    """Images per second through image_batches with `workers` loader processes (after one warm-up batch)."""
    stream = image_batches(files, batch, seed=0, workers=workers)
    next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    rate = batch * batches / (time.perf_counter() - start)
    del stream  # stops the loader processes
    return rate


def step_rate(batch: int, steps: int) -> tuple[float, float]:
    """(images/s, FLOPs per image) of the paper's VQ-VAE-2 training step on this CPU."""
    torch.manual_seed(0)
    cfg = PAPER_VQVAE2.replace(batch_size=batch)
    model = build_model(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    x = torch.randn(batch, 3, SIZE, SIZE)

    def step():
        out = model(x)
        loss = F.mse_loss(out.recon, x) + cfg.commitment * out.commitment_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start), counter.get_total_flops() / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader processes to try")
    parser.add_argument("--images", type=int, default=96, help="JPEGs in the generated folder")
    parser.add_argument("--batch", type=int, default=32, help="loader batch size")
    parser.add_argument("--batches", type=int, default=6, help="timed loader batches")
    parser.add_argument("--step-batch", type=int, default=4, help="batch of the timed VQ-VAE-2 steps on the CPU")
    parser.add_argument("--steps", type=int, default=3, help="timed VQ-VAE-2 steps")
    parser.add_argument("--gpu-tflops", type=float, default=30.0,
                        help="sustained TFLOP/s assumed for a GPU training step (default %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the step")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer images, batches and steps")
    parser.add_argument("--out", help="also write the output to this file")
    args = parser.parse_args()
    if args.quick:
        args.images, args.batch, args.batches, args.step_batch, args.steps = 16, 8, 2, 2, 1
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        files = write_jpegs(Path(tmp), args.images)
        rates = {w: loader_rate(files, w, args.batch, args.batches) for w in args.workers}
    lines.append(f"1. Loader (models/data/loader.py) at {SIZE} px: {args.images} generated JPEGs of "
                 f"{PHOTO[0]} x {PHOTO[1]}, batch {args.batch}, {args.batches} timed batches")
    lines.append(f"{'loader processes':>16}  {'images/s':>9}  {'per process':>11}")
    for w, r in rates.items():
        lines.append(f"{w:>16}  {r:>9.1f}  {r / max(w, 1):>11.1f}")
    lines.append("   0 = decoded on the training thread; each loader process decodes whole batches in parallel")
    lines.append("")

    images_s, flops = step_rate(args.step_batch, args.steps)
    lines.append(f"2. VQ-VAE-2 training step (paper settings: width 128, K=512, d=64, {SIZE} px) on this CPU "
                 f"({torch.get_num_threads()} threads), batch {args.step_batch}: {images_s:.2f} images/s; "
                 f"{flops / 1e9:.1f} GFLOP per image (forward + backward)")
    lines.append("")

    gpu_rate = args.gpu_tflops * 1e12 / flops
    per_process = rates.get(1, max(rates.values()) / max(max(rates), 1))
    lines.append(f"3. A GPU at {args.gpu_tflops:g} TFLOP/s sustained would train about {gpu_rate:.0f} images/s; "
                 f"at {per_process:.1f} images/s per loader process (measured here) it needs about "
                 f"{int(np.ceil(gpu_rate / per_process))} loader processes (--set loader_workers=N), i.e. that many "
                 f"CPU cores for decoding; with fewer the GPU waits for data")

    wall = time.perf_counter() - start
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    header = [f"command: python -m benchmarks.data_throughput {' '.join(sys.argv[1:])}".rstrip(),
              f"commit: {commit}", f"cores: {os.cpu_count()} (load average {os.getloadavg()[0]:.1f} at the end)",
              f"wall time: {wall:.0f} s", f"torch {torch.__version__}", ""]
    text = "\n".join(header + lines) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
