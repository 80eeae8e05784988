"""The ONNX Runtime engine on real sessions: sizes, padding, metadata, config, tiling."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.backends.ort import default_providers
from service.engine import Engine, EngineConfig, pad_to_multiple
from service.errors import MetadataError, ModelError, ModelLoadError
from service.metadata import REQUIRED_KEYS, ModelMetadata

rng = np.random.default_rng(0)


def blobs(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful uint8 RGB image: coarse noise upsampled bilinearly."""
    coarse = np.random.default_rng(seed).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


@pytest.fixture(scope="module")
def conv(make_model) -> Engine:
    # Centred inputs make the random classifier use all its classes on colourful images.
    path = make_model("conv_centred", kind="conv", metadata={"mean": [0.5] * 3, "std": [0.25] * 3})
    return Engine.load(path, EngineConfig(tile_size=64, tile_overlap=16))


@pytest.fixture(scope="module")
def strided(strided_model: Path) -> Engine:
    return Engine.load(strided_model)


@pytest.mark.parametrize("size", [(1, 1), (1, 5000), (5000, 1), (333, 517), (4, 8), (7, 3)])
@pytest.mark.parametrize("tiled", [False, True])
def test_any_size_gives_an_exact_mask(strided: Engine, conv: Engine, size, tiled: bool) -> None:
    pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    for engine in (strided, conv):
        mask = engine.predict(pixels, tiled=tiled)
        assert mask.shape == size and mask.dtype == np.uint8
        assert mask.max() < engine.metadata.num_classes


def test_strided_graph_needs_the_padding(strided_model: Path) -> None:
    # Without padding the graph returns the wrong size: the engine must pad, not trust luck.
    import onnxruntime as ort

    session = ort.InferenceSession(str(strided_model), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"image": np.zeros((1, 3, 5, 7), np.float32)})
    assert out.shape[2:] != (5, 7)


def pad_row(values: list[float], multiple: int) -> list[float]:
    """Pad one row along W only (H is already ``multiple`` rows)."""
    rows = np.tile(np.asarray(values, dtype=np.float32), (multiple, 1))
    padded = pad_to_multiple(rows, multiple)
    assert padded.shape[0] == multiple
    return padded[0].tolist()


def test_pad_rule_reflect_when_smaller_else_edge() -> None:
    assert pad_row([1, 2, 3], 4) == [1, 2, 3, 2]  # pad 1 < side 3: reflect
    assert pad_row([1, 2, 3, 4, 5], 8) == [1, 2, 3, 4, 5, 4, 3, 2]  # pad 3 < 5: reflect
    assert pad_row([1, 2, 3], 6) == [1, 2, 3, 3, 3, 3]  # pad 3 == side 3: edge
    assert pad_row([7], 4) == [7, 7, 7, 7]  # pad 3 >= 1: edge
    assert pad_row([1, 2], 8) == [1, 2] + [2] * 6  # pad 6 >= 2: edge
    assert pad_row([1, 2, 3, 4], 4) == [1, 2, 3, 4]  # already a multiple: untouched
    # Per axis: H (side 3, pad 1) reflects while W (side 1, pad 3) repeats the edge.
    padded = pad_to_multiple(np.array([[[10.0], [20.0], [30.0]]]), 4)
    assert padded.shape == (1, 4, 4)
    assert padded[0, :, 0].tolist() == [10, 20, 30, 20]
    assert (padded[0] == padded[0, :, :1]).all()


@pytest.mark.parametrize(
    ("height", "width", "multiple"),
    # (5, 2, 4): H pad 3 < 5 reflects while W pad 2 >= 2 repeats the edge.
    [(5, 2, 4), (1, 1, 32), (31, 33, 32), (64, 17, 32), (3, 9, 4), (7, 7, 1)],
)
def test_pad_rule_is_the_models_padcrop_rule(height: int, width: int, multiple: int) -> None:
    torch = pytest.importorskip("torch")
    padding = pytest.importorskip("fcn.padding")
    x = rng.normal(size=(2, 3, height, width)).astype(np.float32)
    expected = padding.pad_to_multiple(torch.from_numpy(x), multiple).numpy()
    np.testing.assert_array_equal(pad_to_multiple(x, multiple), expected)


def test_run_normalised_is_pad_run_crop(strided: Engine) -> None:
    x = rng.normal(size=(2, 3, 9, 6)).astype(np.float32)
    out = strided.run_normalised(x)
    assert out.shape == (2, 3, 9, 6) and out.dtype == np.float32
    (full,) = strided.session.run(None, {"image": pad_to_multiple(x, 4)})
    np.testing.assert_array_equal(out, full[:, :, :9, :6])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        strided.run_normalised(x[:, :2])


