"""Trial fusion: S trials of one shape trained as one model, each exactly as it would train alone.

Following HFTA (Wang et al., "Horizontally Fused Training Array", MLSys 2021), `fuse(models)` turns the
members of a pack, ordinary VQ-VAEs (models/build.py), into one module that computes all of them:

- every convolution becomes one grouped convolution over the members' stacked channels (member s holds
  channels s C .. (s + 1) C - 1 of every activation, its images channels 3 s .. 3 s + 2 of the input),
  whose weight is the concatenation of the members' own parameters at each call: the parameters stay
  each member's own leaves (its own optimizer, learning rate and clipping), and a member's gradient comes
  from its own loss alone, since no group reads another's channels;
- the quantiser becomes a FusedQuantizer: S codebooks, each with its member's settings (decay, eps, N0,
  update-0, neighbourhood, tau, grid, Gaussian form, k-means init), searched and updated at once;
- everything else in a VQ-VAE (ReLU, the residual additions, Sequential) acts channel by channel and is kept.

The members' codebook buffers become views of the FusedQuantizer's stacked buffers, so each member model is
current at all times: validation, topography pictures and checkpoints use the member models as they are,
and nothing downstream knows they were fused. A pack of one is its model itself.

    >>> fused = fuse([model_a, model_b])          # two VQVAE(KohonenQuantizer) of one shape
    >>> out = fused(torch.cat([x_a, x_b], 1))     # (B, 6, 32, 32): each member's own batch
    >>> out.recon.shape, out.commitment_loss.shape
    (torch.Size([B, 6, 32, 32]), torch.Size([2]))

Which trials can share a pack is PACK_FIELDS: trials that differ in any of them cannot.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ConfigError, TrialConfig
from models.neighbourhood import Neighbourhood
from models.protocol import QuantizerOutput, perplexity
from models.quantizer import KohonenQuantizer, ema_update, in_float32, nearest_codes
from models.vqvae import VQVAE

# Fields that set a trial's shapes or its loop: the members of a pack agree on all of them. Every other field
# (seed, lr, grad_clip, commitment, decay, eps, n0, update_empty, neighbours, grid_dim, grid_width, tau,
# gaussian_form, codebook_init) is a value each member holds for itself.
PACK_FIELDS = ("model", "quantizer", "width", "codebook_size", "code_dim", "batch_size", "image_size", "dataset",
               "data_dir", "loader_workers", "precision", "channels_last", "steps", "eval_every")
FUSABLE = {"model": "vqvae", "quantizer": "kohonen"}  # what fuse() has a fused form of


def check_pack(cfgs: list[TrialConfig]) -> None:
    """ConfigError (one line) unless the configs can train as one pack: one config, or configs of a fusable
    model that agree on every field of PACK_FIELDS."""
    if len(cfgs) < 2:
        return
    for name, allowed in FUSABLE.items():
        bad = [getattr(c, name) for c in cfgs if getattr(c, name) != allowed]
        if bad:
            raise ConfigError(f"{name}={bad[0]!r} has no fused form; a pack of more than one trial allows "
                              f"{name}={allowed}")
    for name in PACK_FIELDS:
        values = sorted({str(getattr(c, name)) for c in cfgs})
        if len(values) > 1:
            raise ConfigError(f"the trials of a pack differ in {name} ({', '.join(values)}); allowed: one value, "
                              f"since {name} sets the pack's shapes or loop")


def fuse(models: list[nn.Module], rng_states: list[torch.Tensor] | None = None) -> nn.Module:
    """One module computing all `models` (see the module docstring); a single model is returned as it is.

    rng_states: each member's global CPU random state as it was right after its model was built (what its
    trial would hold at its first step), from which a pending k-means init draws its starting rows.
    """
    if len(models) == 1:
        return models[0]
    if not all(isinstance(m, VQVAE) for m in models):
        raise ValueError(f"fuse() needs VQVAE models, got {sorted({type(m).__name__ for m in models})}")
    return _fused(list(models), rng_states)


def _fused(modules: list[nn.Module], rng_states: list[torch.Tensor] | None) -> nn.Module:
    first = modules[0]
    if any(type(m) is not type(first) for m in modules):
        raise ValueError(f"members differ in layers: {sorted({type(m).__name__ for m in modules})}")
    if isinstance(first, (nn.Conv2d, nn.ConvTranspose2d)):
        return GroupedConv(modules)
    if isinstance(first, KohonenQuantizer):
        return FusedQuantizer(modules, rng_states)
    if first._parameters or first._buffers:
        raise ValueError(f"{type(first).__name__} holds parameters or buffers of its own: it has no fused form")
    fused = copy.copy(first)  # the same channel-wise computation, over the fused children
    fused._parameters, fused._buffers = {}, {}
    fused._modules = {name: _fused([m._modules[name] for m in modules], rng_states) for name in first._modules}
    return fused


class GroupedConv(nn.Module):
    """S members' convolutions (Conv2d or ConvTranspose2d of one shape) as one grouped convolution."""

    def __init__(self, convs: list[nn.Conv2d | nn.ConvTranspose2d]):
        super().__init__()
        first = convs[0]
        shape = lambda c: (c.weight.shape, c.bias is None, c.stride, c.padding, c.dilation, c.groups,  # noqa: E731
                           c.output_padding, c.padding_mode)
        if any(shape(c) != shape(first) for c in convs) or first.padding_mode != "zeros":
            raise ValueError("members' convolutions differ in shape, or pad other than with zeros")
        self.convs = list(convs)  # the members' own layers (not submodules: their parameters stay theirs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, groups = self.convs[0], self.convs[0].groups * len(self.convs)
        weight = torch.cat([c.weight for c in self.convs])
        bias = None if first.bias is None else torch.cat([c.bias for c in self.convs])
        if isinstance(first, nn.ConvTranspose2d):
            return F.conv_transpose2d(x, weight, bias, first.stride, first.padding, first.output_padding, groups,
                                      first.dilation)
        return F.conv2d(x, weight, bias, first.stride, first.padding, first.dilation, groups)


