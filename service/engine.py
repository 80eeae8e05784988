"""ONNX Runtime inference: session, metadata, normalise, pad/run/crop, tiling, argmax.

The engine accepts any image size and returns a mask of exactly that size. Inputs are padded
bottom/right to the model's ``size_multiple`` with the rule of docs/contracts.md (per axis:
reflect when the pad is smaller than the side, else edge), run, and cropped back. Images above
``EngineConfig.tile_threshold`` pixels go through :mod:`service.tiling` so memory stays bounded.

Three levels, for three callers:

* :meth:`Engine.predict` ``(H, W[, C])`` pixels -> ``(H, W)`` class indices (the service);
* :meth:`Engine.logits` ``(H, W[, C])`` pixels -> ``float32 (K, H, W)`` averaged logits;
* :meth:`Engine.run_normalised` already-normalised ``float32 (N, C, H, W)`` -> ``(N, K, H, W)``
  logits through pad/run/crop only, never tiled: what the export parity check compares with
  torch, since it bypasses decoding and normalisation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.errors import MetadataError, ModelError, ModelLoadError
from service.imaging import Source, decode_image, pixel_scale
from service.metadata import ModelMetadata, parse_metadata
from service.tiling import blended_strips

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """Engine settings (a plain dataclass: the HTTP settings layer maps onto it).

    Attributes:
        providers: ONNX Runtime execution providers in priority order; ``None`` picks CUDA
            when this onnxruntime build has it, else CPU.
        intra_op_threads: threads inside one operator; 0 lets ONNX Runtime decide.
        inter_op_threads: threads across independent operators; 0 lets ONNX Runtime decide.
        max_pixels: largest accepted ``width * height`` (checked before decoding).
        max_side: largest accepted width or height.
        tile_size: sliding-window side, rounded up to the model's ``size_multiple``.
        tile_overlap: minimum overlap between neighbouring windows.
        tile_threshold: images with more pixels than this are tiled.
    """

    providers: tuple[str, ...] | None = None
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    max_pixels: int = 100_000_000
    max_side: int = 20_000
    tile_size: int = 512
    tile_overlap: int = 128
    tile_threshold: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = ONNX Runtime default)")
        for name in ("max_pixels", "max_side", "tile_size", "tile_threshold"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.tile_overlap < self.tile_size // 2:
            raise ValueError(
                f"tile_overlap must be in [0, tile_size / 2), got {self.tile_overlap} "
                f"for tile_size {self.tile_size}"
            )


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, CPU always as the fallback."""
    available = ort.get_available_providers()
    preferred = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*preferred, "CPUExecutionProvider"]


