"""``fcn train`` / ``fcn evaluate`` command lines: clean errors, options reach the config."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from fcn.cli import build_parser, main
from training.commands.train import build_config
from training.config import DataConfig, TrainConfig


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def test_bad_mask_values_is_a_usage_error_without_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fcn", "train", "--data", ".", "--mask-values", "0,x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "argument --mask-values: expected comma-separated integers" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_folder_is_a_clean_error(tmp_path, capsys) -> None:
    assert main(["train", "--data", str(tmp_path / "nope"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "fcn train: error:" in err and "does not exist" in err and "Traceback" not in err


def test_no_data_and_no_resume_is_a_clean_error(capsys) -> None:
    assert main(["train", "--epochs", "1"]) == 2
    assert "--data DIR is required" in capsys.readouterr().err


def test_mask_values_outside_the_data_name_the_file(make_folder_dataset, tmp_path, capsys) -> None:
    root = make_folder_dataset(values=(0, 128, 255))
    code = main(
        [
            "train",
            "--data",
            str(root),
            "--mask-values",
            "0,255",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "undeclared values [128]" in err
    assert err.rstrip().endswith("(see --mask-values)")  # the library names the option


def test_options_reach_the_config(tmp_path) -> None:
    cfg = build_config(
        parse(
            "--data",
            str(tmp_path),
            "--arch",
            "unet",
            "--encoder",
            "resnet34",
            "--num-classes",
            "2",
            "--mask-values",
            "0,255",
            "--val-fraction",
            "0.25",
            "--ignore-index",
            "7",
            "--classes",
            "membrane,interior",
            "--in-channels",
            "1",
            "--crop-size",
            "128",
            "--batch-size",
            "2",
            "--max-minutes",
            "8",
            "--seed",
            "3",
            "--lr",
            "0.02",
            "--optimizer",
            "sgd",
            "--schedule",
            "poly",
            "--warmup",
            "2e",
            "--grad-clip",
            "1.5",
            "--loss",
            "ce",
            "--class-weights",
            "1,3",
            "--amp",
            "--workers",
            "2",
            "--device",
            "cpu",
            "--encoder-weights",
            "imagenet",
            "--model-option",
            "dropout=0.3",
            "--out",
            str(tmp_path / "run"),
            "--no-channels-last",
            "--no-bf16",
        )
    )
    assert cfg.model_options == {
        "encoder": "resnet34",
        "encoder_weights": "imagenet",
        "dropout": 0.3,
    }
    assert (cfg.data.mask_values, cfg.data.val_fraction, cfg.data.ignore_index) == (
        [0, 255],
        0.25,
        7,
    )
    assert (cfg.data.classes, cfg.data.num_classes, cfg.data.in_channels) == (
        ["membrane", "interior"],
        2,
        1,
    )
    assert (cfg.data.augment.crop_size, cfg.data.seed, cfg.seed) == (128, 3, 3)
    assert (cfg.batch_size, cfg.max_minutes, cfg.epochs, cfg.lr) == (2, 8.0, None, 0.02)
    assert (cfg.optimizer, cfg.schedule, cfg.warmup, cfg.grad_clip) == ("sgd", "poly", "2e", 1.5)
    assert (cfg.loss, cfg.class_weights, cfg.amp, cfg.workers) == ("ce", [1.0, 3.0], True, 2)
    assert (cfg.device, cfg.channels_last, cfg.out) == ("cpu", False, str(tmp_path / "run"))
    assert cfg.bf16 is False


def test_omitted_options_keep_the_config_defaults(tmp_path) -> None:
    cfg = build_config(parse("--data", str(tmp_path)))
    defaults = TrainConfig(data=cfg.data)
    for name in (
        "epochs",
        "max_minutes",
        "batch_size",
        "optimizer",
        "lr",
        "schedule",
        "warmup",
        "loss",
        "workers",
        "epoch_size",
        "channels_last",
        "bf16",
        "amp",
    ):
        assert getattr(cfg, name) == getattr(defaults, name), name
    assert cfg.model_options == {"encoder": "resnet18"} and cfg.out.startswith("runs")
    assert cfg.data.augment.zoom_by_length  # the default zoom follows the run's length


def test_a_zoom_range_given_is_used_whatever_the_runs_length(tmp_path) -> None:
    cfg = build_config(parse("--data", str(tmp_path), "--scale-range", "0.5,2"))
    assert cfg.data.augment.scale_range == (0.5, 2.0)
    assert not cfg.data.augment.zoom_by_length


def test_a_checkpoint_written_before_zoom_by_length_keeps_the_whole_range(tmp_path) -> None:
    saved = build_config(parse("--data", str(tmp_path))).data.to_dict()
    del saved["augment"]["zoom_by_length"]
    assert not DataConfig.from_dict(saved).augment.zoom_by_length
    current = build_config(parse("--data", str(tmp_path))).data.to_dict()
    assert DataConfig.from_dict(current).augment.zoom_by_length  # a new one round-trips


@pytest.mark.parametrize("argv", [["--warmup", "soon"], ["--optimizer", "adam"]])
def test_invalid_choices_fail_cleanly(tmp_path, argv, capsys) -> None:
    try:
        code = main(["train", "--data", str(tmp_path), *argv])
    except SystemExit as exc:  # argparse rejects choices itself
        code = exc.code
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_command_modules_import_no_torch(python_without) -> None:
    result = python_without(
        """
        import sys
        import training.commands.train, training.commands.evaluate
        assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
        print("ok")
        """,
        blocked=("torch",),
    )
    assert result.returncode == 0, result.stderr
