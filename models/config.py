"""TrialConfig: everything one trial needs, validated in one place.

A trial is one training run of one model with one quantiser on one data set.
The config is a flat dataclass of plain values so that it round-trips through
MLflow params (strings) and Ray Tune's param_space (dicts) unchanged:

    >>> cfg = TrialConfig(neighbours="hard", grid_dim=2, tau=0.1)
    >>> TrialConfig.from_dict(cfg.to_params()) == cfg
    True
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

MODELS = ("vqvae", "vqvae2")
DATASETS = ("photos", "cifar10", "cifar100", "imagefolder", "imagenet", "celeba_afhq")
QUANTIZERS = ("kohonen", "lucidrains")  # models/build.py: ours, vector-quantize-pytorch's VectorQuantize
NEIGHBOURS = ("none", "hard", "gaussian")
GAUSSIAN_FORMS = ("paper", "released")
PRECISIONS = ("fp32", "bf16")
CODEBOOK_INITS = ("randn", "uniform", "kmeans")  # models/quantizer.py: initial_codebook, kmeans_init
# Fields that were renamed: the old name (in a study file, --set or a resumed sweep's params) is refused
# with one line naming the new field.
RENAMED = {"kmeans_init": "codebook_init (kmeans_init: true is codebook_init: kmeans; allowed: "
                          + ", ".join(CODEBOOK_INITS) + ")"}


class ConfigError(ValueError):
    """A config value is out of range; the message names the field, the value and what is allowed."""


@dataclass(frozen=True)
class TrialConfig:
    # model
    model: str = "vqvae"  # "vqvae" (one level of codes) or "vqvae2" (two levels: top and bottom)
    width: int = 128  # hidden channels h (paper, Appendix A: 128)
    codebook_size: int = 512  # K
    code_dim: int = 64  # d_emb
    # quantiser: "kohonen" is ours (Sec. 3): neighbours "none" is EMA-VQ, "hard"/"gaussian" is KSOM;
    # "lucidrains" is vector-quantize-pytorch's VectorQuantize (models/lucidrains.py)
    quantizer: str = "kohonen"
    neighbours: str = "none"
    grid_dim: int = 2  # D: 1 or 2 (ignored when neighbours is "none")
    grid_width: int = 0  # W of a 2D grid; 0 picks the most square W x H with W >= H
    tau: float = 0.1  # shrink step (Eqs. 4-5)
    gaussian_form: str = "paper"  # "paper" (Eq. 5) or "released" (authors' code)
    n0: int = 1  # N_k^(0)
    update_empty: bool = True  # the paper's "update-0"
    decay: float = 0.99  # gamma = 1 - beta (Eqs. 16-21)
    eps: float = 1e-5  # Laplace smoothing of counts
    commitment: float = 0.25  # alpha (Eq. 15)
    # w^(0): "randn" (released code), "uniform" (vector-quantize-pytorch's kaiming-uniform) or "kmeans"
    # (k-means on the first training batch's encodings); both quantizers
    codebook_init: str = "randn"
    # options of quantizer "lucidrains" only (its decay, eps and commitment weight are the fields above)
    rotation_trick: bool = False  # gradients through the rotation trick instead of straight-through
    dead_code_threshold: float = 0.0  # replace codes whose EMA count falls below this (0: never)
    # data
    dataset: str = "photos"  # photos, cifar10/100, or a folder of images: imagefolder, imagenet, celeba_afhq
    data_dir: str = ""
    image_size: int = 32  # side of the square images (paper: 32 for CIFAR, 256 for VQ-VAE-2 data sets)
    loader_workers: int = 2  # processes decoding an image folder's batches (0: on the training thread)
    # optimisation (paper, Appendix A)
    batch_size: int = 256
    lr: float = 1e-3
    grad_clip: float = 1.0
    steps: int = 30_000
    eval_every: int = 1_000
    seed: int = 0
    # how the networks run (models/train.py), not what they compute
    precision: str = "fp32"  # "bf16": encoder and decoder under bfloat16 autocast (GPU only); quantiser in float32
    channels_last: bool = False  # the conv nets and their inputs in channels-last memory format

    def __post_init__(self):
        _validate(self)

    @property
    def rule(self) -> str:
        """Display name of the VQ rule: EMA-VQ is KSOM with no neighbours (Remark 3.1)."""
        if self.quantizer == "lucidrains":
            return "lucidrains VectorQuantize"
        if self.neighbours == "none":
            return "EMA-VQ"
        return f"KSOM {self.neighbours} {self.grid_dim}D"

    @property
    def grid(self) -> tuple[int, ...]:
        """Grid shape: (K,) in 1D, (W, H) with W*H = K in 2D; G(k) = (k mod W, k // W)."""
        k = self.codebook_size
        if self.grid_dim == 1:
            return (k,)
        w = self.grid_width or k // max(h for h in range(1, math.isqrt(k) + 1) if k % h == 0)
        return (w, k // w)

    def replace(self, **changes) -> "TrialConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_params(self) -> dict:
        """Flat dict of plain values (for MLflow params and Ray Tune)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrialConfig":
        """Build from a dict whose values may be strings (as MLflow returns params).

        Unknown keys are an error; missing keys take their defaults.
        """
        old = sorted(set(values) & set(RENAMED))
        if old:
            raise ConfigError(renamed(old[0]))
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; allowed: {sorted(known)}")
        return cls(**{k: parse_value(known[k], v) for k, v in values.items()})


def field_names() -> list[str]:
    return [f.name for f in fields(TrialConfig)]


def renamed(name: str) -> str:
    """The one-line refusal of a renamed field's old name."""
    return f"{name} is no longer a config field: it is replaced by {RENAMED[name]}"


def parse_value(field: dataclasses.Field, value):
    """Convert `value` (possibly a string) to the field's type, with a clear error."""
    kind = {"int": int, "float": float, "bool": bool, "str": str}[
        field.type if isinstance(field.type, str) else field.type.__name__
    ]
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{field.name}={value!r} is not a boolean; allowed: true/false")
    if kind in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{field.name}={value!r} is not a valid {kind.__name__}")
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{field.name}={value!r} is not a whole number")
        return int(value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{field.name}={value!r} is not a valid {kind.__name__}") from None


def _check(ok: bool, message: str):
    if not ok:
        raise ConfigError(message)


def _validate(c: TrialConfig):
    for f in fields(c):
        value = getattr(c, f.name)
        expected = {"int": int, "float": (int, float), "bool": bool, "str": str}[f.type]
        bad_type = not isinstance(value, expected) or (f.type in ("int", "float") and isinstance(value, bool))
        _check(not bad_type, f"{f.name}={value!r} must be of type {f.type}")
        if f.type == "float":
            _check(math.isfinite(value), f"{f.name}={value!r} must be a finite number")
    _check(c.model in MODELS, f"model={c.model!r} is unknown; allowed: {', '.join(MODELS)}")
    _check(c.dataset in DATASETS, f"dataset={c.dataset!r} is unknown; allowed: {', '.join(DATASETS)}")
    _check(c.quantizer in QUANTIZERS, f"quantizer={c.quantizer!r} is unknown; allowed: {', '.join(QUANTIZERS)} "
                                      "(kohonen = EMA-VQ / KSOM, lucidrains = vector-quantize-pytorch)")
    _check(c.dead_code_threshold >= 0, f"dead_code_threshold={c.dead_code_threshold!r} must be >= 0 (0 = off)")
    if c.quantizer == "kohonen":
        for name, off in (("rotation_trick", False), ("dead_code_threshold", 0.0)):
            _check(getattr(c, name) == off, f"{name}={getattr(c, name)!r} applies only to quantizer=lucidrains; "
                                            f"allowed with quantizer=kohonen: {str(off).lower()}")
    else:
        _check(c.neighbours == "none", f"neighbours={c.neighbours!r}: quantizer=lucidrains has no neighbourhood; "
                                       "allowed: none")
        _check(c.update_empty, "update_empty=False: quantizer=lucidrains always updates every code; allowed: true")
    _check(c.neighbours in NEIGHBOURS,
           f"neighbours={c.neighbours!r} is unknown; allowed: {', '.join(NEIGHBOURS)} "
           "(none = EMA-VQ, hard/gaussian = KSOM)")
    _check(c.codebook_init in CODEBOOK_INITS,
           f"codebook_init={c.codebook_init!r} is unknown; allowed: {', '.join(CODEBOOK_INITS)}")
    _check(c.gaussian_form in GAUSSIAN_FORMS,
           f"gaussian_form={c.gaussian_form!r} is unknown; allowed: {', '.join(GAUSSIAN_FORMS)}")
    _check(c.precision in PRECISIONS, f"precision={c.precision!r} is unknown; allowed: {', '.join(PRECISIONS)}")
    _check(c.n0 in (0, 1), f"n0={c.n0!r} is not allowed; allowed: 0 or 1")
    _check(c.grid_dim in (1, 2), f"grid_dim={c.grid_dim!r} is not allowed; allowed: 1 or 2")
    _check(c.tau > 0, f"tau={c.tau!r} must be > 0")
    _check(0 < c.decay < 1, f"decay={c.decay!r} must be in (0, 1)")
    _check(c.eps > 0, f"eps={c.eps!r} must be > 0")
    _check(c.commitment >= 0, f"commitment={c.commitment!r} must be >= 0")
    for name in ("width", "codebook_size", "code_dim", "batch_size", "steps", "eval_every", "image_size"):
        _check(getattr(c, name) >= 1, f"{name}={getattr(c, name)!r} must be >= 1")
    _check(c.width % 4 == 0, f"width={c.width!r} must be a multiple of 4 (residual blocks use width/4)")
    _check(c.lr > 0, f"lr={c.lr!r} must be > 0")
    _check(c.grad_clip > 0, f"grad_clip={c.grad_clip!r} must be > 0")
    _check(c.seed >= 0, f"seed={c.seed!r} must be >= 0")
    _check(c.loader_workers >= 0, f"loader_workers={c.loader_workers!r} must be >= 0 (0 = no loader processes)")
    _check(c.grid_width >= 0, f"grid_width={c.grid_width!r} must be >= 0 (0 = automatic)")
    if c.grid_dim == 2 and c.grid_width:
        _check(c.codebook_size % c.grid_width == 0,
               f"grid_width={c.grid_width} does not tile codebook_size={c.codebook_size} into a 2D grid; "
               f"allowed: a divisor of {c.codebook_size}")
    factor = 4 if c.model == "vqvae" else 8
    _check(c.image_size % factor == 0,
           f"image_size={c.image_size} must be a multiple of {factor} for model={c.model}")
