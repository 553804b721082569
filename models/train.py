"""The one shared trainer: every trial of every study runs `train(config, ...)`.

It knows nothing of Ray or MLflow: after each validation it calls `report(Progress)`
once, with the metrics (names from metrics.py), the state to checkpoint (models/checkpoint.py)
and the status (running; finished at the last validation), and it continues from a `resume`
state it is given. After the last validation it also measures the trained model's topography
(models/topography.py): the offset losses and smoothness ratios join that report as
summaries, with the best validation loss and the total times, and the pictures (uint8
tensors) come with it. Validation selects, test reports: at each validation that lowers the
best validation loss the trainer also measures the test split's loss (`test/loss`), so the
last one measured is the test loss at the step validation chose (`test/final_loss`).
A NaN/inf loss ends the trial with a report of status "diverged",
of what was measured at that step, with no state. Loss
(Eq. 15 with per-element means, as the public implementations): MSE(x_hat, x) on
standardised images + alpha * commitment.

Data parallel: called in each process of an initialised torch.distributed group
of W processes, every process draws the same batch indices and trains on its
own W-th of each batch (rank r takes rows r*B/W ... (r+1)*B/W - 1), the networks
are wrapped in DistributedDataParallel (gradients averaged) and the quantisers
sum their codebook statistics over the processes (models/quantizer.py): every
process then holds the same model as one process trained on the whole batch.
The training losses are averaged over the processes at every step, so all of
them take the same decisions; each process validates the (identical) model and
reports the same metrics and state; the caller checkpoints rank 0's.

Run one trial by hand:  python -m models.train steps=300 neighbours=hard
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import metrics as M
from models import topography
from models.build import build_model
from models.checkpoint import TrainState
from models.config import ConfigError, TrialConfig
from models.data import ImageData, ImageFiles, load_data
from models.data.loader import image_batches
from models.protocol import perplexity



@dataclass
class Progress:
    """One report of the trainer: after each validation, or at the step whose loss was not finite."""
    step: int
    status: str  # M.RUNNING (more steps follow), M.FINISHED (the last validation) or M.DIVERGED (a NaN/inf loss)
    metrics: dict[str, float]
    state: TrainState | None = None  # to checkpoint, aliasing live tensors (save it before returning); none if diverged
    pictures: dict[str, torch.Tensor] = field(default_factory=dict)  # topography pictures, at the last validation


Report = Callable[[Progress], None]


@dataclass
class TrainResult:
    status: str  # M.FINISHED or M.DIVERGED
    step: int  # training steps done
    best_val_loss: float  # nan if no validation happened
    test_loss: float  # the test loss at the step of best_val_loss; nan without a test split or validation


def default_device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def evaluate(model: torch.nn.Module, data: ImageData, images: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Validation metrics over all `images` (uint8) in eval mode (no codebook update), `batch_size`
    images at a time: mean reconstruction MSE, and per level the perplexity and codes used over the whole set.
    Of the test split the trainer keeps only the MSE (as `test/loss`)."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    device = next(model.parameters()).device
    counts = {name: torch.zeros(q.codebook_size, device=device) for name, q in model.levels.items()}
    with torch.no_grad():
        for chunk in images.split(batch_size):
            x = data.normalise(chunk).to(device)
            out = model(x)
            total += F.mse_loss(out.recon, x, reduction="sum").item()
            n += x.numel()
            for name, level in out.levels.items():
                counts[name] += torch.bincount(level.indices.flatten(), minlength=len(counts[name])).float()
    model.train(was_training)
    metrics = {M.VAL_LOSS: total / n}
    for name, c in counts.items():
        metrics[M.val_perplexity(name)] = perplexity(c).item()
        metrics[M.val_codes_used(name)] = float((c > 0).sum())
    return metrics


def check_device(cfg: TrialConfig, device: torch.device) -> None:
    """ConfigError (one line) when cfg cannot run on `device`: bf16 only on a GPU, since a CPU without
    bf16 units (like this project's machines) gains nothing from it."""
    if cfg.precision == "bf16" and device.type != "cuda":
        raise ConfigError(f"precision=bf16 needs a CUDA device, got {device}; allowed on the CPU: fp32")


def train(cfg: TrialConfig, report: Report | None = None, resume: TrainState | None = None,
          data: ImageData | None = None, device: torch.device | str | None = None) -> TrainResult:
    """Train cfg's model on cfg's data for cfg.steps steps, validating every cfg.eval_every.

    Deterministic on CPU for a given cfg.seed; a resumed run continues exactly as
    the uninterrupted one. A NaN/inf loss stops the run with status "diverged"
    (its last report holds what was measured at that step, and no state). `device` defaults to the first
    GPU if any. The state given to `report` holds the live tensors: save it before returning. Image
    folders are decoded by cfg.loader_workers DataLoader processes (models/data/loader.py).
    cfg.precision "bf16" (GPU only: ConfigError on another device) runs the networks' training forward
    under bfloat16 autocast, the quantisers in float32 (models/quantizer.py); validation runs in float32,
    so validation losses compare across precisions. cfg.channels_last puts the networks' weights and the
    batches in channels-last memory format.
    """
    device = torch.device(device) if device is not None else default_device()
    check_device(cfg, device)
    return _train(cfg, report, resume, data, device)


def _train(cfg: TrialConfig, report: Report | None, resume: TrainState | None, data: ImageData | None,
           device: torch.device) -> TrainResult:
    """train() after the device check (tests run bf16 autocast on the CPU through this)."""
    report = report or (lambda progress: None)
    data = data or load_data(cfg.dataset, cfg.data_dir, cfg.image_size)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} does not split evenly over {world} processes")
    torch.manual_seed(cfg.seed)
    model, memory_format = place_model(cfg, device)
    # The quantisers keep their buffers equal by all-reducing their statistics: no buffer broadcast.
    net = DistributedDataParallel(model, forward_sync_buffers=False) if world > 1 else model
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    step, best, train_time, eval_time = 0, math.inf, 0.0, 0.0  # total seconds in steps / in validation
    test_loss = math.nan  # at the step of `best`
    if resume is not None:
        model.load_state_dict(resume.model)  # optimizer state follows the model's device
        optimizer.load_state_dict(resume.optimizer)
        generator.set_state(resume.generator)
        step, best, train_time, eval_time = resume.step, resume.best_val_loss, resume.train_time, resume.eval_time
        test_loss = resume.test_loss
    history = list(resume.history) if resume is not None else []  # (step, metrics) of every validation so far

    share = (rank, world)
    if isinstance(data.train, ImageFiles):  # decoded in loader processes; batch i depends on (seed, i) only
        batches = image_batches(data.train, cfg.batch_size, cfg.seed, step, share, cfg.loader_workers,
                                pin_memory=device.type == "cuda")

        def next_batch():
            return data.normalise(next(batches).to(device, non_blocking=True))
    else:
        def next_batch():
            return data.train_batch(cfg.batch_size, generator, share).to(device, non_blocking=True)

    model.train()
    window, window_start = Window(step, device), time.perf_counter()  # since the last validation
    while step < cfg.steps:
        losses, out = train_step(net, optimizer, cfg, next_batch().contiguous(memory_format=memory_format), world)
        step += 1
        window.add(losses, out.levels)

        if step % cfg.eval_every == 0 or step == cfg.steps:
            if device.type == "cuda":  # the steps queued on the GPU count as training time
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            interval_train = start - window_start
            diverged = window.diverged()  # the first step with a non-finite training loss, read only now
            if diverged is not None:
                report(Progress(diverged[0], M.DIVERGED, {M.TRAIN_LOSS: diverged[1]}))
                return TrainResult(M.DIVERGED, diverged[0], _finite_or_nan(best), test_loss)
            metrics = {**window.means(), **evaluate(model, data, data.val, cfg.batch_size),
                       M.TIME_TRAIN: interval_train}
            train_time += interval_train
            if not math.isfinite(metrics[M.VAL_LOSS]):
                report(Progress(step, M.DIVERGED, metrics))
                return TrainResult(M.DIVERGED, step, _finite_or_nan(best), test_loss)
            if metrics[M.VAL_LOSS] < best and data.test is not None:  # the step validation chooses, so far
                test_loss = metrics[M.TEST_LOSS] = evaluate(model, data, data.test, cfg.batch_size)[M.VAL_LOSS]
            best = min(best, metrics[M.VAL_LOSS])
            pictures = {}
            if step == cfg.steps:  # the trained model's topography (Sec. 4.3), once per trial
                topo = topography.measure(model, data, batch_size=cfg.batch_size)
                metrics.update(topo.metrics)
                pictures = topo.pictures
            metrics[M.TIME_VAL] = time.perf_counter() - start
            eval_time += metrics[M.TIME_VAL]
            if step == cfg.steps:  # the trial's summaries (metrics.py)
                metrics.update({M.VAL_BEST_LOSS: best, M.TIME_TRAIN_TOTAL: train_time, M.TIME_VAL_TOTAL: eval_time})
                if data.test is not None:
                    metrics[M.TEST_FINAL_LOSS] = test_loss
            history.append((step, metrics))
            state = TrainState(model.state_dict(), optimizer.state_dict(), generator.get_state(), step, best,
                               train_time, eval_time, cfg.to_params(), metrics, list(history), test_loss)
            report(Progress(step, M.FINISHED if step == cfg.steps else M.RUNNING, metrics, state, pictures))
            window, window_start = Window(step, device), time.perf_counter()
    return TrainResult(M.FINISHED, step, _finite_or_nan(best), test_loss)


