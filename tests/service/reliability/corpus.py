"""The bad-input corpus: hostile and odd image files, generated here (nothing third-party).

Each :class:`Case` is one file with what the service must answer for it over HTTP (status,
error code, or the mask size for a 200) and what ``fcn predict`` must report for it (``ok`` or
``failed`` with a reason containing ``batch_reason``). Protocol-level cases (multipart shapes,
content types, chunked and stalled bodies) live in the HTTP test; they have no file.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

# The forged header that claims 60000 x 60000 pixels (10.8 GB of RGB once decoded).
HUGE_SIDE = 60_000
# The decompressed size of the zTXt "zip bomb" (64 MiB of zeros in ~64 KB).
BOMB_BYTES = 64 << 20


@dataclass(frozen=True)
class Case:
    """One corpus file.

    Attributes:
        name: test id.
        filename: the name it is sent / written under (suffix chosen to mislead when hostile).
        data: the bytes.
        status: the HTTP status it must get.
        code: the error code of a 4xx answer (None for 200).
        size: ``(width, height)`` of the mask a 200 must return.
        batch_reason: for ``fcn predict``: None means the row is ``ok``; else the row is
            ``failed`` and its error contains this text.
    """

    name: str
    filename: str
    data: bytes
    status: int
    code: str | None = None
    size: tuple[int, int] | None = None
    batch_reason: str | None = None


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def encode(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def random_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = _rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    pixels = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    return Image.fromarray(pixels[:, :, 0] if bands == 1 else pixels, mode)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` RGB, followed by one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def ztxt_bomb_png(width: int = 16, height: int = 12, inflated: int = BOMB_BYTES) -> bytes:
    """A valid small PNG with a zTXt chunk that inflates to ``inflated`` bytes."""
    png = encode(random_image(width, height, seed=7), "PNG")
    packer = zlib.compressobj(9)
    block = b"\x00" * (1 << 20)
    compressed = b"".join(packer.compress(block) for _ in range(inflated >> 20)) + packer.flush()
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + compressed)
    end_of_ihdr = len(PNG_SIGNATURE) + 8 + 13 + 4
    return png[:end_of_ihdr] + ztxt + png[end_of_ihdr:]


def animated_gif(frames: int = 400, side: int = 48) -> bytes:
    images = [random_image(side, side, seed=i).convert("P") for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=20, loop=0)


def multipage_tiff(pages: int = 60, width: int = 40, height: int = 30) -> bytes:
    images = [random_image(width, height, seed=i) for i in range(pages)]
    return encode(images[0], "TIFF", save_all=True, append_images=images[1:])


def palette_png_with_transparency(width: int = 21, height: int = 13) -> bytes:
    image = random_image(width, height, seed=3).convert("P", palette=Image.Palette.ADAPTIVE)
    return encode(image, "PNG", transparency=0)


def malformed_exif_jpeg(width: int = 24, height: int = 18) -> bytes:
    """A JPEG whose APP1 Exif block is a TIFF header pointing at a garbage IFD."""
    jpeg = encode(random_image(width, height, seed=4), "JPEG")
    tiff = b"MM\x00*" + struct.pack(">I", 8) + b"\xff\xff" + b"\x01\x12\x00\x03" * 8 + b"\xde\xad"
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]


def bad_orientation_jpeg(width: int = 24, height: int = 18) -> bytes:
    """A JPEG whose EXIF orientation is 9 (there are eight)."""
    exif = Image.Exif()
    exif[0x0112] = 9
    return encode(random_image(width, height, seed=5), "JPEG", exif=exif)


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<rect width="10" height="10" fill="red"/></svg>'
)
HTML = b"<!DOCTYPE html><html><body><img src='x.png'>not an image</body></html>"


@lru_cache(maxsize=1)
def file_cases() -> tuple[Case, ...]:
    """Every corpus file (built once per process)."""
    png = encode(random_image(40, 30, seed=1), "PNG")
    jpeg = encode(random_image(40, 30, seed=2), "JPEG")
    return (
        Case("empty", "empty.png", b"", 422, "missing_image", batch_reason="empty"),
        Case(
            "random-bytes",
            "noise.png",
            _rng(9).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            415,
            "unsupported_image",
            batch_reason="unsupported image format",
        ),
        Case(
            "text-named-png",
            "notes.png",
            b"just some text, not a picture\n" * 20,
            415,
            "unsupported_image",
            batch_reason="unsupported image format",
        ),
        Case(
            "html-named-jpg",
            "page.jpg",
            HTML,
            415,
            "unsupported_image",
            batch_reason="unsupported image format",
        ),
        Case(
            "truncated-png",
            "cut.png",
            png[: len(png) // 2],
            400,
            "corrupt_image",
            batch_reason="corrupt",
        ),
        Case(
            "truncated-jpeg",
            "cut.jpg",
            jpeg[: len(jpeg) // 2],
            400,
            "corrupt_image",
            batch_reason="corrupt",
        ),
        Case(
            "header-60000x60000",
            "huge.png",
            forged_png(HUGE_SIDE, HUGE_SIDE),
            413,
            "image_too_large",
            batch_reason="the limit is",  # the service's pixel limit, not Pillow's bomb text
        ),
        Case("animated-gif", "anim.gif", animated_gif(), 200, size=(48, 48)),
        Case("multipage-tiff", "pages.tif", multipage_tiff(), 200, size=(40, 30)),
        Case(
            "cmyk-jpeg",
            "cmyk.jpg",
            encode(random_image(33, 21, "CMYK"), "JPEG"),
            200,
            size=(33, 21),
        ),
        Case(
            "progressive-jpeg",
            "prog.jpg",
            encode(random_image(64, 48, seed=6), "JPEG", progressive=True),
            200,
            size=(64, 48),
        ),
        Case(
            "16-bit-png",
            "wide.png",
            encode(random_image(37, 19, "I;16"), "PNG"),
            200,
            size=(37, 19),
        ),
        Case(
            "palette-transparency", "pal.png", palette_png_with_transparency(), 200, size=(21, 13)
        ),
        Case("la-png", "la.png", encode(random_image(17, 11, "LA"), "PNG"), 200, size=(17, 11)),
        Case(
            "rgba-png", "rgba.png", encode(random_image(19, 13, "RGBA"), "PNG"), 200, size=(19, 13)
        ),
        Case("1x1", "dot.png", encode(random_image(1, 1), "PNG"), 200, size=(1, 1)),
        Case("1x20000", "line.png", encode(random_image(1, 20000), "PNG"), 200, size=(1, 20000)),
        Case("malformed-exif", "exif.jpg", malformed_exif_jpeg(), 200, size=(24, 18)),
        Case("exif-orientation-9", "orient.jpg", bad_orientation_jpeg(), 200, size=(24, 18)),
        Case(
            "svg",
            "drawing.svg",
            SVG,
            415,
            "unsupported_image",
            batch_reason="unsupported image format",
        ),
        # Pillow inflates text chunks up to MAX_TEXT_CHUNK (1 MiB) and refuses the rest.
        Case(
            "ztxt-zip-bomb",
            "bomb.png",
            ztxt_bomb_png(),
            400,
            "corrupt_image",
            batch_reason="Decompressed data too large",
        ),
    )
