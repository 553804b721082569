"""Folders of images (ImageNet, the CelebA-HQ + AFHQ mixture): found, split and loaded as an ImageData
whose training split is decoded batch by batch (models/data/files.py, models/data/loader.py)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from models.data.files import ImageFiles
from models.data.images import VAL_SEED, ImageData, channel_stats

# Folders of images (ImageNet; the CelebA-HQ + AFHQ mixture): three names, one loader.
IMAGE_FOLDERS = ("imagefolder", "imagenet", "celeba_afhq")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # matched in any case
VAL_PERCENT = 5  # of the files (at least 1), when a folder has no train/ and val/ subfolders
VAL_CAP = 2000  # validation images held in memory (uint8 at 256 px: 393 MB)
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
        train, val = _walk_images(folder / "train"), _walk_images(folder / "val")
        shared = train.keys() & val.keys()
        if shared:
            first = ", ".join(sorted(val[real] for real in shared)[:3])
            raise ValueError(f"{len(shared)} image files are both in {folder / 'train'} and {folder / 'val'} (first: "
                             f"{first}); allowed: training and validation folders that share no file")
        train, val = sorted(train.values()), sorted(val.values())
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
    mean, std = channel_stats(train[chunk] for chunk in chosen.split(64))
    return ImageData(name, train, val, None, size, mean, std)
