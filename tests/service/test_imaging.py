"""Decoding untrusted images: formats, modes, 16-bit precision, EXIF, errors and limits."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from service.errors import CorruptImageError, ImageError, ImageTooLargeError, UnsupportedFormatError
from service.imaging import decode_image, pixel_scale

LIMITS = {"max_pixels": 10_000_000, "max_side": 10_000}


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode(data: bytes, in_channels: int = 3, **limits) -> np.ndarray:
    return decode_image(data, in_channels=in_channels, **{**LIMITS, **limits})


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "GIF", "WEBP", "JPEG"])
def test_every_allowed_format_decodes(fmt: str) -> None:
    rgb = np.zeros((6, 10, 3), np.uint8)
    rgb[:, 5:] = (255, 0, 0)
    data = encode(Image.fromarray(rgb), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    out = decode(data)
    assert out.shape == (6, 10, 3) and out.dtype == np.uint8
    # JPEG is lossy; the others keep pure red and black exactly.
    tolerance = 40 if fmt == "JPEG" else 0
    assert np.abs(out[:, 8].astype(int) - (255, 0, 0)).max() <= tolerance
    assert out[:, 1].max() <= tolerance


def test_gif_uses_the_first_frame() -> None:
    frames = [Image.new("L", (4, 4), 0), Image.new("L", (4, 4), 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    out = decode(buffer.getvalue(), in_channels=1)
    assert out.shape == (4, 4, 1) and out.max() == 0


# (mode, format, expected first pixel for in_channels 1, 3, 4); grey is ITU-R 601 luma.
MODE_CASES = {
    "1": ("PNG", [255], [255, 255, 255], [255, 255, 255, 255]),
    "L": ("PNG", [200], [200, 200, 200], [200, 200, 200, 255]),
    "LA": ("PNG", [200], [200, 200, 200], [200, 200, 200, 100]),
    "RGB": ("PNG", [124], [10, 200, 30], [10, 200, 30, 255]),
    "RGBA": ("PNG", [124], [10, 200, 30], [10, 200, 30, 100]),
    "CMYK": ("TIFF", [76], [255, 0, 0], [255, 0, 0, 255]),
}


def make_mode_image(mode: str) -> Image.Image:
    value = {
        "1": 1,
        "L": 200,
        "LA": (200, 100),
        "RGB": (10, 200, 30),
        "RGBA": (10, 200, 30, 100),
        "CMYK": (0, 255, 255, 0),
    }[mode]
    return Image.new(mode, (3, 2), value)


@pytest.mark.parametrize("mode", sorted(MODE_CASES))
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_modes_convert_to_model_channels(mode: str, channels: int) -> None:
    fmt, *expected = MODE_CASES[mode]
    out = decode(encode(make_mode_image(mode), fmt), in_channels=channels)
    assert out.shape == (2, 3, channels) and out.dtype == np.uint8
    want = expected[{1: 0, 3: 1, 4: 2}[channels]]
    assert np.abs(out[0, 0].astype(int) - want).max() <= 1


def test_palette_transparency_becomes_alpha() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    data = encode(image, "PNG", transparency=1)
    rgba = decode(data, in_channels=4)
    assert rgba[0, 0].tolist() == [255, 0, 0, 255]
    assert rgba[0, 1].tolist() == [0, 0, 255, 0]
    assert decode(data, in_channels=3)[0, 1].tolist() == [0, 0, 255]


@pytest.mark.parametrize(
    ("mode", "fmt"), [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"), ("I", "TIFF")]
)
def test_16_bit_follows_the_bit_depth_rule(mode: str, fmt: str) -> None:
    """16-bit grey is mapped to 0..255 by service.rescale: its 2-98 percentiles by default,
    a fixed range when given; never clipped to 255 first (Pillow's own convert() would)."""
    values = np.array([[0, 255, 256, 40000, 65535]], dtype=np.uint16)
    dtype = {"I": np.int32, "I;16": np.uint16, "I;16B": ">u2"}[mode]
    image = Image.fromarray(values.astype(dtype))
    assert image.mode == mode
    lo, hi = np.percentile(values.astype(np.float64), (2, 98))
    stretched = np.rint(np.clip((values[0] - lo) * 255 / (hi - lo), 0, 255)).tolist()
    for channels in (1, 3, 4):
        out = decode(encode(image, fmt), in_channels=channels)
        assert out.dtype == np.uint8 and out.shape == (1, 5, channels)
        assert out[0, :, 0].tolist() == stretched
        assert (out[..., :3] == out[..., :1]).all()
        if channels == 4:
            assert (out[..., 3] == 255).all()  # the added alpha plane is opaque, not stretched
    fixed = decode(encode(image, fmt), in_channels=1, rescale=(0, 65535))
    assert fixed[0, :, 0].tolist() == [0, 1, 1, 156, 255]  # x 255 / 65535, rounded
    assert pixel_scale(fixed) == pytest.approx(1 / 255)


def test_32_bit_int_is_clipped_to_16_bit_range() -> None:
    image = Image.fromarray(np.array([[-5, 70000]], dtype=np.int32))
    out = decode(encode(image, "TIFF"), in_channels=1, rescale=(0, 65535))
    assert out[0, :, 0].tolist() == [0, 255]


def test_float_image_follows_the_bit_depth_rule() -> None:
    """A float image has no declared range: rescale=0,1 reads it as 0..1 (clipped); without
    it each band's 2-98 percentile is stretched, as for 16-bit data."""
    image = Image.fromarray(np.array([[0.25, 0.75, 2.0, -1.0]], dtype=np.float32))
    assert image.mode == "F"
    out = decode(encode(image, "TIFF"), in_channels=3, rescale=(0, 1))
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0, :, 1].tolist() == [64, 191, 255, 0]
    stretched = decode(encode(image, "TIFF"), in_channels=1)
    assert stretched[0, :, 0].tolist()[2:] == [255, 0] and 0 < stretched[0, 0, 0] < 255


