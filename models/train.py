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

Packs: `train_pack(configs, ...)` trains several trials of one shape as one fused model
(models/fused.py), each member as train() would train it alone (its own batches, gradient,
clipping, optimizer, codebook, reports and checkpoints); train() is the pack of one. The loop
below is the same for both.

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
from models.fused import check_pack, fuse
from models.protocol import perplexity



@dataclass
class Progress:
    """One report of the trainer: after each validation, or at the step whose loss was not finite."""
    step: int
    status: str  # M.RUNNING (more steps follow), M.FINISHED (the last validation) or M.DIVERGED (a NaN/inf loss)
    metrics: dict[str, float]
    # to checkpoint, aliasing live optimizer tensors (save it before returning); none if diverged
    state: TrainState | None = None
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
    GPU if any. The state given to `report` holds the live optimizer tensors: save it before returning. Image
    folders are decoded by cfg.loader_workers DataLoader processes (models/data/loader.py).
    cfg.precision "bf16" (GPU only: ConfigError on another device) runs the networks' training forward
    under bfloat16 autocast, the quantisers in float32 (models/quantizer.py); validation runs in float32,
    so validation losses compare across precisions. cfg.channels_last puts the networks' weights and the
    batches in channels-last memory format.
    """
    return train_pack([cfg], [report], [resume], data, device)[0]


def train_pack(cfgs: list[TrialConfig], reports: list[Report | None] | None = None,
               resumes: list[TrainState | None] | None = None, data: ImageData | None = None,
               device: torch.device | str | None = None) -> list[TrainResult]:
    """Train a pack of trials (models/fused.py) as one model, each as train() would train it alone: its own
    batches, gradient, clipping, optimizer and codebook; each member reports to its own `report`, resumes from
    its own state (all at one step) and gets its own result, in order. A member whose loss is not finite is
    reported diverged at the validation that finds it and leaves the pack; the others go on. A pack of one is
    train(). ConfigError (one line, before any work) for configs that cannot share a pack or this device."""
    device = torch.device(device) if device is not None else default_device()
    check_pack(cfgs)
    for cfg in cfgs:
        check_device(cfg, device)
    return _train(cfgs, reports or [None] * len(cfgs), resumes or [None] * len(cfgs), data, device)


@dataclass
class Member:
    """One trial of a pack: its config, model, optimizer, batches and what it has measured so far."""
    cfg: TrialConfig
    report: Report
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the batch sampler's (photos, CIFAR)
    rng_state: torch.Tensor  # the global random state right after its model was built: its k-means draws
    step: int = 0
    best: float = math.inf
    test_loss: float = math.nan  # at the step of `best`
    train_time: float = 0.0  # total seconds in steps
    eval_time: float = 0.0  # total seconds in validation
    history: list = field(default_factory=list)  # (step, metrics) of every validation so far
    next_batch: Callable[[], torch.Tensor] | None = None


def start_member(cfg: TrialConfig, report: Report | None, resume: TrainState | None, data: ImageData,
                 device: torch.device, share: tuple[int, int]) -> Member:
    """cfg's model, optimizer and batch source as its trial starts them (or resumes them from `resume`)."""
    torch.manual_seed(cfg.seed)
    model, _ = place_model(cfg, device)
    member = Member(cfg, report or (lambda progress: None), model, make_optimizer(model, cfg),
                    torch.Generator().manual_seed(cfg.seed), torch.get_rng_state())
    if resume is not None:
        model.load_state_dict(resume.model)  # optimizer state follows the model's device
        member.optimizer.load_state_dict(resume.optimizer)
        member.generator.set_state(resume.generator)
        member.step, member.best, member.train_time, member.eval_time = (
            resume.step, resume.best_val_loss, resume.train_time, resume.eval_time)
        member.test_loss = resume.test_loss
        member.history = list(resume.history)
    if isinstance(data.train, ImageFiles):  # decoded in loader processes; batch i depends on (seed, i) only
        batches = image_batches(data.train, cfg.batch_size, cfg.seed, member.step, share, cfg.loader_workers,
                                pin_memory=device.type == "cuda")
        member.next_batch = lambda: data.normalise(next(batches).to(device, non_blocking=True))
    else:
        member.next_batch = lambda: data.train_batch(cfg.batch_size, member.generator, share, device).to(
            device, non_blocking=True)
    model.train()
    return member


@dataclass
class Pack:
    """What a training step of S members needs: their fused model (a pack of one: the model itself, or its
    DistributedDataParallel wrapper), optimizers, configs, and commitment weights alpha (S,) on the device."""
    net: torch.nn.Module
    optimizers: list[torch.optim.Optimizer]
    cfgs: list[TrialConfig]
    commitments: torch.Tensor

    @classmethod
    def of(cls, models: list[torch.nn.Module], optimizers: list[torch.optim.Optimizer], cfgs: list[TrialConfig],
           rng_states: list[torch.Tensor] | None = None, world: int = 1) -> "Pack":
        """The pack of these members (rng_states: models/fused.py's fuse)."""
        net = fuse(models, rng_states)
        if world > 1:  # the quantisers keep their buffers equal by all-reducing their statistics: no broadcast
            net = DistributedDataParallel(net, forward_sync_buffers=False)
        net.train()
        device = next(models[0].parameters()).device
        return cls(net, optimizers, cfgs, torch.tensor([c.commitment for c in cfgs], device=device))

    @classmethod
    def of_members(cls, members: list[Member], world: int = 1) -> "Pack":
        return cls.of([m.model for m in members], [m.optimizer for m in members], [m.cfg for m in members],
                      [m.rng_state for m in members], world)


