"""KohonenQuantizer: assignment, straight-through output, EMA-VQ / KSOM updates (paper Eqs. 12, 15-21)."""
from __future__ import annotations

import io
import math

import pytest
import torch

from models.neighbourhood import Neighbourhood
from models.quantizer import KohonenQuantizer

GAMMA, EPS = 0.99, 1e-5


def make_vq(weight, ema_sum=None, ema_count=None, dtype=torch.float64, **kwargs) -> KohonenQuantizer:
    """A quantiser whose buffers are set by hand (weight w, EMA sum m, EMA count N)."""
    weight = torch.as_tensor(weight, dtype=dtype)
    vq = KohonenQuantizer(weight.shape[0], weight.shape[1], **kwargs).to(dtype)
    with torch.no_grad():
        vq.weight.copy_(weight)
        vq.ema_sum.copy_(weight if ema_sum is None else torch.as_tensor(ema_sum, dtype=dtype))
        if ema_count is not None:
            vq.ema_count.copy_(torch.as_tensor(ema_count, dtype=dtype))
    return vq


def snapshot(vq: KohonenQuantizer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in vq.state_dict().items()}


def reference_update(w, m, n_count, e, a, gamma, eps, update_empty):
    """One step of Eqs. 12 and 19-21 with plain Python loops; returns (indices, w, m, N) as lists.

    a[j][k] is A^(t-1)_{j,k}; with a = I this is EMA-VQ (Eqs. 16-18).
    """
    k_total, d = len(w), len(w[0])
    idx = [min(range(k_total), key=lambda k: sum((ei[c] - w[k][c]) ** 2 for c in range(d))) for ei in e]  # Eq. 12
    counts = [0.0] * k_total
    sums = [[0.0] * d for _ in range(k_total)]
    for ei, k in zip(e, idx):
        counts[k] += 1.0
        for c in range(d):
            sums[k][c] += ei[c]
    s = [sum(a[j][k] * counts[j] for j in range(k_total)) for k in range(k_total)]  # Eq. 20
    big_m = [[sum(a[j][k] * sums[j][c] for j in range(k_total)) for c in range(d)] for k in range(k_total)]  # Eq. 19
    new_n = [gamma * n_count[k] + (1 - gamma) * s[k] for k in range(k_total)]
    new_m = [[gamma * m[k][c] + (1 - gamma) * big_m[k][c] for c in range(d)] for k in range(k_total)]
    if update_empty:
        total = sum(new_n)
        new_n = [(x + eps) * total / (total + k_total * eps) for x in new_n]  # Laplace smoothing
        new_w = [[new_m[k][c] / new_n[k] for c in range(d)] for k in range(k_total)]  # Eq. 21
        return idx, new_w, new_m, new_n
    out_w, out_m, out_n = [list(r) for r in w], [list(r) for r in m], list(n_count)
    for k in range(k_total):
        if s[k] > 0:
            out_n[k], out_m[k] = new_n[k], new_m[k]
            out_w[k] = [new_m[k][c] / new_n[k] for c in range(d)]
    return idx, out_w, out_m, out_n


# ---------------------------------------------------------------- EMA-VQ by hand (Eqs. 16-18)


