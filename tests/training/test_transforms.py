"""Augmentation pipelines and normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.datasets import class_points
from training.data.transforms import (
    AugmentConfig,
    EvalTransform,
    Normalize,
    TrainTransform,
    default_mean_std,
)

NO_COLOUR = dict(brightness=0.0, contrast=0.0)


def train(crop: int = 32, scale=(0.5, 2.0), channels: int = 3, seed: int = 0, **options):
    mean, std = [0.0] * channels, [1.0] * channels
    augment = AugmentConfig(crop_size=crop, scale_range=scale, **options)
    return TrainTransform(augment, mean=mean, std=std, ignore_index=255, seed=seed)


def sample(size=(40, 50), channels=3, dtype=np.uint8, classes=3):
    rng = np.random.default_rng(0)
    high = np.iinfo(dtype).max
    image = rng.integers(0, high, (*size, channels), dtype=dtype)
    mask = rng.integers(0, classes, size, dtype=np.uint8)
    return image, mask


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_train_output_shapes(channels, dtype) -> None:
    image, mask = sample(channels=channels, dtype=dtype)
    transform = train(channels=channels, saturation=0.2, hue=0.05)
    for _ in range(5):
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (channels, 32, 32) and out_image.dtype == np.float32
        assert out_mask.shape == (32, 32) and set(np.unique(out_mask)) <= {0, 1, 2, 255}


def test_small_images_are_padded_with_ignore_index() -> None:
    image, mask = sample(size=(10, 12))
    out_image, out_mask = train(crop=20, scale=(1.0, 1.0), **NO_COLOUR)(image, mask)
    assert (out_mask != 255).sum() == 10 * 12  # every original pixel, once
    assert (out_image[:, out_mask == 255] == 0).all()  # image padding is 0 before normalising


def test_unit_scale_crop_copies_pixels_exactly() -> None:
    image, mask = sample(size=(64, 64))
    out_image, out_mask = train(crop=16, scale=(1.0, 1.0), **NO_COLOUR)(image, mask)
    pixels = np.rint(out_image.transpose(1, 2, 0) * 255).astype(np.uint8)
    # Find the window it came from via the mask-aligned image content.
    hits = [
        (y, x)
        for y in range(64 - 15)
        for x in range(64 - 15)
        if np.array_equal(image[y : y + 16, x : x + 16], pixels)
        or np.array_equal(image[y : y + 16, x : x + 16][:, ::-1], pixels)
    ]
    assert len(hits) == 1
    y, x = hits[0]
    window = mask[y : y + 16, x : x + 16]
    assert np.array_equal(window, out_mask) or np.array_equal(window[:, ::-1], out_mask)


def test_same_seed_same_augmentation_and_reseed_changes_it() -> None:
    image, mask = sample()
    first, second = train(seed=7), train(seed=7)
    a, b = first(image, mask), second(image, mask)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    second.reseed(8)
    assert not np.array_equal(first(image, mask)[0], second(image, mask)[0])


def test_eval_keeps_full_size_and_normalises() -> None:
    image = np.full((7, 9, 3), 255, np.uint8)
    mask = np.ones((7, 9), np.uint8)
    mean, std = default_mean_std(3)
    out_image, out_mask = EvalTransform(mean=mean, std=std)(image, mask)
    assert out_image.shape == (3, 7, 9) and out_image.flags.c_contiguous
    expected = [(1 - m) / s for m, s in zip(mean, std, strict=True)]
    assert out_image[:, 0, 0] == pytest.approx(expected, rel=1e-5)
    assert out_mask is mask


def test_normalize_scales_16_bit_and_float() -> None:
    normalize = Normalize([0.5], [0.25])
    assert normalize(np.full((2, 2, 1), 65535, np.uint16))[0, 0, 0] == pytest.approx(2.0)
    assert normalize(np.full((2, 2, 1), 0.25, np.float32))[0, 0, 0] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="3 channels"):
        normalize(np.zeros((2, 2, 3), np.uint8))


def test_default_mean_std() -> None:
    assert default_mean_std(1) == ([0.449], [0.226])
    assert default_mean_std(3)[0] == [0.485, 0.456, 0.406]
    assert default_mean_std(4) == ([0.485, 0.456, 0.406, 0.5], [0.229, 0.224, 0.225, 0.25])
    with pytest.raises(ValueError, match="1, 3 or 4"):
        default_mean_std(2)


def test_augment_config_validates() -> None:
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(2.0, 1.0))


def test_class_points_sample_each_class_where_it_is() -> None:
    mask = np.zeros((300, 400), dtype=np.uint8)
    mask[100:104, 50:60] = 2  # 40 pixels of a rare class
    mask[:, 390:] = 255  # ignored: not a class
    points = class_points(mask, 4, per_class=16)
    assert [len(p) for p in points] == [16, 0, 16, 0]
    for value, sample in enumerate(points):
        assert (mask[sample[:, 0], sample[:, 1]] == value).all()


def test_class_centred_crops_show_a_rare_class_far_more_often() -> None:
    image, _ = sample(size=(400, 400))
    mask = np.zeros((400, 400), dtype=np.uint8)
    mask[300:306, 20:26] = 1  # 36 of 160,000 pixels

    def hits(mask: np.ndarray, p: float) -> int:
        points = class_points(mask, 2)
        transform = train(crop=64, scale=(1.0, 1.0), class_crop_p=p, **NO_COLOUR)
        count = 0
        for seed in range(200):
            transform.reseed(seed)
            count += bool((transform(image, mask, points)[1] == 1).any())
        return count

    assert hits(mask, 0.0) < 20  # a 64-pixel window catches the patch ~3% of the time
    # Centred crops pick class 0 or 1 with equal chance: about half hold the patch.
    assert 70 < hits(mask, 1.0) < 130
    alone = np.where(mask == 1, 1, 255).astype(np.uint8)  # the only class present
    assert hits(alone, 1.0) == 200  # every centred crop holds it


def test_class_centred_crops_are_reproducible_per_seed() -> None:
    image, mask = sample(size=(100, 120))
    points = class_points(mask, 3)
    transform = train(class_crop_p=0.7)
    transform.reseed(5)
    first = transform(image, mask, points)
    transform.reseed(5)
    second = transform(image, mask, points)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_set_zoom_overrides_the_range_no_zoom_cuts_native_pixels() -> None:
    image, mask = sample(size=(40, 50))
    transform = train(crop=16, hflip=0.0, class_crop_p=0.0, **NO_COLOUR)
    transform.set_zoom((1.0, 1.0))
    for seed in range(5):
        transform.reseed(seed)
        out, out_mask = transform(image, mask)
        crop = np.rint(out.transpose(1, 2, 0) * 255).astype(np.uint8)  # mean 0, std 1
        windows = [
            (y, x)
            for y in range(40 - 16 + 1)
            for x in range(50 - 16 + 1)
            if np.array_equal(image[y : y + 16, x : x + 16], crop)
        ]
        assert len(windows) == 1, "an unzoomed crop is a window of the image's own pixels"
        y, x = windows[0]
        assert np.array_equal(mask[y : y + 16, x : x + 16], out_mask)
