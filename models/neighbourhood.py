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

    def shrink(self, t: int) -> float:
        """1 + t tau: the factor by which neighbourhoods have shrunk at step t (Eqs. 4-5)."""
        return 1.0 + t * self.tau

    def matrix(self, t: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """The dense K x K matrix A^(t) (for tests, plots and the released Gaussian form)."""
        g = grid_coords(self.grid, dtype, device)
        dist = torch.cdist(g, g)
        if self.kind == "none":
            a = torch.zeros_like(dist)
        elif self.kind == "hard":
            # 1.5 separates d = 1 and sqrt(2) (neighbours) from 2 (not) without float trouble.
            a = (dist < 1.5).to(dtype) / self.shrink(t)
        elif self.form == "paper":
            a = torch.exp(-dist.square() * self.shrink(t))
        else:
            a = torch.exp(-dist * self.shrink(t) / 10.0)
        return a.fill_diagonal_(1.0)

    def spread(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """A^(t)^T x for x of shape (K, C): each code's share of its neighbours' updates."""
        if self.kind == "none":
            return x
        if self.kind == "gaussian" and self.form == "released":
            return self.matrix(t, x.dtype, x.device).T @ x
        if self.kind == "hard":  # a * box3(x) + (1 - a) * x
            box = self._separable(x, torch.ones(3, dtype=x.dtype, device=x.device))
            return torch.lerp(x, box, 1.0 / self.shrink(t))
        return self._separable(x, self._gaussian_kernel(t, x))

    def _gaussian_kernel(self, t: int, x: torch.Tensor) -> torch.Tensor:
        # exp(-d^2 / sigma^2) per axis; the product over axes is Eq. 5. Offsets whose weight is below a
        # seventh of x's dtype's smallest number round to 0 there and are left out: the result is exact,
        # not truncated. Where they start is worked out on the host from t alone, never read from x's device.
        shrink = self.shrink(t)
        smallest = torch.finfo(x.dtype).tiny * torch.finfo(x.dtype).eps  # the smallest subnormal
        reach = min(max(self.grid) - 1, math.isqrt(int((2 - math.log(smallest)) / shrink)))
        d = torch.arange(-reach, reach + 1, dtype=x.dtype, device=x.device)
        return torch.exp(-d.square() * shrink)

    def _separable(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """Convolve x (K, C), laid out on the grid, with `kernel` along every grid axis (zero border)."""
        k, c = x.shape
        # A (1, C, H, W) channels-last view of x (no copy) and a depthwise convolution: one
        # single-channel convolution per column would be ~20x slower on oneDNN.
        y = x.reshape(1, *reversed(self.grid), c) if len(self.grid) == 2 else x.reshape(1, 1, k, c)
        y = y.permute(0, 3, 1, 2)
        r = len(kernel) // 2
        y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
        if len(self.grid) == 2:
            y = F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)
        return y.permute(0, 2, 3, 1).reshape(k, c)