def test_ema_vq_step_by_hand():
    """neighbours = none: one update is Eqs. 16-18 plus Laplace smoothing, numbers worked out by hand."""
    w0 = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]
    m0 = [[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]
    n0 = [1.0, 2.0, 1.0, 1.0]
    e = torch.tensor([[0.1, 0.0], [0.9, 0.2], [1.2, -0.1], [0.0, 0.8]], dtype=torch.float64)
    vq = make_vq(w0, m0, n0, neighbours="none", decay=0.9, eps=EPS)
    out = vq(e)
    assert out.indices.tolist() == [0, 1, 1, 2]  # Eq. 12
    # counts c = (1, 2, 1, 0); sums S_0 = (0.1, 0), S_1 = (2.1, 0.1), S_2 = (0, 0.8), S_3 = (0, 0)
    n_ema = [0.9 * 1 + 0.1 * 1, 0.9 * 2 + 0.1 * 2, 0.9 * 1 + 0.1 * 1, 0.9 * 1 + 0.1 * 0]  # Eq. 17 = (1, 2, 1, .9)
    total = 4.9
    n_new = [(x + EPS) * total / (total + 4 * EPS) for x in n_ema]
    m_new = [[0.01, 0.0], [0.9 * 2 + 0.21, 0.01], [0.0, 0.9 + 0.08], [4.5, 4.5]]  # Eq. 16
    w_new = [[m_new[k][c] / n_new[k] for c in range(2)] for k in range(4)]  # Eq. 18
    assert torch.allclose(vq.ema_count, torch.tensor(n_new, dtype=torch.float64), rtol=1e-13, atol=0)
    assert torch.allclose(vq.ema_sum, torch.tensor(m_new, dtype=torch.float64), rtol=1e-13, atol=1e-15)
    assert torch.allclose(vq.weight, torch.tensor(w_new, dtype=torch.float64), rtol=1e-13, atol=1e-15)
    assert vq.ema_count.sum().item() == pytest.approx(total, rel=1e-13)  # smoothing keeps n = sum N


def test_ema_vq_step_by_hand_without_update_empty():
    """update_empty = False: codes with c_k > 0 follow Eqs. 16-18 without smoothing; code 3 (unused) keeps N, m, w."""
    w0 = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]
    m0 = [[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [4.0, 4.0]]
    e = torch.tensor([[0.1, 0.0], [0.9, 0.2], [1.2, -0.1], [0.0, 0.8]], dtype=torch.float64)
    vq = make_vq(w0, m0, [1.0, 2.0, 1.0, 3.0], neighbours="none", decay=0.9, update_empty=False)
    vq(e)
    expected_n = [1.0, 2.0, 1.0, 3.0]  # 0.9 N + 0.1 c happens to equal N for the used codes here
    expected_m = [[0.01, 0.0], [2.01, 0.01], [0.0, 0.98], [4.0, 4.0]]
    expected_w = [[0.01, 0.0], [1.005, 0.005], [0.0, 0.98], [5.0, 5.0]]
    assert torch.allclose(vq.ema_count, torch.tensor(expected_n, dtype=torch.float64), rtol=1e-14)
    assert torch.allclose(vq.ema_sum, torch.tensor(expected_m, dtype=torch.float64), rtol=1e-13, atol=1e-15)
    assert torch.allclose(vq.weight, torch.tensor(expected_w, dtype=torch.float64), rtol=1e-13, atol=1e-15)


def test_ema_vq_float32_default_matches_reference():
    """The default float32 quantiser follows Eqs. 16-18 (loop reference) to float32 precision."""
    torch.manual_seed(3)
    vq = KohonenQuantizer(16, 4)
    w, m, n = vq.weight.tolist(), vq.ema_sum.tolist(), vq.ema_count.tolist()
    e = torch.randn(32, 4)
    eye = torch.eye(16).tolist()
    idx, w1, m1, n1 = reference_update(w, m, n, e.double().tolist(), eye, GAMMA, EPS, True)
    out = vq(e)
    assert out.indices.tolist() == idx
    assert torch.allclose(vq.ema_count.double(), torch.tensor(n1, dtype=torch.float64), rtol=1e-5)
    assert torch.allclose(vq.ema_sum.double(), torch.tensor(m1, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    assert torch.allclose(vq.weight.double(), torch.tensor(w1, dtype=torch.float64), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- KSOM (Eqs. 19-21)


@pytest.mark.parametrize("kind,form,grid", [
    ("hard", "paper", (12,)),
    ("hard", "paper", (4, 3)),
    ("gaussian", "paper", (12,)),
    ("gaussian", "paper", (4, 3)),
    ("gaussian", "paper", (2, 6)),
    ("gaussian", "released", (4, 3)),
    ("none", "paper", (4, 3)),
])
@pytest.mark.parametrize("update_empty", [True, False])
def test_ksom_updates_match_loop_reference(kind, form, grid, update_empty, ref_matrix):
    """Several consecutive KSOM steps equal a loop implementation of Eqs. 19-21 with A^(t) from the grid,
    where t is the number of previous training updates (starting here at t = 2)."""
    gen = torch.Generator().manual_seed(7)
    w0 = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    vq = make_vq(w0, w0 * 1.5, torch.full((12,), 1.5), neighbours=kind, grid=grid, tau=0.4,
                 gaussian_form=form, update_empty=update_empty, n0=1)
    vq.set_step(2)
    w, m, n = w0.tolist(), (w0 * 1.5).tolist(), [1.5] * 12
    for t in (2, 3, 4):
        e = torch.randn(10, 3, generator=gen, dtype=torch.float64) * 1.2
        a = ref_matrix(kind, grid, t, 0.4, form).tolist()
        idx, w, m, n = reference_update(w, m, n, e.tolist(), a, GAMMA, EPS, update_empty)
        out = vq(e)
        assert out.indices.tolist() == idx
        assert int(vq.step) == t + 1
        assert torch.allclose(vq.ema_count, torch.tensor(n, dtype=torch.float64), rtol=1e-12, atol=1e-15)
        assert torch.allclose(vq.ema_sum, torch.tensor(m, dtype=torch.float64), rtol=1e-12, atol=1e-14)
        assert torch.allclose(vq.weight, torch.tensor(w, dtype=torch.float64), rtol=1e-11, atol=1e-13)


def test_hard_2d_figure1_moves_exactly_nine_codes():
    """Figure 1: hard 2D, t = 0, one vector nearest to code (2, 2) of the 4x6 grid moves that code and its
    eight neighbours, each to w <- gamma w + (1 - gamma) e (N = n0 = 1); all other codes keep N, m, w."""
    grid = (6, 4)
    coords = [(k % 6, k // 6) for k in range(24)]
    w0 = torch.tensor([[10.0 * x, 10.0 * y] for x, y in coords], dtype=torch.float64)
    vq = make_vq(w0, neighbours="hard", grid=grid, update_empty=False, n0=1)
    before = snapshot(vq)
    e = torch.tensor([[20.3, 19.8]], dtype=torch.float64)
    out = vq(e)
    assert out.indices.tolist() == [14]  # G(14) = (2, 2)
    block = {k for k, (x, y) in enumerate(coords) if abs(x - 2) <= 1 and abs(y - 2) <= 1}
    assert block == {7, 8, 9, 13, 14, 15, 19, 20, 21}
    moved = {k for k in range(24) if not torch.equal(vq.weight[k], before["weight"][k])}
    assert moved == block
    # the dense matrix agrees: row 14 of A^(0) is non-zero exactly on the block
    assert set(torch.nonzero(Neighbourhood("hard", grid).matrix(0)[14]).flatten().tolist()) == block
    for k in range(24):
        if k in block:  # s_k = 1: N = 0.99 * 1 + 0.01 * 1 = 1, m = 0.99 m0 + 0.01 e
            expected = GAMMA * w0[k] + (1 - GAMMA) * e[0]
            assert torch.allclose(vq.weight[k], expected, rtol=1e-14, atol=1e-14)
            assert vq.ema_count[k].item() == pytest.approx(1.0, rel=1e-15)
        else:
            assert torch.equal(vq.ema_count[k], before["ema_count"][k])
            assert torch.equal(vq.ema_sum[k], before["ema_sum"][k])
            assert torch.equal(vq.weight[k], before["weight"][k])


@pytest.mark.parametrize("target,expected", [(4, {3, 4, 5}), (0, {0, 1}), (9, {8, 9})])
def test_hard_1d_moves_two_neighbours(target, expected):
    """Hard 1D, t = 0: the winner and its two grid neighbours move (one at the ends, no wrap-around)."""
    w0 = torch.arange(10, dtype=torch.float64)[:, None] * torch.tensor([[10.0, 0.0]], dtype=torch.float64)
    vq = make_vq(w0, neighbours="hard", grid=(10,), update_empty=False)
    before = vq.weight.clone()
    out = vq(torch.tensor([[10.0 * target + 0.4, 1.0]], dtype=torch.float64))
    assert out.indices.tolist() == [target]
    moved = {k for k in range(10) if not torch.equal(vq.weight[k], before[k])}
    assert moved == expected


# ---------------------------------------------------------------- n0 = 0 (Sec. 3.3)


def test_n0_zero_update_empty_blows_up_unused_code():
    """n0 = 0, update_empty: a code with s_k = 0 gets N_k = eps n / (n + K eps) and m_k = gamma m0,
    so w_k = gamma m0 / N_k ~ 1e5 m0 (Sec. 3.3), and it is never chosen again."""
    torch.manual_seed(0)
    vq = KohonenQuantizer(4, 2, neighbours="none", n0=0, update_empty=True)  # float32, as in training
    assert torch.equal(vq.ema_count, torch.zeros(4))
    with torch.no_grad():
        vq.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, -2.0], [-1.5, 0.5]]))
        vq.ema_sum.copy_(vq.weight)
    m0 = vq.ema_sum.clone()
    out = vq(torch.tensor([[0.1, 0.1], [0.9, 1.2]]))
    assert out.indices.tolist() == [0, 1]
    n = 2 * (1 - GAMMA)  # sum of N after Eq. 17: 0.01 + 0.01
    n_unused = EPS * n / (n + 4 * EPS)  # ~ 9.98e-6
    n_used = ((1 - GAMMA) + EPS) * n / (n + 4 * EPS)
    assert vq.ema_count.tolist() == pytest.approx([n_used, n_used, n_unused, n_unused], rel=1e-5)
    for k in (2, 3):
        assert torch.allclose(vq.ema_sum[k], GAMMA * m0[k], rtol=1e-6)
        expected_w = [GAMMA * v / n_unused for v in m0[k].tolist()]  # ~ 99198 * m0
        assert vq.weight[k].tolist() == pytest.approx(expected_w, rel=1e-5)
        assert 9e4 < vq.weight[k].norm().item() / m0[k].norm().item() < 1.1e5
    later = vq(torch.randn(256, 2) * 3)
    assert not set(later.indices.tolist()) & {2, 3}  # unreachable


@pytest.mark.parametrize("kind,grid", [("none", (6,)), ("hard", (6,))])
def test_n0_zero_without_update_empty_unused_codes_never_change(kind, grid):
    """n0 = 0, update_empty = False: codes with s_k = 0 keep weight, ema_sum and ema_count over many steps."""
    torch.manual_seed(1)
    vq = KohonenQuantizer(6, 2, neighbours=kind, grid=grid, n0=0, update_empty=False)
    with torch.no_grad():
        vq.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [20.0, 0.0], [30.0, 0.0], [40.0, 0.0], [50.0, 0.0]]))
        vq.ema_sum.copy_(vq.weight)
    start = snapshot(vq)
    # inputs near codes 0 and 1 only; with hard 1D code 2 is a neighbour of 1 and does receive s_2 > 0
    fixed = {2, 3, 4, 5} if kind == "none" else {3, 4, 5}
    for _ in range(6):
        vq(torch.rand(16, 2) * 0.8)
        for name in ("weight", "ema_sum", "ema_count"):
            for k in fixed:
                assert torch.equal(getattr(vq, name)[k], start[name][k]), (name, k)
    assert int(vq.step) == 6
    assert not torch.equal(vq.weight[0], start["weight"][0])
    assert vq.ema_count[0].item() > 0
    if kind == "hard":
        assert not torch.equal(vq.weight[2], start["weight"][2])  # moved as a neighbour


