from __future__ import annotations

import torch

from fcn.padding import PadCrop, pad_to_multiple, unwrap


def test_pad_to_multiple_reflects_when_possible():
    x = torch.arange(5.0).reshape(1, 1, 1, 5)
    y = pad_to_multiple(x, 8)
    assert y.shape == (1, 1, 8, 8)
    # Width 5 -> 8: reflection of the last pixels (3, 2, 1); height 1 -> 8: edge repeat.
    assert y[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]
    assert (y[0, 0] == y[0, 0, 0]).all()


def test_pad_to_multiple_uses_edge_when_reflection_does_not_fit():
    x = torch.arange(3.0).reshape(1, 1, 1, 3)
    y = pad_to_multiple(x, 8)  # pad of 5 > width 3
    assert y[0, 0, 0].tolist() == [0, 1, 2, 2, 2, 2, 2, 2]


def test_pad_crop_returns_input_size_and_unwraps():
    net = torch.nn.Conv2d(2, 3, 3, padding=1)
    model = PadCrop(net, 16)
    out = model(torch.randn(1, 2, 17, 9))
    assert out.shape == (1, 3, 17, 9)
    assert unwrap(model) == (net, 16)
    assert unwrap(net) == (net, 1)
