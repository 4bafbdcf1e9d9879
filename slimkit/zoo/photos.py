"""Real photographs that pip packages ship, split by photo into calibration / training / test.

No ImageNet images can be had offline, but scikit-image (``skimage.data``), scikit-learn
(``load_sample_images``) and matplotlib (``mpl-data/sample_data``) ship real photographs. An
image model's quality is then measured as agreement with its own fp32 predictions on photos that
calibration and recovery training never saw: the split is **by photo**, and crops and flips are
drawn only inside a split, so no pixel of a test photo reaches calibration or training.

The 21 photos (11 colour, 10 greyscale, greyscale repeated to 3 channels) and their split, drawn
once with ``numpy.random.RandomState(0)`` over the sorted names, colour and greyscale apart (so
every split has both), and fixed here:

======  ==============================================  ============================
split   colour photos                                   greyscale photos
======  ==============================================  ============================
calib   flower, retina, china                           page, clock
train   rocket, hubble_deep_field, chelsea,             grass, camera, cell, coins
        immunohistochemistry
test    motorcycle, coffee, astronaut, grace_hopper     text, brick, gravel, moon
======  ==============================================  ============================

Left out on purpose: ``motorcycle_right`` (the other view of the stereo pair, a near-duplicate
of ``motorcycle``), synthetic images (``colorwheel``, ``logo``, ``horse``, ``phantom``, the
chessboards, matplotlib's ``logo2`` and ``Minduka_Present_Blue_Pack`` icon) and
``microaneurysms`` (102 x 102 pixels).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from slimkit.core.errors import ConfigError, DataError

__all__ = ["PHOTO_SPLITS", "PHOTO_SOURCES", "NORMALIZATIONS", "photo_names", "load_photo", "photo_batches"]

PHOTO_SPLITS: dict[str, tuple[str, ...]] = {
    "calib": ("flower", "retina", "china", "page", "clock"),
    "train": ("rocket", "hubble_deep_field", "chelsea", "immunohistochemistry", "grass", "camera", "cell", "coins"),
    "test": ("motorcycle", "coffee", "astronaut", "grace_hopper", "text", "brick", "gravel", "moon"),
}
"""Photo names of each split (disjoint; see the module docstring for how they were drawn)."""

_SKIMAGE = {
    "astronaut": "astronaut", "chelsea": "chelsea", "coffee": "coffee", "rocket": "rocket",
    "hubble_deep_field": "hubble_deep_field", "retina": "retina",
    "immunohistochemistry": "immunohistochemistry", "camera": "camera", "coins": "coins",
    "moon": "moon", "grass": "grass", "gravel": "gravel", "brick": "brick", "clock": "clock",
    "page": "page", "text": "text", "cell": "cell",
}
PHOTO_SOURCES: dict[str, str] = {
    **{name: f"skimage.data.{func}()" for name, func in _SKIMAGE.items()},
    "motorcycle": "skimage.data.stereo_motorcycle()[0] (left view)",
    "china": "sklearn.datasets.load_sample_images() china.jpg",
    "flower": "sklearn.datasets.load_sample_images() flower.jpg",
    "grace_hopper": "matplotlib.cbook.get_sample_data('grace_hopper.jpg')",
}
"""Where each photo comes from (all shipped inside the installed packages, no download)."""

_MEAN_STD = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision models (MobileNetV2)
    "symmetric": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1]: EfficientNet-Lite (TF ports)
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # plain [0, 1]
}
NORMALIZATIONS: tuple[str, ...] = tuple(_MEAN_STD)
_MIN_CROP = 0.5  # a random crop's side is at least this fraction of the photo's short side


def photo_names(split: str | None = None) -> list[str]:
    """Names of the photos in ``split`` (``calib``/``train``/``test``), or all photos if None."""
    if split is None:
        return [name for names in PHOTO_SPLITS.values() for name in names]
    _check_split(split)
    return list(PHOTO_SPLITS[split])


def load_photo(name: str) -> np.ndarray:
    """Photo ``name`` as a read-only uint8 array [H, W, 3] (greyscale repeated to 3 channels)."""
    if name not in PHOTO_SOURCES:
        raise ConfigError(f"unknown photo {name!r}; valid photos: {', '.join(sorted(PHOTO_SOURCES))}")
    return _read(name)


@lru_cache(maxsize=None)
def _read(name: str) -> np.ndarray:
    image = np.asarray((_READERS.get(name) or _skimage_reader(name))())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    if image.dtype != np.uint8 or image.shape[2] != 3:
        raise DataError(f"photo {name!r} ({PHOTO_SOURCES[name]}) is {image.dtype} {image.shape}, expected uint8 RGB")
    return _frozen(image)


def photo_batches(
    split: str,
    *,
    crops_per_photo: int = 8,
    batch_size: int = 16,
    size: int = 224,
    normalize: str = "imagenet",
    seed: int = 0,
    max_batches: int | None = None,
) -> list[torch.Tensor]:
    """Float32 batches [B, 3, size, size] of square crops of ``split``'s photos, normalised.

    Each photo gives ``crops_per_photo`` crops: the first is the centred square of its full
    short side, the others random squares (side 0.5-1 x the short side, random position, a
    horizontal flip half of the time) drawn from a generator seeded by ``(seed, split, photo)``.
    Crops are resized (bilinear, antialiased) to ``size`` and ordered round-robin (crop 0 of
    every photo, then crop 1, ...) so each batch mixes photos; the last batch may be smaller.
    """
    _check_split(split)
    for key, value, minimum in (("crops_per_photo", crops_per_photo, 1), ("batch_size", batch_size, 1),
                                ("size", size, 16), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    if normalize not in _MEAN_STD:
        raise ConfigError(f"normalize must be one of {list(NORMALIZATIONS)}, got {normalize!r}")
    per_photo = [_crops(name, split, crops_per_photo, size, seed) for name in PHOTO_SPLITS[split]]
    images = torch.stack([crops[i] for i in range(crops_per_photo) for crops in per_photo])
    mean, std = (torch.tensor(v).reshape(1, 3, 1, 1) for v in _MEAN_STD[normalize])
    batches = list(((images - mean) / std).split(batch_size))
    return batches if max_batches is None else batches[:max_batches]


def _check_split(split: str) -> None:
    if split not in PHOTO_SPLITS:
        raise ConfigError(f"unknown split {split!r} for the photos; valid splits: {', '.join(PHOTO_SPLITS)}")


def _crops(name: str, split: str, count: int, size: int, seed: int) -> list[torch.Tensor]:
    """``count`` crops [3, size, size] in [0, 1] of photo ``name`` (see :func:`photo_batches`)."""
    photo = torch.from_numpy(np.array(load_photo(name))).permute(2, 0, 1).float().div(255)
    height, width = photo.shape[1:]
    short = min(height, width)
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{split}:{name}".encode()))
    boxes = [((height - short) // 2, (width - short) // 2, short, False)]
    for _ in range(count - 1):
        side = int(torch.randint(int(_MIN_CROP * short), short + 1, (1,), generator=gen))
        top = int(torch.randint(height - side + 1, (1,), generator=gen))
        left = int(torch.randint(width - side + 1, (1,), generator=gen))
        boxes.append((top, left, side, bool(torch.rand((), generator=gen) < 0.5)))
    crops = []
    for top, left, side, flip in boxes[:count]:
        crop = photo[:, top : top + side, left : left + side].unsqueeze(0)
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        crops.append(crop.flip(-1) if flip else crop)
    return crops


def _frozen(image: np.ndarray) -> np.ndarray:
    image.setflags(write=False)
    return image


def _skimage_reader(name: str) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, _SKIMAGE[name])()

    return read


def _motorcycle() -> np.ndarray:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return read


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return np.asarray(image.convert("RGB"))


_READERS: dict[str, Callable[[], np.ndarray]] = {
    "motorcycle": _motorcycle,
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _grace_hopper,
}
