"""Neighbourhood matrix A^(t) and its fast spread A^T x (paper Eqs. 4, 5, 19-20)."""
from __future__ import annotations

import math
import resource

import pytest
import torch

from models.neighbourhood import Neighbourhood, grid_coords
from models.quantizer import KohonenQuantizer

GRIDS = [(7,), (1,), (6, 4), (3, 8), (5, 5), (1, 6), (6, 1)]
FORMS = [("hard", "paper"), ("gaussian", "paper"), ("gaussian", "released")]


def test_grid_coords_match_grid_map(ref_coords):
    """G(k) = k in 1D and (k mod W, k // W) on a W x H grid; code 14 of the 6x4 grid sits at (2, 2)."""
    for grid in [(5,), (6, 4), (3, 8)]:
        expected = torch.tensor(ref_coords(grid), dtype=torch.float32)
        assert torch.equal(grid_coords(grid), expected)
    assert grid_coords((6, 4))[14].tolist() == [2.0, 2.0]
    assert grid_coords((6, 4))[23].tolist() == [5.0, 3.0]


def test_hard_matrix_values_eq4():
    """Eq. 4 by hand: 1/(1 + t tau) for the 8 (2D) / 2 (1D) neighbours, 1 on the diagonal, no wrap-around."""
    nb = Neighbourhood("hard", (6, 4), tau=0.5)
    a = nb.matrix(3, torch.float64)  # 1 + 3 * 0.5 = 2.5 -> 0.4
    row = a[14].reshape(4, 6)  # rows = y, columns = x
    expected = torch.zeros(4, 6, dtype=torch.float64)
    expected[1:4, 1:4] = 0.4
    expected[2, 2] = 1.0
    assert torch.allclose(row, expected, rtol=0, atol=1e-15)
    # corner code 0 = (0, 0): itself and 3 neighbours, nothing across the border
    assert sorted(torch.nonzero(a[0]).flatten().tolist()) == [0, 1, 6, 7]
    assert a[0, 5].item() == 0.0 and a[0, 18].item() == 0.0
    one_d = Neighbourhood("hard", (10,), tau=0.5).matrix(2, torch.float64)  # 1 + 2 * 0.5 = 2 -> 0.5
    assert sorted(torch.nonzero(one_d[4]).flatten().tolist()) == [3, 4, 5]
    assert one_d[4, 3].item() == 0.5 and one_d[4, 5].item() == 0.5 and one_d[4, 4].item() == 1.0
    assert sorted(torch.nonzero(one_d[0]).flatten().tolist()) == [0, 1]  # no wrap to code 9
    assert sorted(torch.nonzero(one_d[9]).flatten().tolist()) == [8, 9]


def test_gaussian_matrix_values_eq5_and_released():
    """Eq. 5: exp(-d^2 (1 + t tau)); released form exp(-d (1 + t tau) / 10); numbers by hand."""
    paper = Neighbourhood("gaussian", (6, 4), tau=0.5).matrix(2, torch.float64)  # 1 + 2 * 0.5 = 2
    # code 14 = (2, 2); 15 = (3, 2) at d = 1; 21 = (3, 3) at d^2 = 2; 16 = (4, 2) at d = 2; 23 = (5, 3) at d^2 = 10
    assert paper[14, 15].item() == pytest.approx(math.exp(-2.0), rel=1e-12)
    assert paper[14, 21].item() == pytest.approx(math.exp(-4.0), rel=1e-12)
    assert paper[14, 16].item() == pytest.approx(math.exp(-8.0), rel=1e-12)
    assert paper[14, 23].item() == pytest.approx(math.exp(-20.0), rel=1e-12)
    assert paper[14, 14].item() == 1.0
    released = Neighbourhood("gaussian", (6, 4), tau=0.5, form="released").matrix(2, torch.float64)
    assert released[14, 15].item() == pytest.approx(math.exp(-0.2), rel=1e-12)
    assert released[14, 21].item() == pytest.approx(math.exp(-2.0 * math.sqrt(2.0) / 10.0), rel=1e-12)
    assert released[14, 23].item() == pytest.approx(math.exp(-2.0 * math.sqrt(10.0) / 10.0), rel=1e-12)
    one_d = Neighbourhood("gaussian", (9,), tau=0.25).matrix(4, torch.float64)  # 1 + 4 * 0.25 = 2
    assert one_d[2, 5].item() == pytest.approx(math.exp(-18.0), rel=1e-12)


