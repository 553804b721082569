"""Image data sets: the offline `photos` default, CIFAR-10/100 and folders of images (paper, Sec. 4).

Every data set becomes an `ImageData`: uint8 training images (a list of photos
of any size, one (N, 3, H, W) tensor, or `ImageFiles`, a lazy list of files that
the trainer decodes in DataLoader processes: models/loader.py), fixed validation
images, and the per-channel mean/std of the training split. Training batches are random `size` x `size` crops (for
CIFAR and image folders the crop is the whole image), standardised.
"""
from __future__ import annotations

import hashlib
import numbers
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Validation is 20 % of the CIFAR training split, chosen with this seed as in the released code;
# image folders without train/ and val/ subfolders draw their validation files with it too.
VAL_SEED = 0xC1CAFA52
# The official python-pickle archives and the md5 of every file in them, as torchvision lists them
# (torchvision/datasets/cifar.py: tgz_md5, train_list, test_list); the counts are the data sets' own.
CIFAR = {
    "cifar10": dict(url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    md5="c58f30108f718f92721af3b95e74349a", folder="cifar-10-batches-py",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test="test_batch",
                    files={"data_batch_1": "c99cafc152244af753f735de768cd75f",
                           "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                           "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                           "data_batch_4": "634d18415352ddfa80567beed471001a",
                           "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
                           "test_batch": "40351d587109b95175f43aff81a1287e"}),
    "cifar100": dict(url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                     md5="eb9058c3a382ffc7106e4002c42a8d85", folder="cifar-100-python",
                     train=["train"], test="test",
                     files={"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}),
}
CIFAR_COUNTS = (50_000, 10_000)  # training and test images of both CIFAR-10 and CIFAR-100
# What the official batches are made of: dicts, lists, bytes, ints and one uint8 numpy array per file
# (pickled by numpy 1.x under Python 2). The unpickler admits these globals and nothing else.
PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype")}
# Photographs shipped inside installed packages. Whole photos are held out for
# validation so that no scene appears on both sides.
PHOTOS_TRAIN = ("astronaut", "rocket", "retina", "immunohistochemistry", "stereo_motorcycle", "china", "grace_hopper")
PHOTOS_VAL = ("coffee", "chelsea", "flower")
PHOTO_SHORT_SIDE = 256
# Folders of images (ImageNet; the CelebA-HQ + AFHQ mixture): three names, one loader.
IMAGE_FOLDERS = ("imagefolder", "imagenet", "celeba_afhq")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # matched in any case
VAL_PERCENT = 5  # of the files (at least 1), when a folder has no train/ and val/ subfolders
VAL_CAP = 2000  # validation images held in memory (uint8 at 256 px: 393 MB)
STATS_CAP = 1000  # training images the mean/std are computed from
DECODE_THREADS = 4  # image decoding runs in C with the GIL released, so threads overlap


@dataclass
class ImageData:
    """Training images, validation tiles and the normalisation of one data set."""

    name: str
    train: list[torch.Tensor] | torch.Tensor | ImageFiles  # uint8, each (3, H, W) with H, W >= size
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

    def train_batch(self, batch_size: int, generator: torch.Generator, share: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """A standardised batch of random crops, drawn with `generator` (deterministic).

        share = (r, W): the same random draws as the whole batch, but only its rows `share_rows`
        (process r of W in data-parallel training); the W shares stacked are the whole batch.
        """
        rows = share_rows(batch_size, share)
        if isinstance(self.train, (torch.Tensor, ImageFiles)):  # whole images, in memory or decoded now
            idx = torch.randint(len(self.train), (batch_size,), generator=generator)
            return self.normalise(self.train[idx[rows]])
        # Pick a photo in proportion to its number of crop positions, then a position.
        positions = torch.tensor([(p.shape[1] - self.size + 1) * (p.shape[2] - self.size + 1) for p in self.train],
                                 dtype=torch.float64)
        which = torch.multinomial(positions, batch_size, replacement=True, generator=generator)
        u = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64)
        crops = []
        for i, (uy, ux) in zip(which[rows].tolist(), u[rows].tolist()):
            photo = self.train[i]
            y = int(uy * (photo.shape[1] - self.size + 1))
            x = int(ux * (photo.shape[2] - self.size + 1))
            crops.append(photo[:, y:y + self.size, x:x + self.size])
        return self.normalise(torch.stack(crops))


def share_rows(batch_size: int, share: tuple[int, int]) -> slice:
    """Rows r*B/W ... (r+1)*B/W - 1 of a batch of B: process r's share of W (B must divide by W)."""
    rank, world = share
    if batch_size % world or not 0 <= rank < world:
        raise ValueError(f"share {share} of batch_size={batch_size}: allowed ranks 0..W-1 and W dividing the batch")
    size = batch_size // world
    return slice(rank * size, (rank + 1) * size)


def fingerprint(data: ImageData) -> dict:
    """What identifies a data set in a run's record: {"name", "digest", "train", "val"}, the digest the
    first 16 hex digits of a SHA-256 over the validation images and the training images held in memory
    (photos, CIFAR), or, for an image folder decoded batch by batch, over its training files' paths
    relative to their common folder (reading 1.3 M ImageNet files only to hash them would take hours);
    "train" / "val" count the training images (photos: whole photographs) and validation images."""
    digest = hashlib.sha256()
    if isinstance(data.train, ImageFiles):
        root = os.path.commonpath(data.train.paths) if len(data.train) > 1 else os.path.dirname(data.train.paths[0])
        digest.update("\n".join(os.path.relpath(p, root) for p in data.train.paths).encode())
    else:
        for image in data.train:  # a list of photos, or the rows of a tensor
            digest.update(image.contiguous().numpy().tobytes())
    digest.update(data.val.contiguous().numpy().tobytes())
    return {"name": data.name, "digest": digest.hexdigest()[:16], "train": len(data.train), "val": len(data.val)}


def load_data(name: str, data_dir: str | Path = "", size: int = 32, download: bool = True) -> ImageData:
    """Load data set `name` ("photos", "cifar10", "cifar100", or a folder of images: "imagefolder",
    "imagenet", "celeba_afhq") with images of side `size` (CIFAR is always 32)."""
    if name == "photos":
        return load_photos(size)
    if name in CIFAR:
        return load_cifar(name, data_dir, download=download)
    if name in IMAGE_FOLDERS:
        return load_image_folder(data_dir, size, name)
    raise ValueError(f"dataset={name!r} is unknown; allowed: photos, {', '.join([*CIFAR, *IMAGE_FOLDERS])}")


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
    """Fetch and unpack the python-pickle archive of `name` into data_dir; returns the data set's folder.

    The archive is written to a temporary file of this process and renamed into place only once its
    md5 matches, so concurrent downloads into one folder never share a partial file; a mismatch deletes
    only this process's file and raises. Unpacking goes to a temporary folder renamed into place too.
    `url` overrides the official address (mirrors, tests).
    """
    spec = CIFAR[name]
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    archive = data_dir / Path(spec["url"]).name
    if archive.exists():
        _check_archive(archive, spec["md5"], archive)
    else:
        print(f"downloading {name} from {url or spec['url']} to {archive}", flush=True)
        fd, partial = tempfile.mkstemp(dir=data_dir, prefix=f".{archive.name}.", suffix=".part")
        os.close(fd)
        try:
            urllib.request.urlretrieve(url or spec["url"], partial)
            _check_archive(Path(partial), spec["md5"], archive)
            os.replace(partial, archive)
        finally:
            Path(partial).unlink(missing_ok=True)
    folder = data_dir / spec["folder"]
    if not folder.exists():
        unpacked = Path(tempfile.mkdtemp(dir=data_dir, prefix=f".{spec['folder']}."))
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(unpacked, filter="data")
            try:
                os.rename(unpacked / spec["folder"], folder)
            except OSError:
                if not folder.is_dir():  # not a concurrent unpacking that got there first
                    raise
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)
    return folder


def _check_archive(path: Path, expected: str, shown: Path):
    digest = _md5(path)
    if digest != expected:
        path.unlink()
        raise ValueError(f"{shown} has md5 {digest}, expected {expected}; the file was deleted, try again")


def verify_cifar(name: str, data_dir: str | Path) -> Path:
    """Check every file of CIFAR `name` under data_dir against its official md5; returns the folder.

    A missing file is a FileNotFoundError, a different file a ValueError, both naming the file: only the
    official files pass, so nothing else is ever unpickled by `load_cifar`.
    """
    spec = CIFAR[name]
    folder = Path(data_dir) / spec["folder"]
    missing = [f for f in spec["files"] if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}")
    for file, expected in spec["files"].items():
        digest = _md5(folder / file)
        if digest != expected:
            raise ValueError(f"{folder / file} has md5 {digest}, not the official {expected}: it is not the "
                             f"{name} file; delete {folder} to download it again")
    return folder


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only what the official CIFAR batches contain (see PICKLE_GLOBALS)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own reconstructor, whatever its module
        return getattr(np, name)


def read_cifar_batch(path: str | Path) -> np.ndarray:
    """The images of one CIFAR python batch file as uint8 (n, 3, 32, 32).

    Read with an unpickler that admits only plain containers, bytes, str, numbers and numpy arrays, so a
    file that would run code or build other objects is refused before anything of it runs. Every problem
    (not a pickle, truncated, foreign objects, no uint8 "data" of n x 3072 with n labels) is a ValueError
    naming the file.
    """
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError) as e:
        raise ValueError(f"{path} is not a CIFAR batch: {type(e).__name__}: {e or 'data was truncated'}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = next((batch[k] for k in (b"labels", b"fine_labels") if k in batch), None) if data is not None else None
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072
            or not isinstance(labels, list) or len(labels) != len(data)):
        raise ValueError(f"{path} is not a CIFAR batch: expected a dict with b'data' (uint8, n x 3072) and n labels")
    return data.reshape(-1, 3, 32, 32)


