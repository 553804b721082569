"""Data-parallel training is the same training: 2 processes with batch B/2 each (gloo, CPU) against
1 process with batch B, for EMA-VQ (N0 0 and 1, update-0 on and off) and KSOM hard 2D.

1. The quantiser alone (Eqs. 16-21 with the counts and sums all-reduced): the same codebook
   (w, m, N), step counter and batch perplexity after each of 20 steps.
2. The trainer's own code path (models/train.py: DistributedDataParallel for the networks, every
   process drawing its own half of each batch, the quantiser all-reducing): the same reported
   losses and metrics and the same final weights, optimiser state and codebook after 20 steps.
Both run in one pair of processes (torch.multiprocessing, a gloo group) to keep the test short.
"""
from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.build import build_quantizer
from models.config import TrialConfig
from models.data import share_rows
from models.train import Progress, train

CASES = {  # name -> TrialConfig fields of the VQ rule
    "EMA-VQ N0=0 update-0=no": dict(neighbours="none", n0=0, update_empty=False),
    "EMA-VQ N0=0 update-0=yes": dict(neighbours="none", n0=0, update_empty=True),
    "EMA-VQ N0=1 update-0=no": dict(neighbours="none", n0=1, update_empty=False),
    "EMA-VQ N0=1 update-0=yes": dict(neighbours="none", n0=1, update_empty=True),
    "KSOM hard 2D": dict(neighbours="hard", grid_dim=2, tau=0.1, n0=1, update_empty=True),
    # k-means on every process's rows of the first batch: the processes start from one codebook
    "EMA-VQ k-means init": dict(neighbours="none", codebook_init="kmeans"),
}
STEPS, BATCH, WORLD = 20, 8, 2
BASE = TrialConfig(width=16, codebook_size=16, code_dim=8, batch_size=BATCH, lr=1e-3, steps=STEPS, eval_every=10)
QUANTISER_ROWS = 32  # vectors per quantiser step (the whole batch)


def quantiser_inputs() -> list[torch.Tensor]:
    """A fixed sequence of whole batches: a few clusters, so that some codes stay unused."""
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, BASE.code_dim, generator=g) * 3
    return [centres[torch.randint(4, (QUANTISER_ROWS,), generator=g)]
            + 0.3 * torch.randn(QUANTISER_ROWS, BASE.code_dim, generator=g) for _ in range(STEPS)]


def run_quantiser(fields: dict, share: tuple[int, int]) -> list[dict]:
    """20 training steps of one quantiser on this process's rows of each batch; its state after each."""
    torch.manual_seed(0)
    q = build_quantizer(BASE.replace(**fields)).train()
    states = []
    for batch in quantiser_inputs():
        out = q(batch[share_rows(QUANTISER_ROWS, share)])
        states.append({"perplexity": out.perplexity.clone(), "codes_used": out.codes_used.clone(),
                       **{k: v.clone() for k, v in q.state_dict().items()}})
    return states


def run_trainer(fields: dict, photos) -> tuple[list, dict]:
    """The shared trainer: (reports [(step, metrics)], last state)."""
    reports, last = [], {}

    def report(progress: Progress):
        metrics = {k: v for k, v in progress.metrics.items() if not k.startswith("time/")}  # wall clock
        reports.append((progress.step, metrics))
        if progress.state is not None:
            last.update(model={k: v.clone() for k, v in progress.state.model.items()},
                        optimizer=progress.state.optimizer["state"])

    train(BASE.replace(**fields), report=report, data=photos, device="cpu")
    return reports, last


def _worker(rank: int, port: int, out: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        from models.data import load_photos
        photos = load_photos()
        results = {name: (run_quantiser(fields, (rank, WORLD)), run_trainer(fields, photos))
                   for name, fields in CASES.items()}
        torch.save(results, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    """What each of 2 gloo processes computed, per case: (quantiser states, (trainer reports, last state))."""
    out = tmp_path_factory.mktemp("dp")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, start_method="spawn")
    return [torch.load(out / f"{r}.pt", weights_only=False) for r in range(WORLD)]


def largest_difference(a, b) -> float:
    """Largest |a - b| / max(1, |b|) over nested dicts/lists of tensors and numbers."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return max((largest_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        return max((largest_difference(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, torch.Tensor):
        a, b = a.double(), b.double()
        return ((a - b).abs() / b.abs().clamp(min=1)).max().item() if a.numel() else 0.0
    if isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
        return 0.0
    return abs(a - b) / max(1.0, abs(b))


# float32 sums in another order, over 20 steps, amplified where a code is nearly tied in Eq. 12; how much
# depends on the CPU's kernels (AVX-512 machines differ from AVX2 ones), so the bound sits well above both.
# The two replicas must still agree bit for bit (below).
TOLERANCE = 1e-3


@pytest.mark.parametrize("name", CASES)
def test_quantiser_with_all_reduce_equals_one_process(parallel, name):
    """Every process holds the codebook (w, m, N, t) of one process fed the whole batch, at every step,
    and reports the whole batch's perplexity and codes used."""
    alone = run_quantiser(CASES[name], (0, 1))
    for rank in range(WORLD):
        states = parallel[rank][name][0]
        assert [int(s["step"]) for s in states] == list(range(1, STEPS + 1))
        diff = largest_difference(states, alone)
        print(f"{name}: rank {rank}, quantiser, largest relative difference {diff:.2e}")
        assert diff < TOLERANCE
    # Unused codes exist (the clusters do not reach every code), so N0 and update-0 matter here.
    assert int(alone[-1]["codes_used"]) < BASE.codebook_size


@pytest.mark.parametrize("name", CASES)
def test_trainer_on_two_processes_equals_one(parallel, name, photos):
    """The trainer on 2 processes (DDP + all-reduced codebook statistics, batch 4 each) reports the same
    training and validation metrics as on 1 process with batch 8, and ends with the same weights,
    optimiser moments and codebook; both processes hold the same final state."""
    reports, last = run_trainer(CASES[name], photos)
    assert [s for s, _ in reports] == [10, 20]
    for rank in range(WORLD):
        got_reports, got_last = parallel[rank][name][1]
        assert [s for s, _ in got_reports] == [10, 20]
        diff = max(largest_difference(got_reports, reports), largest_difference(got_last, last))
        print(f"{name}: rank {rank}, trainer, largest relative difference {diff:.2e}")
        assert diff < TOLERANCE
    assert largest_difference(parallel[0][name][1], parallel[1][name][1]) == 0.0  # bit-identical replicas
