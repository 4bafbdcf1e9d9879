"""Images of a user's folder as normalised tensors (resize the short side, centre crop, ImageNet mean/std).

No augmentation: calibration and held-out images are each seen exactly as they are.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from slimkit.core.errors import DataError
from slimkit.data.documents import Document

__all__ = ["image_batches", "read_image"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def read_image(doc: Document, size: int) -> torch.Tensor:
    """``[3, size, size]`` float tensor of one image file; an undecodable file is a DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(doc.image) as img:
            img = img.convert("RGB")
            scale = size / min(img.size)
            img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                             Image.Resampling.BILINEAR)
            left, top = (img.width - size) // 2, (img.height - size) // 2
            pixels = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{doc.image}: cannot decode image ({type(exc).__name__}: {exc})") from None
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)
    return (tensor - torch.tensor(_MEAN).view(3, 1, 1)) / torch.tensor(_STD).view(3, 1, 1)


def image_batches(docs: list[Document], batch_size: int, size: int, classes: dict[Any, int] | None) -> list[Any]:
    """Batches of ``batch_size`` images, ``(pixels, labels)`` when the folder has class subfolders."""
    out: list[Any] = []
    for start in range(0, len(docs), batch_size):
        chunk = docs[start : start + batch_size]
        pixels = torch.stack([read_image(d, size) for d in chunk])
        if classes is None:
            out.append(pixels)
        else:
            out.append((pixels, torch.tensor([classes[str(d.label)] for d in chunk], dtype=torch.long)))
    return out
