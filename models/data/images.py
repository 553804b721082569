"""ImageData, what every data set becomes, and what is computed of one: per-process shares of a batch,
the per-channel statistics, the fingerprint a run records."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import torch

from models.data.files import DataError, ImageFiles

# Validation is 20 % of the CIFAR training split, chosen with this seed as in the released code;
# image folders without train/ and val/ subfolders draw their validation files with it too.
VAL_SEED = 0xC1CAFA52
# Image folders without a test/ subfolder draw their test files from the training files with this seed.
TEST_SEED = 0x7E57


@dataclass
class ImageData:
    """Training images, validation and test images, and the normalisation of one data set. Validation
    selects (a trial's best step, a search's winner, early stopping); test only reports the loss of
    what validation selected (models/train.py)."""

    name: str
    train: list[torch.Tensor] | torch.Tensor | ImageFiles  # uint8, each (3, H, W) with H, W >= size
    val: torch.Tensor  # uint8 (M, 3, size, size)
    test: torch.Tensor | None  # uint8, like val; None: no test split (every loader here has one)
    size: int
    mean: torch.Tensor  # (3,) float, training split, in [0, 255]
    std: torch.Tensor  # (3,)
    # The in-memory training images on each device the batches were wanted on, as one tensor (photos: zero-padded
    # to the largest, (P, 3, H, W)): train_batch gathers a batch there in one indexing, not crop by crop
    stacked: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float, standardised per channel, on the images' device (the trainer moves
        image-folder batches to the GPU as uint8, a quarter of the bytes, and standardises them there)."""
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images.float() - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """The inverse of `normalise`, clamped to [0, 255] (for pictures)."""
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        x = images * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
        return x.round().clamp(0, 255).to(torch.uint8)

    def train_batch(self, batch_size: int, generator: torch.Generator, share: tuple[int, int] = (0, 1),
                    device: torch.device | str = "cpu") -> torch.Tensor:
        """A standardised batch of random crops, drawn with `generator` (deterministic), on `device` (in-memory
        images are gathered there: a pack of trials draws each member's batch every step on one thread).

        share = (r, W): the same random draws as the whole batch, but only its rows `share_rows`
        (process r of W in data-parallel training); the W shares stacked are the whole batch.
        """
        rows = share_rows(batch_size, share)
        if isinstance(self.train, ImageFiles):  # decoded now
            idx = torch.randint(len(self.train), (batch_size,), generator=generator)
            return self.normalise(self.train[idx[rows]])
        if isinstance(self.train, torch.Tensor):  # whole images
            idx = torch.randint(len(self.train), (batch_size,), generator=generator)
            return self.normalise(self.on(device)[idx[rows].to(device, non_blocking=True)])
        # Pick a photo in proportion to its number of crop positions, then a position (y, x) = floor(u * positions
        # along each axis).
        sizes = torch.tensor([p.shape[1:] for p in self.train])  # (P, 2): H, W
        positions = ((sizes[:, 0] - self.size + 1) * (sizes[:, 1] - self.size + 1)).double()
        which = torch.multinomial(positions, batch_size, replacement=True, generator=generator)[rows]
        u = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64)[rows]
        y, x = (u * (sizes[which] - self.size + 1)).long().unbind(1)
        windows = self.on(device).unfold(2, self.size, 1).unfold(3, self.size, 1)  # (P, 3, H', W', size, size)
        which, y, x = torch.stack([which, y, x]).to(device, non_blocking=True)  # from pageable memory: no GPU wait
        return self.normalise(windows[which, :, y, x])

    def on(self, device: torch.device | str) -> torch.Tensor:
        """The in-memory training images as one tensor on `device` (made once per device)."""
        key = str(torch.device(device))
        if key not in self.stacked:
            if isinstance(self.train, torch.Tensor):
                self.stacked[key] = self.train.to(device)
            else:
                height, width = max(p.shape[1] for p in self.train), max(p.shape[2] for p in self.train)
                padded = torch.zeros(len(self.train), self.train[0].shape[0], height, width, dtype=self.train[0].dtype)
                for photo, into in zip(self.train, padded):
                    into[:, :photo.shape[1], :photo.shape[2]] = photo
                self.stacked[key] = padded.to(device)
        return self.stacked[key]


def share_rows(batch_size: int, share: tuple[int, int]) -> slice:
    """Rows r*B/W ... (r+1)*B/W - 1 of a batch of B: process r's share of W (B must divide by W)."""
    rank, world = share
    if batch_size % world or not 0 <= rank < world:
        raise ValueError(f"share {share} of batch_size={batch_size}: allowed ranks 0..W-1 and W dividing the batch")
    size = batch_size // world
    return slice(rank * size, (rank + 1) * size)


def fingerprint(data: ImageData) -> dict:
    """What identifies a data set in a run's record: {"name", "digest", "train", "val", "test"}, the digest the
    first 16 hex digits of a SHA-256 over the training images held in memory (photos, CIFAR), or, for an
    image folder decoded batch by batch, over its training files' paths relative to their common folder
    (reading 1.3 M ImageNet files only to hash them would take hours), then the validation and the test
    images; "train" / "val" / "test" count the training images (photos: whole photographs), validation and
    test images (0: no test split)."""
    digest = hashlib.sha256()
    if isinstance(data.train, ImageFiles):
        root = os.path.commonpath(data.train.paths) if len(data.train) > 1 else os.path.dirname(data.train.paths[0])
        digest.update("\n".join(os.path.relpath(p, root) for p in data.train.paths).encode())
    else:
        for image in data.train:  # a list of photos, or the rows of a tensor
            digest.update(image.contiguous().numpy().tobytes())
    digest.update(data.val.contiguous().numpy().tobytes())
    if data.test is not None:
        digest.update(data.test.contiguous().numpy().tobytes())
    return {"name": data.name, "digest": digest.hexdigest()[:16], "train": len(data.train), "val": len(data.val),
            "test": 0 if data.test is None else len(data.test)}


def channel_stats(images) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over uint8 tensors whose channel axis is dim -3, chunk by chunk."""
    total, squares, n = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for im in images:
        x = im.double().movedim(-3, 0).reshape(3, -1)
        total += x.sum(1)
        squares += x.square().sum(1)
        n += x.shape[1]
    mean = total / n
    std = (squares / n - mean.square()).clamp(min=0).sqrt()
    for c in range(3):
        if std[c] < 0.01:  # one value (up to rounding): nothing to standardise
            raise DataError(f"channel {'RGB'[c]} of the training images has zero variance (every pixel {mean[c]:.0f}), "
                            "so they cannot be standardised; allowed: images whose pixels vary in every channel")
    return mean.float(), std.float()
