"""Image data sets: the offline `photos` default and CIFAR-10/100 (SPEC section 3).

Every data set becomes an `ImageData`: uint8 training images (a list of photos
of any size, or one (N, 3, H, W) tensor), fixed validation tiles, and the
per-channel mean/std of the training split. Training batches are random
`size` x `size` crops (for CIFAR the crop is the whole image), standardised.
"""
from __future__ import annotations

import hashlib
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Validation is 20 % of the CIFAR training split, chosen with this seed as in the released code.
CIFAR_VAL_SEED = 0xC1CAFA52
CIFAR = {
    "cifar10": dict(url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    md5="c58f30108f718f92721af3b95e74349a", folder="cifar-10-batches-py",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test="test_batch"),
    "cifar100": dict(url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                     md5="eb9058c3a382ffc7106e4002c42a8d85", folder="cifar-100-python",
                     train=["train"], test="test"),
}
# Photographs shipped inside installed packages. Whole photos are held out for
# validation so that no scene appears on both sides.
PHOTOS_TRAIN = ("astronaut", "rocket", "retina", "immunohistochemistry", "stereo_motorcycle", "china", "grace_hopper")
PHOTOS_VAL = ("coffee", "chelsea", "flower")
PHOTO_SHORT_SIDE = 256


@dataclass
class ImageData:
    """Training images, validation tiles and the normalisation of one data set."""

    name: str
    train: list[torch.Tensor] | torch.Tensor  # uint8, each (3, H, W) with H, W >= size
    val: torch.Tensor  # uint8 (M, 3, size, size)
    test: torch.Tensor | None  # uint8, like val, where the data set has a test split
    size: int
    mean: torch.Tensor  # (3,) float, training split, in [0, 255]
    std: torch.Tensor  # (3,)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float, standardised per channel."""
        return (images.float() - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """The inverse of `normalise`, clamped to [0, 255] (for pictures)."""
        x = images * self.std.view(1, 3, 1, 1) + self.mean.view(1, 3, 1, 1)
        return x.round().clamp(0, 255).to(torch.uint8)

    def train_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """A standardised batch of random crops, drawn with `generator` (deterministic)."""
        if isinstance(self.train, torch.Tensor):
            idx = torch.randint(len(self.train), (batch_size,), generator=generator)
            return self.normalise(self.train[idx])
        # Pick a photo in proportion to its number of crop positions, then a position.
        positions = torch.tensor([(p.shape[1] - self.size + 1) * (p.shape[2] - self.size + 1) for p in self.train],
                                 dtype=torch.float64)
        which = torch.multinomial(positions, batch_size, replacement=True, generator=generator)
        u = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64)
        crops = []
        for i, (uy, ux) in zip(which.tolist(), u.tolist()):
            photo = self.train[i]
            y = int(uy * (photo.shape[1] - self.size + 1))
            x = int(ux * (photo.shape[2] - self.size + 1))
            crops.append(photo[:, y:y + self.size, x:x + self.size])
        return self.normalise(torch.stack(crops))


def load_data(name: str, data_dir: str | Path = "", size: int = 32, download: bool = True) -> ImageData:
    """Load data set `name` ("photos", "cifar10" or "cifar100")."""
    if name == "photos":
        return load_photos(size)
    if name in CIFAR:
        return load_cifar(name, data_dir, download=download)
    raise ValueError(f"dataset={name!r} is unknown; allowed: photos, {', '.join(CIFAR)}")


