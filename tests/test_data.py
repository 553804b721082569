"""Data sets: the embedded photos, CIFAR-10/100 from the real pickle format, download checks,
and folders of images (ImageNet, CelebA-HQ/AFHQ) written with Pillow."""
from __future__ import annotations

import hashlib
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.config import TrialConfig
from models.data import (CIFAR, PHOTOS_TEST, PHOTOS_TRAIN, PHOTOS_VAL, ImageData, ImageFiles, cifar_data,
                         download_cifar, find_images, fingerprint, folders, load_cifar, load_data, load_image_folder,
                         read_cifar, read_cifar_batch, read_image, split_image_folder, tiles, verify_cifar)
from models.train import train
from helpers import RunsCommand, write_fake_cifar, write_folder, write_image

# ---------------------------------------------------------------- photos


def test_photos_shapes(photos):
    """Validation and test = fixed uint8 32x32 tiles; training = 7 whole uint8 photos with short side 256."""
    assert photos.name == "photos" and photos.size == 32
    for held_out in (photos.val, photos.test):
        assert held_out.dtype == torch.uint8 and held_out.ndim == 4 and held_out.shape[1:] == (3, 32, 32)
    assert len(photos.train) == len(PHOTOS_TRAIN) == 7
    for p in photos.train:
        assert p.dtype == torch.uint8 and p.shape[0] == 3 and min(p.shape[1:]) == 256


def test_photos_test_split_shares_no_image_with_training_or_validation(photos):
    """Whole photos are held out: no photograph is in two splits (11 in all), and no test tile is a validation
    tile or a tile of a training photo (the grid of 32 px tiles, where a photo listed twice would repeat)."""
    assert len(PHOTOS_TRAIN + PHOTOS_VAL + PHOTOS_TEST) == len(set(PHOTOS_TRAIN + PHOTOS_VAL + PHOTOS_TEST)) == 11
    test = {t.numpy().tobytes() for t in photos.test}
    assert len(test) == len(photos.test)
    assert not test & {t.numpy().tobytes() for t in photos.val}
    assert not test & {t.numpy().tobytes() for p in photos.train for t in tiles(p, 32)}


def test_photos_validation_and_test_tile_counts(photos):
    """Short side 256, floor(H/32) * floor(W/32) tiles per photo, by hand: coffee 400x600 -> 256x384: 8 * 12;
    chelsea 300x451 -> 256x385: 8 * 12; flower 427x640 -> 256x384: 8 * 12; hubble_deep_field 872x1000 ->
    256x294: 8 * 9. Validation (coffee, chelsea) 192 tiles, test (flower, hubble_deep_field) 168."""
    assert PHOTOS_VAL == ("coffee", "chelsea") and PHOTOS_TEST == ("flower", "hubble_deep_field")
    assert len(photos.val) == 96 + 96 == 192
    assert len(photos.test) == 96 + 72 == 168


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


def test_train_batch_crops_where_its_draws_say(photos):
    """The crops of a batch, gathered photo by photo, are those the draws name one at a time: photo k with
    probability proportional to its crop positions, then (y, x) = floor(u * positions along each axis)."""
    generator = torch.Generator().manual_seed(5)
    batch = photos.to_uint8(photos.train_batch(64, generator))
    generator.manual_seed(5)
    positions = torch.tensor([(p.shape[1] - 31) * (p.shape[2] - 31) for p in photos.train], dtype=torch.float64)
    which = torch.multinomial(positions, 64, replacement=True, generator=generator)
    u = torch.rand(64, 2, generator=generator, dtype=torch.float64)
    for crop, k, (uy, ux) in zip(batch, which.tolist(), u.tolist()):
        photo = photos.train[k]
        y, x = int(uy * (photo.shape[1] - 31)), int(ux * (photo.shape[2] - 31))
        assert torch.equal(crop, photo[:, y:y + 32, x:x + 32])


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
    with pytest.raises(ValueError, match="mnist.*cifar100, imagefolder, imagenet, celeba_afhq"):
        load_data("mnist")
    with pytest.raises(ValueError, match="data_dir"):
        load_cifar("cifar10", "")


# ---------------------------------------------------------------- CIFAR in the real python-pickle format