def _train(cfgs: list[TrialConfig], reports: list[Report | None], resumes: list[TrainState | None],
           data: ImageData | None, device: torch.device) -> list[TrainResult]:
    """train_pack() after the checks (tests run bf16 autocast on the CPU through this)."""
    cfg = cfgs[0]  # what the members share: data, shapes, steps, precision, memory format
    data = data or load_data(cfg.dataset, cfg.data_dir, cfg.image_size)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} does not split evenly over {world} processes")
    if world > 1 and len(cfgs) > 1:
        raise ValueError(f"a pack of {len(cfgs)} trials trains in one process, not over {world} processes")
    members = [start_member(c, report, resume, data, device, (rank, world))
               for c, report, resume in zip(cfgs, reports, resumes)]
    if len({m.step for m in members}) > 1:
        raise ValueError(f"the members of a pack resume at one step, not {sorted({m.step for m in members})}")
    results: dict[int, TrainResult] = {}  # by member position in cfgs
    index = {id(m): i for i, m in enumerate(members)}
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    pack, step = Pack.of_members(members, world), members[0].step
    window, window_start = Window(step, len(members), device), time.perf_counter()  # since the last validation
    while step < cfg.steps and members:
        batches = [m.next_batch() for m in members]
        x = batches[0] if len(batches) == 1 else torch.cat(batches, 1)  # member s: channels 3 s .. 3 s + 2
        losses, out = train_step(pack, x.contiguous(memory_format=memory_format), world)
        step += 1
        window.add(losses, out.levels)

        if step % cfg.eval_every == 0 or step == cfg.steps:
            if device.type == "cuda":  # the steps queued on the GPU count as training time
                torch.cuda.synchronize(device)
            interval_train = time.perf_counter() - window_start
            diverged, means = window.diverged(), window.means()  # read only now
            going_on = []
            for m, bad, train_means in zip(members, diverged, means):
                result = validate(m, data, step, interval_train, bad, train_means)
                if result is None:
                    going_on.append(m)
                else:
                    results[index[id(m)]] = result
            if len(going_on) < len(members) and going_on:  # the diverged leave the pack
                pack = Pack.of_members(going_on, world)
            members = going_on
            window, window_start = Window(step, len(members), device), time.perf_counter()
    for m in members:
        results[index[id(m)]] = TrainResult(M.FINISHED, step, _finite_or_nan(m.best), m.test_loss)
    return [results[i] for i in range(len(cfgs))]


def validate(m: Member, data: ImageData, step: int, interval_train: float, diverged: tuple[int, float] | None,
             train_means: dict[str, float]) -> TrainResult | None:
    """Member m's validation at `step` and its report; its TrainResult when it has diverged, else None."""
    cfg = m.cfg
    if diverged is not None:  # the first step with a non-finite training loss
        m.report(Progress(diverged[0], M.DIVERGED, {M.TRAIN_LOSS: diverged[1]}))
        return TrainResult(M.DIVERGED, diverged[0], _finite_or_nan(m.best), m.test_loss)
    start = time.perf_counter()
    metrics = {**train_means, **evaluate(m.model, data, data.val, cfg.batch_size), M.TIME_TRAIN: interval_train}
    m.train_time += interval_train
    if not math.isfinite(metrics[M.VAL_LOSS]):
        m.report(Progress(step, M.DIVERGED, metrics))
        return TrainResult(M.DIVERGED, step, _finite_or_nan(m.best), m.test_loss)
    if metrics[M.VAL_LOSS] < m.best and data.test is not None:  # the step validation chooses, so far
        m.test_loss = metrics[M.TEST_LOSS] = evaluate(m.model, data, data.test, cfg.batch_size)[M.VAL_LOSS]
    m.best = min(m.best, metrics[M.VAL_LOSS])
    pictures = {}
    if step == cfg.steps:  # the trained model's topography (Sec. 4.3), once per trial
        topo = topography.measure(m.model, data, batch_size=cfg.batch_size)
        metrics.update(topo.metrics)
        pictures = topo.pictures
    metrics[M.TIME_VAL] = time.perf_counter() - start
    m.eval_time += metrics[M.TIME_VAL]
    if step == cfg.steps:  # the trial's summaries (metrics.py)
        metrics.update({M.VAL_BEST_LOSS: m.best, M.TIME_TRAIN_TOTAL: m.train_time, M.TIME_VAL_TOTAL: m.eval_time})
        if data.test is not None:
            metrics[M.TEST_FINAL_LOSS] = m.test_loss
    m.history.append((step, metrics))
    # The model's state copied: in a pack its codebooks are views of the pack's, which torch.save would write whole
    model_state = {k: v.clone() for k, v in m.model.state_dict().items()}
    state = TrainState(model_state, m.optimizer.state_dict(), m.generator.get_state(), step, m.best, m.train_time,
                       m.eval_time, cfg.to_params(), metrics, list(m.history), m.test_loss)
    m.report(Progress(step, M.FINISHED if step == cfg.steps else M.RUNNING, metrics, state, pictures))
    return None


