"""service.formats.png: mask PNGs written with zlib read back exactly, by Pillow, in every layout."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from service.formats.png import grey_png, palette_png

rng = np.random.default_rng(0)


def read(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every row: a wrong length or CRC raises here
    return image


def blocks(height: int, width: int, classes: int, dtype=np.uint8) -> np.ndarray:
    """A mask-like array: large flat regions (what the run-length strategy is for)."""
    coarse = rng.integers(0, classes, (4, 4)).astype(dtype)
    return np.kron(coarse, np.ones((-(-height // 4), -(-width // 4)), dtype))[:height, :width]


@pytest.mark.parametrize("shape", [(1, 1), (1, 513), (300, 1), (37, 53), (512, 512)])
def test_8_bit_grey_is_lossless(shape) -> None:
    mask = rng.integers(0, 256, shape, dtype=np.uint8)
    image = read(grey_png(mask))
    assert image.mode == "L" and image.size == shape[::-1]
    np.testing.assert_array_equal(np.asarray(image), mask)


def test_16_bit_grey_is_lossless_and_big_endian() -> None:
    mask = np.array([[0, 1, 255, 256], [257, 4095, 65534, 65535]], dtype=np.uint16)
    image = read(grey_png(mask))
    assert image.mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(image).astype(np.int64), mask)


def test_non_contiguous_masks_are_written_as_seen() -> None:
    mask = rng.integers(0, 9, (40, 60), dtype=np.uint8)
    for view in (mask[::2, 3:], mask.T, mask[:, ::-1]):
        np.testing.assert_array_equal(np.asarray(read(grey_png(view))), view)


def test_palette_png_shows_the_palette_and_keeps_the_indices() -> None:
    palette = [[0, 0, 0], [230, 60, 60], [60, 180, 75]]
    mask = blocks(50, 70, 4)  # index 3 is past the palette: black
    image = read(palette_png(mask, palette))
    assert image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image), mask)
    lut = np.zeros((256, 3), np.uint8)
    lut[:3] = palette
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), lut[mask])


def test_masks_compress_well() -> None:
    mask = blocks(512, 512, 5)
    assert len(grey_png(mask)) < mask.size / 50


def test_chunks_are_well_formed() -> None:
    data = grey_png(blocks(20, 30, 3))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, tags = 8, []
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        tag, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        crc = int.from_bytes(data[offset + 8 + length : offset + 12 + length], "big")
        assert crc == zlib.crc32(tag + body), tag
        tags.append(tag)
        offset += 12 + length
    assert tags == [b"IHDR", b"IDAT", b"IEND"] and offset == len(data)


@pytest.mark.parametrize(
    "call",
    [
        lambda: grey_png(np.zeros((2, 2), np.int32)),
        lambda: grey_png(np.zeros((2, 2, 1), np.uint8)),
        lambda: grey_png(np.zeros((0, 4), np.uint8)),
        lambda: palette_png(np.zeros((2, 2), np.uint16), [[0, 0, 0]]),
        lambda: palette_png(np.zeros((2, 2), np.uint8), [[0, 0, 0]] * 257),
    ],
)
def test_bad_input_is_a_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()
