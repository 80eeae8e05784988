"""albumentations pipelines for training and validation, and input normalisation.

Both pipelines take a decoded ``(H, W, C)`` image (``uint8``, ``uint16`` or ``float32``) and an
``(H, W)`` class-index mask and return ``(image (C, H, W) float32 normalised, mask (H, W))``.

Training: random scale + crop in one affine warp (only the crop's pixels are computed, and the
mask is padded with ``ignore_index`` where the crop leaves the image; with probability
``class_crop_p`` the crop is centred near a pixel of a class drawn uniformly from those in the
image, so rare and thin classes are seen as often as common ones), flips, then brightness /
contrast (and hue/saturation for RGB) on the small crop. Validation: the full image,
normalised only; the model pads to its size multiple itself (docs/contracts.md).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from service.imaging import pixel_scale
from training.config import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_mean_std(in_channels: int) -> tuple[list[float], list[float]]:
    """Normalisation defaults in ``[0, 1]`` units: ImageNet for RGB, its average for grey."""
    if in_channels == 1:
        return [0.449], [0.226]
    if in_channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    if in_channels == 4:
        return [*IMAGENET_MEAN, 0.5], [*IMAGENET_STD, 0.25]
    raise ValueError(f"in_channels must be 1, 3 or 4, got {in_channels}")


class Normalize:
    """``(H, W, C)`` -> ``(C, H, W)`` float32, scaled to ``[0, 1]`` then ``(x - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need one value per channel, std > 0: {mean}, {std}")
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.inv_std = 1.0 / np.asarray(std, dtype=np.float32)[:, None, None]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        channels = image.shape[2]
        if channels != self.mean.shape[0]:
            raise ValueError(
                f"image has {channels} channels, normalisation expects {self.mean.shape[0]}"
            )
        # One fused pass: x * (scale / std) - mean / std, written straight into C-order CHW.
        out = np.empty((channels, *image.shape[:2]), dtype=np.float32)
        np.multiply(
            image.transpose(2, 0, 1), self.inv_std * np.float32(pixel_scale(image)), out=out
        )
        out -= self.mean * self.inv_std
        return out


class RandomScaleCrop(A.DualTransform):
    """Zoom by a random factor and cut a ``size`` x ``size`` window, in one warp.

    Equivalent to RandomScale -> PadIfNeeded -> RandomCrop, but only the output window is
    interpolated, not the whole zoomed image. Where the window leaves the scaled image
    the image gets ``fill`` and the mask ``fill_mask`` (use ``ignore_index``).
    """

    def __init__(
        self,
        size: int,
        scale_range: tuple[float, float] = (0.5, 2.0),
        fill: float = 0.0,
        fill_mask: int = 255,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.size = size
        self.scale_range = scale_range
        self.fill = fill
        self.fill_mask = fill_mask

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict:
        height, width = params["shape"][:2]
        scale = self.py_random.uniform(*self.scale_range)
        # Window origin in scaled pixels; negative when the scaled image is smaller than the
        # crop, which places the image at a random spot inside the padded window.
        x_range = (0.0, width * scale - self.size)
        y_range = (0.0, height * scale - self.size)
        centre = data.get("centre")
        if centre is None:
            x0 = self.py_random.uniform(*x_range)
            y0 = self.py_random.uniform(*y_range)
        else:
            # Put the source pixel (y, x) somewhere in the middle half of the window, and
            # keep the window on the image where the image is large enough.
            x0 = self._around(centre[1] * scale, x_range)
            y0 = self._around(centre[0] * scale, y_range)
        x0, y0 = round(x0), round(y0)
        # Pixel-centre aligned: dst = scale * (src + 0.5) - 0.5 - origin.
        shift = 0.5 * scale - 0.5
        matrix = np.array([[scale, 0.0, shift - x0], [0.0, scale, shift - y0]], dtype=np.float32)
        return {"matrix": matrix}

    def _around(self, position: float, limits: tuple[float, float]) -> float:
        origin = position - self.py_random.uniform(0.25, 0.75) * self.size
        low, high = sorted(limits)
        return min(max(origin, low), high)

    def _warp(self, array: np.ndarray, matrix: np.ndarray, flags: int, fill: float) -> np.ndarray:
        channels = array.shape[2] if array.ndim == 3 else 0
        value = (fill,) * max(channels, 1)
        out = cv2.warpAffine(
            array,
            matrix,
            (self.size, self.size),
            flags=flags,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=value,
        )
        return out.reshape(self.size, self.size, channels) if channels else out

    def apply(self, img: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        return self._warp(img, matrix, cv2.INTER_LINEAR, self.fill)

    def apply_to_mask(self, mask: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        return self._warp(mask, matrix, cv2.INTER_NEAREST, self.fill_mask)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "scale_range", "fill", "fill_mask")


class TrainTransform:
    """The training pipeline: ``(image, mask) -> (normalised CHW float32, mask)``."""

    def __init__(
        self,
        augment: AugmentConfig,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        ignore_index: int,
        seed: int | None = None,
    ) -> None:
        self.augment = augment
        self.scale_crop = RandomScaleCrop(
            augment.crop_size, augment.scale_range, fill=0, fill_mask=ignore_index
        )
        geometric = [
            self.scale_crop,
            A.HorizontalFlip(p=augment.hflip),
            A.VerticalFlip(p=augment.vflip),
        ]
        self.geometric = A.Compose(geometric)
        colour: list[A.BasicTransform] = []
        if augment.brightness or augment.contrast:
            colour.append(
                A.RandomBrightnessContrast(
                    brightness_limit=augment.brightness,
                    contrast_limit=augment.contrast,
                    p=augment.color_p,
                )
            )
        self.colour = A.Compose(colour)
        rgb_colour = []
        if augment.saturation or augment.hue:
            rgb_colour.append(
                A.ColorJitter(
                    brightness=0,
                    contrast=0,
                    saturation=augment.saturation,
                    hue=augment.hue,
                    p=augment.color_p,
                )
            )
        self.rgb_colour = A.Compose(rgb_colour)
        self.normalize = Normalize(mean, std)
        self.random = random.Random(0)
        if seed is not None:
            self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Give this copy its own random stream (training/loop/sampling.py: once per item)."""
        for index, compose in enumerate((self.geometric, self.colour, self.rgb_colour)):
            compose.set_random_seed(random.Random(f"{seed}:{index}").getrandbits(32))
        self.random.seed(f"{seed}:centre")

    def set_zoom(self, zoom: tuple[float, float]) -> None:
        """Draw zoom factors from ``zoom`` instead of ``augment.scale_range`` from now on."""
        self.scale_crop.scale_range = (float(zoom[0]), float(zoom[1]))

    def pick_centre(self, points: Sequence[np.ndarray] | None) -> tuple[int, int] | None:
        """With probability ``class_crop_p``: a pixel ``(y, x)`` of a class drawn uniformly
        from those present (``points[c]`` holds sample pixels of class ``c``); else None."""
        if not points or self.random.random() >= self.augment.class_crop_p:
            return None
        present = [p for p in points if len(p)]
        if not present:
            return None
        chosen = present[self.random.randrange(len(present))]
        y, x = chosen[self.random.randrange(len(chosen))]
        return int(y), int(x)

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        points: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one pair; ``points`` (per class, sample pixels ``(y, x)``) enables
        class-centred crops (``AugmentConfig.class_crop_p``)."""
        out = self.geometric(image=image, mask=mask, centre=self.pick_centre(points))
        image, mask = out["image"], out["mask"]
        if image.dtype == np.uint16:
            # albumentations' colour ops take uint8 or float32; convert the small crop only.
            image = image.astype(np.float32) * np.float32(1.0 / 65535.0)
        if self.colour.transforms:
            image = self.colour(image=image)["image"]
        if self.rgb_colour.transforms and image.shape[2] == 3:
            image = self.rgb_colour(image=image)["image"]
        return self.normalize(image), mask


class EvalTransform:
    """The validation pipeline: full-size image, normalised; the mask is unchanged."""

    def __init__(self, *, mean: Sequence[float], std: Sequence[float]) -> None:
        self.normalize = Normalize(mean, std)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.normalize(image), mask