def fake_cifar(root: Path, name: str):
    """The ImageData of a fake CIFAR read by the same reader and split as the real one (no md5 check:
    only the official files pass that)."""
    return cifar_data(name, *read_cifar(name, root / CIFAR[name]["folder"]))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_load_cifar_format_and_split(name, tmp_path):
    """CIFAR rows (n, 3072) become (n, 3, 32, 32) (R plane, then G, then B, row-major); validation = the first
    20 % of RandomState(0xC1CAFA52).permutation(n) of the concatenated training images; test split kept."""
    rows, test_rows = write_fake_cifar(tmp_path, name)
    data = fake_cifar(tmp_path, name)
    assert data.name == name and data.size == 32
    assert data.train.shape == (40, 3, 32, 32) and data.train.dtype == torch.uint8
    assert data.val.shape == (10, 3, 32, 32) and data.test.shape == (10, 3, 32, 32)
    perm = np.random.RandomState(0xC1CAFA52).permutation(50)
    images = rows.reshape(50, 3, 32, 32)
    assert torch.equal(data.val, torch.from_numpy(images[perm[:10]]))
    assert torch.equal(data.train, torch.from_numpy(images[perm[10:]]))
    assert torch.equal(data.test, torch.from_numpy(test_rows.reshape(10, 3, 32, 32)))
    # the official test batch is the test split, and none of its images is in training or validation
    seen = {x.numpy().tobytes() for x in torch.cat([data.train, data.val])}
    assert not {x.numpy().tobytes() for x in data.test} & seen
    # pixel layout by hand: channel c, row y, column x is byte c * 1024 + y * 32 + x
    assert data.test[4, 2, 17, 5].item() == int(test_rows[4, 2 * 1024 + 17 * 32 + 5])
    assert data.test[4, 0, 0, 31].item() == int(test_rows[4, 31])
    # normalisation from the training split only
    pixels = torch.from_numpy(images[perm[10:]]).double().permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.allclose(data.mean.double(), pixels.mean(1), rtol=1e-6)
    assert torch.allclose(data.std.double(), pixels.std(1, unbiased=False), rtol=1e-5)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_public_loader_refuses_a_fake_cifar_naming_the_file(name, tmp_path):
    """A folder in the right layout whose files are not the official ones (here 60 random images) is refused
    by load_cifar / load_data before anything is unpickled: the first file's md5 differs from torchvision's."""
    write_fake_cifar(tmp_path, name)
    first = CIFAR[name]["train"][0]
    for load in (load_cifar, load_data):
        with pytest.raises(ValueError, match=f"{first} has md5 .* not the official {CIFAR[name]['files'][first]}"):
            load(name, tmp_path, download=False)


def test_malicious_batch_is_refused_without_running(tmp_path):
    """A data_batch_1 whose pickle calls os.system is refused naming the file and the global, by the reader
    (restricted unpickler) and by the public loader (md5); the command never runs."""
    write_fake_cifar(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": RunsCommand(marker), b"labels": []}))
    with pytest.raises(ValueError, match=r"data_batch_1 is not a CIFAR batch: .*global (posix|os)\.system"):
        read_cifar_batch(batch)
    with pytest.raises(ValueError, match="data_batch_1 has md5"):
        load_cifar("cifar10", tmp_path, download=False)
    assert not marker.exists()
    # any other class is refused as well, even a harmless one
    batch.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": Path("p")}))
    with pytest.raises(ValueError, match="pathlib"):
        read_cifar_batch(batch)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-100], "data_batch_2 is not a CIFAR batch: .*truncated"),
    (lambda b: b"not a pickle at all", "data_batch_2 is not a CIFAR batch"),
    (lambda b: pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 0, 0]}),
     "data_batch_2 is not a CIFAR batch: expected .*n x 3072"),
    (lambda b: pickle.dumps([1, 2]), "data_batch_2 is not a CIFAR batch: expected"),
])
def test_damaged_batch_names_the_file(damage, message, tmp_path):
    """Truncated, foreign or misshapen batches are ValueErrors naming the file, never a bare pickle error."""
    write_fake_cifar(tmp_path, "cifar10")
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(damage(batch.read_bytes()))
    with pytest.raises(ValueError, match=message):
        read_cifar("cifar10", batch.parent)