def place_model(cfg: TrialConfig, device: torch.device) -> tuple[torch.nn.Module, torch.memory_format]:
    """cfg's model on `device`, and the memory format of its weights that the batches take too
    (cfg.channels_last: channels-last; only the 4D conv weights change, the codebooks are 2D)."""
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return build_model(cfg).to(device, memory_format=memory_format), memory_format


def make_optimizer(model: torch.nn.Module, cfg: TrialConfig) -> torch.optim.Optimizer:
    """AdamW at cfg.lr without weight decay (the codebook is not a parameter: the quantiser updates it)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrialConfig, x: torch.Tensor,
               world: int = 1):
    """One optimisation step on the batch x: forward (the networks under bfloat16 autocast when
    cfg.precision is "bf16"; the codebook update happens inside it), loss = MSE + alpha * commitment
    (Eq. 15) in float32, backward, gradient clipping, AdamW. Returns (losses, output): the reconstruction
    and commitment losses, detached and, data parallel, averaged over the `world` processes (so every
    process takes the same decisions), and the model's output. Nothing is read back to the host."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        out = net(x)
    recon = F.mse_loss(out.recon.float(), x)
    loss = recon + cfg.commitment * out.commitment_loss
    losses = torch.stack([recon.detach(), out.commitment_loss.detach()])
    if world > 1:  # the whole batch's means (equal shares)
        dist.all_reduce(losses)
        losses /= world
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    optimizer.step()
    return losses, out