def asymmetric_rgb() -> np.ndarray:
    """A 16x24 RGB image of 8x8 pure-colour blocks with no symmetry."""
    blocks = np.array([[0, 1, 2], [2, 2, 0]])
    classes = np.kron(blocks, np.ones((8, 8), dtype=int))
    return (np.eye(3, dtype=np.uint8)[classes] * 255).astype(np.uint8)


# How a camera stores a picture for each EXIF orientation: the viewer must undo this.
STORED_AS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),  # tag 6: rotate 90 degrees clockwise to view
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),  # tag 8: rotate 90 degrees counter-clockwise to view
}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_exif_orientation_is_applied(orientation: int, fmt: str) -> None:
    upright = asymmetric_rgb()
    stored = Image.fromarray(np.ascontiguousarray(STORED_AS[orientation](upright)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    out = decode(encode(stored, fmt, exif=exif, **options))
    assert out.shape == upright.shape
    assert (out.argmax(axis=2) == upright.argmax(axis=2)).all()


def test_empty_input_is_corrupt() -> None:
    with pytest.raises(CorruptImageError, match="empty"):
        decode(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF"])
def test_truncated_file_is_corrupt(fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    with pytest.raises(CorruptImageError):
        decode(data[: len(data) // 2])


def test_garbage_after_a_valid_signature_is_corrupt() -> None:
    with pytest.raises(CorruptImageError):
        decode(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)


def test_non_image_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormatError, match="not a recognised image"):
        decode(b"hello, this is a text file\n" * 3)


@pytest.mark.parametrize(("fmt", "name"), [("PPM", "PPM"), ("ICO", "ICO"), ("PDF", "PDF")])
def test_known_but_refused_format_is_named(fmt: str, name: str) -> None:
    data = encode(Image.new("RGB", (16, 16)), fmt)
    with pytest.raises(UnsupportedFormatError, match=name):
        decode(data)


def test_errors_share_a_value_error_base() -> None:
    for error in (CorruptImageError, UnsupportedFormatError, ImageTooLargeError):
        assert issubclass(error, ImageError) and issubclass(error, ValueError)
    with pytest.raises(ImageError) as info:
        decode(b"")
    assert info.value.message == str(info.value)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` but holds almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize(
    ("size", "limits"),
    [
        ((3000, 3000), {"max_pixels": 1_000_000}),  # below Pillow's own bomb limit
        ((60_000, 60_000), {"max_side": 10**6}),  # Pillow raises its bomb error first
        ((5000, 10), {"max_side": 4000}),
    ],
)
def test_over_limit_is_rejected_from_the_header(size, limits, no_pixel_decoding) -> None:
    with pytest.raises(ImageTooLargeError):
        decode(png_header_only(*size), **limits)


@pytest.mark.parametrize("side", [60_000, 100_000])
def test_pillow_bomb_error_is_reported_with_the_services_limit(side, no_pixel_decoding) -> None:
    # Gigapixels trip Pillow's own check inside Image.open, before ours runs: the user still
    # reads the service's limit (FCN_MAX_PIXELS), not Pillow's.
    with pytest.raises(ImageTooLargeError) as info:
        decode(png_header_only(side, side), max_side=10**6, max_pixels=50_000_000)
    assert str(info.value) == f"image is too large: {side * side} pixels; the limit is 50000000"
    assert "decompression bomb" not in str(info.value) and "178956970" not in str(info.value)


def test_limit_is_inclusive() -> None:
    data = encode(Image.new("L", (10, 10)), "PNG")
    assert decode(data, in_channels=1, max_pixels=100, max_side=10).shape == (10, 10, 1)
    with pytest.raises(ImageTooLargeError, match="limit is 99"):
        decode(data, max_pixels=99)
    with pytest.raises(ImageTooLargeError, match="longest side"):
        decode(data, max_side=9)


def test_decode_reads_paths_and_file_objects(tmp_path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(encode(Image.new("RGB", (5, 4), (1, 2, 3)), "PNG"))
    assert decode_image(path, in_channels=3, **LIMITS)[0, 0].tolist() == [1, 2, 3]
    with open(path, "rb") as handle:
        assert decode_image(handle, in_channels=3, **LIMITS).shape == (4, 5, 3)
