"""``fcn evaluate``: table + JSON for a checkpoint, and ONNX models through the serving engine."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fcn.cli import main
from fcn.padding import unwrap
from training.checkpoint import load_model
from training.config import DataConfig
from training.data.datasets import build_datasets
from training.evaluate import evaluate_checkpoint, evaluate_onnx
from training.export.onnx import model_metadata, write_metadata
from training.loop.metrics import ConfusionMatrix
from training.tta import with_flip_tta

JSON_KEYS = {
    "miou",
    "per_class_iou",
    "pixel_accuracy",
    "mean_accuracy",
    "dice",
    "per_class_dice",
    "per_class_accuracy",
    "classes",
    "confusion_matrix",
    "images",
}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def best(trained_run):
    return trained_run[0] / "best.pt"


def direct_matrix(checkpoint, split: str = "val", mirror: bool = False) -> ConfusionMatrix:
    """The confusion matrix computed here, image by image, without training.evaluate
    (``mirror``: from the mean of the logits of each image and of its mirror image)."""
    model, config = load_model(checkpoint)
    _, dataset, info = build_datasets(DataConfig.from_dict(config["data"]), split=split)
    matrix = ConfusionMatrix(info.num_classes)
    with torch.no_grad():
        for index in range(len(dataset)):
            image, mask = dataset[index]
            logits = model(image[None])
            if mirror:
                logits = logits + model(image[None].flip(-1)).flip(-1)
            matrix.update(logits.argmax(1)[0], mask)
    return matrix


def test_table_and_json_match_a_direct_computation(best, tmp_path, capsys) -> None:
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--checkpoint", str(best), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("background", "ellipse", "rectangle", "triangle", "star", "mIoU"):
        assert name in printed
    report = json.loads(out.read_text())
    assert JSON_KEYS <= set(report) and report["split"] == "val"
    expected = direct_matrix(best).compute()
    assert report["confusion_matrix"] == expected.confusion_matrix
    assert report["miou"] == pytest.approx(expected.miou)
    assert report["pixel_accuracy"] == pytest.approx(expected.pixel_accuracy)
    assert report["mean_accuracy"] == pytest.approx(expected.mean_accuracy)
    assert report["dice"] == pytest.approx(expected.dice)
    defined = [v for v in expected.per_class_iou if v == v]
    assert [v for v in report["per_class_iou"] if v is not None] == pytest.approx(defined)
    # The checkpoint's own record of its last validation agrees too.
    assert torch.load(best, weights_only=True)["metrics"]["confusion_matrix"] == (
        expected.confusion_matrix
    )


def test_flip_tta_evaluates_the_mean_of_image_and_mirror(best, tmp_path) -> None:
    out = tmp_path / "tta.json"
    assert main(["evaluate", "--checkpoint", str(best), "--tta", "hflip", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["confusion_matrix"] == direct_matrix(best, mirror=True).compute().confusion_matrix
    # The wrapped network's logits are that mean (the tiny model's argmax may not change). At
    # a size multiple of 32 no padding is involved (otherwise the image is padded first).
    model, _ = load_model(best)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        plain, mirrored = model(x), model(x.flip(-1)).flip(-1)
        torch.testing.assert_close(with_flip_tta(model)(x), (plain + mirrored) / 2)
    assert not torch.allclose(plain, mirrored)


def test_split_all_and_data_overrides(best) -> None:
    report = evaluate_checkpoint(best, split="all")
    assert report.images == 12
    assert report.metrics.confusion_matrix == direct_matrix(best, "all").compute().confusion_matrix
    with pytest.raises(ValueError, match="for 2 classes"):  # the demo has 5
        evaluate_checkpoint(best, mask_values=[0, 255])


def export_onnx(checkpoint, path, **changes) -> None:
    """A minimal export (legacy tracer, no parity check; training/export/onnx.py does the real
    one) with the description the real export writes, ``changes`` replacing its fields."""
    import onnx

    model, config = load_model(checkpoint)
    graph, multiple = unwrap(model)
    torch.onnx.export(
        graph,
        (torch.zeros(1, 3, 64, 64),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
    )
    proto = onnx.load(str(path))
    meta = dataclasses.replace(model_metadata(config, size_multiple=multiple), **changes)
    write_metadata(proto, meta)
    onnx.save(proto, str(path))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter is enough here
@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean")  # smp's tracing
def test_onnx_model_evaluates_through_the_engine_like_the_checkpoint(
    best, tmp_path, demo_root
) -> None:
    path = tmp_path / "model.onnx"
    export_onnx(best, path)
    torch_report = evaluate_checkpoint(best)
    onnx_report = evaluate_onnx(path, checkpoint=best)
    assert onnx_report.images == torch_report.images
    assert onnx_report.metrics.miou == pytest.approx(torch_report.metrics.miou, abs=2e-3)
    # Without a checkpoint the data options come from the ONNX metadata (the demo's classes).
    report = evaluate_onnx(path, root=str(demo_root), split="all")
    assert report.images == 12 and report.metrics.classes[1] == "ellipse"


def test_evaluate_needs_a_model(capsys) -> None:
    assert main(["evaluate", "--data", "x"]) == 2
    assert "give --checkpoint" in capsys.readouterr().err
    assert main(["evaluate", "--model", "m.onnx", "--tta", "hflip"]) == 2
    assert "chosen at export" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean")
def test_onnx_mask_values_from_the_metadata_are_used(best, tmp_path, demo_root) -> None:
    path = tmp_path / "model.onnx"
    export_onnx(best, path, mask_values=(0, 1, 2, 3, 9))
    with pytest.raises(ValueError, match=r"undeclared values \[4\]"):  # 4 is no class now
        evaluate_onnx(path, root=str(demo_root))
