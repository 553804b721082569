"""Trial fusion (models/fused.py, models/train.py's train_pack): a pack of mixed trials trains as one model and
each member comes out as its trial would alone, on the CPU at small widths."""
from __future__ import annotations

import io
import math

import pytest
import torch

from benchmarks import fusion
import metrics as M
from models.checkpoint import TrainState
from models.config import ConfigError, TrialConfig
from models.fused import check_pack, fuse
from models.train import train, train_pack

BASE = TrialConfig(width=16, codebook_size=64, code_dim=8, batch_size=16, steps=20, eval_every=20)
# Mixed members: both rules, hard and Gaussian (both forms), 1D and 2D, other lr, decay, N0, update-0, tau,
# clipping, commitment and every codebook init
MEMBERS = [
    BASE.replace(neighbours="none", seed=0),
    BASE.replace(neighbours="hard", grid_dim=2, decay=0.95, n0=0, update_empty=False, lr=2e-3, seed=1),
    BASE.replace(neighbours="gaussian", grid_dim=1, tau=0.3, codebook_init="kmeans", seed=2),
    BASE.replace(neighbours="gaussian", grid_dim=2, gaussian_form="released", grad_clip=0.5, commitment=0.5,
                 codebook_init="uniform", eps=1e-4, seed=3),
    BASE.replace(neighbours="hard", grid_dim=1, tau=0.05, codebook_init="kmeans", lr=5e-4, seed=4),
]


def first_step(cfgs, photos):
    return fusion.first_step(cfgs, photos, torch.device("cpu"))


def val_losses(cfgs, photos):
    return fusion.val_losses(cfgs, photos, torch.device("cpu"))


@pytest.fixture(scope="module")
def alone(photos):
    """Each member trained alone, in the default and in channels-last memory format (20 steps)."""
    torch.set_num_threads(1)
    return ([val_losses([c], photos)[0] for c in MEMBERS],
            [val_losses([c.replace(channels_last=True)], photos)[0] for c in MEMBERS])


def test_first_step_same_codes_losses_and_gradients(photos):
    """Step 1 of the pack: every member picks exactly the codes of its trial alone, its reconstruction and
    commitment losses agree within 1e-6, and its parameters get its own loss's gradient, clipped at its own
    grad_clip, to float rounding (the grouped convolutions add in another order)."""
    losses, indices, grads = first_step(MEMBERS, photos)
    for s, cfg in enumerate(MEMBERS):
        own_losses, own_indices, own_grads = first_step([cfg], photos)
        print(f"{cfg.rule:>18} seed {cfg.seed}: codes equal {int((indices[s] == own_indices[0]).sum())} of "
              f"{indices[s].numel()}; largest loss difference {float((losses[s] - own_losses[0]).abs().max()):.1e}")
        assert torch.equal(indices[s], own_indices[0]), cfg.rule
        assert torch.allclose(losses[s], own_losses[0], rtol=0, atol=1e-6), (cfg.rule, losses[s], own_losses[0])
        assert len(grads[s]) == len(own_grads[0])
        worst = max(float((g - own).norm() / own.norm()) for g, own in zip(grads[s], own_grads[0]))
        print(f"{'':>18} largest relative gradient difference (per tensor, norm) {worst:.1e}")
        assert worst < 1e-4, cfg.rule


def test_twenty_steps_each_member_as_alone(photos, alone):
    """After 20 steps each member's validation loss is within max(3 x the difference channels-last alone
    makes to the same trial, 1e-4 x the loss) of its trial alone."""
    fused = val_losses(MEMBERS, photos)
    plain, channels_last = alone
    for cfg, f, p, c in zip(MEMBERS, fused, plain, channels_last):
        allowed = max(3 * abs(c - p), 1e-4 * p)
        print(f"{cfg.rule:>18} seed {cfg.seed}: alone {p:.6f}  fused - alone {f - p:+.2e}  "
              f"channels-last - alone {c - p:+.2e}  allowed {allowed:.2e}")
        assert abs(f - p) <= allowed, cfg


def test_a_diverging_member_leaves_and_the_others_go_on(photos, alone):
    """A member whose lr makes it blow up is reported diverged at the first validation after its loss stopped
    being finite, with that step; the others finish, their losses as alone."""
    bad = BASE.replace(neighbours="hard", lr=1e30, seed=9)
    cfgs = [MEMBERS[0], bad, MEMBERS[1]]
    cfgs = [c.replace(eval_every=5) for c in cfgs]
    reports: list[list] = [[], [], []]
    results = train_pack(cfgs, [reports[i].append for i in range(3)], data=photos, device="cpu")
    assert [r.status for r in results] == [M.FINISHED, M.DIVERGED, M.FINISHED]
    assert reports[1][-1].status == M.DIVERGED and not math.isfinite(reports[1][-1].metrics[M.TRAIN_LOSS])
    assert reports[1][-1].step == results[1].step <= 5 and len(reports[1]) == 1
    plain, channels_last = alone
    for i, s in ((0, 0), (2, 1)):
        assert [p.step for p in reports[i]] == [5, 10, 15, 20]
        final = reports[i][-1].metrics[M.VAL_LOSS]
        assert abs(final - plain[s]) <= max(3 * abs(channels_last[s] - plain[s]), 1e-4 * plain[s])


def saved(state: TrainState) -> TrainState:
    """The state as a checkpoint file holds it (the trainer's aliases live optimizer tensors)."""
    buffer = io.BytesIO()
    state.save(buffer)
    buffer.seek(0)
    return TrainState.load(buffer)


def test_a_pack_resumes_from_its_members_checkpoints_exactly(photos):
    """Each member's checkpoint is an ordinary trial's (the same keys as alone); a pack resumed from its members'
    states at step 10 ends exactly as the uninterrupted pack."""
    cfgs = [c.replace(eval_every=10) for c in MEMBERS[1:3]]
    states, finals = {}, {}

    def keep(i):
        def report(progress):
            states.setdefault(i, {})[progress.step] = saved(progress.state)
            finals[i] = progress.metrics
        return report

    train_pack(cfgs, [keep(0), keep(1)], data=photos, device="cpu")
    whole = [finals[0][M.VAL_LOSS], finals[1][M.VAL_LOSS]]
    alone_states = {}
    train(cfgs[0], lambda p: alone_states.__setitem__(p.step, p.state), data=photos, device="cpu")
    assert states[0][10].model.keys() == alone_states[10].model.keys()
    assert states[0][10].optimizer.keys() == alone_states[10].optimizer.keys()
    finals.clear()
    train_pack(cfgs, [keep(0), keep(1)], [states[0][10], states[1][10]], data=photos, device="cpu")
    assert [finals[0][M.VAL_LOSS], finals[1][M.VAL_LOSS]] == whole


def test_a_pack_of_one_is_its_model_and_packs_need_one_shape():
    """fuse() of one model is that model; configs differing in a shape or loop field, or of a model without a
    fused form, are refused with one line naming the field."""
    model = torch.nn.Linear(2, 2)
    assert fuse([model]) is model
    check_pack(MEMBERS)
    with pytest.raises(ConfigError, match=r"differ in width \(16, 32\)"):
        check_pack([BASE, BASE.replace(width=32)])
    with pytest.raises(ConfigError, match="model='vqvae2' has no fused form"):
        check_pack([BASE.replace(model="vqvae2", image_size=32)] * 2)
    with pytest.raises(ConfigError, match="differ in steps"):
        train_pack([BASE, BASE.replace(steps=21)], device="cpu")
