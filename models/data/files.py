"""A lazy list of image files (an image folder's training split), decoded when indexed."""
from __future__ import annotations

import numbers
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DECODE_THREADS = 4  # image decoding runs in C with the GIL released, so threads overlap


class DataError(ValueError):
    """The data a trial reads cannot be used (a file that does not decode, pixels that cannot be
    standardised): the trial fails at once with this one line, without retries."""

    def __reduce__(self):  # DataLoader workers and Ray carry it between processes
        return DataError, self.args


def read_image(path: str | Path, size: int) -> torch.Tensor:
    """One image file -> uint8 (3, size, size): converted to RGB (grey replicated, alpha dropped), resized so
    that its shorter side is `size` (bilinear, antialiased: Pillow widens the filter when it shrinks), and
    centre-cropped to size x size. An unreadable file is a DataError naming it."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")  # decodes the whole file, so broken files fail here
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
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
