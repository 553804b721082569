"""Image folders through torch.utils.data (models/data/loader.py): the seeded batch sampler, decoding in
loader processes, process shares, and a resumed trial that sees the same batches as an uninterrupted one."""
from __future__ import annotations

import io

import pytest
import torch

from models.checkpoint import TrainState
from models.config import TrialConfig
from models.data import load_image_folder, read_image
from models.data.loader import SeededBatches, image_batches
from models.train import Progress, train
from helpers import write_folder


def test_batch_i_depends_only_on_seed_and_i():
    """A sampler started at batch 3 yields batches 3, 4, ... of one started at 0; another seed, other batches;
    indices are B draws in range, with replacement."""
    it = iter(SeededBatches(10, 6, seed=7))
    from_zero = [next(it) for _ in range(6)]
    it = iter(SeededBatches(10, 6, seed=7, start=3))
    assert [next(it) for _ in range(3)] == from_zero[3:]
    assert all(len(b) == 6 and all(0 <= i < 10 for i in b) for b in from_zero)
    assert SeededBatches(10, 6, seed=8).batch(0) != from_zero[0]
    assert SeededBatches(10, 6, seed=7).batch(0) == torch.randint(
        10, (6,), generator=torch.Generator().manual_seed(7 * 1_000_003)).tolist()


def test_shares_stack_to_the_whole_batch():
    """Process r of W gets rows r*B/W ... (r+1)*B/W - 1 of each batch; a batch that does not split is refused."""
    whole = SeededBatches(50, 8, seed=1).batch(5)
    assert [i for r in range(4) for i in SeededBatches(50, 8, seed=1, share=(r, 4)).batch(5)] == whole
    with pytest.raises(ValueError, match="share"):
        SeededBatches(50, 8, seed=1, share=(0, 3))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_folder(root, 25, size=16)
    return load_image_folder(root, 16)


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_batches_are_the_sampled_images(folder, workers):
    """With 0 or 1 loader processes, batch i is the images the sampler chose, decoded by read_image."""
    sampler = SeededBatches(len(folder.train), 4, seed=3, start=2)
    batches = image_batches(folder.train, 4, seed=3, start=2, workers=workers)
    for i in (2, 3, 4):
        want = torch.stack([read_image(folder.train.paths[k], 16) for k in sampler.batch(i)])
        got = next(batches)
        assert got.dtype == torch.uint8 and torch.equal(got, want)


def test_resumed_trial_sees_the_same_batches(folder):
    """The trainer on an image folder (2 loader processes): resumed from its step-2 checkpoint it reports the
    same metrics at steps 4 and 6 as the uninterrupted run (the sampler's position is the step)."""
    cfg = TrialConfig(dataset="imagefolder", data_dir="unused", image_size=16, width=8, codebook_size=16,
                      code_dim=8, batch_size=4, steps=6, eval_every=2, loader_workers=2)

    def run(resume=None):
        reports, states = [], {}

        def report(progress: Progress):
            metrics = {k: v for k, v in progress.metrics.items() if not k.startswith("time/")}  # wall clock
            reports.append((progress.step, metrics))
            buffer = io.BytesIO()
            progress.state.save(buffer)
            states[progress.step] = buffer.getvalue()

        train(cfg, report=report, resume=resume, data=folder, device="cpu")
        return reports, states

    reports, states = run()
    assert [s for s, _ in reports] == [2, 4, 6]
    resumed, _ = run(TrainState.load(io.BytesIO(states[2])))
    assert resumed == reports[1:]