def test_wrong_size_multiple_in_metadata_is_reported(make_model) -> None:
    engine = Engine.load(make_model("strided_bad", kind="strided", num_classes=3, size_multiple=1))
    with pytest.raises(ModelError, match="size_multiple"):
        engine.predict(np.zeros((5, 7, 3), np.uint8))


def test_normalisation_uses_metadata_mean_std(make_model) -> None:
    path = make_model(
        "identity_norm",
        kind="identity",
        in_channels=3,
        num_classes=3,
        metadata={"mean": [0.5, 0.0, 0.25], "std": [0.5, 2.0, 0.25]},
    )
    engine = Engine.load(path)
    pixels = np.array([[[255, 51, 0]]], dtype=np.uint8)
    logits = engine.logits(pixels)
    np.testing.assert_allclose(logits[:, 0, 0], [1.0, 0.1, -1.0], rtol=1e-6)


def test_16_bit_input_is_scaled_not_clipped(make_model) -> None:
    """16-bit values reach the model through the bit-depth rule (here a fixed 0..65535), on
    the model's 8-bit scale: never clipped at 255 first."""
    engine = Engine.load(make_model("identity_grey", kind="identity", in_channels=1, num_classes=1))
    image = Image.fromarray(np.array([[0, 255, 40000, 65535]], dtype=np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pixels = engine.decode(buffer.getvalue(), rescale=(0, 65535))
    np.testing.assert_allclose(
        engine.logits(pixels)[0, 0], [0, 1 / 255, 156 / 255, 1.0], rtol=1e-6, atol=1e-7
    )


def test_mask_follows_exif_orientation(identity_model: Path) -> None:
    engine = Engine.load(identity_model)
    upright = np.zeros((4, 6, 3), np.uint8)
    upright[:, :, 0] = 255
    upright[0, 5] = (0, 0, 255)  # one blue pixel at the top right
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # a sideways camera
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif)
    mask = engine.predict(engine.decode(buffer.getvalue()))
    assert mask.shape == (4, 6)
    assert mask[0, 5] == 2 and (mask == 2).sum() == 1


def test_more_than_256_classes_give_uint16(make_model) -> None:
    engine = Engine.load(make_model("many", kind="conv", num_classes=300))
    mask = engine.predict(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    assert mask.dtype == np.uint16 and mask.shape == (9, 11)
    assert mask.max() < 300


def test_tiled_matches_untiled(conv: Engine) -> None:
    pixels = blobs(300, 420)
    plain = conv.predict(pixels, tiled=False)
    tiled = conv.predict(pixels, tiled=True)  # 64-pixel tiles: dozens of seams
    fractions = np.bincount(plain.ravel(), minlength=4) / plain.size
    assert (fractions > 0.05).sum() >= 3, "the comparison needs a mask with structure"
    assert (plain == tiled).mean() >= 0.99
    # Averaged logits agree closely too, and the tiled argmax is their argmax.
    logits = conv.logits(pixels, tiled=True)
    assert np.abs(logits - conv.logits(pixels, tiled=False)).mean() < 0.05
    np.testing.assert_array_equal(logits.argmax(axis=0), tiled)


def test_tiling_threshold_decides(make_model) -> None:
    engine = Engine.load(make_model("conv_t", kind="conv"), EngineConfig(tile_threshold=100))
    assert engine.uses_tiling(10, 11) and not engine.uses_tiling(10, 10)
    assert engine.tile_size == 512


def test_tile_size_rounds_up_to_size_multiple(strided_model: Path) -> None:
    engine = Engine.load(strided_model, EngineConfig(tile_size=30, tile_overlap=6))
    assert engine.tile_size == 32
    assert engine.predict(np.zeros((70, 90, 3), np.uint8), tiled=True).shape == (70, 90)


def test_config_threads_and_providers(conv_model: Path) -> None:
    config = EngineConfig(
        providers=("CPUExecutionProvider",), intra_op_threads=1, inter_op_threads=1
    )
    engine = Engine.load(conv_model, config)
    assert engine.providers == ["CPUExecutionProvider"]
    options = engine.session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert default_providers()[-1] == "CPUExecutionProvider"


@pytest.mark.parametrize(
    "kwargs", [{"tile_overlap": 256}, {"tile_size": 0}, {"intra_op_threads": -1}, {"max_pixels": 0}]
)
def test_config_rejects_bad_values(kwargs) -> None:
    with pytest.raises(ValueError):
        EngineConfig(**kwargs)


def test_decode_uses_config_limits(conv_model: Path) -> None:
    from service.errors import ImageTooLargeError

    engine = Engine.load(conv_model, EngineConfig(max_pixels=50))
    buffer = io.BytesIO()
    Image.new("RGB", (10, 6)).save(buffer, format="PNG")
    with pytest.raises(ImageTooLargeError):
        engine.decode(buffer.getvalue())


def test_predict_checks_channels(conv: Engine) -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        conv.predict(np.zeros((4, 4), np.uint8))


# --- metadata -------------------------------------------------------------------------------


@pytest.fixture
def props(metadata_values) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in metadata_values(3, 2, 1).items()}


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_metadata_key_is_named(key: str, props: dict[str, str]) -> None:
    del props[key]
    with pytest.raises(MetadataError, match=key) as info:
        ModelMetadata.from_props(props)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("in_channels", '"3"'),
        ("in_channels", "2"),
        ("classes", '["only one"]'),
        ("palette", "[[0, 0, 0], [0, 0, 256]]"),
        ("mean", "[0.5]"),
        ("std", "[1.0, 0.0, 1.0]"),
        ("size_multiple", "0"),
        ("version", "99"),
        ("num_classes", "true"),
        ("num_classes", "70000"),
        ("arch", "not json"),
    ],
)
def test_bad_metadata_value_is_named(key: str, value: str, props: dict[str, str]) -> None:
    props[key] = value
    with pytest.raises(MetadataError) as info:
        ModelMetadata.from_props(props)
    assert info.value.key == key and key in str(info.value)