def _channel_stats(images) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over uint8 tensors whose channel axis is dim -3, chunk by chunk."""
    total, squares, n = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for im in images:
        x = im.double().movedim(-3, 0).reshape(3, -1)
        total += x.sum(1)
        squares += x.square().sum(1)
        n += x.shape[1]
    mean = total / n
    return mean.float(), (squares / n - mean.square()).sqrt().float()


# ---------------------------------------------------------------- photos


def _read_photo(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image
        return load_sample_image(f"{name}.jpg")
    if name == "grace_hopper":
        import matplotlib.cbook
        import matplotlib.image
        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            return matplotlib.image.imread(f, format="jpg")
    import skimage.data
    image = getattr(skimage.data, name)()
    return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)


def _resize_short_side(photo: np.ndarray, short: int) -> torch.Tensor:
    x = torch.from_numpy(np.array(photo[..., :3])).permute(2, 0, 1).float()[None]
    scale = short / min(x.shape[2:])
    x = F.interpolate(x, size=(round(x.shape[2] * scale), round(x.shape[3] * scale)), mode="bilinear",
                      antialias=True, align_corners=False)
    return x[0].round().clamp(0, 255).to(torch.uint8)


def tiles(image: torch.Tensor, size: int) -> torch.Tensor:
    """Non-overlapping size x size tiles of a (3, H, W) image, row by row: (n, 3, size, size)."""
    c, h, w = image.shape
    t = image[:, : h - h % size, : w - w % size].unfold(1, size, size).unfold(2, size, size)
    return t.permute(1, 2, 0, 3, 4).reshape(-1, c, size, size)


def load_photos(size: int = 32) -> ImageData:
    """The embedded default: photographs from scikit-image, scikit-learn and matplotlib,
    resized to a short side of 256 px; training = random crops of 7 photos, validation =
    the non-overlapping tiles of 3 other photos."""
    train = [_resize_short_side(_read_photo(n), PHOTO_SHORT_SIDE) for n in PHOTOS_TRAIN]
    val = torch.cat([tiles(_resize_short_side(_read_photo(n), PHOTO_SHORT_SIDE), size) for n in PHOTOS_VAL])
    mean, std = _channel_stats(train)
    return ImageData("photos", train, val, None, size, mean, std)


# ---------------------------------------------------------------- CIFAR


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_cifar(name: str, data_dir: str | Path, url: str | None = None) -> Path:
    """Fetch and unpack the python-pickle archive of `name` into data_dir.

    The archive's md5 is checked before anything is unpickled; a mismatch deletes
    the file and raises. `url` overrides the official address (mirrors, tests).
    """
    spec = CIFAR[name]
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    archive = data_dir / Path(spec["url"]).name
    if not archive.exists():
        print(f"downloading {name} from {url or spec['url']} to {archive}", flush=True)
        partial = archive.with_suffix(".part")
        urllib.request.urlretrieve(url or spec["url"], partial)
        partial.rename(archive)
    digest = _md5(archive)
    if digest != spec["md5"]:
        archive.unlink()
        raise ValueError(f"{archive} has md5 {digest}, expected {spec['md5']}; the file was deleted, try again")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(data_dir, filter="data")
    return data_dir / spec["folder"]


def _read_batches(folder: Path, files: list[str]) -> torch.Tensor:
    arrays = []
    for f in files:
        with open(folder / f, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        arrays.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
    return torch.from_numpy(np.concatenate(arrays))


def load_cifar(name: str, data_dir: str | Path, download: bool = True) -> ImageData:
    """CIFAR-10/100 from the standard python batches under data_dir (downloaded if absent).

    Validation = 20 % of the training split chosen with RandomState(0xC1CAFA52);
    the official test split is kept as `test`.
    """
    if not str(data_dir):
        raise ValueError(f"dataset={name} needs data_dir: a folder that holds (or will hold) {CIFAR[name]['folder']}")
    spec = CIFAR[name]
    folder = Path(data_dir) / spec["folder"]
    missing = [f for f in spec["train"] + [spec["test"]] if not (folder / f).exists()]
    if missing:
        if not download:
            raise FileNotFoundError(f"{folder} lacks {missing} and download is off")
        download_cifar(name, data_dir)
    images = _read_batches(folder, spec["train"])
    perm = torch.from_numpy(np.random.RandomState(CIFAR_VAL_SEED).permutation(len(images)))
    n_val = len(images) // 5
    train, val = images[perm[n_val:]], images[perm[:n_val]]
    mean, std = _channel_stats(train.split(4096))
    return ImageData(name, train, val, _read_batches(folder, [spec["test"]]), 32, mean, std)