# ---------------------------------------------------------------- forward contract


def test_step_counter_and_eval_mode_freeze():
    """t counts training updates only (+1 per training forward); eval mode changes no buffer at all."""
    torch.manual_seed(2)
    vq = KohonenQuantizer(16, 4, neighbours="hard", grid=(4, 4))
    assert int(vq.step) == 0
    for i in range(3):
        vq(torch.randn(8, 4))
        assert int(vq.step) == i + 1
    vq.eval()
    before = snapshot(vq)
    for _ in range(3):
        vq(torch.randn(8, 4))
    after = snapshot(vq)
    assert before.keys() == after.keys() == {"weight", "ema_sum", "ema_count", "step"}
    for k in before:
        assert torch.equal(before[k], after[k]), k
    vq.train()
    vq(torch.randn(8, 4))
    assert int(vq.step) == 4


def test_quantized_is_codebook_before_update_and_nearest():
    """Forward returns w[k*] of the codebook BEFORE this step's update, k* = argmin ||e - w_k||^2 (Eq. 12)."""
    torch.manual_seed(4)
    vq = KohonenQuantizer(32, 5, neighbours="gaussian", grid=(8, 4))
    e = torch.randn(3, 7, 5)
    w_before = vq.weight.clone()
    out = vq(e)
    assert out.quantized.shape == (3, 7, 5) and out.indices.shape == (3, 7)
    dist = [[sum((a - b) ** 2 for a, b in zip(row, code)) for code in w_before.tolist()]
            for row in e.reshape(-1, 5).tolist()]
    assert out.indices.flatten().tolist() == [min(range(32), key=d.__getitem__) for d in dist]
    assert torch.allclose(out.quantized, w_before[out.indices], atol=1e-6)
    assert not torch.allclose(vq.weight, w_before)  # the update did happen, after the lookup