class FusedQuantizer(nn.Module):
    """S KohonenQuantizers of one K and d as one layer: each member's nearest-code search (Eq. 12), commitment
    (Eq. 15) and EMA-VQ / KSOM update (Eqs. 16-21) with its own settings and step counter, computed at once.

    Inputs (..., S d): member s's vectors are [..., s d : (s + 1) d]. The output's indices are (S, ...) and its
    commitment loss, perplexity and codes used have one value per member (S,).
    """

    BUFFERS = ("weight", "ema_sum", "ema_count", "step", "rates", "update_all")

    def __init__(self, members: list[KohonenQuantizer], rng_states: list[torch.Tensor] | None = None):
        super().__init__()
        first = members[0]
        if any((q.codebook_size, q.dim) != (first.codebook_size, first.dim) for q in members):
            raise ValueError("members' quantisers differ in codebook size or code dim")
        self.members = list(members)  # the members' own quantisers (not submodules)
        self.codebook_size, self.dim, self.search_budget = first.codebook_size, first.dim, first.search_budget
        self.rng_states = rng_states
        for name in self.BUFFERS:
            stacked = torch.stack([getattr(q, name) for q in members])
            self.register_buffer(name, stacked, persistent=False)
            for s, q in enumerate(members):
                setattr(q, name, stacked[s])  # the member's buffer is now a view: the member stays current
        device = first.weight.device
        self.register_buffer("offsets", torch.arange(len(members), device=device)[:, None] * self.codebook_size,
                             persistent=False)
        # Members with a neighbourhood, grouped by what fixes its computation (kind, grid, form): each group
        # spreads its members' statistics at once, each member at its own t and tau.
        self.groups: list[tuple[torch.Tensor | None, Neighbourhood, torch.Tensor]] = []
        kinds: dict[tuple, list[int]] = {}
        for s, q in enumerate(members):
            nb = q.neighbourhood
            if nb.kind != "none":
                kinds.setdefault((nb.kind, nb.grid, nb.form), []).append(s)
        for (kind, grid, form), which in kinds.items():
            index = None if which == list(range(len(members))) else torch.tensor(which, device=device)
            taus = torch.tensor([members[s].neighbourhood.tau for s in which], dtype=torch.float64, device=device)
            self.groups.append((index, Neighbourhood(kind, grid, form=form), taus))

    @in_float32
    def forward(self, inputs: torch.Tensor) -> QuantizerOutput:
        members, d = len(self.members), self.dim
        if inputs.shape[-1] != members * d:
            raise ValueError(f"inputs have last dim {inputs.shape[-1]}, expected {members} members x dim={d}")
        flat = inputs.reshape(-1, members, d).transpose(0, 1)  # (S, n, d)
        with torch.no_grad():
            e = flat.detach().contiguous()
            if self.training:
                self.kmeans_init(e)
            indices = nearest_codes(e, self.weight, self.search_budget)  # (S, n)
            rows = (indices + self.offsets).flatten()  # into the S K stacked codes
            quantized = self.weight.view(-1, d)[rows].view_as(e)  # each codebook before this step's update
            counts = e.new_zeros(members * self.codebook_size).index_add_(0, rows, e.new_ones(len(rows)))
            counts = counts.view(members, -1)
            if self.training:
                self.update(e, rows, counts)
        # Eq. 15 per member, its elements in the order of its own trial's mean
        commitment = F.mse_loss(flat, quantized, reduction="none").reshape(members, -1).mean(1)
        quantized = quantized.transpose(0, 1).reshape(inputs.shape)
        straight_through = inputs + (quantized - inputs).detach()
        return QuantizerOutput(straight_through, indices.view(members, *inputs.shape[:-1]), commitment,
                               perplexity(counts), (counts > 0).sum(-1))

    @torch.no_grad()
    def kmeans_init(self, e: torch.Tensor) -> None:
        """Members whose k-means init is pending run it on their own rows e[s] (KohonenQuantizer.kmeans_init),
        drawing from the random state their trial would hold; the global random state is left as it was."""
        for s, q in enumerate(self.members):
            if q.kmeans_pending:
                with torch.random.fork_rng(devices=[]):
                    if self.rng_states is not None:
                        torch.set_rng_state(self.rng_states[s])
                    q.kmeans_init(e[s])

    @torch.no_grad()
    def update(self, e: torch.Tensor, rows: torch.Tensor, counts: torch.Tensor) -> None:
        """Each member's online mini-batch KSOM step (Eqs. 19-21; EMA-VQ with A = I, Eqs. 16-18)."""
        members, k, d = *counts.shape, self.dim
        sums = e.new_zeros(members * k, d).index_add_(0, rows, e.view(-1, d)).view(members, k, d)
        stats = torch.cat([counts[..., None], sums], -1)
        spread = stats
        for index, nb, taus in self.groups:
            if index is None:  # every member: no gather
                spread = nb.spread_each(stats, 1.0 + self.step.double() * taus)
            else:
                part = nb.spread_each(stats[index], 1.0 + self.step[index].double() * taus)
                spread = spread.index_copy(0, index, part)
        ema_update(self.ema_count, self.ema_sum, self.weight, spread, self.rates, self.update_all)
        self.step += 1
