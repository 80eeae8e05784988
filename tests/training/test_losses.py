"""Losses: cross-entropy with ignore index, the Dice term, class weights, errors."""

from __future__ import annotations

import pytest
import torch
from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss

from training.loop.losses import build_loss


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 6, 5, generator=generator, requires_grad=True)
    target = torch.randint(0, 3, (2, 6, 5), generator=generator)
    target[:, :2] = 255
    return logits, target


def test_ce_ignores_the_ignore_index() -> None:
    logits, target = batch()
    loss = build_loss("ce", num_classes=3, ignore_index=255)
    other = logits.detach().clone()
    other[:, :, :2] = 100.0 * torch.randn_like(other[:, :, :2])  # only ignored pixels change
    assert loss(logits, target).item() == pytest.approx(loss(other, target).item())
    kept = target[:, 2:]
    expected = torch.nn.functional.cross_entropy(logits[:, :, 2:], kept)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name, overlap", [("ce+dice", DiceLoss), ("ce+lovasz", LovaszLoss)])
def test_ce_plus_overlap_adds_the_smp_loss_and_backpropagates(name, overlap) -> None:
    logits, target = batch()
    total = build_loss(name, num_classes=3, ignore_index=255)(logits, target)
    ce = build_loss("ce", num_classes=3, ignore_index=255)(logits, target)
    extra = overlap("multiclass", from_logits=True, ignore_index=255)(logits, target)
    assert extra.item() > 0.05
    assert total.item() == pytest.approx(ce.item() + extra.item(), rel=1e-6)
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad[:, :, :2].abs().max() == 0  # nothing flows from ignored pixels


@pytest.mark.parametrize("name", ["ce+dice", "ce+lovasz"])
def test_overlap_term_vanishes_for_a_perfect_prediction(name) -> None:
    _, target = batch()
    logits = 50.0 * torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2)
    total = build_loss(name, num_classes=3, ignore_index=255)(logits.float(), target)
    assert total.item() == pytest.approx(0.0, abs=1e-4)


def test_class_weights_reach_cross_entropy() -> None:
    logits, target = batch()
    loss = build_loss("ce", num_classes=3, ignore_index=255, class_weights=[1.0, 2.0, 0.5])
    expected = torch.nn.functional.cross_entropy(
        logits, target, weight=torch.tensor([1.0, 2.0, 0.5]), ignore_index=255
    )
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="one value per class"):
        build_loss("ce", num_classes=3, ignore_index=255, class_weights=[1.0])
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        build_loss("focal", num_classes=3, ignore_index=255)
