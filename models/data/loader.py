"""Training batches of an image folder through torch.utils.data: decoding in loader processes.

An image folder (ImageNet, CelebA-HQ + AFHQ at 256 px) is too large to hold in
memory, and decoding and resizing a batch of JPEGs on the training thread would
leave a GPU waiting. `image_batches` decodes in `workers` DataLoader processes
(persistent across the run), pins the batches in page-locked memory when they go
to a GPU (so the copy can be non-blocking), and keeps a few batches in flight.

Which images form batch i depends only on (seed, i): `SeededBatches` draws batch
i's B indices (uniformly, with replacement, as the in-memory data sets) from a
generator seeded with (seed, i). The loader runs ahead of training, so its own
state would not say where training is; the sampler's position is simply the
number of batches trained on, the step in the checkpoint, and a run resumed at
step s sees exactly the batches s, s + 1, ... of the uninterrupted run.
In data-parallel training, process r of W decodes only rows r*B/W ... (r+1)*B/W - 1
of every batch (models.data.share_rows).

    >>> batches = image_batches(files, batch_size=128, seed=0, start=0, workers=4)
    >>> next(batches).shape  # uint8; standardise with ImageData.normalise
    torch.Size([128, 3, 256, 256])
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import count

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from models.data.files import ImageFiles, read_image
from models.data.images import share_rows

PREFETCH = 2  # batches in flight per loader process


class FolderImages(Dataset):
    """The files of an ImageFiles as a map-style Dataset: item i = uint8 (3, size, size)."""

    def __init__(self, files: ImageFiles):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return read_image(self.files.paths[index], self.files.size)


class SeededBatches(Sampler[list[int]]):
    """Endless batches of indices into n items: batch i is B draws with replacement from a generator
    seeded with (seed, i), restricted to this process's rows `share_rows(B, share)`; starts at batch `start`."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, share: tuple[int, int] = (0, 1)):
        if n < 1:
            raise ValueError(f"n={n} items: at least 1 is needed")
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        self.rows = share_rows(batch_size, share)

    def batch(self, i: int) -> list[int]:
        """The indices of batch i (this process's rows)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + i)  # distinct (seed, i) for i < 10^6 + 3
        return torch.randint(self.n, (self.batch_size,), generator=generator)[self.rows].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        return (self.batch(i) for i in count(self.start))


def image_batches(files: ImageFiles, batch_size: int, seed: int, start: int = 0, share: tuple[int, int] = (0, 1),
                  workers: int = 2, pin_memory: bool = False) -> Iterator[torch.Tensor]:
    """uint8 (B / W, 3, size, size) training batches of `files`, batch `start` first (see the module docstring).

    workers = 0 decodes on the calling thread; pin_memory = True when the batches go to a GPU."""
    if workers < 0:
        raise ValueError(f"workers={workers} must be >= 0")
    sampler = SeededBatches(len(files), batch_size, seed, start, share)
    loader = DataLoader(FolderImages(files), batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                        persistent_workers=workers > 0, prefetch_factor=PREFETCH if workers > 0 else None)
    return iter(loader)
