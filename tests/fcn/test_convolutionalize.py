"""fc6/fc7/fc8 as convolutions reproduce the VGG16 classifier."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import vgg16

import fcn


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    vgg = vgg16(weights=None).eval()
    return vgg, fcn.convolutionalize(vgg).eval()


def test_layers_and_shapes(pair):
    _, net = pair
    assert net.fc6.weight.shape == (4096, 512, 7, 7)
    assert net.fc7.weight.shape == (4096, 4096, 1, 1)
    assert net.fc8.weight.shape == (1000, 4096, 1, 1)


def test_224_equals_classifier(pair):
    vgg, net = pair
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = vgg(x), net(x)
    assert got.shape == (2, 1000, 1, 1)
    assert (got.flatten(1) - expected).abs().max() <= 1e-4


def test_larger_input_gives_a_score_map_of_windows(pair):
    vgg, net = pair
    torch.manual_seed(1)
    x = torch.randn(1, 3, 288, 320)
    with torch.no_grad():
        scores = net(x)
        features = net.features(x)
        assert scores.shape == (1, 1000, 3, 4)  # (288-224)/32+1, (320-224)/32+1
        for i in range(3):
            for j in range(4):
                # Exact: fc6..fc8 applied to the 7x7 pool5 window at (i, j).
                window_features = features[:, :, i : i + 7, j : j + 7].flatten(1)
                exact = vgg.classifier(window_features)[0]
                assert (scores[0, :, i, j] - exact).abs().max() <= 1e-4
                # Pixels: the input window at (32i, 32j). Inside the big image the 3x3
                # convolutions see real neighbours where the lone window sees zero padding, so
                # only features whose receptive field (212 px) stays inside the window match
                # exactly: the window's centre cell, whose field spans pixels ~6..218 of 224.
                window = x[:, :, 32 * i : 32 * i + 224, 32 * j : 32 * j + 224]
                centre = net.features(window)[0, :, 3, 3]
                assert (features[0, :, i + 3, j + 3] - centre).abs().max() <= 1e-4


def test_rejects_non_vgg_classifier():
    vgg = vgg16(weights=None)
    vgg.classifier = torch.nn.Sequential(torch.nn.Linear(25088, 10))
    with pytest.raises(ValueError, match="7 modules with 3 Linear"):
        fcn.convolutionalize(vgg)