def read_cifar(name: str, folder: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, test) images of CIFAR `name` from the batch files in folder, each read by
    `read_cifar_batch`; no checksum or count check (`load_cifar` does both)."""
    spec = CIFAR[name]
    train = np.concatenate([read_cifar_batch(Path(folder) / f) for f in spec["train"]])
    return torch.from_numpy(train), torch.from_numpy(read_cifar_batch(Path(folder) / spec["test"]))


def cifar_data(name: str, train: torch.Tensor, test: torch.Tensor) -> ImageData:
    """CIFAR images as an ImageData: validation = 20 % of the training split chosen with
    RandomState(0xC1CAFA52), training = the rest, the official test split kept as `test`."""
    perm = torch.from_numpy(np.random.RandomState(VAL_SEED).permutation(len(train)))
    n_val = len(train) // 5
    train, val = train[perm[n_val:]], train[perm[:n_val]]
    mean, std = _channel_stats(train.split(4096))
    return ImageData(name, train, val, test, 32, mean, std)


def load_cifar(name: str, data_dir: str | Path, download: bool = True) -> ImageData:
    """CIFAR-10/100 from the official python batches under data_dir (downloaded if absent).

    Every file is checked against its official md5 (`verify_cifar`) before it is read, then read with
    the restricted unpickler (`read_cifar_batch`) and counted (50,000 training and 10,000 test images).
    """
    if not str(data_dir):
        raise ValueError(f"dataset={name} needs data_dir: a folder that holds (or will hold) {CIFAR[name]['folder']}")
    spec = CIFAR[name]
    folder = Path(data_dir) / spec["folder"]
    missing = [f for f in spec["files"] if not (folder / f).exists()]
    if missing:
        if not download:
            raise FileNotFoundError(f"{folder} lacks {missing} and download is off")
        download_cifar(name, data_dir)
    train, test = read_cifar(name, verify_cifar(name, data_dir))
    if (len(train), len(test)) != CIFAR_COUNTS:
        raise ValueError(f"{folder} holds {len(train)} training and {len(test)} test images; "
                         f"{name} has {CIFAR_COUNTS[0]} and {CIFAR_COUNTS[1]}")
    return cifar_data(name, train, test)


# ---------------------------------------------------------------- folders of images


def read_image(path: str | Path, size: int) -> torch.Tensor:
    """One image file -> uint8 (3, size, size): converted to RGB (grey replicated, alpha dropped), resized so
    that its shorter side is `size` (bilinear, antialiased: Pillow widens the filter when it shrinks), and
    centre-cropped to size x size. An unreadable file is a ValueError naming it."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")  # decodes the whole file, so broken files fail here
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    w, h = image.size
    scale = size / min(w, h)
    w, h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((w, h), Image.Resampling.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


@dataclass(frozen=True)
class ImageFiles:
    """A lazy list of image files, each read as uint8 (3, size, size) by `read_image` when indexed.

    Indexed like a uint8 tensor of images: an int gives one image, a sequence (or tensor) of ints a
    stacked (n, 3, size, size) batch, decoded in a small thread pool in index order (so deterministic).
    This is how a training split of 1.3 M images (ImageNet) is used without holding it in memory.
    """

    paths: tuple[str, ...]  # strings: a Path costs three times the memory, and ImageNet has 1.3 M files
    size: int

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.tolist()
        if isinstance(index, numbers.Integral):
            return read_image(self.paths[index], self.size)
        index = list(index)
        out = torch.empty(len(index), 3, self.size, self.size, dtype=torch.uint8)
        with ThreadPoolExecutor(DECODE_THREADS) as pool:  # rows are copied as they come: one batch in memory
            for row, image in zip(out, pool.map(lambda i: read_image(self.paths[i], self.size), index)):
                row.copy_(image)
        return out


def find_images(folder: str | Path) -> list[str]:
    """The image files under `folder` (any depth, symlinked folders followed, hidden files and folders
    skipped), as sorted path strings; none is a FileNotFoundError naming the folder and the extensions."""
    found = []
    # followlinks: a mixture such as CelebA-HQ + AFHQ is naturally a folder of links to the two data sets.
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        # Hidden files are skipped: macOS leaves "._name.jpg" companions that are not images.
        found += [os.path.join(root, f) for f in files
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    if not found:
        raise FileNotFoundError(f"{folder} holds no images; allowed extensions (any case, searched recursively): "
                                f"{' '.join(IMAGE_EXTENSIONS)}")
    return sorted(found)


def split_image_folder(data_dir: str | Path) -> tuple[list[str], list[str]]:
    """(training files, validation files) of a folder of images.

    - data_dir has both train/ and val/ subfolders (the ImageNet layout): the images under each.
    - otherwise: all images under data_dir; validation = the first 5 % (at least 1) of
      RandomState(0xC1CAFA52).permutation(n) over the sorted paths, training = the rest.
    Training files come back sorted by path; validation files in the seeded shuffled order
    (the train/val layout shuffles its validation files with the same RandomState), so that
    any prefix of the validation list (see VAL_CAP) is a random sample, not a few class folders.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"data_dir {folder} does not exist or is not a folder")
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        train, val = find_images(folder / "train"), find_images(folder / "val")
        return train, [val[i] for i in np.random.RandomState(VAL_SEED).permutation(len(val))]
    files = find_images(folder)
    if len(files) < 2:
        raise ValueError(f"{folder} holds only 1 image; at least 2 are needed (training and validation)")
    perm = np.random.RandomState(VAL_SEED).permutation(len(files))
    n_val = max(1, len(files) * VAL_PERCENT // 100)
    return sorted(files[i] for i in perm[n_val:]), [files[i] for i in perm[:n_val]]


def load_image_folder(data_dir: str | Path, size: int = 256, name: str = "imagefolder") -> ImageData:
    """A folder of images (ImageNet, CelebA-HQ + AFHQ, ...) as RGB `size` x `size` images (paper, Sec. 4.3).

    Files: .jpg .jpeg .png .bmp .webp in any case, at any depth (`find_images`); each is read by
    `read_image` (RGB, shorter side resized to `size`, centre crop). Split: `split_image_folder`.
    - training: `ImageFiles`, decoded per batch (an unreadable training file fails when drawn);
    - validation: the first VAL_CAP = 2000 files of the validation list (in its seeded order),
      decoded once into a uint8 (M, 3, size, size) tensor;
    - mean/std: over the training files i * n // m, i < m = min(n, STATS_CAP = 1000): evenly spaced
      in sorted path order, so that every class folder of ImageNet contributes.
    `name` ("imagefolder", "imagenet" or "celeba_afhq") only names the data set.
    """
    if not str(data_dir):
        raise ValueError(f"dataset={name} needs data_dir: a folder of images "
                         f"({' '.join(IMAGE_EXTENSIONS)}), optionally with train/ and val/ subfolders")
    train_paths, val_paths = split_image_folder(data_dir)
    train, val = ImageFiles(tuple(train_paths), size), ImageFiles(tuple(val_paths[:VAL_CAP]), size)
    val = val[range(len(val))]  # decoded once
    n, m = len(train), min(len(train), STATS_CAP)
    chosen = torch.tensor([i * n // m for i in range(m)])
    mean, std = _channel_stats(train[chunk] for chunk in chosen.split(64))
    return ImageData(name, train, val, None, size, mean, std)