def test_straight_through_gradient_and_commitment():
    """out = e + sg(q - e): d out / d e is the identity; commitment = mean (q - e)^2 per element (Eq. 15)
    with gradient 2 (e - q) / numel to e only (sg on the code)."""
    torch.manual_seed(5)
    vq = KohonenQuantizer(8, 3)
    vq.eval()
    e = torch.randn(2, 5, 3, dtype=torch.float32, requires_grad=True)
    out = vq(e)
    q = vq.weight[out.indices].detach()
    r = torch.randn(2, 5, 3)
    (grad,) = torch.autograd.grad((out.quantized * r).sum(), e)
    assert torch.equal(grad, r)
    expected = sum((a - b) ** 2 for a, b in zip(q.flatten().tolist(), e.detach().flatten().tolist())) / 30
    assert out.commitment_loss.item() == pytest.approx(expected, rel=1e-6)
    (grad_c,) = torch.autograd.grad(out.commitment_loss, e)
    assert torch.allclose(grad_c, 2 * (e.detach() - q) / 30, atol=1e-7)
    assert not any(b.requires_grad for b in vq.buffers())
    assert list(vq.parameters()) == []  # the codebook learns only through the EMA update


@pytest.mark.parametrize("assign,expected_ppl,expected_used", [
    ([0, 0, 1, 1], 2.0, 2),
    ([0, 0, 0, 0], 1.0, 1),
    ([0, 1, 2, 3], 4.0, 4),
    ([2, 2, 2, 3], math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), 2),
])
def test_perplexity_and_codes_used(assign, expected_ppl, expected_used):
    """Perplexity = exp(-sum p log p), p_k = c_k / n (Appendix B.1, with the sign fixed); codes used = #{c_k > 0}."""
    w = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    vq = make_vq(w, dtype=torch.float32)
    vq.eval()
    out = vq(w[assign] + 0.1)
    assert out.indices.tolist() == assign
    assert out.perplexity.item() == pytest.approx(expected_ppl, rel=1e-6)
    assert int(out.codes_used) == expected_used


