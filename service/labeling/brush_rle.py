"""Label Studio's brush RLE: the run-length encoding its BrushLabels results store.

Not COCO RLE. Label Studio's editor keeps a brush region as an RGBA image of the whole picture
and stores it with a bit-packed run-length code (the ``rle-pack`` scheme of thi.ng). The values
encoded are that image flattened row by row, four bytes per pixel (R, G, B, A); a painted pixel is
255 in all four, an unpainted one 0, and readers look at the alpha channel.

The bit stream, most significant bit first, padded with zeros to whole bytes:

* header: the number of values (32 bits), the word size minus one (5 bits: 7 for bytes), and
  four run-length field widths, each minus one (4 bits each: 3, 4, 8 and 16 bits);
* then blocks until that many values are out. A block starts with a flag bit and a 2-bit index
  into the four widths; the next ``width`` bits hold the block length minus one. Flag 1 is a run:
  one word, repeated. Flag 0 is literal: that many words follow.

:func:`encode` writes runs only (every run of a mask is at least four values long, one pixel);
:func:`decode` reads both kinds, since Label Studio's own editor writes literal blocks too.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 8
RUN_WIDTHS = (3, 4, 8, 16)  # bits of "length - 1"; the widest allows runs of 65536 values
CHANNELS = 4  # R, G, B, A per pixel
_HEADER_BITS = 32 + 5 + 4 * len(RUN_WIDTHS)


class BrushRleError(ValueError):
    """The list is not a Label Studio brush RLE of the size it was said to be."""


def _bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Concatenate each value's ``width`` low bits, most significant first, as a 0/1 array."""
    total = int(widths.sum())
    ends = np.cumsum(widths)
    # For every output bit: which field it belongs to and its shift inside that field.
    field = np.repeat(np.arange(len(widths)), widths)
    shift = ends[field] - 1 - np.arange(total)
    return ((values[field] >> shift) & 1).astype(np.uint8)


def encode(mask: np.ndarray) -> list[int]:
    """The brush RLE of a 2-D mask: nonzero pixels painted, the rest not.

    Returns:
        the bytes as a list of ints, the form Label Studio's JSON keeps in ``value.rle``.
    """
    if mask.ndim != 2:
        raise ValueError(f"need a 2-D mask, got shape {mask.shape}")
    flat = (np.asarray(mask).reshape(-1) != 0).astype(np.uint8)
    count = flat.size * CHANNELS
    if flat.size:
        starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
        lengths = np.diff(np.append(starts, flat.size)) * CHANNELS
        values = flat[starts].astype(np.int64) * 255
    else:
        lengths = values = np.zeros(0, np.int64)
    # A run longer than the widest field allows is cut into full blocks and one remainder.
    longest = 1 << RUN_WIDTHS[-1]
    pieces = -(-lengths // longest)
    block_values = np.repeat(values, pieces)
    block_lengths = np.full(int(pieces.sum()), longest, np.int64)
    last = np.cumsum(pieces) - 1
    block_lengths[last] = lengths - (pieces - 1) * longest
    # The narrowest width that holds length - 1.
    limits = np.array([1 << w for w in RUN_WIDTHS])
    index = np.searchsorted(limits, block_lengths, side="left")
    widths = np.array(RUN_WIDTHS)[index]
    # Per block: flag (1 bit), width index (2), length - 1 (width), the word (8).
    n = len(block_lengths)
    fields = np.stack([np.ones(n, np.int64), index, block_lengths - 1, block_values], axis=1)
    field_widths = np.stack(
        [np.ones(n, np.int64), np.full(n, 2), widths, np.full(n, WORD_BITS)], axis=1
    )
    header = np.array([count, WORD_BITS - 1, *(w - 1 for w in RUN_WIDTHS)], np.int64)
    header_widths = np.array([32, 5, *([4] * len(RUN_WIDTHS))], np.int64)
    bits = _bits(
        np.concatenate([header, fields.reshape(-1)]),
        np.concatenate([header_widths, field_widths.reshape(-1)]),
    )
    return np.packbits(bits).tolist()


class _Reader:
    """Reads unsigned fields from a string of '0'/'1' characters."""

    def __init__(self, data: bytes) -> None:
        self.bits = (np.unpackbits(np.frombuffer(data, np.uint8)) + ord("0")).tobytes().decode()
        self.at = 0

    def read(self, width: int) -> int:
        end = self.at + width
        if end > len(self.bits):
            raise BrushRleError("the RLE ends in the middle of a block")
        value = int(self.bits[self.at : end], 2)
        self.at = end
        return value


def decode_values(rle: list[int] | bytes) -> np.ndarray:
    """Every value the RLE encodes (for a brush mask: H * W * 4 bytes), as uint8."""
    try:
        data = bytes(rle)
    except (TypeError, ValueError) as exc:
        raise BrushRleError(f"an RLE is a list of byte values 0-255: {exc}") from None
    if len(data) * 8 < _HEADER_BITS:
        raise BrushRleError(f"an RLE of {len(data)} byte(s) is shorter than its header")
    reader = _Reader(data)
    count = reader.read(32)
    word = reader.read(5) + 1
    widths = [reader.read(4) + 1 for _ in RUN_WIDTHS]
    if word > 8:
        raise BrushRleError(f"word size {word} bits: only byte values are supported")
    if count > len(data) * 8 * (1 << 16):
        raise BrushRleError(f"the header claims {count} values, more than the data can hold")
    out = np.zeros(count, np.uint8)
    at = 0
    while at < count:
        repeated = reader.read(1)
        length = reader.read(widths[reader.read(2)]) + 1
        if at + length > count:
            raise BrushRleError(f"a block runs past the {count} values the header declares")
        if repeated:
            out[at : at + length] = reader.read(word)
        else:
            out[at : at + length] = [reader.read(word) for _ in range(length)]
        at += length
    return out


def decode(rle: list[int] | bytes, width: int, height: int) -> np.ndarray:
    """The painted pixels of a brush RLE of a ``width`` x ``height`` image, as a bool mask.

    Raises:
        BrushRleError: malformed, or not ``width * height * 4`` values.
    """
    values = decode_values(rle)
    expected = width * height * CHANNELS
    if values.size != expected:
        raise BrushRleError(
            f"the RLE holds {values.size} values; a {width}x{height} RGBA mask needs {expected}"
        )
    return values.reshape(height, width, CHANNELS)[:, :, 3] > 127
