"""KohonenQuantizer: the VQ layer of a VQ-VAE, trained by EMA-VQ or by KSOM.

The paper: Irie, Csordás, Schmidhuber, "Topological Neural Discrete Representation
Learning à la Kohonen", 2023, https://arxiv.org/abs/2302.07950 (Secs. 3.1-3.3; the
"Eq." and "Sec." numbers in this package are its). "The released code" in this package's
comments is the authors' implementation, https://github.com/IDSIA/kohonen-vae.

EMA-VQ (Eqs. 16-18) is the special case of online mini-batch KSOM (Eqs. 19-21) whose
neighbourhood matrix is the identity (Remark 3.1), so one module implements both.
It satisfies the Quantizer protocol (models/protocol.py).

Shape contract: inputs (..., d) -> quantised (..., d), indices (...).

    >>> vq = KohonenQuantizer(512, 64, neighbours="hard", grid=(32, 16))
    >>> out = vq(torch.randn(8, 8, 8, 64))
    >>> out.quantized.shape, out.indices.shape
    (torch.Size([8, 8, 8, 64]), torch.Size([8, 8, 8]))

In training mode every forward also updates the codebook (no gradients reach
it); in eval mode the codebook is frozen.

Data parallel training: when a torch.distributed process group of more than one
process is initialised, the training update sums the per-code counts c_k and sums
S_k over all processes (all_reduce) before Eqs. 19-21, so every process holds the
same codebook, the one a single process would compute from the whole batch.
Alone (no process group, or one process) nothing is exchanged.

Initial codebook (`codebook_init`): "randn", w ~ N(0, 1) as the authors' released code; "uniform",
w ~ U(-b, b) with b = sqrt(6 / (K d)), what vector-quantize-pytorch's kaiming-uniform init draws for its
(1, K, d) codebook; "kmeans", k-means (Lloyd) on the encodings of the first training batch, as that
library's `kmeans_init` (in data-parallel training on all processes' rows, so every process starts from
the codebook one process would compute from the whole batch). Always m^(0) = w^(0) and N^(0) = n0.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from models.config import CODEBOOK_INITS
from models.neighbourhood import Neighbourhood
from models.protocol import QuantizerOutput, perplexity


# Bytes of distances the nearest-code search holds at once, by device. On a CPU, tiles of 1024 x 1024
# float32 scores stay in cache between the product, the bias and the minimum, which makes the search
# faster than one n x K matrix (python -m benchmarks.scaling --part search: the times are in
# docs/results/benchmarks/scaling.txt). On a GPU, larger tiles keep the kernel launches few.
SEARCH_BUDGET = {"cpu": 4 * 2**20, "cuda": 64 * 2**20}
KMEANS_ITERS = 10  # Lloyd iterations of the k-means init (vector-quantize-pytorch's default)


def data_parallel() -> bool:
    """Whether this process trains with others: a torch.distributed group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def initial_codebook(init: str, codebook_size: int, dim: int) -> torch.Tensor:
    """w^(0) (K x d) drawn from the global RNG: N(0, 1) for "randn", U(-b, b) with b = sqrt(6 / (K d)) for
    "uniform" (torch's kaiming_uniform_ on vector-quantize-pytorch's (1, K, d) tensor: fan_in = K d).
    "kmeans" starts from "randn"; the first training batch replaces it (KohonenQuantizer.kmeans_init)."""
    if init not in CODEBOOK_INITS:
        raise ValueError(f"codebook_init={init!r} is unknown; allowed: {', '.join(CODEBOOK_INITS)}")
    if init == "uniform":
        bound = math.sqrt(6.0 / (codebook_size * dim))
        return torch.empty(codebook_size, dim).uniform_(-bound, bound)
    return torch.randn(codebook_size, dim)


def in_float32(method):
    """Run a quantiser's forward or search with autocast off and a half-precision input (bf16, fp16) in
    float32 (cast in); a QuantizerOutput's `quantized` returns in the input's dtype (cast out). Mixed
    precision (TrialConfig.precision) then changes the networks around a quantiser, never its nearest-code
    search (Eq. 12) or codebook update (Eqs. 16-21); a float32 (or float64) input is used as it is."""
    @functools.wraps(method)
    def wrapper(self, inputs: torch.Tensor):
        with torch.autocast(inputs.device.type, enabled=False):
            out = method(self, inputs.float() if inputs.element_size() < 4 else inputs)
        if isinstance(out, QuantizerOutput):
            out = out._replace(quantized=out.quantized.to(inputs.dtype))
        return out
    return wrapper