def test_initial_state():
    """Init: w ~ N(0, 1), m = w (a separate copy), N = n0, t = 0."""
    torch.manual_seed(6)
    for n0 in (0, 1):
        vq = KohonenQuantizer(512, 64, n0=n0)
        assert torch.equal(vq.ema_sum, vq.weight)
        assert vq.ema_sum.data_ptr() != vq.weight.data_ptr()
        assert torch.equal(vq.ema_count, torch.full((512,), float(n0)))
        assert int(vq.step) == 0
        assert abs(vq.weight.mean().item()) < 0.02 and abs(vq.weight.std().item() - 1) < 0.02


def test_invalid_arguments():
    """Bad K/grid, n0, decay, eps, input dim and search budget raise ValueError naming the value."""
    with pytest.raises(ValueError, match="codebook_size=24"):
        KohonenQuantizer(24, 4, grid=(5, 4))
    with pytest.raises(ValueError, match="n0=2"):
        KohonenQuantizer(8, 4, n0=2)
    with pytest.raises(ValueError, match="decay=1"):
        KohonenQuantizer(8, 4, decay=1.0)
    with pytest.raises(ValueError, match="eps=0"):
        KohonenQuantizer(8, 4, eps=0.0)
    with pytest.raises(ValueError, match="dim=4"):
        KohonenQuantizer(8, 4)(torch.randn(3, 5))
    with pytest.raises(ValueError, match="search_budget=0"):
        KohonenQuantizer(8, 4, search_budget=0)