def test_metadata_round_trips(props: dict[str, str]) -> None:
    meta = ModelMetadata.from_props(props)
    assert meta.palette[0] == tuple(json.loads(props["palette"])[0])
    assert ModelMetadata.from_props({k: json.dumps(v) for k, v in meta.to_dict().items()}) == meta


def test_model_without_a_key_fails_to_load(make_model) -> None:
    path = make_model("no_palette", kind="conv", drop_keys=("palette",))
    with pytest.raises(MetadataError, match="palette"):
        Engine.load(path)


def test_metadata_contradicting_the_graph(make_model) -> None:
    path = make_model(
        "liar", kind="conv", num_classes=4, metadata={"in_channels": 1, "mean": [0], "std": [1]}
    )
    with pytest.raises(MetadataError, match="in_channels"):
        Engine.load(path)


def test_missing_or_invalid_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        Engine.load(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelLoadError, match="junk.onnx"):
        Engine.load(junk)


def test_cuda_is_preferred_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    assert default_providers() == available
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert default_providers() == ["CPUExecutionProvider"]


def reference_normalise(pixels: np.ndarray, mean, std) -> np.ndarray:
    """The three-pass form: float32 copy, scale by scale/std, subtract mean/std, transpose."""
    from service.imaging import pixel_scale

    inv_std = 1.0 / np.asarray(std, dtype=np.float32)
    x = pixels.astype(np.float32)
    x *= np.float32(pixel_scale(pixels)) * inv_std
    x -= np.asarray(mean, dtype=np.float32) * inv_std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_normalise_is_bit_identical_to_the_three_pass_form(conv: Engine, dtype) -> None:
    high = {np.uint8: 256, np.uint16: 65536}.get(dtype)
    if high:
        pixels = rng.integers(0, high, (37, 41, 3)).astype(dtype)
    else:
        pixels = rng.random((37, 41, 3)).astype(dtype)
    m = conv.metadata
    out = conv.normalise(pixels)
    assert out.dtype == np.float32 and out.shape == (3, 37, 41) and out.flags.c_contiguous
    expected = reference_normalise(pixels, m.mean, m.std)
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("classes", [1, 2, 5, 64, 65, 300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_argmax_classes_equals_numpy_argmax(classes: int, dtype) -> None:
    from service.engine import argmax_classes

    logits = (rng.normal(size=(classes, 23, 29)) * 2).round().astype(dtype)  # many ties
    if np.issubdtype(dtype, np.floating):
        at = (rng.integers(0, classes, 40), rng.integers(0, 23, 40), rng.integers(0, 29, 40))
        logits[at] = np.nan  # np.argmax: the first NaN wins
        logits[:, 0, 0] = np.nan
    out_dtype = np.uint8 if classes <= 256 else np.uint16
    mask = argmax_classes(logits, out_dtype)
    assert mask.dtype == out_dtype
    np.testing.assert_array_equal(mask, logits.argmax(axis=0).astype(out_dtype))
    view = logits[:, 3:, ::2]  # non-contiguous, as the cropped logits are
    np.testing.assert_array_equal(argmax_classes(view), view.argmax(axis=0).astype(np.uint8))
