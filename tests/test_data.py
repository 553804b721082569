"""Data sets (SPEC 3): the embedded photos, CIFAR-10/100 from the real pickle format, download checks."""
from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from models import data as data_module
from models.data import (CIFAR, PHOTOS_TRAIN, PHOTOS_VAL, download_cifar, load_cifar, load_data, tiles)

# ---------------------------------------------------------------- photos


def test_photos_shapes(photos):
    """Validation = fixed uint8 32x32 tiles (M > 0); training = 7 whole uint8 photos with short side 256."""
    assert photos.name == "photos" and photos.size == 32 and photos.test is None
    assert photos.val.dtype == torch.uint8 and photos.val.ndim == 4
    assert photos.val.shape[0] > 0 and photos.val.shape[1:] == (3, 32, 32)
    assert len(photos.train) == len(PHOTOS_TRAIN) == 7
    for p in photos.train:
        assert p.dtype == torch.uint8 and p.shape[0] == 3 and min(p.shape[1:]) == 256


def test_photos_validation_disjoint_from_training():
    """Whole photos are held out: no photograph is on both sides, and there are 10 in all (SPEC 3)."""
    assert not set(PHOTOS_TRAIN) & set(PHOTOS_VAL)
    assert len(set(PHOTOS_TRAIN) | set(PHOTOS_VAL)) == 10


def test_photos_validation_tile_count(photos):
    """The 3 validation photos (short side 256) give floor(H/32) * floor(W/32) tiles each: at least 3 * 8 * 8."""
    assert photos.val.shape[0] % 8 == 0  # 8 tile rows per photo (short side 256 = 8 * 32)
    assert photos.val.shape[0] >= 3 * 8 * 8


def test_photos_mean_std_of_training_pixels(photos):
    """mean/std are the per-channel statistics over all training pixels (population std), in [0, 255]."""
    pixels = torch.cat([p.reshape(3, -1) for p in photos.train], 1).double()
    assert torch.allclose(photos.mean.double(), pixels.mean(1), rtol=1e-6)
    assert torch.allclose(photos.std.double(), pixels.std(1, unbiased=False), rtol=1e-5)


def test_normalise_and_to_uint8(photos):
    """normalise is (x - mean_c) / std_c per channel; to_uint8 inverts it exactly on uint8 images."""
    images = photos.val[:40]
    z = photos.normalise(images)
    assert z.dtype == torch.float32 and z.shape == images.shape
    for c in range(3):
        expected = (images[3, c, 5, 7].item() - photos.mean[c].item()) / photos.std[c].item()
        assert z[3, c, 5, 7].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert torch.equal(photos.to_uint8(z), images)
    assert torch.equal(photos.to_uint8(torch.full((1, 3, 2, 2), 1e6)), torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))


def test_train_batch_determinism(photos):
    """train_batch depends only on the generator: same seed -> same batch, other seed -> other batch."""
    a = photos.train_batch(8, torch.Generator().manual_seed(1))
    b = photos.train_batch(8, torch.Generator().manual_seed(1))
    c = photos.train_batch(8, torch.Generator().manual_seed(2))
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_train_batch_is_standardised(photos):
    """A large standardised batch has mean ~ 0 and std ~ 1 per channel (loose: crops vary)."""
    x = photos.train_batch(256, torch.Generator().manual_seed(0))
    mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3))
    assert torch.all(mean.abs() < 0.3), mean
    assert torch.all((std > 0.7) & (std < 1.3)), std


def test_train_batch_crops_come_from_training_photos(photos):
    """Each training sample is a 32x32 crop of one of the training photos (never of a validation photo)."""
    batch = photos.to_uint8(photos.train_batch(6, torch.Generator().manual_seed(3)))
    for crop in batch:
        assert any(_contains(p, crop) for p in photos.train)
        assert not any(_contains(t, crop) for t in photos.val)  # nor a validation tile


def _contains(image: torch.Tensor, crop: torch.Tensor) -> bool:
    """Whether `crop` (3, s, s) occurs at some position of `image` (3, H, W)."""
    s = crop.shape[-1]
    h, w = image.shape[1] - s + 1, image.shape[2] - s + 1
    if h < 1 or w < 1:
        return False
    corner = (image[:, :h, :w] == crop[:, :1, :1]).all(0)  # candidate top-left positions
    return any(torch.equal(image[:, y:y + s, x:x + s], crop) for y, x in torch.nonzero(corner).tolist())


def test_tiles_on_hand_made_image():
    """tiles(): non-overlapping size x size tiles, row by row; the remainder at the right/bottom is dropped."""
    image = torch.arange(3 * 70 * 100).reshape(3, 70, 100)
    t = tiles(image, 32)
    assert t.shape == (6, 3, 32, 32)  # 2 rows x 3 columns
    for i in range(2):
        for j in range(3):
            assert torch.equal(t[3 * i + j], image[:, 32 * i:32 * i + 32, 32 * j:32 * j + 32])


def test_load_data_dispatch_errors():
    """Unknown data set names and CIFAR without a data_dir are ValueErrors that say what is allowed."""
    with pytest.raises(ValueError, match="mnist"):
        load_data("mnist")
    with pytest.raises(ValueError, match="data_dir"):
        load_cifar("cifar10", "")


# ---------------------------------------------------------------- CIFAR in the real python-pickle format


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, size=(n, 3072), dtype=np.uint8)


