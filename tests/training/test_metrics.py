"""Confusion-matrix metrics against hand-computed cases (ignore index, absent classes)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from training.loop.metrics import ConfusionMatrix, format_table, metrics_from_matrix

# 3 classes; the last pixel's ground truth is the ignore index 255.
TARGET = torch.tensor([0, 0, 1, 1, 2, 255])
PRED = torch.tensor([0, 1, 1, 1, 0, 2])
# rows = ground truth, columns = prediction, over the 5 counted pixels
EXPECTED_MATRIX = [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def counted(num_classes: int = 3) -> ConfusionMatrix:
    matrix = ConfusionMatrix(num_classes)
    matrix.update(PRED, TARGET)
    return matrix


def test_matrix_counts_pairs_and_skips_the_ignore_index() -> None:
    assert counted().matrix.tolist() == EXPECTED_MATRIX


def test_hand_computed_scores() -> None:
    m = counted().compute(["a", "b", "c"])
    # IoU = tp / (gt + pred - tp): 1/(2+2-1), 2/(2+3-2), 0/(1+0-0)
    assert m.per_class_iou == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert m.miou == pytest.approx(1 / 3)
    assert m.pixel_accuracy == pytest.approx(3 / 5)
    assert m.per_class_accuracy == pytest.approx([1 / 2, 1.0, 0.0])
    assert m.mean_accuracy == pytest.approx(0.5)
    # Dice = 2 tp / (gt + pred): 2/4, 4/5, 0/1
    assert m.per_class_dice == pytest.approx([0.5, 0.8, 0.0])
    assert m.dice == pytest.approx(1.3 / 3)
    assert m.pixels == 5 and m.classes == ["a", "b", "c"]


def test_class_absent_from_truth_and_prediction_is_nan_and_left_out_of_means() -> None:
    m = counted(num_classes=4).compute()
    assert math.isnan(m.per_class_iou[3]) and math.isnan(m.per_class_dice[3])
    assert math.isnan(m.per_class_accuracy[3])
    assert m.miou == pytest.approx(1 / 3)  # the mean of the three defined classes
    assert m.dice == pytest.approx(1.3 / 3)
    assert m.classes[3] == "class_3"


def test_predicted_but_absent_class_scores_zero_and_counts() -> None:
    matrix = ConfusionMatrix(2)
    matrix.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    m = matrix.compute()
    assert m.per_class_iou == pytest.approx([0.5, 0.0])
    assert m.miou == pytest.approx(0.25)
    assert math.isnan(m.per_class_accuracy[1])  # recall of a class with no true pixel
    assert m.mean_accuracy == pytest.approx(0.5)
    assert m.per_class_dice == pytest.approx([2 / 3, 0.0])


def test_batches_accumulate_like_one_pass_and_images_any_shape() -> None:
    target = torch.randint(0, 4, (3, 5, 7))
    target[0, 0] = 255
    pred = torch.randint(0, 4, (3, 5, 7))
    whole = ConfusionMatrix(4)
    whole.update(pred, target)
    parts = ConfusionMatrix(4)
    for i in range(3):
        parts.update(pred[i], target[i])
    assert torch.equal(whole.matrix, parts.matrix)
    assert int(whole.matrix.sum()) == 3 * 5 * 7 - 7


def test_out_of_range_targets_are_not_counted() -> None:
    matrix = ConfusionMatrix(2)
    matrix.update(torch.tensor([0, 1, 1]), torch.tensor([-1, 7, 1]))
    assert matrix.matrix.tolist() == [[0, 0], [0, 1]]


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ"):
        ConfusionMatrix(2).update(torch.zeros(2, 3), torch.zeros(3, 2))


def test_empty_matrix_is_all_nan() -> None:
    m = metrics_from_matrix(torch.zeros(2, 2, dtype=torch.int64))
    assert math.isnan(m.miou) and math.isnan(m.pixel_accuracy)


def test_to_dict_is_json_with_nan_as_null() -> None:
    data = counted(num_classes=4).compute().to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["per_class_iou"][3] is None
    assert data["confusion_matrix"][:3] == [[*row, 0] for row in EXPECTED_MATRIX]


def test_table_lists_every_class_and_marks_undefined() -> None:
    table = format_table(counted(num_classes=4).compute(["bg", "cell", "wall", "void"]))
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[1:5]] == ["bg", "cell", "wall", "void"]
    assert "n/a" in lines[4]
    assert "mIoU 0.3333" in table
