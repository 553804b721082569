"""Image data sets: the offline `photos` default, CIFAR-10/100 and folders of images (paper, Sec. 4).

Every data set becomes an `ImageData` (images.py): uint8 training images (a list of photos
of any size, one (N, 3, H, W) tensor, or `ImageFiles` (files.py), a lazy list of files that
the trainer decodes in DataLoader processes: loader.py), fixed validation images (which select),
fixed test images (which only report what validation selected), and the per-channel mean/std of
the training split. Training batches are random `size` x `size` crops
(for CIFAR and image folders the crop is the whole image), standardised.
One module per source: photos.py, cifar.py, folders.py; `load_data` picks one by name.
"""
from __future__ import annotations

from pathlib import Path

from models.data.cifar import (CIFAR, CIFAR_COUNTS, cifar_data, download_cifar, load_cifar, read_cifar,
                               read_cifar_batch, verify_cifar)
from models.data.files import DataError, ImageFiles, read_image
from models.data.folders import IMAGE_EXTENSIONS, IMAGE_FOLDERS, find_images, load_image_folder, split_image_folder
from models.data.images import TEST_SEED, VAL_SEED, ImageData, fingerprint, share_rows
from models.data.photos import PHOTO_SHORT_SIDE, PHOTOS_TEST, PHOTOS_TRAIN, PHOTOS_VAL, load_photos, tiles

__all__ = ["CIFAR", "CIFAR_COUNTS", "IMAGE_EXTENSIONS", "IMAGE_FOLDERS", "PHOTO_SHORT_SIDE", "PHOTOS_TEST",
           "PHOTOS_TRAIN", "PHOTOS_VAL", "TEST_SEED", "VAL_SEED", "ImageData", "ImageFiles", "cifar_data",
           "download_cifar", "find_images", "fingerprint", "load_cifar", "load_data", "load_image_folder",
           "load_photos", "read_cifar", "read_cifar_batch", "read_image", "share_rows",
           "split_image_folder", "tiles", "verify_cifar"]


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