def write_fake_cifar(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Write a tiny CIFAR in the official layout (10 images per CIFAR-10 batch, 50 + 10 for CIFAR-100).

    Returns (train rows (50, 3072) in file order, test rows (10, 3072))."""
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        train = []
        for i in range(1, 6):
            rows = _images(10, i)
            train.append(rows)
            with open(folder / f"data_batch_{i}", "wb") as f:
                pickle.dump({b"batch_label": b"training batch", b"labels": list(range(10)), b"data": rows,
                             b"filenames": [b"x.png"] * 10}, f)
        test = _images(10, 99)
        with open(folder / "test_batch", "wb") as f:
            pickle.dump({b"labels": list(range(10)), b"data": test}, f)
        return np.concatenate(train), test
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train, test = _images(50, 7), _images(10, 8)
    for fname, rows in (("train", train), ("test", test)):
        with open(folder / fname, "wb") as f:
            pickle.dump({b"fine_labels": [0] * len(rows), b"coarse_labels": [0] * len(rows), b"data": rows}, f)
    return train, test


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_load_cifar_format_and_split(name, tmp_path):
    """CIFAR rows (n, 3072) become (n, 3, 32, 32) (R plane, then G, then B, row-major); validation = the first
    20 % of RandomState(0xC1CAFA52).permutation(n) of the concatenated training images; test split kept."""
    rows, test_rows = write_fake_cifar(tmp_path, name)
    data = load_cifar(name, tmp_path, download=False)
    assert data.name == name and data.size == 32
    assert data.train.shape == (40, 3, 32, 32) and data.train.dtype == torch.uint8
    assert data.val.shape == (10, 3, 32, 32) and data.test.shape == (10, 3, 32, 32)
    perm = np.random.RandomState(0xC1CAFA52).permutation(50)
    images = rows.reshape(50, 3, 32, 32)
    assert torch.equal(data.val, torch.from_numpy(images[perm[:10]]))
    assert torch.equal(data.train, torch.from_numpy(images[perm[10:]]))
    assert torch.equal(data.test, torch.from_numpy(test_rows.reshape(10, 3, 32, 32)))
    # pixel layout by hand: channel c, row y, column x is byte c * 1024 + y * 32 + x
    assert data.test[4, 2, 17, 5].item() == int(test_rows[4, 2 * 1024 + 17 * 32 + 5])
    assert data.test[4, 0, 0, 31].item() == int(test_rows[4, 31])
    # normalisation from the training split only
    pixels = torch.from_numpy(images[perm[10:]]).double().permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.allclose(data.mean.double(), pixels.mean(1), rtol=1e-6)
    assert torch.allclose(data.std.double(), pixels.std(1, unbiased=False), rtol=1e-5)
    # load_data dispatches to the same reader
    assert torch.equal(load_data(name, tmp_path, download=False).val, data.val)


def test_cifar_train_batch_is_whole_normalised_images(tmp_path):
    """For CIFAR a training sample is a whole training image, standardised, drawn with the generator."""
    write_fake_cifar(tmp_path, "cifar10")
    data = load_cifar("cifar10", tmp_path, download=False)
    batch = data.train_batch(5, torch.Generator().manual_seed(0))
    assert batch.shape == (5, 3, 32, 32)
    assert torch.equal(batch, data.train_batch(5, torch.Generator().manual_seed(0)))
    normalised = data.normalise(data.train)
    for x in batch:
        assert any(torch.equal(x, y) for y in normalised)


@pytest.mark.parametrize("name,missing", [("cifar10", "data_batch_3"), ("cifar100", "test")])
def test_missing_files_without_download(name, missing, tmp_path):
    """With download=False a missing batch file is a FileNotFoundError naming the file."""
    with pytest.raises(FileNotFoundError):
        load_cifar(name, tmp_path, download=False)
    write_fake_cifar(tmp_path, name)
    (tmp_path / CIFAR[name]["folder"] / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        load_cifar(name, tmp_path, download=False)


def _fake_archive(tmp_path: Path, name: str) -> tuple[Path, str]:
    """A real .tar.gz of a fake CIFAR folder, named like the official archive; returns (path, md5)."""
    src = tmp_path / "src"
    write_fake_cifar(src, name)
    archive = tmp_path / "served" / Path(CIFAR[name]["url"]).name
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / CIFAR[name]["folder"], arcname=CIFAR[name]["folder"])
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_download_checksum_mismatch_deletes_archive(name, tmp_path):
    """download_cifar verifies the md5 before unpacking: a wrong archive raises ValueError naming both md5s,
    is deleted, and nothing is extracted."""
    archive, md5 = _fake_archive(tmp_path, name)
    target = tmp_path / "data"
    with pytest.raises(ValueError) as err:
        download_cifar(name, target, url=archive.as_uri())
    assert md5 in str(err.value) and CIFAR[name]["md5"] in str(err.value)
    assert list(target.iterdir()) == []  # archive deleted, no partial file, no folder


def test_load_cifar_download_path_checks_existing_archive(tmp_path):
    """load_cifar(download=True) with files missing goes through download_cifar: a corrupt archive already in
    data_dir is rejected by md5 (no network needed) and deleted."""
    archive, md5 = _fake_archive(tmp_path, "cifar10")
    target = tmp_path / "data"
    target.mkdir()
    (target / archive.name).write_bytes(archive.read_bytes())
    with pytest.raises(ValueError, match=md5):
        load_cifar("cifar10", target, download=True)
    assert not (target / archive.name).exists()


def test_download_with_matching_checksum_unpacks(tmp_path, monkeypatch):
    """With an archive whose md5 matches the expected one, download_cifar fetches the url, unpacks the folder
    and load_cifar reads it (the expected md5 constant is set to the fake archive's, nothing else changes)."""
    archive, md5 = _fake_archive(tmp_path, "cifar10")
    monkeypatch.setitem(data_module.CIFAR["cifar10"], "md5", md5)
    target = tmp_path / "data"
    folder = download_cifar("cifar10", target, url=archive.as_uri())
    assert folder == target / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    assert load_cifar("cifar10", target, download=False).val.shape == (10, 3, 32, 32)
