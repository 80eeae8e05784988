"""``fcn train --init``: a trained model's weights back in torch, checked against ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import fcn
from fcn.cli import main
from training.checkpoint import load_checkpoint
from training.export.onnx import export_model
from training.export.recover import dequantize_qdq
from training.init.apply import load_init
from training.init.batchnorm import CHANNEL_NORM, _channel_norms, calibrate
from training.init.classes import match_classes, run_classes
from training.init.source import DEFAULT_SOURCE, InitError, builder_options, read_init

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DEMO_CLASSES = ["background", "ellipse", "rectangle", "triangle", "star"]


def _config(arch: str, classes: list[str], options: dict) -> dict:
    return {
        "model": {"arch": arch, "num_classes": len(classes), "in_channels": 3, "options": options},
        "data": {"mean": MEAN, "std": STD, "ignore_index": 255, "classes": classes},
    }


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics and affine parameters: export must fold real numbers."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module", params=["dynamo", "legacy"])
def small_onnx(request, tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    options = {"encoder": "mobilenet_v2"}
    model = _trained_like(fcn.build_model("linknet", num_classes=5, in_channels=3, **options))
    out = tmp_path_factory.mktemp("init") / f"{request.param}.onnx"
    config = _config("linknet", DEMO_CLASSES, options)
    export_model(model, config, out, exporter=request.param, parity_sizes=((32, 32),))
    return out, model


def _torch_logits(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x)).numpy()


def _ort_logits(proto_or_path, x: np.ndarray) -> np.ndarray:
    source = proto_or_path
    if isinstance(source, onnx.ModelProto):
        source = source.SerializeToString()
    else:
        source = str(source)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _fresh(init, classes=None) -> torch.nn.Module:
    classes = classes or init.classes
    return fcn.build_model(
        init.arch, num_classes=len(classes), in_channels=init.in_channels, **builder_options(init)
    )


def test_exported_small_model_gives_the_same_logits_in_torch(small_onnx) -> None:
    path, original = small_onnx
    init = read_init(path)
    torch.manual_seed(5)
    module, folded = load_init(_fresh(init), init, init.classes)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 96)).astype(np.float32)
    ours, theirs = _torch_logits(module, x), _ort_logits(path, x)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
    # ...and the original network's logits (the weights really are the trained ones).
    np.testing.assert_allclose(ours, _torch_logits(original.net, x), atol=1e-4, rtol=1e-4)
    assert folded, "both exporters fold BatchNorm into the convolutions before it"


def test_calibrated_batchnorm_keeps_the_function_and_trains_like_it(small_onnx) -> None:
    path, _ = small_onnx
    init = read_init(path)
    module, folded = load_init(_fresh(init), init, init.classes)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 64, 64)).astype(np.float32)
    before = _torch_logits(module, x)
    batches = [torch.from_numpy(rng.standard_normal((4, 3, 64, 64)).astype(np.float32))]
    modules = dict(module.named_modules())
    pairs = [(modules[conv], modules[norm]) for conv, norm in folded]
    assert calibrate(module, pairs, batches) == 4
    # Each folded convolution's output channels now have the same weight norm.
    for conv, _ in pairs:
        norms = _channel_norms(conv)
        np.testing.assert_allclose(norms[norms > 0].numpy(), CHANNEL_NORM, rtol=1e-4)
    np.testing.assert_allclose(_torch_logits(module, x), before, atol=1e-3, rtol=1e-3)
    # Training mode on the calibration batch itself normalises the folded BatchNorms with the
    # statistics they were calibrated with (BatchNorms export kept have the original model's).
    module.train()
    for name, submodule in module.named_modules():
        if isinstance(submodule, torch.nn.BatchNorm2d) and name not in {n for _, n in folded}:
            submodule.eval()
    with torch.no_grad():
        train_mode = module(batches[0]).numpy()
        eval_mode = module.eval()(batches[0]).numpy()
    np.testing.assert_allclose(train_mode, eval_mode, atol=0.05 * np.abs(eval_mode).max())


def test_default_model_fp16_source_loads_exactly() -> None:
    if not DEFAULT_SOURCE.is_file():
        pytest.skip(f"{DEFAULT_SOURCE} is not in this checkout")
    init = read_init("default")
    assert init.kind == "fp16-source" and init.arch == "unet"
    module, folded = load_init(_fresh(init), init, init.classes)
    assert len(folded) > 20
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 96)).astype(np.float32)
    np.testing.assert_allclose(_torch_logits(module, x), _ort_logits(DEFAULT_SOURCE, x), atol=1e-4)


def test_bundled_int8_default_loads_its_dequantized_weights() -> None:
    from service.models import bundled_model_path

    int8 = bundled_model_path()
    init = read_init(int8)
    assert init.kind == "int8"
    module, _ = load_init(_fresh(init), init, init.classes)
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    fp32 = dequantize_qdq(onnx.load(str(int8)))
    np.testing.assert_allclose(_torch_logits(module, x), _ort_logits(fp32, x), atol=1e-4)


def test_classes_are_matched_by_name(small_onnx) -> None:
    path, _ = small_onnx
    init = read_init(path)
    classes = ["star", "background", "cloud", "ellipse"]  # reordered, one new, two absent
    torch.manual_seed(7)
    model = _fresh(init, classes)
    fresh_head = model.net.segmentation_head[0].weight.detach().clone()
    module, _ = load_init(model, init, classes)
    head = module.segmentation_head[0]
    reference, _ = load_init(_fresh(init), init, init.classes)
    old_head = reference.segmentation_head[0]
    for i, name in enumerate(classes):
        if name in init.classes:
            j = init.classes.index(name)
            assert torch.equal(head.weight[i], old_head.weight[j])
            assert torch.equal(head.bias[i], old_head.bias[j])
        else:  # a new class: the builder's fresh row
            assert torch.equal(head.weight[i], fresh_head[i])


def test_unmappable_classes_and_options_raise(small_onnx, tmp_path) -> None:
    path, _ = small_onnx
    init = read_init(path)
    assert run_classes(init, [f"class_{i}" for i in range(5)]) == DEMO_CLASSES
    with pytest.raises(InitError, match="3 unnamed classes"):
        run_classes(init, ["class_0", "class_1", "class_2"])
    with pytest.raises(InitError, match="none of the data's classes"):
        match_classes(_fresh(init, ["x", "y"]), {}, init.classes, ["x", "y"])
    with pytest.raises(InitError, match="no such file"):
        read_init(tmp_path / "missing.onnx")
    wrong = fcn.build_model("unet", num_classes=5, in_channels=3, encoder="resnet18")
    with pytest.raises(InitError):
        load_init(wrong, init, init.classes)


def test_fcn_train_init_runs_from_an_onnx_model(small_onnx, demo_root, tmp_path, capsys) -> None:
    path, _ = small_onnx
    out = tmp_path / "run"
    assert main(["train", "--data", str(demo_root), "--init", str(path), "--arch", "unet"]) != 0
    assert "--arch unet given, but --init" in capsys.readouterr().err
    code = main(
        ["train", "--data", str(demo_root), "--init", str(path), "--out", str(out)]
        + ["--epochs", "1", "--epoch-size", "4", "--batch-size", "4", "--crop-size", "48"]
        + ["--device", "cpu", "--no-plots"]
    )
    assert code == 0
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint.config["model"]["arch"] == "linknet"
    assert checkpoint.config["model"]["options"] == {"encoder": "mobilenet_v2"}
    assert checkpoint.config["data"]["classes"] == DEMO_CLASSES
    assert checkpoint.config["train"]["init"] == str(path)


def test_a_checkpoint_starts_a_run_with_its_weights_and_classes_by_name(trained_run) -> None:
    run, _ = trained_run
    init = read_init(run / "last.pt")
    assert init.kind == "checkpoint" and init.classes == DEMO_CLASSES
    saved = load_checkpoint(run / "last.pt").model
    classes = ["star", "background", "moon"]
    torch.manual_seed(3)
    model = _fresh(init, classes)
    fresh_head = model.net.segmentation_head[0].weight.detach().clone()
    module, folded = load_init(model, init, classes)
    assert module is model and folded == []
    head = model.net.segmentation_head[0]
    old = saved["net.segmentation_head.0.weight"]
    assert torch.equal(head.weight[0], old[DEMO_CLASSES.index("star")])
    assert torch.equal(head.weight[1], old[DEMO_CLASSES.index("background")])
    assert torch.equal(head.weight[2], fresh_head[2])  # "moon" is new
    encoder = "net.encoder.features.0.0.weight"
    assert torch.equal(model.state_dict()[encoder], saved[encoder])
