"""The project's generated demo dataset: coloured shapes on cluttered backgrounds.

Five classes (background, ellipse, rectangle, triangle, star). Each image holds 2-7 shapes of
random size, aspect, rotation, texture and shade over a low-saturation gradient background
with blobs, distractor lines and sensor noise. Each class leans to its own hue range (with
overlap), so a small model learns it in minutes while shape still matters.

Image ``i`` depends only on ``(seed, i, size)``: the same seed gives byte-identical files, and
a larger ``count`` only adds images. Needs numpy and Pillow, not torch. OpenCV (the ``train``
extra) does the bicubic resize and the blur when installed; without it (the serve-only install
behind ``make run``, which writes one sample image) numpy does the same arithmetic, within
float rounding of OpenCV's (a pixel may differ by one grey level).
"""

from __future__ import annotations

import colorsys
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from training.config import OptionError

try:
    import cv2
except ImportError:  # the serve-only install: the numpy versions below stand in
    cv2 = None

logger = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("background", "ellipse", "rectangle", "triangle", "star")
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (230, 60, 60),
    (60, 180, 75),
    (40, 110, 230),
    (245, 200, 30),
)
_HUES = (None, 0.0, 0.33, 0.6, 0.14)  # hue centre per class, as a fraction of the circle
_HUE_JITTER = 0.08


def _outline(cls: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Vertices ``(K, 2)`` of a shape of class ``cls`` centred on 0, before rotation."""
    if cls == 1:  # ellipse
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([radius * np.cos(t), radius * rng.uniform(0.5, 1.0) * np.sin(t)], 1)
    if cls == 2:  # rectangle, from square to 2.5:1
        w, h = radius * 0.85, radius * 0.85 * rng.uniform(0.4, 1.0)
        return np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
    if cls == 3:  # triangle, roughly equilateral
        angles = np.deg2rad(np.array([90, 210, 330]) + rng.uniform(-15, 15, 3))
        radii = radius * rng.uniform(1.0, 1.3, 3)  # a triangle covers less than its circle
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    points = int(rng.integers(5, 8))  # star
    angles = np.linspace(0, 2 * np.pi, 2 * points, endpoint=False)
    radii = np.where(np.arange(2 * points) % 2 == 0, radius, radius * rng.uniform(0.4, 0.55))
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def _texture(size: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A ``(size, size)`` pattern in about ``[-1, 1]``: flat, stripes, checks, speckle or radial."""
    kind = int(rng.integers(0, 5))
    if kind == 0:
        return np.zeros((size, size), np.float32)
    angle = rng.uniform(0, np.pi)
    freq = 2 * np.pi / rng.uniform(4, 14)
    if kind == 1:
        return np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    if kind == 2:
        return np.sign(np.sin(freq * xx) * np.sin(freq * yy)).astype(np.float32)
    if kind == 3:
        return rng.uniform(-1, 1, (size, size)).astype(np.float32)
    cy, cx = rng.uniform(0, size, 2)
    return np.cos(np.hypot(yy - cy, xx - cx) * freq * 0.5)


def _resize_cubic(square: np.ndarray, size: int) -> np.ndarray:
    """Bicubic upscaling of a square float32 array to ``(size, size)``, as OpenCV's INTER_CUBIC."""
    if cv2 is not None:
        return cv2.resize(square, (size, size), interpolation=cv2.INTER_CUBIC)
    n, a = square.shape[0], -0.75  # OpenCV's cubic coefficient, pixel centres at +0.5
    pos = (np.arange(size) + 0.5) * (n / size) - 0.5
    left = np.floor(pos).astype(int)
    t = (pos - left).astype(np.float32)
    taps = (
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
    )
    weights = np.zeros((size, n), np.float32)
    rows = np.arange(size)
    for offset, tap in zip(range(-1, 3), (*taps, 1 - sum(taps)), strict=True):
        np.add.at(weights, (rows, np.clip(left + offset, 0, n - 1)), tap)  # edges replicate
    return (weights @ square @ weights.T).astype(np.float32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an ``(H, W, C)`` float32 image, as OpenCV's GaussianBlur(ksize=0)."""
    if cv2 is not None:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    radius = int(round(sigma * 8 + 1)) // 2  # OpenCV's kernel size for float images
    kernel = np.exp(-((np.arange(-radius, radius + 1)) ** 2) / (2 * sigma * sigma))
    kernel = (kernel / kernel.sum()).astype(np.float32)
    h, w = image.shape[:2]
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(k * padded[:, i : i + w] for i, k in enumerate(kernel))
    return sum(k * rows[i : i + h] for i, k in enumerate(kernel)).astype(np.float32)


def _background(size: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Low-saturation gradient with soft blobs: ``(size, size, 3)`` float32 in 0..255."""
    start, end = (rng.uniform(50, 210) + rng.normal(0, 12, 3) for _ in range(2))
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xx * np.cos(angle) + yy * np.sin(angle)) / (size * 1.42) + 0.5
    image = start + (end - start) * ramp[..., None]
    blobs = rng.normal(0, 1, (6, 6)).astype(np.float32)
    blobs = _resize_cubic(blobs, size)
    return (image + rng.uniform(5, 25) * blobs[..., None]).astype(np.float32)


def render_sample(index: int, *, size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render demo image ``index``: ``(H, W, 3) uint8`` RGB and ``(H, W) uint8`` class mask."""
    rng = np.random.default_rng([seed, index, size])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = _background(size, rng, yy, xx)
    canvas = Image.new("L", (size, size))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 4))):  # distractor lines in background shades
        ends = rng.uniform(0, size, 4).tolist()
        draw.line(ends, fill=int(rng.integers(1, 256)), width=int(rng.integers(1, 4)))
    lines = np.asarray(canvas)
    image = np.where(lines[..., None] > 0, lines[..., None] * 0.6 + 40, image)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 8))):
        cls = int(rng.integers(1, len(CLASSES)))
        radius = size * rng.uniform(0.08, 0.22)
        theta = rng.uniform(0, 2 * np.pi)
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        centre = rng.uniform(0.05 * size, 0.95 * size, 2)
        points = _outline(cls, radius, rng) @ rotation.T + centre
        canvas = Image.new("L", (size, size))
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in points.tolist()], fill=1)
        inside = np.asarray(canvas).astype(bool)
        hue = (_HUES[cls] + rng.uniform(-_HUE_JITTER, _HUE_JITTER)) % 1.0
        rgb = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 0.95), rng.uniform(0.45, 0.95)))
        shade = 1.0 + rng.uniform(0.1, 0.35) * _texture(size, rng, yy, xx)
        image[inside] = (255 * rgb[None, :] * shade[inside][:, None]).astype(np.float32)
        mask[inside] = cls  # later shapes occlude earlier ones in the image and the mask
    image = _blur(image, 0.7)  # soften the hard polygon edges
    image += rng.normal(0, rng.uniform(2, 10), image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), mask


