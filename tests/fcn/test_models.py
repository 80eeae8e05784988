"""Every registered model: any input size, logits shape, gradients, state-dict round trip."""

from __future__ import annotations

import pytest
import torch

import fcn

SIZES = [(1, 1), (31, 47), (97, 130), (224, 224)]
MODELS = fcn.list_models()


@pytest.fixture(scope="module", params=MODELS)
def built(request):
    torch.manual_seed(0)
    name = request.param
    return name, fcn.build_model(name, num_classes=3, in_channels=3)


def test_registry_has_required_models():
    assert {"fcn32s", "fcn16s", "fcn8s", "unet", "unetplusplus"} <= set(MODELS)


def test_forward_any_size(built):
    name, model = built
    model.eval()
    with torch.no_grad():
        for h, w in SIZES:
            out = model(torch.randn(1, 3, h, w))
            assert out.shape == (1, 3, h, w), f"{name} at {h}x{w} gave {tuple(out.shape)}"
            assert torch.isfinite(out).all()


def test_backward_produces_gradients(built):
    name, model = built
    model.train()
    model.zero_grad(set_to_none=True)
    # Batch 2: batch-norm layers cannot train on a single 1x1 statistic.
    out = model(torch.randn(2, 3, 45, 61))
    assert out.shape == (2, 3, 45, 61)
    target = torch.randint(0, 3, (2, 45, 61))
    torch.nn.functional.cross_entropy(out, target).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), f"{name}: some parameters got no grad"
    assert any(g.abs().sum() > 0 for g in grads), f"{name}: all gradients are zero"


def test_state_dict_round_trip(built):
    name, model = built
    model.eval()
    clone = fcn.build_model(name, num_classes=3, in_channels=3).eval()
    clone.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 40, 50)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_channels", [1, 4])
def test_other_input_channels(name, in_channels):
    model = fcn.build_model(name, num_classes=2, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(1, in_channels, 33, 35))
    assert out.shape == (1, 2, 33, 35)


def test_fcn_score_layers_start_at_zero():
    model = fcn.build_model("fcn8s", num_classes=4).eval()
    for layer in (model.score_fr, model.score_pool4, model.score_pool3):
        assert layer.weight.abs().sum() == 0 and layer.bias.abs().sum() == 0
    with torch.no_grad():
        assert model(torch.randn(1, 3, 20, 20)).abs().max() == 0


def test_fcn_freeze_upsampling():
    frozen = fcn.build_model("fcn16s", num_classes=2, freeze_upsampling=True)
    learned = fcn.build_model("fcn16s", num_classes=2)
    assert not frozen.upscore.weight.requires_grad and not frozen.upscore2.weight.requires_grad
    assert learned.upscore.weight.requires_grad


def test_fcn_variant_uses_skips():
    assert not hasattr(fcn.build_model("fcn32s", num_classes=2), "score_pool4")
    assert not hasattr(fcn.build_model("fcn16s", num_classes=2), "score_pool3")
    assert hasattr(fcn.build_model("fcn8s", num_classes=2), "score_pool3")
