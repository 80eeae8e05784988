"""Pretrained trunk loading from torchvision-format VGG16 files, and clear failures."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import vgg16

import fcn
from fcn.weights import WeightsUnavailableError, adapt_input_channels


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    torch.manual_seed(0)
    vgg = vgg16(weights=None)
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(vgg.state_dict(), path)
    return path, vgg.state_dict()


@pytest.mark.parametrize("name", ["fcn32s", "fcn8s"])
def test_trunk_weights_arrive(vgg_file, name):
    path, source = vgg_file
    model = fcn.build_model(name, num_classes=5, weights=str(path))
    own = model.state_dict()
    for key in ("features.0.weight", "features.10.bias", "features.28.weight"):
        assert torch.equal(own[key], source[key]), key
    assert torch.equal(own["fc6.weight"], source["classifier.0.weight"].reshape(4096, 512, 7, 7))
    assert torch.equal(own["fc7.weight"].flatten(1), source["classifier.3.weight"])
    assert torch.equal(own["fc6.bias"], source["classifier.0.bias"])
    # The new score layer stays zero: the 1000 ImageNet classes are not reused.
    assert own["score_fr.weight"].abs().sum() == 0


def test_grey_input_sums_rgb_filters(vgg_file):
    path, source = vgg_file
    model = fcn.build_model("fcn32s", num_classes=2, in_channels=1, weights=path)
    expected = source["features.0.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(model.state_dict()["features.0.weight"], expected)
    # Same response on a grey image as the RGB filters on that image repeated thrice.
    grey = torch.rand(1, 1, 8, 8)
    rgb_conv = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), source["features.0.weight"])
    grey_conv = torch.nn.functional.conv2d(grey, model.features[0].weight)
    torch.testing.assert_close(grey_conv, rgb_conv, atol=1e-5, rtol=1e-5)


def test_adapt_input_channels_keeps_magnitude():
    w = torch.randn(8, 3, 3, 3)
    w5 = adapt_input_channels(w, 5)
    assert w5.shape == (8, 5, 3, 3)
    torch.testing.assert_close(w5[:, 3], w[:, 0] * 3 / 5)
    # A whole number of RGB repeats keeps the filter's total response exactly.
    w6 = adapt_input_channels(w, 6)
    torch.testing.assert_close(w6.sum(dim=1), w.sum(dim=1))


def test_wrong_shape_file_is_a_clear_error(tmp_path, vgg_file):
    _, source = vgg_file
    bad = dict(source)
    bad["features.2.weight"] = torch.zeros(32, 64, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(
        ValueError, match=r"'features.2.weight' has shape \(32, 64, 3, 3\).*\(64, 64, 3, 3\)"
    ):
        fcn.build_model("fcn8s", num_classes=2, weights=path)


def test_resnet_file_is_not_vgg(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(ValueError, match="no 'features.0.weight'"):
        fcn.build_model("fcn8s", num_classes=2, weights=path)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="not found"):
        fcn.build_model("fcn32s", num_classes=2, weights=tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a readable torch state dict"):
        fcn.build_model("fcn32s", num_classes=2, weights=garbage)


def test_smp_encoder_weights_from_file(tmp_path):
    torch.manual_seed(0)
    source = fcn.build_model("unet", num_classes=2, encoder="resnet18")
    path = tmp_path / "encoder.pth"
    torch.save(source.net.encoder.state_dict(), path)
    model = fcn.build_model("unet", num_classes=2, encoder="resnet18", encoder_weights=str(path))
    for key, value in source.net.encoder.state_dict().items():
        assert torch.equal(model.net.encoder.state_dict()[key], value), key
    grey = fcn.build_model(
        "unet", num_classes=2, in_channels=1, encoder="resnet18", encoder_weights=str(path)
    )
    torch.testing.assert_close(
        grey.net.encoder.conv1.weight, source.net.encoder.conv1.weight.sum(1, keepdim=True)
    )


def test_smp_encoder_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "encoder.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="do not fit this encoder"):
        fcn.build_model("unet", num_classes=2, encoder="resnet18", encoder_weights=str(path))


def test_imagenet_download_offline_is_a_clear_error(monkeypatch):
    from torchvision.models import VGG16_Weights

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(VGG16_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(WeightsUnavailableError, match="could not download.*offline.*weights=<path"):
        fcn.build_model("fcn8s", num_classes=2, weights="imagenet")