class KohonenQuantizer(nn.Module):
    """EMA-VQ / KSOM vector quantiser (paper Sec. 3, Eqs. 12-21).

    Args:
        codebook_size: K.
        dim: d_emb, the size of each code vector.
        neighbours: "none" (EMA-VQ), "hard" (Eq. 4) or "gaussian" (Eq. 5).
        grid: (K,) for a 1D grid or (W, H) with W * H = K for a 2D grid.
        tau: shrink step; A^(t) -> I as t grows.
        n0: N_k^(0), the initial EMA count (0 as in public code, 1 as the paper proposes).
        update_empty: also update codes that receive no update this step ("update-0").
        decay: gamma = 1 - beta of the EMAs.
        eps: additive (Laplace) smoothing of the counts.
        gaussian_form: "paper" (Eq. 5) or "released" (the authors' code).
        codebook_init: "randn" (released code), "uniform" or "kmeans" (see the module docstring).
        search_budget: bytes of the distance block the nearest-code search (Eq. 12) holds at
            once (None: SEARCH_BUDGET of the inputs' device); the search runs in tiles of that
            size, so its memory does not grow with the number of input vectors or codes.
    """

    def __init__(self, codebook_size: int, dim: int, neighbours: str = "none", grid: tuple[int, ...] | None = None,
                 tau: float = 0.1, n0: int = 1, update_empty: bool = True, decay: float = 0.99,
                 eps: float = 1e-5, gaussian_form: str = "paper", codebook_init: str = "randn",
                 search_budget: int | None = None):
        super().__init__()
        grid = tuple(grid) if grid is not None else (codebook_size,)
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"codebook_size={codebook_size} and dim={dim} must be >= 1")
        if math.prod(grid) != codebook_size:
            raise ValueError(f"grid {grid} has {math.prod(grid)} nodes but codebook_size={codebook_size}; "
                             "allowed: (K,) or (W, H) with W * H = K")
        if n0 not in (0, 1):
            raise ValueError(f"n0={n0!r} is not allowed; allowed: 0 or 1")
        if not 0 < decay < 1:
            raise ValueError(f"decay={decay!r} must be in (0, 1)")
        if not eps > 0:
            raise ValueError(f"eps={eps!r} must be > 0")
        if search_budget is not None and search_budget < 1:
            raise ValueError(f"search_budget={search_budget!r} must be >= 1 byte (or None: by device)")
        self.codebook_size, self.dim = codebook_size, dim
        self.neighbourhood = Neighbourhood(neighbours, grid, tau, gaussian_form)
        self.update_empty, self.decay, self.eps = update_empty, decay, eps
        self.search_budget = search_budget

        self.codebook_init = codebook_init
        w = initial_codebook(codebook_init, codebook_size, dim)
        self.register_buffer("weight", w)  # w_k: the codebook
        self.register_buffer("ema_sum", w.clone())  # m_k: m^(0) = w^(0)
        self.register_buffer("ema_count", torch.full((codebook_size,), float(n0)))  # N_k
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # t: training updates so far
        # (gamma, 1 - gamma, eps, K eps) and update-0 as tensors where the codes are, in float64 (each cast to
        # the codebook's dtype at use, as a Python number would be): the update reads no Python number that
        # a batch of quantisers (models/fused.py) holds one of per member. Not saved: the config sets them.
        self.register_buffer("rates", torch.tensor([decay, 1 - decay, eps, codebook_size * eps], dtype=torch.float64),
                             persistent=False)
        self.register_buffer("update_all", torch.tensor(update_empty), persistent=False)
        # Whether w^(0) is final; saved in checkpoints only where k-means is pending, so a resumed trial
        # does not run it again (and checkpoints of the other inits keep their keys). The forward reads a
        # Python copy (no host sync per step on a GPU), refreshed when a checkpoint is loaded.
        self.register_buffer("initialised", torch.tensor(codebook_init != "kmeans"),
                             persistent=codebook_init == "kmeans")
        self.kmeans_pending = codebook_init == "kmeans"
        self.register_load_state_dict_post_hook(KohonenQuantizer._loaded)

    @staticmethod
    def _loaded(module: "KohonenQuantizer", _) -> None:
        """After a checkpoint is loaded: the Python copy of its k-means flag."""
        module.kmeans_pending = not bool(module.initialised)

    def set_step(self, t: int = 0) -> None:
        """t := t, the codebook as it is (the benchmarks time the step at t = 0 again and again)."""
        self.step.fill_(t)

    @property
    def grid(self) -> tuple[int, ...]:
        return self.neighbourhood.grid

    @in_float32
    def forward(self, inputs: torch.Tensor) -> QuantizerOutput:
        if inputs.shape[-1] != self.dim:
            raise ValueError(f"inputs have last dim {inputs.shape[-1]}, expected dim={self.dim}")
        flat = inputs.reshape(-1, self.dim)
        with torch.no_grad():
            if self.training and self.kmeans_pending:
                self.kmeans_init(flat.detach())
            indices = self.nearest(flat)
            quantized = self.weight[indices]  # the codebook before this step's update
            # c_k by index_add, not bincount: on a GPU bincount reads the largest index back to the host
            counts = flat.new_zeros(self.codebook_size).index_add_(0, indices, flat.new_ones(len(indices)))
            if self.training:
                counts = self.update(flat.detach(), indices, counts)
        quantized = quantized.view_as(inputs)
        commitment = F.mse_loss(inputs, quantized)
        straight_through = inputs + (quantized - inputs).detach()
        return QuantizerOutput(straight_through, indices.view(inputs.shape[:-1]), commitment, perplexity(counts),
                               (counts > 0).sum())

    @in_float32
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """k* = argmin_k ||e - w_k||^2 (Eq. 12) for each row of flat (n, d): nearest_codes on this codebook."""
        return nearest_codes(flat, self.weight, self.search_budget)

    @torch.no_grad()
    def kmeans_init(self, flat: torch.Tensor) -> None:
        """w^(0) = m^(0) = k-means centroids of the rows of flat (n, d): K rows drawn without replacement
        (with, when n < K), then KMEANS_ITERS Lloyd steps (a centroid without rows stays where it is).

        Data parallel: the rows are those of all processes in rank order; rank 0 draws the K positions,
        each process contributes the rows it holds, and the per-centroid counts and sums are all-reduced,
        so every process computes what one process would from the whole batch.
        """
        sizes = torch.zeros(dist.get_world_size() if data_parallel() else 1, dtype=torch.long, device=flat.device)
        rank = dist.get_rank() if data_parallel() else 0
        sizes[rank] = len(flat)
        if data_parallel():
            dist.all_reduce(sizes)
        total, offset = int(sizes.sum()), int(sizes[:rank].sum())
        k = self.codebook_size
        pick = (torch.randperm(total)[:k] if total >= k else torch.randint(total, (k,))).to(flat.device)
        if data_parallel():
            dist.broadcast(pick, 0)
        mine = (pick >= offset) & (pick < offset + len(flat))
        centroids = torch.zeros(k, self.dim, dtype=flat.dtype, device=flat.device)
        centroids[mine] = flat[pick[mine] - offset]
        if data_parallel():
            dist.all_reduce(centroids)
        for _ in range(KMEANS_ITERS):
            self.weight.copy_(centroids)
            indices = self.nearest(flat)
            counts = flat.new_zeros(k).index_add_(0, indices, flat.new_ones(len(indices)))
            stats = torch.cat([counts[:, None], torch.zeros_like(centroids).index_add_(0, indices, flat)], 1)
            if data_parallel():
                dist.all_reduce(stats)
            hit = stats[:, 0] > 0
            centroids = torch.where(hit[:, None], stats[:, 1:] / stats[:, :1].clamp(min=1), centroids)
        self.weight.copy_(centroids)
        self.ema_sum.copy_(centroids)
        self.initialised.fill_(True)
        self.kmeans_pending = False

    @torch.no_grad()
    def update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One online mini-batch KSOM step (Eqs. 19-21); with A = I it is EMA-VQ (Eqs. 16-18).

        Returns the counts c_k the step used: this batch's, or, in data-parallel training, the sum
        over all processes' batches.
        """
        sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, flat)  # sum_{i in C_k} e_i
        stats = torch.cat([counts[:, None], sums], 1)
        if data_parallel():  # c_k and S_k of the whole batch: every process then makes the same update
            dist.all_reduce(stats)
        # Spread counts and sums together: s = A^T c (Eq. 20), M = A^T S (Eq. 19).
        spread = self.neighbourhood.spread(stats, self.step)
        ema_update(self.ema_count, self.ema_sum, self.weight, spread, self.rates, self.update_all)
        self.step += 1
        return stats[:, 0]

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """w_k for each index: (...) -> (..., d)."""
        return self.weight[indices]


def nearest_codes(flat: torch.Tensor, weight: torch.Tensor, budget: int | None = None) -> torch.Tensor:
    """k* = argmin_k ||e - w_k||^2 (Eq. 12) for each row of flat (n, d) in codebook weight (K, d), or for each
    of S codebooks at once: flat (S, n, d), weight (S, K, d) -> (S, n).

    ||e||^2 is the same for every k, so k* = argmin_k ||w_k||^2 - 2 e.w_k (ties: the lowest k).
    The scores are computed in tiles of rows x codes of about `budget` bytes per codebook (None:
    SEARCH_BUDGET of the device), the bias ||w_k||^2 added in place (no copy of it per row), keeping each
    row's best code so far: memory does not grow with n or K, the tiles stay in cache, and a codebook of S
    is searched in the same tiles as alone.
    """
    n, k = flat.shape[-2], weight.shape[-2]
    minus_2w, norms = -2.0 * weight, (weight * weight).sum(-1, keepdim=True).mT  # norms (..., 1, K)
    per_score = flat.element_size()
    budget = budget or SEARCH_BUDGET.get(flat.device.type, SEARCH_BUDGET["cuda"])
    cols = min(k, max(1, math.isqrt(budget // per_score)))
    rows = max(1, budget // (per_score * cols))
    indices = torch.empty(flat.shape[:-1], dtype=torch.long, device=flat.device)
    for r in range(0, n, rows):
        chunk = flat[..., r:r + rows, :]
        if cols == k:  # all codes in one tile (on a CPU, K up to 1024 by default)
            indices[..., r:r + rows] = (chunk @ minus_2w.mT).add_(norms).argmin(-1)
            continue
        best, best_k = None, None
        for c in range(0, k, cols):
            score, i = (chunk @ minus_2w[..., c:c + cols, :].mT).add_(norms[..., c:c + cols]).min(-1)
            if best is None:
                best, best_k = score, i
            else:  # strictly better only: an earlier (lower) k wins a tie
                better = score < best
                best, best_k = torch.where(better, score, best), torch.where(better, i + c, best_k)
        indices[..., r:r + rows] = best_k
    return indices


@torch.no_grad()
def ema_update(count: torch.Tensor, ema_sum: torch.Tensor, weight: torch.Tensor, spread: torch.Tensor,
               rates: torch.Tensor, update_all: torch.Tensor) -> None:
    """The EMA step of Eqs. 19-21 (with A = I: Eqs. 16-18) in place, for one codebook or S at once.

    count N (..., K), ema_sum m and weight w (..., K, d); spread (..., K, 1 + d) holds s = A^T c and M = A^T S;
    rates (..., 4) = (gamma, 1 - gamma, eps, K eps) and update_all (...) bool, the paper's update-0.
    """
    g, rest, eps, k_eps = rates.to(count.dtype)[..., None, :].unbind(-1)  # each (..., 1)
    s, m = spread[..., 0], spread[..., 1:]
    new_count = g * count + rest * s
    new_sum = g[..., None] * ema_sum + rest[..., None] * m
    # update-0: Laplace smoothing keeps N_k > 0; with N^(0) = 0 an unused code gets N_k ~ eps and
    # w_k ~ m_k / eps, the blow-up of Sec. 3.3. Without it, codes that receive nothing keep N, m and w
    # (the released code does not smooth there).
    update_all = update_all[..., None]
    n = new_count.sum(-1, keepdim=True)
    new_count = torch.where(update_all, (new_count + eps) / (n + k_eps) * n, new_count)
    hit = (s > 0) | update_all
    count.copy_(torch.where(hit, new_count, count))
    ema_sum.copy_(torch.where(hit[..., None], new_sum, ema_sum))
    weight.copy_(torch.where(hit[..., None], new_sum / new_count[..., None], weight))
