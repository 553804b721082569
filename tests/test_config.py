"""TrialConfig: validation, MLflow round trip, grid shape, and wiring into the quantiser."""
from __future__ import annotations

import dataclasses

import pytest

from models.build import build_quantizer
from models.config import ConfigError, TrialConfig


@pytest.mark.parametrize("field,value", [
    ("neighbours", "ring"),
    ("neighbours", "Hard"),
    ("n0", 2),
    ("n0", -1),
    ("tau", 0.0),
    ("tau", -1.0),
    ("tau", float("inf")),
    ("model", "vqvae3"),
    ("dataset", "mnist"),
    ("gaussian_form", "wide"),
    ("grid_dim", 3),
    ("decay", 1.0),
    ("decay", 0.0),
    ("eps", 0.0),
    ("commitment", -0.25),
    ("width", 10),
    ("width", 0),
    ("codebook_size", 0),
    ("batch_size", 0),
    ("steps", 0),
    ("eval_every", 0),
    ("lr", 0.0),
    ("grad_clip", -1.0),
    ("seed", -1),
    ("grid_width", -2),
    ("image_size", 30),
    ("precision", "fp16"),
    ("precision", "BF16"),
])
def test_invalid_value_names_field_and_value(field, value):
    """An out-of-range value raises ConfigError whose message names the field and the offending value."""
    with pytest.raises(ConfigError) as err:
        TrialConfig(**{field: value})
    message = str(err.value)
    assert f"{field}=" in message
    assert repr(value) in message or str(value) in message


@pytest.mark.parametrize("size", [36, 100, 30])
def test_vqvae2_image_size_multiple_of_8(size):
    """VQ-VAE-2 downsamples x8 (top codes): an image_size that is not a multiple of 8 is rejected, naming the
    value and the model; a multiple of 4 is enough for the VQ-VAE."""
    with pytest.raises(ConfigError) as err:
        TrialConfig(model="vqvae2", image_size=size)
    assert f"image_size={size}" in str(err.value) and "8" in str(err.value) and "vqvae2" in str(err.value)
    if size % 4 == 0:
        assert TrialConfig(model="vqvae", image_size=size).image_size == size


@pytest.mark.parametrize("values", [
    {"model": "vqvae2", "image_size": 256, "dataset": "imagenet", "data_dir": "/data/imagenet"},
    {"model": "vqvae2", "image_size": 32, "dataset": "celeba_afhq"},
    {"model": "vqvae2", "image_size": 8, "dataset": "imagefolder"},
])
def test_vqvae2_and_image_folders_accepted(values):
    """model=vqvae2 and the image-folder data sets are valid and round-trip through string params."""
    cfg = TrialConfig(**values)
    assert TrialConfig.from_dict({k: str(v) for k, v in cfg.to_params().items()}) == cfg


@pytest.mark.parametrize("width", [5, 7, 100, 1024])
def test_grid_width_must_tile_codebook(width):
    """A 2D grid whose width does not divide K is a config error naming grid_width and K."""
    with pytest.raises(ConfigError) as err:
        TrialConfig(codebook_size=512, grid_dim=2, grid_width=width)
    assert f"grid_width={width}" in str(err.value) and "512" in str(err.value)


@pytest.mark.parametrize("field,value,type_name", [
    ("steps", "100", "int"),
    ("steps", 1.5, "int"),
    ("steps", True, "int"),
    ("tau", "0.1", "float"),
    ("tau", True, "float"),
    ("update_empty", 1, "bool"),
    ("neighbours", 3, "str"),
])
def test_wrong_type_rejected(field, value, type_name):
    """Constructing with a value of the wrong type (bools are not numbers) raises, naming field and type."""
    with pytest.raises(ConfigError) as err:
        TrialConfig(**{field: value})
    assert f"{field}={value!r}" in str(err.value) and type_name in str(err.value)


def test_int_accepted_for_float_field():
    """A float field accepts an int (tau=1 is tau=1.0)."""
    assert TrialConfig(tau=1).tau == 1


@pytest.mark.parametrize("values,field", [
    ({"steps": "abc"}, "steps"),
    ({"tau": "fast"}, "tau"),
    ({"update_empty": "maybe"}, "update_empty"),
    ({"n0": "1.5"}, "n0"),
    ({"seed": None}, "seed"),
])
def test_from_dict_unparsable_value(values, field):
    """from_dict with a string that is not of the field's type raises ConfigError naming field and value."""
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict(values)
    assert f"{field}={values[field]!r}" in str(err.value)


def test_from_dict_unknown_field():
    """Unknown keys are an error that names them (typos must not silently take defaults)."""
    with pytest.raises(ConfigError, match="stepz"):
        TrialConfig.from_dict({"stepz": 10, "steps": 5})


