"""Inference: metadata, normalise, pad/run/crop, tiling, argmax over a backend.

The model itself runs in a backend (:mod:`service.backends`: ONNX Runtime by default, or
OpenVINO) at a precision (fp32, bf16, int8) picked by :func:`service.backends.select.choose_backend`
from ``EngineConfig.backend``/``precision``, the accuracy checks recorded at export, this
CPU's flags and, for ``auto``, the candidates' speed measured here (:mod:`service.backends.probe`);
all the pixel handling below is shared by every backend.

The engine accepts any image size and returns a mask of exactly that size. Inputs are padded
bottom/right to the model's ``size_multiple`` with the rule of docs/contracts.md (per axis:
reflect when the pad is smaller than the side, else edge), run, and cropped back. Images above
``EngineConfig.tile_threshold`` pixels go through :mod:`service.engine.tiling` so memory stays bounded.

Three levels, for three callers:

* :meth:`Engine.predict` ``(H, W[, C])`` pixels -> ``(H, W)`` class indices (the service),
  and :meth:`Engine.predict_confidence`, which adds the top class's softmax probability;
* :meth:`Engine.logits` ``(H, W[, C])`` pixels -> ``float32 (K, H, W)`` averaged logits;
* :meth:`Engine.run_normalised` already-normalised ``float32 (N, C, H, W)`` -> ``(N, K, H, W)``
  logits through pad/run/crop only, never tiled: what the export parity check compares with
  torch, since it bypasses decoding and normalisation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.backends import Backend, load_backend
from service.backends.onnx_props import read_metadata_props
from service.backends.ort import OrtBackend, create_session
from service.backends.probe import SpeedProbe, cache_path
from service.backends.select import Choice, choose_backend
from service.engine.config import EngineConfig
from service.engine.tiling import blended_strips, window_side
from service.errors import MetadataError, ModelError
from service.imaging import Source, decode_image, normalise_pixels
from service.metadata import ModelMetadata

logger = logging.getLogger(__name__)


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


# Up to this many classes argmax_classes compares class planes one by one.
_PLANEWISE_CLASSES = 64


def _argmax_planes(logits: np.ndarray, dtype: np.dtype | type) -> tuple[np.ndarray, np.ndarray]:
    """The argmax over the first axis and the maximum itself, one class plane at a time."""
    best = np.array(logits[0], dtype=logits.dtype)  # a copy: updated in place below
    mask = np.zeros(best.shape, dtype=dtype)
    greater = np.empty(best.shape, dtype=bool)
    for k in range(1, logits.shape[0]):
        np.greater(logits[k], best, out=greater)
        np.copyto(mask, k, where=greater, casting="unsafe")
        np.maximum(best, logits[k], out=best)
    if not np.issubdtype(best.dtype, np.floating):
        return mask, best
    nan = np.isnan(best)  # np.maximum propagates NaN: a NaN here means one in that pixel
    if nan.any():
        mask[nan] = logits[:, nan].argmax(axis=0)
    return mask, best


def argmax_classes(logits: np.ndarray, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """``logits.argmax(axis=0).astype(dtype)`` for ``(K, H, W)`` logits, faster for small K.

    ``np.argmax`` over the first axis walks the K values of each pixel with a stride of H*W
    elements; comparing whole class planes instead runs K vectorised passes (a third of the
    time for K = 5 at 512x512). Same result: the first maximum wins ties (strict ``>``), and
    pixels with a NaN logit, where the passes could disagree, go through ``np.argmax``.
    """
    if logits.shape[0] > _PLANEWISE_CLASSES:
        return logits.argmax(axis=0).astype(dtype)
    return _argmax_planes(logits, dtype)[0]


def argmax_confidence(
    logits: np.ndarray, dtype: np.dtype | type = np.uint8
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`argmax_classes` and the softmax probability of the chosen class.

    The probability of the top class is ``1 / sum_k exp(l_k - l_max)``: one exponential per
    class and pixel on top of the argmax, and no ``(K, H, W)`` softmax array. Pixels with a NaN
    logit get probability 0.

    Returns:
        ``(mask, confidence)``: the ``(H, W)`` class indices and ``float32`` probabilities in
        ``[1/K, 1]``.
    """
    if logits.shape[0] > _PLANEWISE_CLASSES:
        mask, best = logits.argmax(axis=0).astype(dtype), logits.max(axis=0)
    else:
        mask, best = _argmax_planes(logits, dtype)
    total = np.zeros(best.shape, dtype=np.float32)
    term = np.empty(best.shape, dtype=np.float32)
    for plane in logits:
        np.subtract(plane, best, out=term, casting="unsafe")
        np.exp(term, out=term)
        total += term
    with np.errstate(divide="ignore", invalid="ignore"):
        confidence = np.reciprocal(total, out=total)
    return mask, np.nan_to_num(confidence, copy=False, nan=0.0)