# ---------------------------------------------------------------- checkpoints


class _HostReads(torch.overrides.TorchFunctionMode):
    """Records every read of a tensor's value into Python (on a GPU each one makes the host wait)."""
    READS = {torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__bool__, torch.Tensor.item,
             torch.Tensor.tolist, torch.Tensor.__index__}

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("neighbours,form", [("none", "paper"), ("hard", "paper"), ("gaussian", "paper"),
                                            ("gaussian", "released")])
def test_a_training_step_reads_no_tensor_into_python(neighbours, form):
    """A quantiser's forward and update never read a tensor's value on the host, t included (the neighbourhood
    is computed from the step counter where it is; the Gaussian kernel's length is fixed by the grid and dtype,
    the matrix of the released form is built where the codes are), so on a GPU a step never waits for the
    device and can be captured as a CUDA graph."""
    torch.manual_seed(3)
    vq = KohonenQuantizer(16, 4, neighbours=neighbours, grid=(4, 4), tau=0.5, gaussian_form=form)
    vq(torch.randn(8, 4))  # the first forward may set things up
    with _HostReads() as mode:
        for _ in range(3):
            vq(torch.randn(8, 4))
    assert mode.reads == [] and int(vq.step) == 4
    with _HostReads() as mode:
        int(vq.step)
    assert mode.reads == ["__int__"]  # the probe sees a read
    vq.set_step(7)
    assert int(vq.step) == 7


def test_state_dict_round_trip_continues_identically():
    """A trained quantiser's state (w, m, N and t) loads into a fresh one (other seed): identical buffers
    and identical subsequent updates (t matters: the hard neighbourhood shrinks with it)."""
    torch.manual_seed(10)
    vq = KohonenQuantizer(16, 3, neighbours="hard", grid=(4, 4), tau=0.5, n0=0)
    for _ in range(5):
        vq(torch.randn(12, 3))
    buffer = io.BytesIO()
    torch.save(vq.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(99)
    fresh = KohonenQuantizer(16, 3, neighbours="hard", grid=(4, 4), tau=0.5, n0=0)
    assert not torch.equal(fresh.weight, vq.weight)
    fresh.load_state_dict(torch.load(buffer))
    assert int(fresh.step) == 5
    for k, v in vq.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    for _ in range(3):
        e = torch.randn(12, 3)
        a, b = vq(e), fresh(e)
        assert torch.equal(a.indices, b.indices) and torch.equal(a.quantized, b.quantized)
        for k, v in vq.state_dict().items():
            assert torch.equal(fresh.state_dict()[k], v), k


@pytest.mark.parametrize("budget", [4, 8, 12, 40, 10**9])
def test_nearest_in_tiles_by_hand(budget):
    """The search in tiles of `budget` bytes (down to 1 code x 1 row) finds the nearest code of Eq. 12,
    the lowest k on a tie (codes 1 and 3 are equal; [1, 1] is as far from codes 0, 1, 2 and 3)."""
    vq = KohonenQuantizer(4, 2, search_budget=budget)
    with torch.no_grad():
        vq.weight.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]))
    e = torch.tensor([[1.9, 0.1], [0.1, 0.2], [0.2, 1.7], [1.0, 1.0], [3.0, -1.0]])
    assert vq.nearest(e).tolist() == [1, 0, 2, 0, 1]