@pytest.mark.parametrize("kind,form", FORMS)
@pytest.mark.parametrize("grid", [(7,), (6, 4), (3, 8)])
@pytest.mark.parametrize("t", [0, 1, 5, 40])
def test_matrix_equals_loop_reference(kind, form, grid, t, ref_matrix):
    """The whole dense A^(t) equals a loop implementation of Eqs. 4-5 (and the released form)."""
    a = Neighbourhood(kind, grid, tau=0.3, form=form).matrix(t, torch.float64)
    assert torch.allclose(a, ref_matrix(kind, grid, t, 0.3, form), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("kind,form", FORMS + [("none", "paper")])
def test_matrix_diagonal_is_one_and_symmetric(kind, form):
    """A_ii = 1 at every t, and A is symmetric (so A^T c = A c in Eqs. 19-20)."""
    nb = Neighbourhood(kind, (6, 4), tau=0.7, form=form)
    for t in [0, 1, 3, 100]:
        a = nb.matrix(t, torch.float64)
        assert torch.equal(torch.diagonal(a), torch.ones(24, dtype=torch.float64))
        assert torch.equal(a, a.T)


@pytest.mark.parametrize("kind,form", FORMS)
def test_matrix_tends_to_identity(kind, form):
    """A^(t) -> I as t -> infinity (Eqs. 4-5: the neighbourhood shrinks), monotonically off the diagonal."""
    nb = Neighbourhood(kind, (6, 4), tau=0.1, form=form)
    eye = torch.eye(24, dtype=torch.float64)
    previous = nb.matrix(0, torch.float64)
    assert not torch.allclose(previous, eye)
    for t in [1, 10, 100]:
        a = nb.matrix(t, torch.float64)
        off = ~eye.bool()
        assert torch.all(a[off] <= previous[off]) and torch.any(a[off] < previous[off])
        previous = a
    assert torch.allclose(nb.matrix(10 ** 9, torch.float64), eye, rtol=0, atol=1e-7)


@pytest.mark.parametrize("kind,form", FORMS)
def test_matrix_at_t0_independent_of_tau(kind, form):
    """At t = 0, 1 + t tau = 1: A^(0) is the same for every tau (and tau matters for t > 0)."""
    mats = [Neighbourhood(kind, (6, 4), tau=tau, form=form).matrix(0, torch.float64) for tau in (0.01, 0.1, 5.0)]
    assert torch.equal(mats[0], mats[1]) and torch.equal(mats[0], mats[2])
    later = [Neighbourhood(kind, (6, 4), tau=tau, form=form).matrix(2, torch.float64) for tau in (0.01, 5.0)]
    assert not torch.equal(later[0], later[1])


def test_none_is_identity():
    """neighbours = none is A = I (Remark 3.1: EMA-VQ is KSOM with the identity), at every t."""
    nb = Neighbourhood("none", (6, 4))
    x = torch.randn(24, 3, dtype=torch.float64)
    for t in [0, 5]:
        assert torch.equal(nb.matrix(t, torch.float64), torch.eye(24, dtype=torch.float64))
        assert torch.equal(nb.spread(x, t), x)


@pytest.mark.parametrize("kind,form", FORMS + [("none", "paper")])
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("t", [0, 1, 7, 60])
def test_spread_equals_dense_reference(kind, form, grid, t, ref_matrix):
    """spread(x, t) (3x3 box / separable Gaussian path) equals A^(t)T x with the loop reference (Eqs. 19-20)."""
    k = math.prod(grid)
    gen = torch.Generator().manual_seed(k * 100 + t)
    x = torch.randn(k, 3, generator=gen, dtype=torch.float64)
    nb = Neighbourhood(kind, grid, tau=0.2, form=form)
    expected = ref_matrix(kind, grid, t, 0.2, form).T @ x
    assert torch.allclose(nb.spread(x, t), expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(nb.matrix(t, torch.float64).T @ x, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind,form", FORMS)
def test_spread_float32_close_to_float64_reference(kind, form, ref_matrix):
    """The float32 spread used in training agrees with the float64 reference to float32 precision."""
    x = torch.rand(24, 5, dtype=torch.float64)
    out = Neighbourhood(kind, (6, 4), tau=0.1, form=form).spread(x.float(), 3)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), ref_matrix(kind, (6, 4), 3, 0.1, form).T @ x, rtol=1e-5, atol=1e-6)


def test_hard_spread_one_hot_figure1():
    """Figure 1 / module example: a count at code (2, 2) of the 6x4 grid reaches exactly the 3x3 block, t = 0."""
    x = torch.zeros(24, 1)
    x[14] = 1.0
    out = Neighbourhood("hard", (6, 4)).spread(x, 0).reshape(4, 6)
    expected = torch.zeros(4, 6)
    expected[1:4, 1:4] = 1.0
    assert torch.equal(out, expected)


def test_large_grid_without_dense_matrix():
    """K = 16384 on a 128x128 grid: hard and paper-Gaussian spread (and a KSOM update) run without a KxK matrix.

    A float32 16384^2 matrix is 1 GiB; the peak resident memory must grow by far less than that.
    """
    grid, k = (128, 128), 16384
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    x = torch.zeros(k, 1)
    x[7 * 128 + 5] = 1.0  # code at (x=5, y=7)
    hard = Neighbourhood("hard", grid, tau=0.1).spread(x, 0).reshape(128, 128)
    expected = torch.zeros(128, 128)
    expected[6:9, 4:7] = 1.0
    assert torch.equal(hard, expected)
    hard_t = Neighbourhood("hard", grid, tau=0.1).spread(x, 10).reshape(128, 128)  # 1 / (1 + 1) = 0.5
    expected_t = expected * 0.5
    expected_t[7, 5] = 1.0  # A_ii = 1
    assert torch.allclose(hard_t, expected_t, rtol=0, atol=1e-7)

    y = torch.zeros(k, 1, dtype=torch.float64)
    y[64 * 128 + 64] = 1.0  # code at (64, 64)
    gauss = Neighbourhood("gaussian", grid, tau=0.5).spread(y, 2).reshape(128, 128)  # exp(-2 d^2)
    rows = torch.arange(128, dtype=torch.float64)
    d2 = (rows[:, None] - 64) ** 2 + (rows[None, :] - 64) ** 2
    assert torch.allclose(gauss, torch.exp(-2.0 * d2), rtol=1e-12, atol=1e-300)

    vq = KohonenQuantizer(k, 4, neighbours="hard", grid=grid)
    vq(torch.randn(64, 4))
    assert int(vq.step) == 1

    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 512, f"peak memory grew by {grown_mib:.0f} MiB: a dense KxK matrix was built"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0])
