"""Kohonen neighbourhoods on a 1D or 2D grid of codebook indices (paper Sec. 2.1).

The grid map G sends code k to its coordinates: G(k) = k in 1D and
G(k) = (k mod W, k // W) on a W x H grid in 2D. The neighbourhood matrix A^(t)
(A_ii = 1) weights how much of code j's update code k receives:

  hard     (Eq. 4): A_ij = 1 / (1 + t tau)  if ||G(i) - G(j)|| <= d(G), else 0,
                    d = 1 in 1D (two neighbours), sqrt(2) in 2D (eight neighbours);
  gaussian (Eq. 5): A_ij = exp(-||G(i) - G(j)||^2 / sigma(t)^2), sigma(t)^2 = 1 / (1 + t tau);
  released form of the authors' code: A_ij = exp(-||G(i) - G(j)|| (1 + t tau) / 10).

`spread(x, t)` computes A^T x for x of shape (K, C) (Eqs. 19-20) without a
K x K matrix where the structure allows: the hard neighbourhood is
a * box3(x) + (1 - a) * x with a separable 3-wide box, and the paper-form
Gaussian is separable across grid axes. Only the released form (unsquared
distance, not separable) builds the dense matrix.

Example: on a 6 x 4 grid at t = 0, a count of 1 at code (2, 2) (k = 14) spreads
to that code and its eight neighbours:
Neighbourhood("hard", (6, 4)).spread(onehot_14[:, None], t=0).reshape(4, 6)
has ones in rows 1-3, columns 1-3 and zeros elsewhere.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KINDS = ("none", "hard", "gaussian")


def grid_coords(grid: tuple[int, ...], dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """G(k) for every k as a (K, D) tensor; axis 0 varies fastest."""
    k = torch.arange(math.prod(grid), device=device)
    coords, rest = [], k
    for size in grid:
        coords.append(rest % size)
        rest = rest // size
    return torch.stack(coords, dim=1).to(dtype)


class Neighbourhood:
    """A^(t) for one kind of neighbourhood on one grid; see the module docstring."""

    def __init__(self, kind: str, grid: tuple[int, ...], tau: float = 0.1, form: str = "paper"):
        if kind not in KINDS:
            raise ValueError(f"neighbourhood kind {kind!r} is unknown; allowed: {', '.join(KINDS)}")
        if form not in ("paper", "released"):
            raise ValueError(f"gaussian form {form!r} is unknown; allowed: paper, released")
        if len(grid) not in (1, 2) or min(grid) < 1:
            raise ValueError(f"grid {grid!r} must be (K,) or (W, H) with positive sizes")
        if not (tau > 0 and math.isfinite(tau)):
            raise ValueError(f"tau={tau!r} must be a finite number > 0")
        self.kind, self.grid, self.tau, self.form = kind, tuple(grid), float(tau), form

    def shrink(self, t: int | torch.Tensor) -> float | torch.Tensor:
        """1 + t tau: the factor by which neighbourhoods have shrunk at step t (Eqs. 4-5). For a tensor of
        step counters (a quantiser's, on its device) a float64 tensor of that shape: computed where t is,
        never read back to the host, and as exact as the Python number."""
        if isinstance(t, torch.Tensor):
            return 1.0 + t.double() * self.tau
        return 1.0 + t * self.tau

    def matrix(self, t: int | torch.Tensor, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """The dense K x K matrix A^(t) (for tests, plots and the released Gaussian form)."""
        return self.matrices(torch.as_tensor(self.shrink(t), dtype=torch.float64).reshape(1), dtype, device)[0]

    def matrices(self, shrink: torch.Tensor, dtype: torch.dtype, device=None) -> torch.Tensor:
        """A^(t) (S x K x K) for each of S shrink factors 1 + t tau (a float64 tensor of shape (S,))."""
        g = grid_coords(self.grid, dtype, device)
        dist = torch.cdist(g, g)
        shrink = shrink.to(dtype=dtype, device=dist.device)[:, None, None]
        if self.kind == "none":
            a = torch.zeros_like(dist).expand(len(shrink), -1, -1).clone()
        elif self.kind == "hard":
            # 1.5 separates d = 1 and sqrt(2) (neighbours) from 2 (not) without float trouble.
            a = (dist < 1.5).to(dtype) / shrink
        elif self.form == "paper":
            a = torch.exp(-dist.square() * shrink)
        else:
            a = torch.exp(-dist * shrink / 10.0)
        a.diagonal(dim1=1, dim2=2).fill_(1.0)
        return a

    def spread(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """A^(t)^T x for x of shape (K, C): each code's share of its neighbours' updates."""
        if self.kind == "none":
            return x
        return self.spread_each(x[None], torch.as_tensor(self.shrink(t), dtype=torch.float64).reshape(1))[0]

    def spread_each(self, x: torch.Tensor, shrink: torch.Tensor) -> torch.Tensor:
        """A_s^T x_s for S codebooks' statistics x (S, K, C) on this grid, each at its own shrink factor
        1 + t_s tau_s (a float64 tensor of shape (S,), on x's device or the CPU). The work has fixed sizes
        (no tensor read to the host): a step can be captured as a CUDA graph."""
        if self.kind == "none":
            return x
        if self.kind == "gaussian" and self.form == "released":
            return self.matrices(shrink, x.dtype, x.device).transpose(1, 2) @ x
        shrink = shrink.to(x.device)
        if self.kind == "hard":  # a * box3(x) + (1 - a) * x
            ones = torch.ones(len(x), 3, dtype=x.dtype, device=x.device)
            return torch.lerp(x, self._separable(x, ones), (1.0 / shrink).to(x.dtype)[:, None, None])
        return self._separable(x, self._gaussian_kernels(shrink, x.dtype))

    def reach(self, dtype: torch.dtype) -> int:
        """Half the length of the separable Gaussian kernel: the largest offset d whose weight
        exp(-d^2 (1 + t tau)) is not 0 in `dtype` at t = 0, hence at any t (1 + t tau >= 1). Offsets whose weight
        is below a seventh of the dtype's smallest number round to 0 there: leaving them out is exact, and the
        length depends on the grid and dtype alone, never on t."""
        smallest = torch.finfo(dtype).tiny * torch.finfo(dtype).eps  # the smallest subnormal
        return min(max(self.grid) - 1, math.isqrt(int(2 - math.log(smallest))))

    def _gaussian_kernels(self, shrink: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """exp(-d^2 / sigma_s^2) per axis for d = -reach..reach (S, 2 reach + 1); the product over axes is Eq. 5."""
        r = self.reach(dtype)
        d = torch.arange(-r, r + 1, dtype=dtype, device=shrink.device)
        return torch.exp(-d.square() * shrink.to(dtype)[:, None])

    def _separable(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Convolve each x_s (S, K, C), laid out on the grid, with kernels[s] along every grid axis (zero border)."""
        s, k, c = x.shape
        # A (1, S C, H, W) channels-last view of x (no copy for one codebook) and a depthwise convolution: one
        # single-channel convolution per column would be ~20x slower on oneDNN.
        y = x.reshape(s, *reversed(self.grid), c) if len(self.grid) == 2 else x.reshape(s, 1, k, c)
        y = y.permute(1, 2, 0, 3).reshape(1, *y.shape[1:3], s * c).permute(0, 3, 1, 2)
        r = kernels.shape[1] // 2
        weight = kernels.repeat_interleave(c, 0)  # channel s C + j convolves with kernels[s]
        y = F.conv2d(y, weight.view(s * c, 1, 1, -1), padding=(0, r), groups=s * c)
        if len(self.grid) == 2:
            y = F.conv2d(y, weight.view(s * c, 1, -1, 1), padding=(r, 0), groups=s * c)
        return y.permute(0, 2, 3, 1).reshape(*y.shape[2:], s, c).permute(2, 0, 1, 3).reshape(s, k, c)
