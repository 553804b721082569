"""CIFAR-10/100 from the official python-pickle batches: downloaded and checked against their md5,
read with an unpickler that builds nothing but the batches' plain contents, split as the released code."""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from models.data.images import VAL_SEED, ImageData, channel_stats

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
    mean, std = channel_stats(train.split(4096))
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