def write_demo(out: Path | str, *, count: int = 64, size: int = 256, seed: int = 0) -> Path:
    """Write ``count`` demo pairs to ``out/images``, ``out/masks`` and ``out/dataset.json``.

    Masks are palette PNGs: pixel values are class indices, viewers show the class colours.

    Raises:
        ValueError: bad count/size, or ``out/images`` already holds files.
    """
    if count < 1 or size < 16:
        raise ValueError(f"need count >= 1 and size >= 16, got count={count}, size={size}")
    out = Path(out)
    images_dir, masks_dir = out / "images", out / "masks"
    for folder in (images_dir, masks_dir):
        if folder.is_dir() and any(folder.iterdir()):
            raise OptionError(
                f"{folder} is not empty; choose a new output folder", options=("out",)
            )
        folder.mkdir(parents=True, exist_ok=True)
    palette = [c for colour in PALETTE for c in colour]
    width = max(4, len(str(count - 1)))

    def write(index: int) -> None:
        image, mask = render_sample(index, size=size, seed=seed)
        name = f"{index:0{width}d}.png"
        Image.fromarray(image).save(images_dir / name, compress_level=1)
        indexed = Image.fromarray(mask)
        indexed.putpalette(palette)  # L -> P, keeping the values as palette indices
        indexed.save(masks_dir / name)

    # numpy, OpenCV and zlib release the GIL; each image is independent, so order is free.
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(write, range(count)))
    meta = {"classes": list(CLASSES), "palette": [list(c) for c in PALETTE]}
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    logger.debug("wrote %d demo images of %dx%d to %s", count, size, size, out)
    return out