def place_model(cfg: TrialConfig, device: torch.device) -> tuple[torch.nn.Module, torch.memory_format]:
    """cfg's model on `device`, and the memory format of its weights that the batches take too
    (cfg.channels_last: channels-last; only the 4D conv weights change, the codebooks are 2D)."""
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return build_model(cfg).to(device, memory_format=memory_format), memory_format


def make_optimizer(model: torch.nn.Module, cfg: TrialConfig) -> torch.optim.Optimizer:
    """AdamW at cfg.lr without weight decay (the codebook is not a parameter: the quantiser updates it)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)


def member_mse(recon: torch.Tensor, x: torch.Tensor, members: int) -> torch.Tensor:
    """Each member's MSE(x_hat, x) (members,): member s's images are channels s C .. (s + 1) C - 1."""
    err = F.mse_loss(recon, x, reduction="none")
    return err.unflatten(1, (members, -1)).transpose(0, 1).reshape(members, -1).mean(1)


def train_step(pack: Pack, x: torch.Tensor, world: int = 1):
    """One optimisation step of every member of the pack on the batch x (member s's images in channels
    3 s .. 3 s + 2): forward (the networks under bfloat16 autocast when the pack's precision is "bf16"; the
    codebook updates happen inside it), each member's loss = MSE + alpha * commitment (Eq. 15) in float32,
    backward of their sum (each member's parameters get their own loss's gradient), each member's gradient
    clipping and AdamW step. Returns (losses, output): each member's reconstruction and commitment losses
    (members, 2), detached and, data parallel, averaged over the `world` processes (so every process takes
    the same decisions), and the model's output. Nothing is read back to the host."""
    members = len(pack.cfgs)
    # No cast cache: a step captured as a CUDA graph must not hold casts that autocast frees at its exit
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=pack.cfgs[0].precision == "bf16",
                        cache_enabled=False):
        out = pack.net(x)
    recon = member_mse(out.recon.float(), x, members)
    commitment = out.commitment_loss.reshape(members)
    loss = (recon + pack.commitments * commitment).sum()
    losses = torch.stack([recon.detach(), commitment.detach()], 1)
    if world > 1:  # the whole batch's means (equal shares)
        dist.all_reduce(losses)
        losses /= world
    for optimizer in pack.optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer, cfg in zip(pack.optimizers, pack.cfgs):
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                                       cfg.grad_clip)
        optimizer.step()
    return losses, out


def _finite_or_nan(x: float) -> float:
    return x if math.isfinite(x) else math.nan


class Window:
    """Each member's training metrics since the last validation, summed on the device: a step queues its
    additions and never waits for the GPU (no host sync per step); they are read once, at the validation. It
    also keeps each member's first step whose training losses were not finite, and that step's loss."""

    def __init__(self, step: int, members: int, device: torch.device):
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None  # (members, metrics)
        self.n, self.step = 0, step  # steps added; the step before the first of them
        self.first_bad = torch.zeros(members, dtype=torch.long, device=device)  # 0: every loss finite so far
        self.bad_loss = torch.zeros(members, device=device)

    def add(self, losses: torch.Tensor, levels: dict):
        """One step: losses (members, 2) = (reconstruction, commitment); levels: name -> QuantizerOutput (its
        perplexity and codes used one per member, or a single value for a pack of one)."""
        members = len(losses)
        if not self.names:
            self.names = [M.TRAIN_LOSS, M.TRAIN_COMMITMENT] + [
                key for name in levels for key in (M.train_perplexity(name), M.train_codes_used(name))]
        values = torch.stack([losses[:, 0], losses[:, 1]] + [
            v.float().reshape(members) for q in levels.values() for v in (q.perplexity, q.codes_used)], 1)
        self.sums = values if self.sums is None else self.sums + values
        self.n += 1
        new = torch.isfinite(losses).all(1).logical_not() & (self.first_bad == 0)
        self.first_bad = torch.where(new, self.step + self.n, self.first_bad)
        self.bad_loss = torch.where(new, losses[:, 0], self.bad_loss)

    def diverged(self) -> list[tuple[int, float] | None]:
        """Each member's (step, training loss) of its first step whose losses were not finite, or None."""
        return [(first, bad) if first else None for first, bad in zip(self.first_bad.tolist(), self.bad_loss.tolist())]

    def means(self) -> list[dict[str, float]]:
        """Each member's mean of every metric over the steps added."""
        return [dict(zip(self.names, row)) for row in (self.sums / self.n).tolist()]


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