def _finite_or_nan(x: float) -> float:
    return x if math.isfinite(x) else math.nan


class Window:
    """The training metrics since the last validation, summed on the device: a step queues its additions
    and never waits for the GPU (no host sync per step); they are read once, at the validation. It also
    keeps the first step whose training losses were not finite, and that step's loss."""

    def __init__(self, step: int, device: torch.device):
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None
        self.n, self.step = 0, step  # steps added; the step before the first of them
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)  # 0: every loss finite so far
        self.bad_loss = torch.zeros((), device=device)

    def add(self, losses: torch.Tensor, levels: dict):
        """One step: losses = (reconstruction, commitment); levels: name -> QuantizerOutput."""
        if not self.names:
            self.names = [M.TRAIN_LOSS, M.TRAIN_COMMITMENT] + [
                key for name in levels for key in (M.train_perplexity(name), M.train_codes_used(name))]
        values = torch.stack([losses[0], losses[1]] + [
            v.float() for q in levels.values() for v in (q.perplexity, q.codes_used)])
        self.sums = values if self.sums is None else self.sums + values
        self.n += 1
        new = torch.isfinite(losses).all().logical_not() & (self.first_bad == 0)
        self.first_bad = torch.where(new, self.step + self.n, self.first_bad)
        self.bad_loss = torch.where(new, losses[0], self.bad_loss)

    def diverged(self) -> tuple[int, float] | None:
        """(step, training loss) of the first step whose losses were not finite, or None."""
        first = int(self.first_bad)
        return (first, float(self.bad_loss)) if first else None

    def means(self) -> dict[str, float]:
        return dict(zip(self.names, (self.sums / self.n).tolist()))


def main(argv: list[str]) -> int:
    """`python -m models.train field=value ...`: one trial, printed as it goes."""
    try:
        bad = [arg for arg in argv if "=" not in arg]
        if bad:
            raise ConfigError(f"arguments {bad} are not field=value pairs")
        cfg = TrialConfig.from_dict(dict(arg.split("=", 1) for arg in argv))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"training {cfg.rule} on {cfg.dataset}: {cfg.to_params()}", flush=True)

    def show(progress: Progress):
        m = progress.metrics
        perplexities = "  ".join(f"{M.column(k)} {v:.1f}" for k, v in m.items() if k.startswith(M.val_perplexity("")))
        print(f"step {progress.step:6d}  train {m.get(M.TRAIN_LOSS, math.nan):.4f}  "
              f"val {m.get(M.VAL_LOSS, math.nan):.4f}  {perplexities}", flush=True)

    try:
        check_device(cfg, default_device())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = train(cfg, report=show)
    print(f"{result.status} after {result.step} steps; best validation loss {result.best_val_loss:.4f}, "
          f"test loss at its step {result.test_loss:.4f}")
    return 0 if result.status == M.FINISHED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
