"""The offline default data set: photographs shipped inside installed packages (scikit-image,
scikit-learn, matplotlib), resized to a short side of 256 px."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.data.images import ImageData, channel_stats

# Photographs shipped inside installed packages. Whole photos are held out for validation (which selects
# checkpoints and hyperparameters) and for test (which reports the selected models' loss), so that no
# scene appears in two splits. At 32 px validation has 192 tiles and test 168 (a small test set): the
# only other colour photographs the packages ship are matplotlib's small Minduka_Present_Blue_Pack and
# skimage's motorcycle_right, a second view of a training scene.
PHOTOS_TRAIN = ("astronaut", "rocket", "retina", "immunohistochemistry", "stereo_motorcycle", "china", "grace_hopper")
PHOTOS_VAL = ("coffee", "chelsea")
PHOTOS_TEST = ("flower", "hubble_deep_field")
PHOTO_SHORT_SIDE = 256


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


def _tiles_of(names: tuple[str, ...], size: int) -> torch.Tensor:
    return torch.cat([tiles(_resize_short_side(_read_photo(n), PHOTO_SHORT_SIDE), size) for n in names])


def load_photos(size: int = 32) -> ImageData:
    """The embedded default: photographs from scikit-image, scikit-learn and matplotlib,
    resized to a short side of 256 px; training = random crops of 7 photos, validation =
    the non-overlapping tiles of 2 other photos, test = those of 2 more (PHOTOS_VAL, PHOTOS_TEST)."""
    train = [_resize_short_side(_read_photo(n), PHOTO_SHORT_SIDE) for n in PHOTOS_TRAIN]
    mean, std = channel_stats(train)
    return ImageData("photos", train, _tiles_of(PHOTOS_VAL, size), _tiles_of(PHOTOS_TEST, size), size, mean, std)