def test_nearest_in_tiles_equals_brute_force():
    """Random codebook and inputs: every tile size gives argmin_k ||e - w_k||^2 computed in float64."""
    torch.manual_seed(5)
    e = torch.randn(300, 6)
    for budget in (4, 64, 1000, 4096, 1 << 20):
        vq = KohonenQuantizer(50, 6, search_budget=budget)
        want = torch.cdist(e.double(), vq.weight.double()).argmin(1)
        assert torch.equal(vq.nearest(e), want), budget


@pytest.mark.parametrize("kwargs", [dict(neighbours="none"), dict(neighbours="hard", grid=(8, 8)),
                                    dict(neighbours="gaussian", grid=(8, 8))])
def test_update_bitwise_the_same_under_autocast(kwargs):
    """Mixed precision (TrialConfig.precision=bf16) never reaches the quantiser: under bfloat16 autocast its
    search, codebook update, commitment loss and outputs are bitwise those without autocast, for a float32
    input and for a bfloat16 one (cast in to float32; `quantized` cast out to bfloat16)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 4, 4, 16, generator=generator) * 2
    for x in (inputs, inputs.bfloat16()):
        plain, mixed = KohonenQuantizer(64, 16, **kwargs), KohonenQuantizer(64, 16, **kwargs)
        mixed.load_state_dict(plain.state_dict())
        for _ in range(3):  # three training steps: t and the neighbourhood move on
            want = plain(x.float())
            with torch.autocast("cpu", dtype=torch.bfloat16):
                searched = mixed.nearest(x.reshape(-1, 16))  # before this step's update, as the forward's
                got = mixed(x)
            assert torch.equal(got.indices, want.indices) and torch.equal(searched, want.indices.flatten())
            assert got.quantized.dtype == x.dtype
            assert torch.equal(got.quantized, want.quantized.to(x.dtype))
            assert got.commitment_loss.dtype == torch.float32
            assert torch.equal(got.commitment_loss, want.commitment_loss)
            assert torch.equal(got.perplexity, want.perplexity)
        for name, value in plain.state_dict().items():
            assert torch.equal(mixed.state_dict()[name], value), name


# ---------------------------------------------------------------- initial codebook (codebook_init)


def test_initial_codebook_per_option():
    """randn: N(0, 1). uniform: U(-b, b) with b = sqrt(6 / (K d)) = sqrt(6 / 32768) = 0.013532 for K 512, d 64,
    the bound of vector-quantize-pytorch's own kaiming-uniform draw; std b / sqrt(3). kmeans: randn until the
    first training batch (not in eval mode). Always m = w and N = n0."""
    from vector_quantize_pytorch.vector_quantize_pytorch import uniform_init
    torch.manual_seed(0)
    randn = KohonenQuantizer(512, 64, codebook_init="randn")
    assert abs(randn.weight.mean().item()) < 0.02 and abs(randn.weight.std().item() - 1) < 0.02
    uniform = KohonenQuantizer(512, 64, codebook_init="uniform", n0=0)
    b = 0.013532
    assert b * 0.999 < uniform.weight.abs().max().item() <= b
    assert abs(uniform.weight.mean().item()) < 0.01 * b
    assert uniform.weight.std().item() == pytest.approx(b / math.sqrt(3), rel=0.01)
    library = uniform_init(1, 512, 64)
    assert b * 0.999 < library.abs().max().item() <= b
    assert library.std().item() == pytest.approx(b / math.sqrt(3), rel=0.01)
    assert torch.equal(uniform.ema_sum, uniform.weight) and torch.equal(uniform.ema_count, torch.zeros(512))
    kmeans = KohonenQuantizer(512, 64, codebook_init="kmeans")
    assert not bool(kmeans.initialised) and abs(kmeans.weight.std().item() - 1) < 0.02
    before = kmeans.weight.clone()
    kmeans.eval()(torch.randn(100, 64))
    assert not bool(kmeans.initialised) and torch.equal(kmeans.weight, before)  # eval mode does not initialise
    with pytest.raises(ValueError, match="codebook_init='zeros' is unknown; allowed: randn, uniform, kmeans"):
        KohonenQuantizer(8, 4, codebook_init="zeros")


@pytest.mark.parametrize("seed", range(6))
def test_kmeans_init_on_a_tiny_batch_by_hand(seed):
    """Rows 0, 1, 10, 12 (d = 1), K = 2: whichever two rows the draw picks, Lloyd ends at {0.5, 11} within
    three steps (by hand: e.g. from (10, 12): {0, 1, 10} -> 3.67, {12} -> 12; then {0, 1} -> 0.5, {10, 12} -> 11).
    The first training batch is quantised with those centroids (0, 1 -> 0.5; 10, 12 -> 11); the update that
    follows keeps them (each centroid is its rows' mean, and both codes get two rows, so N stays equal across
    codes and the smoothing changes nothing): w = m / N = the centroids. m^(0) = w^(0), then one EMA step."""
    torch.manual_seed(seed)
    vq = KohonenQuantizer(2, 1, codebook_init="kmeans", n0=1).double()
    rows = torch.tensor([[0.0], [1.0], [10.0], [12.0]], dtype=torch.float64)
    out = vq(rows)
    assert bool(vq.initialised)
    c = vq.weight[:, 0]
    lo, hi = int(c.argmin()), int(c.argmax())
    assert c[lo].item() == pytest.approx(0.5) and c[hi].item() == pytest.approx(11.0)
    assert out.indices.tolist() == [lo, lo, hi, hi]
    assert out.quantized[:, 0].tolist() == pytest.approx([0.5, 0.5, 11.0, 11.0])
    g = 0.99
    count = g * 1 + (1 - g) * 2  # N = g n0 + (1 - g) * 2 rows
    assert vq.ema_count.tolist() == pytest.approx([count, count])
    assert vq.ema_sum[:, 0].tolist() == pytest.approx((c * count).tolist())  # m = g c + (1 - g) 2c
    again = vq.weight.clone()
    vq(torch.tensor([[0.5], [11.0]], dtype=torch.float64))
    assert torch.allclose(vq.weight, again)  # no second k-means: rows at the centroids leave them there


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_init_keeps_a_centroid_without_rows(seed):
    """Rows 1, 1, 1, 10 and K = 3: two codes end on 1 and one on 10 whatever the draw; one of the codes at 1
    receives no row (ties go to the lowest index) and keeps its starting row. By hand from the draw (1, 1, 1):
    all rows -> code 0 = 3.25, codes 1 and 2 keep 1; then 1s -> code 1, 10 -> code 0 = 10; code 2 keeps 1."""
    torch.manual_seed(seed)
    vq = KohonenQuantizer(3, 1, codebook_init="kmeans")
    vq.kmeans_init(torch.tensor([[1.0], [1.0], [1.0], [10.0]]))
    assert sorted(vq.weight[:, 0].tolist()) == [1.0, 1.0, 10.0]
    assert torch.equal(vq.ema_sum, vq.weight) and bool(vq.initialised)


def test_a_resumed_kmeans_quantiser_does_not_initialise_again():
    """The k-means flag is a checkpointed buffer: a fresh k-means quantiser loaded from a trained one's state
    continues exactly as the original (no second k-means on its next batch). The other inits keep their
    checkpoint keys (no flag saved)."""
    torch.manual_seed(4)
    vq = KohonenQuantizer(8, 3, codebook_init="kmeans")
    vq(torch.randn(20, 3))
    state = vq.state_dict()
    assert bool(state["initialised"])
    assert "initialised" not in KohonenQuantizer(8, 3).state_dict()
    assert "initialised" not in KohonenQuantizer(8, 3, codebook_init="uniform").state_dict()
    torch.manual_seed(5)
    fresh = KohonenQuantizer(8, 3, codebook_init="kmeans")
    fresh.load_state_dict(state)
    e = torch.randn(20, 3) + 5  # far from the codebook: a second k-means would move every code onto it
    a, b = vq(e), fresh(e)
    assert torch.equal(a.indices, b.indices)
    for k, v in vq.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