def test_cifar_train_batch_is_whole_normalised_images(tmp_path):
    """For CIFAR a training sample is a whole training image, standardised, drawn with the generator."""
    write_fake_cifar(tmp_path, "cifar10")
    data = fake_cifar(tmp_path, "cifar10")
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
    with pytest.raises(FileNotFoundError, match=missing):
        verify_cifar(name, tmp_path)


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
    assert list(target.iterdir()) == []  # this process's partial file deleted, nothing renamed or extracted


def test_wrong_download_deletes_only_its_own_file(tmp_path):
    """Downloads go to a per-process temporary file: another process's partial download in the same folder
    (here a file with the old fixed name and one with the temporary pattern) is left alone."""
    archive, _ = _fake_archive(tmp_path, "cifar10")
    target = tmp_path / "data"
    target.mkdir()
    others = [target / "cifar-10-python.tar.part", target / ".cifar-10-python.tar.gz.other.part"]
    for other in others:
        other.write_bytes(b"someone else's download")
    with pytest.raises(ValueError):
        download_cifar("cifar10", target, url=archive.as_uri())
    assert sorted(target.iterdir()) == sorted(others)


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


def test_download_with_matching_checksum_unpacks_then_checks_files_and_counts(tmp_path, monkeypatch):
    """With an archive whose md5 matches the expected one, download_cifar fetches the url and unpacks the
    folder (no temporary file or folder left); load_cifar still refuses its files by their own md5, and with
    those set to the fake's too, by the image counts (50 + 10, not 50,000 + 10,000)."""
    archive, md5 = _fake_archive(tmp_path, "cifar10")
    monkeypatch.setitem(CIFAR["cifar10"], "md5", md5)
    target = tmp_path / "data"
    folder = download_cifar("cifar10", target, url=archive.as_uri())
    assert folder == target / "cifar-10-batches-py"
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert sorted(p.name for p in folder.iterdir()) == [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    with pytest.raises(ValueError, match="data_batch_1 has md5"):
        load_cifar("cifar10", target, download=False)
    files = {f: hashlib.md5((folder / f).read_bytes()).hexdigest() for f in CIFAR["cifar10"]["files"]}
    monkeypatch.setitem(CIFAR["cifar10"], "files", files)
    with pytest.raises(ValueError, match="holds 50 training and 10 test images; cifar10 has 50000 and 10000"):
        load_cifar("cifar10", target, download=False)
    assert fake_cifar(target, "cifar10").val.shape == (10, 3, 32, 32)


# ---------------------------------------------------------------- folders of images (written with Pillow)


RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


@pytest.mark.parametrize("width,height", [(120, 40), (40, 120)])
def test_read_image_resizes_short_side_and_crops_the_centre(width, height, tmp_path):
    """A 3:1 image whose thirds are blue | red | green (along its long side) becomes 8x8: the short side is
    resized to 8 (the image to 24x8) and the centre 8x8 kept, so the crop shows the red third only
    (the first and last row/column may blend with the neighbours' colours through the antialiasing filter)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    third = max(width, height) // 3
    for i, colour in enumerate((BLUE, RED, GREEN)):
        if width > height:
            pixels[:, i * third:(i + 1) * third] = colour
        else:
            pixels[i * third:(i + 1) * third] = colour
    Image.fromarray(pixels).save(tmp_path / "thirds.png")
    image = read_image(tmp_path / "thirds.png", 8)
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
    inner = image[:, 1:-1, 1:-1].reshape(3, -1)
    assert torch.all((inner - torch.tensor(RED)[:, None]).abs() <= 1), inner
    assert image[2].max() <= 40 and image[1].max() <= 40  # neither blue nor green reaches the crop's inside


def test_read_image_modes_and_upscaling(tmp_path):
    """Grey images become three equal channels, RGBA drops alpha (RGB values kept), a small image is enlarged."""
    grey = read_image(write_image(tmp_path / "grey.png", 16, 20, mode="L"), 16)
    assert grey.shape == (3, 16, 16) and torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 200, 30), 0  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert torch.equal(read_image(tmp_path / "rgba.png", 16), _constant((10, 200, 30), 16))
    Image.new("RGB", (4, 6), (50, 60, 70)).save(tmp_path / "small.png")
    assert torch.equal(read_image(tmp_path / "small.png", 24), _constant((50, 60, 70), 24))


def _constant(colour: tuple[int, int, int], size: int) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1).expand(3, size, size)


def test_find_images_recursive_case_insensitive_sorted(tmp_path):
    """Images at any depth with .jpg .jpeg .png .bmp .webp in any case are found, sorted by path; other files
    and hidden files (macOS "._x.jpg" companions) are not."""
    paths = write_folder(tmp_path, 10)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "group0" / "._img000.jpg").write_bytes(b"resource fork")
    write_image(tmp_path / ".cache" / "thumb.png", 12, 12)
    assert find_images(tmp_path) == paths
    assert {Path(p).suffix for p in paths} == {".png", ".JPG", ".jpeg", ".bmp", ".webp"}


def test_five_percent_splits_are_deterministic_and_disjoint(tmp_path):
    """Without subfolders: validation = the first 5 % (at least 1) of RandomState(0xC1CAFA52).permutation(n) of
    the sorted paths, in that order; test = the first 5 % (at least 1) of RandomState(0x7E57).permutation of the
    remaining sorted paths, in that order; training = the rest, sorted. No file is in two splits."""
    paths = write_folder(tmp_path, 45)
    train_paths, val_paths, test_paths = split_image_folder(tmp_path)
    perm = np.random.RandomState(0xC1CAFA52).permutation(45)
    assert val_paths == [paths[i] for i in perm[:2]]  # 45 * 5 // 100 = 2
    rest = sorted(paths[i] for i in perm[2:])
    assert test_paths == [rest[i] for i in np.random.RandomState(0x7E57).permutation(43)[:2]]  # 43 * 5 // 100 = 2
    assert train_paths == sorted(set(rest) - set(test_paths)) and len(train_paths) == 41
    assert sorted(train_paths + val_paths + test_paths) == paths  # every file once: the splits share none
    assert split_image_folder(tmp_path) == (train_paths, val_paths, test_paths)
    small = tmp_path / "small"
    write_folder(small, 3)
    assert [len(part) for part in split_image_folder(small)] == [1, 1, 1]  # at least one held-out image each


def test_train_val_and_test_subfolders_are_the_split(tmp_path):
    """With train/ and val/ subfolders (the ImageNet layout) they are the split; validation files come in the
    order of RandomState(0xC1CAFA52).permutation; a test/ subfolder is the test split (order of
    RandomState(0x7E57).permutation), which training and validation never read; without one, test is 5 %
    (at least 1) of train/'s files."""
    train_paths = write_folder(tmp_path / "train", 6)
    val_paths = write_folder(tmp_path / "val", 4)
    test_paths = [str(write_image(tmp_path / "test" / f"t{i}.png", 12, 12, seed=100 + i)) for i in range(2)]
    got_train, got_val, got_test = split_image_folder(tmp_path)
    assert got_train == train_paths
    assert got_val == [val_paths[i] for i in np.random.RandomState(0xC1CAFA52).permutation(4)]
    assert got_test == [test_paths[i] for i in np.random.RandomState(0x7E57).permutation(2)]
    data = load_image_folder(tmp_path, 12)
    assert len(data.train) == 6 and data.val.shape == (4, 3, 12, 12) and data.test.shape == (2, 3, 12, 12)
    assert torch.equal(data.test, torch.stack([read_image(p, 12) for p in got_test]))
    decoded = {x.numpy().tobytes() for x in torch.cat([data.train[range(6)], data.val])}
    assert not {x.numpy().tobytes() for x in data.test} & decoded  # no test image in training or validation
    shutil.rmtree(tmp_path / "test")
    got_train, got_val, got_test = split_image_folder(tmp_path)
    assert got_val == [val_paths[i] for i in np.random.RandomState(0xC1CAFA52).permutation(4)]
    assert got_test == [train_paths[np.random.RandomState(0x7E57).permutation(6)[0]]]
    assert got_train == sorted(set(train_paths) - set(got_test))


def test_a_test_subfolder_of_a_flat_folder_is_the_test_split(tmp_path):
    """In a folder without train/ and val/, the images under test/ are the test split and the validation and
    training files are drawn from the others only (validation as without test/)."""
    paths = write_folder(tmp_path, 20)
    test_paths = write_folder(tmp_path / "test", 3)
    train_paths, val_paths, got_test = split_image_folder(tmp_path)
    assert sorted(got_test) == test_paths
    assert val_paths == [paths[np.random.RandomState(0xC1CAFA52).permutation(20)[0]]]
    assert sorted(train_paths + val_paths) == paths


def test_subfolders_that_share_a_file_are_refused(tmp_path):
    """A file reached from test/ and from train/ or val/ (through a link) is refused, naming it."""
    write_folder(tmp_path / "train", 3)
    write_folder(tmp_path / "val", 2)
    write_folder(tmp_path / "test", 2)
    (tmp_path / "test" / "copy.png").symlink_to(Path(find_images(tmp_path / "val")[0]))
    with pytest.raises(ValueError, match=f"1 image files are both in {tmp_path}/val and {tmp_path}/test .first: "
                                         f"{tmp_path}/test/copy.png.; allowed: training, validation and test"):
        split_image_folder(tmp_path)


def test_load_image_folder_images_and_statistics(tmp_path, monkeypatch):
    """Validation = the first VAL_CAP validation files decoded into uint8 (M, 3, size, size); training = a lazy
    ImageFiles over the training files; mean/std over the training files i * n // m, m = min(n, STATS_CAP)."""
    write_folder(tmp_path, 45)
    monkeypatch.setattr(folders, "VAL_CAP", 1)
    monkeypatch.setattr(folders, "STATS_CAP", 4)
    data = load_image_folder(tmp_path, 12)
    train_paths, val_paths, test_paths = split_image_folder(tmp_path)
    assert data.name == "imagefolder" and data.size == 12
    assert data.test.dtype == torch.uint8 and data.test.shape == (2, 3, 12, 12)
    assert torch.equal(data.test[1], read_image(test_paths[1], 12))
    assert isinstance(data.train, ImageFiles) and list(data.train.paths) == train_paths
    assert data.val.dtype == torch.uint8 and data.val.shape == (1, 3, 12, 12)
    assert torch.equal(data.val[0], read_image(val_paths[0], 12))
    chosen = [train_paths[i * 41 // 4] for i in range(4)]  # 0, 10, 20, 30
    pixels = torch.stack([read_image(p, 12) for p in chosen]).double().permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.allclose(data.mean.double(), pixels.mean(1), rtol=1e-6)
    assert torch.allclose(data.std.double(), pixels.std(1, unbiased=False), rtol=1e-5)


def test_image_folder_train_batches(tmp_path):
    """Training batches are whole training images (decoded per batch), standardised, deterministic for a
    generator; never a validation image."""
    write_folder(tmp_path, 45)
    data = load_image_folder(tmp_path, 12)
    a = data.train_batch(64, torch.Generator().manual_seed(1))
    assert a.shape == (64, 3, 12, 12) and a.dtype == torch.float32
    assert torch.equal(a, data.train_batch(64, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, data.train_batch(64, torch.Generator().manual_seed(2)))
    mean, std = a.mean((0, 2, 3)), a.std((0, 2, 3))
    assert torch.all(mean.abs() < 0.3) and torch.all((std > 0.7) & (std < 1.3)), (mean, std)
    train_images = data.normalise(data.train[range(len(data.train))])
    val_images = data.normalise(data.val)
    for x in a[:8]:
        assert any(torch.equal(x, y) for y in train_images)
        assert not any(torch.equal(x, y) for y in val_images)


@pytest.mark.parametrize("name", ["imagefolder", "imagenet", "celeba_afhq"])
def test_aliases_load_the_same_folder(name, tmp_path):
    """imagenet and celeba_afhq are names of the same loader: load_data and the config accept all three."""
    write_folder(tmp_path, 25)
    data = load_data(name, tmp_path, 16)
    assert data.name == name and data.val.shape == (1, 3, 16, 16)
    assert torch.equal(data.val, load_image_folder(tmp_path, 16).val)
    assert TrialConfig(dataset=name, data_dir=str(tmp_path), image_size=256).dataset == name


def test_image_folder_feeds_the_trainer(tmp_path):
    """A VQ-VAE-2 trains on a folder of images through load_data (two steps, finite validation loss)."""
    write_folder(tmp_path, 25, size=32)
    cfg = TrialConfig(model="vqvae2", dataset="imagenet", data_dir=str(tmp_path), image_size=32, width=8,
                      codebook_size=16, code_dim=8, batch_size=4, steps=2, eval_every=2)
    result = train(cfg, device="cpu")
    assert result.status == "finished" and np.isfinite(result.best_val_loss)


def test_image_folder_errors(tmp_path):
    """No data_dir, a missing folder, a folder without images (it names the folder and the extensions), a
    single image, and an unreadable image (it names the file, also when decoded lazily for a batch)."""
    with pytest.raises(ValueError, match="data_dir"):
        load_data("imagenet", "")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere", 8)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.*\.jpg \.jpeg \.png \.bmp \.webp"):
        load_image_folder(empty, 8)
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="empty"):
        load_image_folder(empty, 8)
    single = tmp_path / "single"
    write_image(single / "one.png", 8, 8)
    with pytest.raises(ValueError, match="holds only 1 image.s.; at least 3 are needed .training, validation and test"):
        load_image_folder(single, 8)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        read_image(broken, 8)
    with pytest.raises(ValueError, match="broken.jpg"):
        ImageFiles((str(single / "one.png"), str(broken)), 8)[[0, 1]]  # from the decoding threads
    truncated = tmp_path / "folder" / "truncated.png"
    write_folder(tmp_path / "folder", 3)
    truncated.write_bytes(write_image(tmp_path / "whole.png", 16, 16).read_bytes()[:60])
    with pytest.raises(ValueError, match="truncated.png"):
        load_image_folder(tmp_path / "folder", 8)


def test_fingerprint_hashes_the_images_in_memory_and_the_file_list_of_a_folder(tmp_path):
    """In memory: SHA-256 over the training images, then the validation and the test images, byte by byte (a
    changed pixel changes it); a folder: its training files' paths relative to the folder (the same after a
    move), then its validation and test images."""
    train = [torch.arange(12, dtype=torch.uint8).view(3, 2, 2), torch.full((3, 2, 3), 7, dtype=torch.uint8)]
    val = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    data = ImageData("tiny", train, val, None, 2, torch.zeros(3), torch.ones(3))
    expected = hashlib.sha256(bytes(range(12)) + bytes([7] * 18) + bytes(12)).hexdigest()[:16]
    assert fingerprint(data) == {"name": "tiny", "digest": expected, "train": 2, "val": 1, "test": 0}
    data.test = torch.full((2, 3, 2, 2), 5, dtype=torch.uint8)
    expected = hashlib.sha256(bytes(range(12)) + bytes([7] * 18) + bytes(12) + bytes([5] * 24)).hexdigest()[:16]
    assert fingerprint(data) == {"name": "tiny", "digest": expected, "train": 2, "val": 1, "test": 2}
    val[0, 0, 0, 0] = 1
    assert fingerprint(data)["digest"] != expected

    write_folder(tmp_path / "a", 25)
    folder = load_image_folder(tmp_path / "a", 8)
    names = "\n".join(str(Path(p).relative_to(tmp_path / "a")) for p in folder.train.paths)
    held_out = folder.val.numpy().tobytes() + folder.test.numpy().tobytes()
    expected = hashlib.sha256(names.encode() + held_out).hexdigest()[:16]
    assert fingerprint(folder) == {"name": "imagefolder", "digest": expected, "train": 23, "val": 1, "test": 1}
    (tmp_path / "a").rename(tmp_path / "b")
    assert fingerprint(load_image_folder(tmp_path / "b", 8))["digest"] == expected


def test_normalise_follows_the_images_device(photos):
    """The trainer moves image-folder batches to the GPU as uint8 and standardises them there, so the
    channel statistics follow the images' device (the device check's VQ-VAE-2 part found them left on
    the CPU). The meta device stands in for a GPU: the result is on the images' device, and on the CPU
    the round trip to uint8 is exact."""
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert photos.normalise(x.to("meta")).device.type == "meta"
    assert photos.to_uint8(photos.normalise(x.to("meta"))).device.type == "meta"
    assert torch.equal(photos.to_uint8(photos.normalise(x)), x)