def test_from_dict_refuses_a_renamed_field_naming_the_new_one():
    """A resumed sweep's params (or any dict) with the old kmeans_init: one line naming codebook_init."""
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({"kmeans_init": "True", "quantizer": "lucidrains"})
    assert str(err.value) == ("kmeans_init is no longer a config field: it is replaced by codebook_init "
                              "(kmeans_init: true is codebook_init: kmeans; allowed: randn, uniform, kmeans)")


def test_from_dict_parsed_value_still_validated():
    """Parsed strings go through the same validation: "0" for tau is rejected, "2" for n0 too."""
    with pytest.raises(ConfigError, match="tau=0.0"):
        TrialConfig.from_dict({"tau": "0"})
    with pytest.raises(ConfigError, match="n0=2"):
        TrialConfig.from_dict({"n0": "2"})


CONFIGS = [
    TrialConfig(),
    TrialConfig(neighbours="hard", grid_dim=2, tau=0.1),
    TrialConfig(neighbours="gaussian", grid_dim=1, tau=0.05, gaussian_form="released", n0=0, update_empty=False,
                decay=0.95, eps=1e-6, codebook_size=24, grid_width=4, dataset="cifar100", data_dir="/data/x y",
                width=16, code_dim=8, batch_size=7, lr=3e-4, steps=12, eval_every=3, seed=42, commitment=0.0),
    TrialConfig(precision="bf16", channels_last=True),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_round_trip_plain_and_string_params(cfg):
    """from_dict(to_params()) == cfg, also when every value is a string as MLflow stores params."""
    params = cfg.to_params()
    assert TrialConfig.from_dict(params) == cfg
    as_strings = {k: str(v) for k, v in params.items()}
    back = TrialConfig.from_dict(as_strings)
    assert back == cfg
    for f in dataclasses.fields(TrialConfig):
        assert type(getattr(back, f.name)) is type(getattr(cfg, f.name)), f.name


@pytest.mark.parametrize("text,expected", [("True", True), ("false", False), ("1", True), ("0", False)])
def test_bool_strings(text, expected):
    """Booleans parse from MLflow strings ("True"/"False") and from 1/0."""
    assert TrialConfig.from_dict({"update_empty": text}).update_empty is expected


def test_missing_keys_take_defaults():
    """from_dict with a partial dict fills the rest with defaults."""
    cfg = TrialConfig.from_dict({"neighbours": "hard", "steps": "300"})
    assert cfg == TrialConfig(neighbours="hard", steps=300)


@pytest.mark.parametrize("k,grid_dim,grid_width,expected", [
    (512, 2, 0, (32, 16)),
    (24, 2, 0, (6, 4)),
    (64, 2, 0, (8, 8)),
    (7, 2, 0, (7, 1)),
    (512, 2, 8, (8, 64)),
    (512, 1, 0, (512,)),
    (24, 1, 5, (24,)),
])
def test_grid_property(k, grid_dim, grid_width, expected):
    """grid: (K,) in 1D; the most square W x H with W >= H in 2D (K = 512 -> (32, 16)), or W = grid_width."""
    cfg = TrialConfig(codebook_size=k, grid_dim=grid_dim, grid_width=grid_width)
    assert cfg.grid == expected


def test_frozen_and_replace_revalidates():
    """The config is immutable; replace() returns a validated copy."""
    cfg = TrialConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3
    assert cfg.replace(steps=3).steps == 3 and cfg.steps == 30_000
    with pytest.raises(ConfigError, match="n0=3"):
        cfg.replace(n0=3)


def test_quantizer_display_name():
    """EMA-VQ is KSOM without neighbours (Remark 3.1); KSOM names its neighbourhood and grid dimension."""
    assert TrialConfig().rule == "EMA-VQ"
    assert TrialConfig(neighbours="gaussian", grid_dim=1).rule == "KSOM gaussian 1D"
    assert TrialConfig(quantizer="lucidrains").rule == "lucidrains VectorQuantize"


def test_build_quantizer_uses_every_quantizer_field():
    """build_quantizer passes K, d, neighbours, grid, tau, n0, update_empty, decay, eps, form and init through."""
    cfg = TrialConfig(codebook_size=24, code_dim=5, neighbours="gaussian", grid_dim=2, tau=0.3, n0=0,
                      update_empty=False, decay=0.9, eps=1e-4, gaussian_form="released", codebook_init="kmeans")
    vq = build_quantizer(cfg)
    assert vq.codebook_init == "kmeans" and not bool(vq.initialised)
    assert (vq.codebook_size, vq.dim, vq.grid) == (24, 5, (6, 4))
    nb = vq.neighbourhood
    assert (nb.kind, nb.tau, nb.form) == ("gaussian", 0.3, "released")
    assert (vq.update_empty, vq.decay, vq.eps) == (False, 0.9, 1e-4)
    assert vq.ema_count.tolist() == [0.0] * 24
