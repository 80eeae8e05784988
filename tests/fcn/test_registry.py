from __future__ import annotations

import pytest
import torch

import fcn
from fcn.registry import model_options


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'fcn9s'.*fcn8s.*unet"):
        fcn.build_model("fcn9s", num_classes=2)


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match="unknown option.*'encodr'.*valid options: .*encoder"):
        fcn.build_model("unet", num_classes=2, encodr="resnet18")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_num_classes_must_be_positive_int(bad):
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        fcn.build_model("unet", num_classes=bad)


def test_unknown_encoder_is_a_value_error():
    with pytest.raises(ValueError, match="unknown smp encoder 'resnet35'"):
        fcn.build_model("unet", num_classes=2, encoder="resnet35")


def test_options_are_introspectable():
    assert model_options("unet")["encoder"] == "resnet34"
    assert model_options("unet")["encoder_weights"] is None
    assert "weights" in model_options("fcn8s")


def test_smp_encoder_by_name():
    model = fcn.build_model("unet", num_classes=2, encoder="resnet18")
    assert type(model.net.encoder).__name__ == "ResNetEncoder"
    assert sum(p.numel() for p in model.parameters()) < 20e6  # resnet18, not the resnet34 default


def test_register_model_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        fcn.register_model("unet")(lambda **kw: None)


def test_timm_universal_encoder_by_name():
    # smp's "tu-" encoders (any timm backbone): the bundled default model uses one.
    model = fcn.build_model("linknet", num_classes=3, encoder="tu-mobilenetv3_small_100")
    assert type(model.net.encoder).__name__ == "TimmUniversalEncoder"
    assert sum(p.numel() for p in model.parameters()) < 2e6
    out = model.eval()(torch.zeros(1, 3, 37, 50))
    assert out.shape == (1, 3, 37, 50)


def test_unknown_timm_encoder_is_a_value_error():
    with pytest.raises(ValueError, match="unknown timm model 'mobilenetv9'.*similar timm names"):
        fcn.build_model("unet", num_classes=2, encoder="tu-mobilenetv9")
    with pytest.raises(ValueError, match="unknown timm model ''"):
        fcn.build_model("unet", num_classes=2, encoder="tu-")


def test_unet_decoder_channels_narrow_the_decoder():
    default = fcn.build_model("unet", num_classes=3, encoder="resnet18")
    light = fcn.build_model(
        "unet", num_classes=3, encoder="resnet18", decoder_channels=[128, 64, 32, 16, 8]
    )
    assert model_options("unet")["decoder_channels"] is None
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(light) < count(default) - 1_500_000
    # the last decoder stage has the last width; any input size still comes back whole
    assert light.net.decoder.blocks[-1].conv2[0].out_channels == 8
    assert light(torch.zeros(1, 3, 45, 70)).shape == (1, 3, 45, 70)


@pytest.mark.parametrize(
    "bad", [[64, 32], [128, 64, 32, 16, 0], "wide", 64, [128, 64, 32, 16, 8.5]]
)
def test_unet_decoder_channels_are_checked(bad):
    with pytest.raises(ValueError, match="five positive widths"):
        fcn.build_model("unet", num_classes=3, encoder="resnet18", decoder_channels=bad)
