"""The VQ-VAE and the shared trainer models/train.py: reports, determinism, resume, divergence."""
from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from models.build import build_model
from models.config import TrialConfig
from models.quantizer import KohonenQuantizer
from models.checkpoint import TrainState
from models.train import Progress, train
from models.vqvae import VQVAE

TINY = TrialConfig(width=16, codebook_size=64, code_dim=16, batch_size=16, lr=1e-3, steps=60, eval_every=20, seed=0)


def run(cfg: TrialConfig, photos, resume=None):
    """train() on the shared photos on the CPU; returns (result, reports [(step, metrics)], checkpoints)."""
    reports, checkpoints = [], {}

    def report(progress: Progress):  # one event; the state is serialised at once, as the Ray trainable does
        reports.append((progress.step, dict(progress.metrics)))
        if progress.state is not None:  # (it aliases live tensors)
            buffer = io.BytesIO()
            progress.state.save(buffer)
            checkpoints[progress.step] = buffer.getvalue()

    result = train(cfg, report=report, resume=resume, data=photos, device="cpu")
    return result, reports, checkpoints


def load_state(raw: bytes) -> TrainState:
    return TrainState.load(io.BytesIO(raw))


def comparable(metrics: dict) -> dict:
    """Metrics that must be reproducible (wall-clock time is not)."""
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


@pytest.fixture(scope="module")
def baseline(photos):
    return run(TINY, photos)


# ---------------------------------------------------------------- model


def test_vqvae_shapes_and_decode_codes():
    """VQ-VAE width 16: (2, 3, 32, 32) -> latents (2, 8, 8, d), codes (2, 8, 8), reconstruction (2, 3, 32, 32);
    decode_codes of the forward's codes reproduces the eval-mode reconstruction."""
    torch.manual_seed(0)
    model = VQVAE(KohonenQuantizer(64, 16), width=16)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.recon.shape == (2, 3, 32, 32)
    level = out.levels["vq"]
    assert level.indices.shape == (2, 8, 8) and level.quantized.shape == (2, 8, 8, 16)
    decoded = model.decode_codes({"vq": level.indices})
    assert decoded.shape == (2, 3, 32, 32)
    assert torch.allclose(decoded, out.recon, atol=1e-5)
    assert out.commitment_loss.item() == pytest.approx(level.commitment_loss.item())