class Engine:
    """A loaded model: metadata plus a backend, turning pixels into masks.

    Args:
        backend: a loaded :class:`service.backends.Backend`, or an ONNX Runtime session (run
            with the ``ort`` backend) of a model exported per docs/contracts.md.
        config: engine settings; defaults when omitted.
        choice: how ``backend`` was picked (set by :meth:`load`).

    Raises:
        MetadataError: a metadata key is missing/invalid or contradicts the graph.
    """

    def __init__(
        self,
        backend: Backend | ort.InferenceSession,
        config: EngineConfig | None = None,
        choice: Choice | None = None,
    ):
        self.config = config or EngineConfig()
        if isinstance(backend, ort.InferenceSession):
            props = backend.get_modelmeta().custom_metadata_map
            backend = OrtBackend(backend, "int8" if "quantization" in props else "fp32", config)
        self.backend: Backend = backend
        self.choice = choice
        self.metadata: ModelMetadata = ModelMetadata.from_props(backend.metadata_props)
        self.input_name = backend.input_name
        _check_static_dim(backend.input_shape, self.metadata.in_channels, "in_channels")
        _check_static_dim(backend.output_shape, self.metadata.num_classes, "num_classes")
        self.tile_size = window_side(self.config.tile_size, self.metadata.size_multiple)

    @classmethod
    def load(cls, path: str | os.PathLike, config: EngineConfig | None = None) -> Engine:
        """Load an ONNX file with the backend and precision the config and metadata select.

        Raises:
            ModelLoadError: the file is missing/unreadable, or the chosen runtime rejects it.
            MetadataError: a metadata key is missing or invalid.
            ValueError: the config asks for a precision this model or CPU cannot run.
        """
        config = config or EngineConfig()
        props = _metadata_props(path, config)
        probe = SpeedProbe(config, cache=cache_path(config.decision_cache))
        choice = choose_backend(
            Path(path),
            props,
            backend=config.backend,
            precision=config.precision,
            providers=config.providers,
            measure=probe.measure,
            verify=probe.verify,
        )
        runner = probe.take(choice.backend, choice.precision) or load_backend(
            choice.backend, choice.path, choice.precision, config
        )
        engine = cls(runner, config, choice)
        logger.info(
            "loaded %s (%s, %d classes) with %s %s on %s (%s)",
            choice.path,
            engine.metadata.arch,
            engine.metadata.num_classes,
            choice.backend,
            choice.precision,
            engine.providers[0],
            choice.reason,
        )
        return engine

    @property
    def providers(self) -> list[str]:
        """What the backend actually runs on (ORT execution providers, or OpenVINO's device)."""
        return self.backend.providers

    @property
    def backend_name(self) -> str:
        """``ort`` or ``openvino``: the runtime serving this model (the object: ``backend``)."""
        return self.backend.name

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16`` or ``int8``: the precision serving this model."""
        return self.backend.precision

    @property
    def session(self) -> ort.InferenceSession | None:
        """The ONNX Runtime session (``None`` on another backend)."""
        return getattr(self.backend, "session", None)

    @property
    def metadata_props(self) -> dict[str, str]:
        """The raw (JSON-encoded) ``metadata_props`` of the served file, extra keys included."""
        return self.backend.metadata_props

    @property
    def mask_dtype(self) -> np.dtype:
        """``uint8`` up to 256 classes, else ``uint16``."""
        return np.dtype(np.uint8 if self.metadata.num_classes <= 256 else np.uint16)

    def decode(
        self,
        source: Source,
        bands: Sequence[int] | None = None,
        rescale: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Decode bytes/a path with this model's channels and the configured size limits
        (``bands``: 1-based TIFF bands to use, see :mod:`service.bands`; ``rescale``: a fixed
        range for the bit-depth rule of :mod:`service.rescale`)."""
        return decode_image(
            source,
            in_channels=self.metadata.in_channels,
            max_pixels=self.config.max_pixels,
            max_side=self.config.max_side,
            bands=bands,
            rescale=rescale,
        )

    def uses_tiling(self, height: int, width: int) -> bool:
        """Whether an image of this size goes through sliding-window inference."""
        return height * width > self.config.tile_threshold

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """``(h, w, C)`` uint8/uint16/float pixels -> normalised ``float32 (C, h, w)``."""
        # One float pass straight into the (C, h, w) layout: the same float32 operations, in
        # the same order, as converting, scaling and shifting in separate passes (so the same
        # bits), at a fifth of the cost.
        return normalise_pixels(pixels, self.metadata.mean, self.metadata.std)

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
        out = self.backend.run(padded)
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
            return argmax_classes(logits, self.mask_dtype)
        mask = np.empty((height, width), dtype=self.mask_dtype)
        for y0, total, _weight in self._strips(pixels):
            # The weights are a positive per-pixel factor: the argmax ignores them.
            mask[y0 : y0 + total.shape[1]] = argmax_classes(total, self.mask_dtype)
        return mask

    def predict_confidence(
        self, pixels: np.ndarray, *, tiled: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The mask of :meth:`predict` and, per pixel, the softmax probability of its class.

        A separate method so that :meth:`predict` pays nothing for it: the probability costs
        one exponential per class and pixel (and, when tiled, dividing by the blend weights).

        Returns:
            ``(mask, confidence)``: as :meth:`predict`, and ``float32 (H, W)`` in ``[1/K, 1]``.
        """
        pixels = self._check_pixels(pixels)
        height, width = pixels.shape[:2]
        if not self._tiled(height, width, tiled):
            logits = self.run_normalised(self.normalise(pixels)[None])[0]
            return argmax_confidence(logits, self.mask_dtype)
        mask = np.empty((height, width), dtype=self.mask_dtype)
        confidence = np.empty((height, width), dtype=np.float32)
        for y0, total, weight in self._strips(pixels):
            rows = slice(y0, y0 + total.shape[1])
            # Softmax is not scale-free: average the blended logits first.
            mask[rows], confidence[rows] = argmax_confidence(total / weight, self.mask_dtype)
        return mask, confidence

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
        # rounds that up: the overlap always fits. Windows start on the model's stride, as
        # the whole image does (tiling.tile_starts says why).
        return blended_strips(
            height,
            width,
            self.metadata.num_classes,
            self.tile_size,
            self.config.tile_overlap,
            run_tile,
            self._multiple,
        )

    def _check_pixels(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        channels = self.metadata.in_channels
        if pixels.ndim != 3 or pixels.shape[2] != channels or min(pixels.shape[:2]) < 1:
            raise ValueError(f"expected an (H, W, {channels}) image, got shape {pixels.shape}")
        return pixels


def read_model_metadata(
    path: str | os.PathLike, config: EngineConfig | None = None
) -> ModelMetadata:
    """A model file's description, read without loading the model into a runtime.

    Raises:
        ModelLoadError: the file is missing, or unreadable by ONNX Runtime too.
        MetadataError: a metadata key is missing or invalid.
    """
    return ModelMetadata.from_props(_metadata_props(path, config or EngineConfig()))


def _metadata_props(path: str | os.PathLike, config: EngineConfig) -> dict[str, str]:
    props = read_metadata_props(path)
    if props is None:  # not parseable here: let ONNX Runtime load it and say why
        props = dict(create_session(path, config).get_modelmeta().custom_metadata_map)
    return props


def _check_static_dim(shape: list, expected: int, key: str) -> None:
    """Compare a graph's static channel dimension with the metadata (symbolic dims pass)."""
    if len(shape) != 4:
        raise ModelError(f"expected a 4-D (N, C, H, W) graph input/output, got shape {shape}")
    if isinstance(shape[1], int) and shape[1] != expected:
        raise MetadataError(key, f"says {expected} but the graph has {shape[1]} channels")
