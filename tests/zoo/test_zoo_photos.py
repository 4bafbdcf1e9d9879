"""The ``photos`` dataset: real photos split by photo into calib / train / test."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slimkit import zoo
from slimkit.core.errors import ConfigError
from slimkit.measure import TopKAgreement
from slimkit.zoo import photos

SPLITS = ("calib", "train", "test")


def test_splits_are_disjoint_non_empty_and_cover_every_photo() -> None:
    names = {split: set(photos.photo_names(split)) for split in SPLITS}
    assert all(len(names[s]) == len(photos.PHOTO_SPLITS[s]) > 0 for s in SPLITS)  # no duplicates inside
    assert [len(names[s]) for s in SPLITS] == [5, 8, 8]
    for a, b in (("calib", "train"), ("calib", "test"), ("train", "test")):
        assert not names[a] & names[b], (a, b)
    assert set().union(*names.values()) == set(photos.PHOTO_SOURCES)
    assert "motorcycle" in names["test"] and "china" in names["calib"] and "flower" in names["calib"]


def test_no_two_photos_share_pixels() -> None:
    """Disjoint by content, not only by name: every photo's pixels are distinct from all others."""
    digests = {}
    for name in photos.photo_names():
        image = photos.load_photo(name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 170
        assert image.std() > 10  # a real picture, not a flat image
        digests[name] = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
    assert len(set(digests.values())) == len(digests) == 21


def test_batches_are_deterministic_shaped_and_split_specific() -> None:
    test = zoo.load_data("photos", "test")
    assert [tuple(b.shape) for b in test] == [(16, 3, 224, 224)] * 4  # 8 photos x 8 crops
    again = zoo.load_data("photos", "test")
    assert all(torch.equal(a, b) for a, b in zip(test, again, strict=True))
    calib = zoo.load_data("photos", "calib")
    assert [len(b) for b in calib] == [16, 16, 8]  # 5 photos x 8 crops, last batch smaller
    other_seed = zoo.load_data("photos", "test", seed=1)
    assert not torch.equal(other_seed[1], test[1])  # random crops change with the seed ...
    assert torch.equal(other_seed[0][:8], test[0][:8])  # ... the centred crops (crop 0 of each photo) do not
    unit = zoo.load_data("photos", "train", normalize="unit", crops_per_photo=2, batch_size=64)
    assert len(unit) == 1 and unit[0].shape == (16, 3, 224, 224)
    assert unit[0].min() >= 0.0 and unit[0].max() <= 1.0
    assert len(zoo.load_data("photos", "train", max_batches=1)) == 1


def test_first_crops_are_the_split_photos_centre_squares() -> None:
    """Crop 0 of each photo, in split order, is that photo's centred square: test data comes from test photos."""
    (batch,) = zoo.load_data("photos", "test", crops_per_photo=1, size=64, normalize="unit")
    for row, name in zip(batch, photos.photo_names("test"), strict=True):
        image = torch.from_numpy(np.array(photos.load_photo(name))).permute(2, 0, 1).float() / 255
        h, w = image.shape[1:]
        s = min(h, w)
        square = image[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        expected = F.interpolate(square[None], size=(64, 64), mode="bilinear", antialias=True)[0]
        assert torch.allclose(row, expected, atol=1e-5), name


def test_symmetric_normalisation_is_minus_one_to_one() -> None:
    unit = zoo.load_data("photos", "calib", crops_per_photo=1, size=32, normalize="unit")[0]
    symmetric = zoo.load_data("photos", "calib", crops_per_photo=1, size=32, normalize="symmetric")[0]
    assert torch.allclose(symmetric, unit * 2 - 1, atol=1e-6)


def test_photo_argument_errors() -> None:
    with pytest.raises(ConfigError, match="calib, train, test"):
        zoo.load_data("photos", "validation")
    with pytest.raises(ConfigError, match="normalize"):
        zoo.load_data("photos", "test", normalize="bgr")
    with pytest.raises(ConfigError, match="crops_per_photo"):
        zoo.load_data("photos", "test", crops_per_photo=0)
    with pytest.raises(ConfigError, match="unknown photo"):
        photos.load_photo("lena")


@pytest.mark.real
def test_mobilenet_agrees_with_itself_and_sees_different_photos() -> None:
    model, _ = zoo.load_model("mobilenet-v2")
    test = zoo.load_data("photos", "test", crops_per_photo=2)
    evaluator = TopKAgreement(test)
    evaluator.prepare(model)
    assert evaluator.scores(model) == {"top1": 1.0, "top5": 1.0}
    with torch.no_grad():
        centre_classes = model(test[0][:8]).argmax(1)
    assert len(set(centre_classes.tolist())) >= 6  # 8 different photos, (nearly) 8 different classes