def create_session(path: str | os.PathLike, config: EngineConfig) -> ort.InferenceSession:
    """Build an ONNX Runtime session with the configured providers and thread counts.

    Raises:
        ModelLoadError: the file is missing or ONNX Runtime rejects it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    providers = list(config.providers) if config.providers else default_providers()
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
        raise ModelLoadError(f"cannot load ONNX model {path}: {exc}") from exc


def pad_to_multiple(array: np.ndarray, multiple: int) -> np.ndarray:
    """Pad the last two axes (H, W) bottom/right up to a multiple of ``multiple``.

    Per axis: ``reflect`` (mirror without repeating the edge, as torch's ``reflect``) when the
    pad is smaller than that side, else ``edge`` (torch's ``replicate``). Same rule as
    ``fcn.padding.PadCrop``, so the served model sees what it was validated on.
    """
    if multiple <= 1:
        return array
    for axis in (array.ndim - 2, array.ndim - 1):
        side = array.shape[axis]
        pad = -side % multiple
        if pad == 0:
            continue
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, pad)
        array = np.pad(array, widths, mode="reflect" if pad < side else "edge")
    return array


class Engine:
    """A loaded model: metadata plus a session, turning pixels into masks.

    Args:
        session: an ONNX Runtime session of a model exported per docs/contracts.md.
        config: engine settings; defaults when omitted.

    Raises:
        MetadataError: a metadata key is missing/invalid or contradicts the graph.
    """

    def __init__(self, session: ort.InferenceSession, config: EngineConfig | None = None):
        self.session = session
        self.config = config or EngineConfig()
        self.metadata: ModelMetadata = parse_metadata(session.get_modelmeta().custom_metadata_map)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelError(f"expected one input and a logits output, got {len(inputs)} inputs")
        self.input_name = inputs[0].name
        output = next((o for o in outputs if o.name == "logits"), outputs[0])
        self.output_name = output.name
        _check_static_dim(inputs[0].shape, self.metadata.in_channels, "in_channels")
        _check_static_dim(output.shape, self.metadata.num_classes, "num_classes")
        m = self.metadata
        # One affine per channel: (x * scale - mean) / std == x * (scale / std) - mean / std.
        self._inv_std = 1.0 / np.asarray(m.std, dtype=np.float32)
        self._shift = np.asarray(m.mean, dtype=np.float32) * self._inv_std
        multiple = m.size_multiple
        self.tile_size = -(-self.config.tile_size // multiple) * multiple

    @classmethod
    def load(cls, path: str | os.PathLike, config: EngineConfig | None = None) -> Engine:
        """Load an ONNX file. Raises ModelLoadError or MetadataError with the reason."""
        config = config or EngineConfig()
        engine = cls(create_session(path, config), config)
        logger.info(
            "loaded %s (%s, %d classes) on %s",
            path,
            engine.metadata.arch,
            engine.metadata.num_classes,
            engine.session.get_providers()[0],
        )
        return engine

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses."""
        return self.session.get_providers()

    @property
    def mask_dtype(self) -> np.dtype:
        """``uint8`` up to 256 classes, else ``uint16``."""
        return np.dtype(np.uint8 if self.metadata.num_classes <= 256 else np.uint16)

    def decode(self, source: Source) -> np.ndarray:
        """Decode bytes/a path with this model's channels and the configured size limits."""
        return decode_image(
            source,
            in_channels=self.metadata.in_channels,
            max_pixels=self.config.max_pixels,
            max_side=self.config.max_side,
        )

    def uses_tiling(self, height: int, width: int) -> bool:
        """Whether an image of this size goes through sliding-window inference."""
        return height * width > self.config.tile_threshold

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """``(h, w, C)`` uint8/uint16/float pixels -> normalised ``float32 (C, h, w)``."""
        scale = np.float32(pixel_scale(pixels))
        x = pixels.astype(np.float32)
        x *= scale * self._inv_std
        x -= self._shift
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def run_normalised(self, batch: np.ndarray) -> np.ndarray:
        """Pad, run and crop already-normalised input (no tiling).

        Args:
            batch: ``float32 (N, in_channels, H, W)``, normalised as in docs/contracts.md.

        Returns:
            ``float32 (N, num_classes, H, W)`` logits.

        Raises:
            ValueError: wrong rank or channel count.
            ModelError: the graph returned an unexpected shape.
        """
        if batch.ndim != 4 or batch.shape[1] != self.metadata.in_channels:
            raise ValueError(
                f"expected (N, {self.metadata.in_channels}, H, W) input, got {batch.shape}"
            )
        n, _, height, width = batch.shape
        padded = pad_to_multiple(np.ascontiguousarray(batch, dtype=np.float32), self._multiple)
        (out,) = self.session.run([self.output_name], {self.input_name: padded})
        expected = (n, self.metadata.num_classes, padded.shape[2], padded.shape[3])
        if out.shape != expected:
            raise ModelError(
                f"model returned logits of shape {out.shape} for input {padded.shape}, expected "
                f"{expected}; is 'size_multiple' ({self._multiple}) in its metadata right?"
            )
        return out[:, :, :height, :width]

    def logits(self, pixels: np.ndarray, *, tiled: bool | None = None) -> np.ndarray:
        """Averaged ``float32 (K, H, W)`` logits for one image (materialises all of them).

        Args:
            pixels: ``(H, W)`` or ``(H, W, in_channels)`` uint8/uint16/float in [0, 1].
            tiled: force (True) or forbid (False) tiling; None decides by size.
        """
        pixels = self._check_pixels(pixels)
        height, width = pixels.shape[:2]
        if not self._tiled(height, width, tiled):
            return self.run_normalised(self.normalise(pixels)[None])[0]
        out = np.empty((self.metadata.num_classes, height, width), dtype=np.float32)
        for y0, total, weight in self._strips(pixels):
            np.divide(total, weight, out=out[:, y0 : y0 + weight.shape[0]])
        return out

    def predict(self, pixels: np.ndarray, *, tiled: bool | None = None) -> np.ndarray:
        """The class-index mask of one image, exactly ``(H, W)``.

        Args:
            pixels: ``(H, W)`` or ``(H, W, in_channels)`` uint8/uint16/float in [0, 1], e.g.
                from :meth:`decode`.
            tiled: force (True) or forbid (False) tiling; None decides by size.

        Returns:
            ``(H, W)`` ``uint8`` mask (``uint16`` above 256 classes).
        """
        pixels = self._check_pixels(pixels)
        height, width = pixels.shape[:2]
        if not self._tiled(height, width, tiled):
            logits = self.run_normalised(self.normalise(pixels)[None])[0]
            return logits.argmax(axis=0).astype(self.mask_dtype)
        mask = np.empty((height, width), dtype=self.mask_dtype)
        for y0, total, _weight in self._strips(pixels):
            # The weights are a positive per-pixel factor: the argmax ignores them.
            mask[y0 : y0 + total.shape[1]] = total.argmax(axis=0)
        return mask

    @property
    def _multiple(self) -> int:
        return self.metadata.size_multiple

    def _tiled(self, height: int, width: int, tiled: bool | None) -> bool:
        return self.uses_tiling(height, width) if tiled is None else tiled

    def _strips(self, pixels: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        height, width = pixels.shape[:2]

        def run_tile(y: int, x: int, h: int, w: int) -> np.ndarray:
            window = self.normalise(pixels[y : y + h, x : x + w])
            return np.array(self.run_normalised(window[None])[0])  # writable, contiguous

        # EngineConfig keeps tile_overlap below half its tile_size, and self.tile_size only
        # rounds that up: the overlap always fits.
        return blended_strips(
            height,
            width,
            self.metadata.num_classes,
            self.tile_size,
            self.config.tile_overlap,
            run_tile,
        )

    def _check_pixels(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        channels = self.metadata.in_channels
        if pixels.ndim != 3 or pixels.shape[2] != channels or min(pixels.shape[:2]) < 1:
            raise ValueError(f"expected an (H, W, {channels}) image, got shape {pixels.shape}")
        return pixels


def _check_static_dim(shape: list, expected: int, key: str) -> None:
    """Compare a graph's static channel dimension with the metadata (symbolic dims pass)."""
    if len(shape) != 4:
        raise ModelError(f"expected a 4-D (N, C, H, W) graph input/output, got shape {shape}")
    if isinstance(shape[1], int) and shape[1] != expected:
        raise MetadataError(key, f"says {expected} but the graph has {shape[1]} channels")