def test_gaussian_kernel_leaves_out_only_weights_that_are_zero(dtype, tau):
    """The separable Gaussian kernel has one length for every t (its reach at t = 0, from the grid and dtype
    alone): every offset whose weight exp(-d^2 (1 + t tau)) is nonzero in `dtype` on a 128 x 128 grid is in
    it, and those left out are 0. The kernels of several step counters are computed at once, where t is."""
    nb = Neighbourhood("gaussian", (128, 128), tau=tau)
    ts = (0, 1, 5, 50, 500, 5000, 30000)
    kernels = nb._gaussian_kernels(nb.shrink(torch.tensor(ts)), dtype)
    r = nb.reach(dtype)
    assert kernels.shape == (len(ts), 2 * r + 1) and r == {torch.float32: 10, torch.float64: 27}[dtype]
    for t, kernel in zip(ts, kernels):
        d = torch.arange(-127, 128, dtype=dtype)
        full = torch.exp(-d.square() * nb.shrink(t))
        assert torch.equal(kernel, full[127 - r:128 + r]), t
        assert not full[:127 - r].any() and not full[128 + r:].any(), t


@pytest.mark.parametrize("kind,form", FORMS + [("none", "paper")])
def test_spread_each_equals_one_at_a_time(kind, form):
    """S codebooks' statistics spread at once, each at its own t and tau, equal each spread alone (Eqs. 19-20)."""
    grid, taus, ts = (6, 4), torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64), torch.tensor([0, 3, 11])
    x = torch.randn(3, 24, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    together = Neighbourhood(kind, grid, form=form).spread_each(x, 1.0 + ts.double() * taus)
    for s in range(3):
        alone = Neighbourhood(kind, grid, tau=float(taus[s]), form=form).spread(x[s], int(ts[s]))
        assert torch.allclose(together[s], alone, rtol=1e-14, atol=1e-15), s


def test_invalid_arguments():
    """Unknown kind/form, non-positive tau and bad grids are rejected with a message naming the value."""
    with pytest.raises(ValueError, match="'ring'"):
        Neighbourhood("ring", (4,))
    with pytest.raises(ValueError, match="'wide'"):
        Neighbourhood("gaussian", (4,), form="wide")
    with pytest.raises(ValueError, match="tau=0"):
        Neighbourhood("hard", (4,), tau=0)
    with pytest.raises(ValueError, match="tau=-1"):
        Neighbourhood("hard", (4,), tau=-1)
    with pytest.raises(ValueError, match="grid"):
        Neighbourhood("hard", (2, 2, 2))