def test_vqvae_parameter_count_matches_spec_layout():
    """The layer list of the VQ-VAE (App. A; h = 16, d = 64), counted by hand, equals the model's parameter count."""
    h, d = 16, 64
    res = 2 * (9 * h * (h // 4) + (h // 4) * h)  # two residual blocks, no biases
    encoder = (16 * 3 * (h // 2) + h // 2) + (16 * (h // 2) * h + h) + (9 * h * h + h) + res + (h * d + d)
    decoder = (9 * d * h + h) + res + (16 * h * (h // 2) + h // 2) + (16 * (h // 2) * 3 + 3)
    model = build_model(TrialConfig(width=h, code_dim=d, codebook_size=512))
    assert sum(p.numel() for p in model.parameters()) == encoder + decoder
    assert model.levels["vq"].codebook_size == 512 and model.levels["vq"].grid == (32, 16)


def test_gradients_reach_the_encoder_through_straight_through():
    """The reconstruction loss's gradient crosses the quantiser unchanged (straight-through estimator): the
    encoder's output gets exactly the gradient of the quantised latents, and reaches the first encoder
    layer; the codebook gets no gradient and is no parameter (it learns only by Eqs. 16-21)."""
    torch.manual_seed(0)
    model = build_model(TINY)
    latents = []

    def keep(module, inputs, z):  # the encoder's output, its gradient kept
        z.retain_grad()
        latents.append(z)

    model.encoder.register_forward_hook(keep)
    out = model(torch.randn(4, 3, 32, 32))
    quantized = out.levels["vq"].quantized
    quantized.retain_grad()
    F.mse_loss(out.recon, torch.zeros_like(out.recon)).backward()
    (z,) = latents  # (B, d, h, w); the quantiser works channels-last
    assert quantized.grad.abs().sum() > 0 and torch.equal(z.grad.permute(0, 2, 3, 1), quantized.grad)
    first_conv = model.encoder[0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    codebook = model.levels["vq"].weight
    assert codebook.grad is None and not codebook.requires_grad
    assert all(p is not codebook for p in model.parameters())


def test_model_checkpoint_round_trip():
    """A trained model's state_dict (incl. the quantiser's t) loads into a fresh model (other seed) and the
    next training forward gives identical output and identical codebook updates."""
    torch.manual_seed(1)
    cfg = TINY.replace(neighbours="hard", grid_dim=2, tau=0.5)
    model = build_model(cfg)
    for _ in range(3):
        model(torch.randn(4, 3, 32, 32))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(2)
    fresh = build_model(cfg)
    fresh.load_state_dict(torch.load(buffer))
    assert int(fresh.levels["vq"].step) == 3
    x = torch.randn(4, 3, 32, 32)
    a, b = model(x), fresh(x)
    assert torch.equal(a.recon, b.recon)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


# ---------------------------------------------------------------- trainer


def test_reports_and_learning(baseline, photos):
    """60 steps with eval_every 20: 3 reports with the documented metrics; validation loss falls; the last
    report adds the summaries (best loss, total times = sums of the per-validation times, topography)."""
    result, reports, checkpoints = baseline
    assert result.status == "finished" and result.step == 60
    assert [s for s, _ in reports] == [20, 40, 60]
    series = {"val/loss", "train/loss", "train/commitment", "val/perplexity_vq", "val/codes_used_vq",
              "train/perplexity_vq", "train/codes_used_vq", "time/train_s", "time/val_s"}
    summaries = {"val/best_loss", "test/final_loss", "time/train_total_s", "time/val_total_s",
                 "topography/smoothness_vq"} | {f"topography/loss_offset_{o}" for o in range(4)}
    for _, m in reports:
        assert all(math.isfinite(m[key]) for key in series)
        assert 1.0 <= m["val/perplexity_vq"] <= m["val/codes_used_vq"] <= 64
    val = [m["val/loss"] for _, m in reports]
    improved = [v < min(val[:i], default=math.inf) for i, v in enumerate(val)]  # test/loss measured there only
    assert [set(m) for _, m in reports] == [series | ({"test/loss"} if better else set()) | (
        summaries if s == 60 else set()) for (s, _), better in zip(reports, improved)]
    last = reports[-1][1]
    assert val[-1] < val[0]
    assert last["val/best_loss"] == min(val) == result.best_val_loss
    assert last["time/train_total_s"] == pytest.approx(sum(m["time/train_s"] for _, m in reports))
    assert last["time/val_total_s"] == pytest.approx(sum(m["time/val_s"] for _, m in reports))
    assert sorted(checkpoints) == [20, 40, 60]


def test_reported_validation_metrics_recomputed(baseline, photos):
    """val/loss = mean squared error per element over all validation tiles (standardised), and
    val/perplexity = exp(-sum p log p) of the code counts over the whole set, recomputed from the checkpoint."""
    _, reports, checkpoints = baseline
    state = load_state(checkpoints[60])
    model = build_model(TINY)
    model.load_state_dict(state.model)
    model.eval()
    with torch.no_grad():
        x = photos.normalise(photos.val)
        out = model(x)
    sq = ((out.recon.double() - x.double()) ** 2).sum().item()
    counts = torch.bincount(out.levels["vq"].indices.flatten(), minlength=64).double()
    p = [c / counts.sum().item() for c in counts.tolist() if c > 0]
    metrics = dict(reports)[60]
    assert metrics["val/loss"] == pytest.approx(sq / x.numel(), rel=1e-5)
    assert metrics["val/perplexity_vq"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)), rel=1e-6)
    assert metrics["val/codes_used_vq"] == len(p)


def test_test_loss_is_the_one_at_the_step_validation_chose(photos):
    """A planted trial whose validation and test disagree (lr 1e-2: validation is lowest at step 20; the test
    loss of every checkpoint's model, recomputed, is lower at step 30): test/loss is measured only at the steps
    where validation fell (10, 20), as the test MSE of that step's model; the trial's test/final_loss, its
    TrainResult and its checkpoint hold step 20's, not the lower one the test split would have chosen, and a
    run resumed from step 20 ends with it too."""
    cfg = TINY.replace(lr=1e-2, steps=30, eval_every=10)
    result, reports, checkpoints = run(cfg, photos)
    val = {s: m["val/loss"] for s, m in reports}
    assert min(val, key=val.get) == 20 and val[30] > val[20]
    test = {}
    for step, raw in checkpoints.items():
        model = build_model(cfg)
        model.load_state_dict(load_state(raw).model)
        model.eval()
        with torch.no_grad():
            x = photos.normalise(photos.test)
            test[step] = F.mse_loss(model(x).recon, x).item()
    assert test[30] < test[20]  # the test split would choose step 30
    assert [s for s, m in reports if "test/loss" in m] == [10, 20]
    for step in (10, 20):
        assert dict(reports)[step]["test/loss"] == pytest.approx(test[step], rel=1e-5)
    chosen = dict(reports)[20]["test/loss"]
    assert reports[-1][1]["test/final_loss"] == chosen == result.test_loss == load_state(checkpoints[30]).test_loss
    assert load_state(checkpoints[20]).test_loss == chosen
    resumed, _, _ = run(cfg, photos, resume=load_state(checkpoints[20]))
    assert resumed.test_loss == pytest.approx(chosen, rel=1e-6)


def test_checkpoint_contents(baseline):
    """The checkpoint holds model, optimiser, generator, step, config and the validation's metrics; the
    quantiser's t equals the number of training steps (validation does not advance it)."""
    _, reports, checkpoints = baseline
    state = load_state(checkpoints[20])
    assert state.step == 20 and state.config == TINY.to_params() and state.metrics == dict(reports)[20]
    assert int(state.model["levels.vq.step"]) == 20
    assert int(load_state(checkpoints[60]).model["levels.vq.step"]) == 60
    assert state.best_val_loss == dict(reports)[20]["val/loss"] and state.optimizer["state"]


def test_a_checkpoint_saved_as_the_old_dict_resumes(baseline, photos):
    """A state.pt written before the checkpoint was a record (a plain dict of the same nine keys, as
    torch.save of the trainer's dict wrote it) loads and resumes exactly; a file without them is refused."""
    _, reports, checkpoints = baseline
    state = load_state(checkpoints[40])
    buffer = io.BytesIO()
    torch.save({"model": state.model, "optimizer": state.optimizer, "generator": state.generator, "step": 40,
                "best_val_loss": state.best_val_loss, "train_time": state.train_time, "eval_time": state.eval_time,
                "config": state.config, "metrics": state.metrics}, buffer)
    old = load_state(buffer.getvalue())
    assert old.history == []  # it had none; a resumed multi-worker trial re-reports its own metrics then
    _, resumed, _ = run(TINY, photos, resume=old)
    assert [s for s, _ in resumed] == [60]
    assert comparable(resumed[0][1]) == pytest.approx(comparable(dict(reports)[60]), rel=1e-6, abs=1e-9)
    buffer = io.BytesIO()
    torch.save({"model": state.model, "step": 40}, buffer)
    with pytest.raises(ValueError, match="not a trainer checkpoint: it lacks .'optimizer', 'generator'"):
        load_state(buffer.getvalue())


def test_reports_say_how_the_trial_stands(photos):
    """Every report but the last says running, the last finished; a run that diverges ends with a report
    that says diverged and carries no state."""
    statuses = []

    def report(progress: Progress):
        statuses.append((progress.step, progress.status, progress.state is not None))

    train(TINY.replace(steps=40), report=report, data=photos, device="cpu")
    train(TINY.replace(lr=1e12, steps=20, eval_every=10), report=report, data=photos, device="cpu")
    (diverged_at, _, _) = statuses[-1]
    assert statuses == [(20, "running", True), (40, "finished", True), (diverged_at, "diverged", False)]


def test_same_seed_same_metrics(baseline, photos):
    """Two runs with the same config and seed report identical metrics (CPU determinism)."""
    _, reports, _ = baseline
    _, again, _ = run(TINY, photos)
    assert [(s, comparable(m)) for s, m in again] == [(s, comparable(m)) for s, m in reports]


def test_other_seed_other_metrics(baseline, photos):
    """The seed matters: another seed gives other metrics."""
    _, reports, _ = baseline
    _, other, _ = run(TINY.replace(seed=1, steps=20), photos)
    assert other[0][1]["val/loss"] != reports[0][1]["val/loss"]


def test_resume_continues_exactly(baseline, photos):
    """Resuming from the step-20 checkpoint reports the same metrics at steps 40 and 60 as the uninterrupted run."""
    _, reports, checkpoints = baseline
    result, resumed, _ = run(TINY, photos, resume=load_state(checkpoints[20]))
    assert result.status == "finished" and result.step == 60
    assert [s for s, _ in resumed] == [40, 60]
    expected = dict(reports)
    for step, m in resumed:
        want = comparable(expected[step])
        got = comparable(m)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), (step, k)


def test_checkpoints_hold_every_validation_so_far_across_a_resume(baseline, photos):
    """Each checkpoint's history is (step, metrics) of every validation up to it, as reported, so a resumed
    multi-worker trial can report again what its killed driver never got; a resumed run's checkpoints
    continue the history of the one it resumed from."""
    _, reports, checkpoints = baseline
    for step in (20, 40, 60):
        history = load_state(checkpoints[step]).history
        assert history == [(s, m) for s, m in reports if s <= step]
    _, _, after = run(TINY, photos, resume=load_state(checkpoints[20]))
    history = load_state(after[60]).history
    assert [s for s, _ in history] == [20, 40, 60] and history[0] == reports[0]
    assert comparable(history[2][1]) == pytest.approx(comparable(reports[2][1]), rel=1e-6, abs=1e-9)


def test_resume_with_kmeans_init_continues_exactly(photos):
    """codebook_init kmeans: the resumed trial restores the k-means flag with the codebook and does not run
    k-means again on its first batch: the same metrics at step 40 as the uninterrupted run."""
    cfg = TINY.replace(codebook_init="kmeans", steps=40)
    _, reports, checkpoints = run(cfg, photos)
    assert bool(load_state(checkpoints[20]).model["levels.vq.initialised"])
    _, resumed, _ = run(cfg, photos, resume=load_state(checkpoints[20]))
    assert [s for s, _ in resumed] == [40]
    want, got = comparable(dict(reports)[40]), comparable(resumed[0][1])
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), k


def test_divergence_is_reported(photos):
    """A huge learning rate makes the loss non-finite: status "diverged"; the one report holds the non-finite
    training loss (no summaries)."""
    cfg = TINY.replace(lr=1e12, steps=20, eval_every=10)
    result, reports, checkpoints = run(cfg, photos)
    assert result.status == "diverged"
    assert 1 <= result.step < cfg.eval_every  # stopped at the first non-finite training loss, not at validation
    assert len(reports) == 1 and not checkpoints  # no checkpoint of a diverged state
    step, metrics = reports[0]
    assert step == result.step and set(metrics) == {"train/loss"}
    assert not math.isfinite(metrics["train/loss"])


def test_ksom_hard_2d_trains(photos):
    """KSOM (hard neighbourhood on the 8x8 grid) trains: finite reports, validation loss falls, t counts steps."""
    cfg = TINY.replace(neighbours="hard", grid_dim=2, tau=0.1)
    result, reports, checkpoints = run(cfg, photos)
    assert result.status == "finished"
    val = [m["val/loss"] for _, m in reports]
    assert all(math.isfinite(v) for v in val) and val[-1] < val[0]
    assert int(load_state(checkpoints[60]).model["levels.vq.step"]) == 60


# ---------------------------------------------------------------- precision and memory format


def test_bf16_training_close_to_fp32(baseline, photos):
    """precision=bf16 (run here through the trainer's CPU autocast, which train() itself refuses): 60 steps
    report validation losses within 2 % of float32's and are not the same
    numbers (autocast did run); the codebook stays float32."""
    from models.train import _train
    reports, states = [], {}
    cfg = TINY.replace(precision="bf16")
    [result] = _train([cfg], [lambda p: (reports.append((p.step, dict(p.metrics))), states.update({p.step: p.state}))],
                      [None], photos, torch.device("cpu"))
    assert result.status == "finished"
    fp32 = dict(baseline[1])
    assert [s for s, _ in reports] == [20, 40, 60]
    for step, m in reports:
        assert m["val/loss"] == pytest.approx(fp32[step]["val/loss"], rel=0.02), step
        assert m["train/loss"] == pytest.approx(fp32[step]["train/loss"], rel=0.02), step
    assert any(m["val/loss"] != fp32[step]["val/loss"] for step, m in reports)
    assert states[60].model["levels.vq.weight"].dtype == torch.float32


def test_bf16_refused_on_cpu(capsys):
    """train() refuses precision=bf16 on a CPU device with one line, before any work; so does the command line."""
    from models.config import ConfigError
    from models.train import main
    with pytest.raises(ConfigError, match=r"^precision=bf16 needs a CUDA device, got cpu; allowed on the CPU: fp32$"):
        train(TINY.replace(precision="bf16"), data=None, device="cpu")  # data=None: refused before loading any
    if not torch.cuda.is_available():
        assert main(["precision=bf16", "steps=1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "precision=bf16 needs a CUDA device" in err


def test_channels_last_same_result_other_layout(baseline, photos):
    """channels_last=True stores the conv weights channels-last (the checkpoint shows it) and reports the
    same metrics as the default layout up to float rounding."""
    _, reports, checkpoints = baseline
    _, other, other_checkpoints = run(TINY.replace(channels_last=True), photos)
    weight = load_state(other_checkpoints[60]).model["encoder.0.weight"]
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert load_state(checkpoints[60]).model["encoder.0.weight"].is_contiguous()
    expected = dict(reports)
    for step, m in other:
        for k, v in comparable(expected[step]).items():
            assert m[k] == pytest.approx(v, rel=1e-5, abs=1e-7), (step, k)
