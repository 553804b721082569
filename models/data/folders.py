"""Folders of images (ImageNet, the CelebA-HQ + AFHQ mixture): found, split and loaded as an ImageData
whose training split is decoded batch by batch (models/data/files.py, models/data/loader.py)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from models.data.files import ImageFiles
from models.data.images import TEST_SEED, VAL_SEED, ImageData, channel_stats

# Folders of images (ImageNet; the CelebA-HQ + AFHQ mixture): three names, one loader.
IMAGE_FOLDERS = ("imagefolder", "imagenet", "celeba_afhq")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # matched in any case
HELD_OUT_PERCENT = 5  # of the files (at least 1) drawn for validation or test where no subfolder holds them
VAL_CAP = TEST_CAP = 2000  # validation and test images held in memory (uint8 at 256 px: 393 MB each)
STATS_CAP = 1000  # training images the mean/std are computed from


def _walk_images(folder: str | Path) -> dict[str, str]:
    """real path -> path of every image file under `folder` (any depth, symbolic links followed, hidden files
    and folders skipped), each file once (the first path the walk meets, entries in sorted order, names it) and
    each folder once, so that a link to a folder above it is not followed round and round. None is a
    FileNotFoundError naming the folder and the extensions."""
    found: dict[str, str] = {}
    seen_dirs: set[str] = set()
    stack = [str(folder)]
    while stack:
        path = stack.pop()
        real_dir = os.path.realpath(path)
        if real_dir in seen_dirs:
            continue
        seen_dirs.add(real_dir)
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:  # unreadable folders and links to nowhere hold nothing we can train on
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):  # macOS leaves "._name.jpg" companions that are not images
                continue
            if entry.is_dir():  # follows links: a mixture such as CelebA-HQ + AFHQ is naturally a folder of links
                subdirs.append(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file():
                real = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real_dir, entry.name)
                found.setdefault(real, entry.path)
        stack += reversed(subdirs)
    if not found:
        raise FileNotFoundError(f"{folder} holds no images; allowed extensions (any case, searched recursively): "
                                f"{' '.join(IMAGE_EXTENSIONS)}")
    return found


def find_images(folder: str | Path) -> list[str]:
    """The image files under `folder` (`_walk_images`: each file and folder once, links followed), as sorted path
    strings."""
    return sorted(_walk_images(folder).values())


def _shuffled(files: list[str], seed: int) -> list[str]:
    return [files[i] for i in np.random.RandomState(seed).permutation(len(files))]


def _hold_out(files: list[str], seed: int) -> tuple[list[str], list[str]]:
    """(the rest, sorted; the held-out files in their drawn order): the first HELD_OUT_PERCENT % (at least 1)
    of RandomState(seed).permutation over the sorted `files`."""
    drawn = _shuffled(files, seed)
    n = max(1, len(files) * HELD_OUT_PERCENT // 100)
    return sorted(drawn[n:]), drawn[:n]


def split_image_folder(data_dir: str | Path) -> tuple[list[str], list[str], list[str]]:
    """(training, validation, test files) of a folder of images.

    - test/ subfolder present: its images are the test split, and no other split reads them.
    - train/ and val/ subfolders (the ImageNet layout): validation = the images under val/, training those
      under train/; otherwise all images under data_dir but test/'s: validation = the first 5 % (at least 1)
      of RandomState(0xC1CAFA52).permutation(n) over the sorted paths, training = the rest.
    - no test/ subfolder: test = the first 5 % (at least 1) of RandomState(0x7E57).permutation over the sorted
      training files of the step above, which leave training (validation is the same either way).
    Training files come back sorted by path; validation and test files in a seeded shuffled order (a
    subfolder's files shuffled with the same RandomState), so that any prefix of them (VAL_CAP, TEST_CAP) is a
    random sample, not a few class folders. Subfolders that share a file (through a link) are a ValueError.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"data_dir {folder} does not exist or is not a folder")
    test = _walk_images(folder / "test") if (folder / "test").is_dir() else {}
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        parts = {"train": _walk_images(folder / "train"), "val": _walk_images(folder / "val"), "test": test}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = parts[a].keys() & parts[b].keys()
            if shared:
                first = ", ".join(sorted(parts[b][real] for real in shared)[:3])
                raise ValueError(f"{len(shared)} image files are both in {folder / a} and {folder / b} (first: "
                                 f"{first}); allowed: training, validation and test folders that share no file")
        train, val = sorted(parts["train"].values()), _shuffled(sorted(parts["val"].values()), VAL_SEED)
    else:
        files = sorted(path for real, path in _walk_images(folder).items() if real not in test)
        needed = 2 if test else 3
        if len(files) < needed:
            raise ValueError(f"{folder} holds only {len(files)} image(s){' outside test/' if test else ''}; at least "
                             f"{needed} are needed (training, validation{'' if test else ' and test'})")
        train, val = _hold_out(files, VAL_SEED)
    if test:
        return train, val, _shuffled(sorted(test.values()), TEST_SEED)
    if len(train) < 2:
        raise ValueError(f"{folder / 'train'} holds only 1 image; at least 2 are needed (training and test), or "
                         "a test/ subfolder")
    train, test = _hold_out(train, TEST_SEED)
    return train, val, test


def load_image_folder(data_dir: str | Path, size: int = 256, name: str = "imagefolder") -> ImageData:
    """A folder of images (ImageNet, CelebA-HQ + AFHQ, ...) as RGB `size` x `size` images (paper, Sec. 4.3).

    Files: .jpg .jpeg .png .bmp .webp in any case, at any depth (`find_images`); each is read by
    `read_image` (RGB, shorter side resized to `size`, centre crop). Split: `split_image_folder`.
    - training: `ImageFiles`, decoded per batch (an unreadable training file fails when drawn);
    - validation and test: the first VAL_CAP = TEST_CAP = 2000 files of their lists (in their seeded order),
      each decoded once into a uint8 (M, 3, size, size) tensor;
    - mean/std: over the training files i * n // m, i < m = min(n, STATS_CAP = 1000): evenly spaced
      in sorted path order, so that every class folder of ImageNet contributes.
    `name` ("imagefolder", "imagenet" or "celeba_afhq") only names the data set.
    """
    if not str(data_dir):
        raise ValueError(f"dataset={name} needs data_dir: a folder of images "
                         f"({' '.join(IMAGE_EXTENSIONS)}), optionally with train/, val/ and test/ subfolders")
    train_paths, val_paths, test_paths = split_image_folder(data_dir)
    train = ImageFiles(tuple(train_paths), size)
    val, test = (ImageFiles(tuple(paths[:cap]), size) for paths, cap in ((val_paths, VAL_CAP), (test_paths, TEST_CAP)))
    val, test = val[range(len(val))], test[range(len(test))]  # decoded once
    n, m = len(train), min(len(train), STATS_CAP)
    chosen = torch.tensor([i * n // m for i in range(m)])
    mean, std = channel_stats(train[chunk] for chunk in chosen.split(64))
    return ImageData(name, train, val, test, size, mean, std)
