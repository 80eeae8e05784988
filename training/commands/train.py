"""``fcn train``: train a segmentation model on a folder, split or VOC dataset.

Imports nothing heavy at module level (``fcn --help`` stays instant); the loop lives in
``training.loop.train``. Every option maps onto ``training.config.TrainConfig`` (or its
``DataConfig``/``AugmentConfig``); options left out keep that dataclass's default, and the
choices and the defaults shown in the help come from there too (the config module imports no
torch), so they live in one place. Multi-GPU / multi-node: ``torchrun --nproc-per-node N -m fcn train ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from training.config import (
    DEFAULT_ENCODER,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DEFAULT_WEIGHT_DECAY,
    IN_CHANNELS,
    LAYOUTS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    AugmentConfig,
    DataConfig,
    TrainConfig,
    default_of,
)


def _data_default(name: str) -> Any:
    return default_of(DataConfig, name)


def _train_default(name: str) -> Any:
    return default_of(TrainConfig, name)


def _augment_default(name: str) -> Any:
    return default_of(AugmentConfig, name)


def _number_list(text: str, convert: type, what: str) -> list:
    try:
        values = [convert(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
    return values


def int_list(text: str) -> list[int]:
    return _number_list(text, int, "integers")


def float_list(text: str) -> list[float]:
    return _number_list(text, float, "numbers")


def str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def key_value(text: str) -> tuple[str, Any]:
    """``k=v`` with ``v`` read as JSON when it parses (numbers, true/false, null), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def add_data_arguments(parser: argparse.ArgumentParser, *, data_required: bool) -> None:
    """The dataset options shared by ``fcn train`` and ``fcn evaluate``."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        type=Path,
        required=data_required,
        metavar="DIR",
        help="dataset folder (images/ + masks/, train/ + val/, or a VOC tree)",
    )
    group.add_argument(
        "--layout", choices=LAYOUTS, help=f"dataset layout (default {_data_default('layout')})"
    )
    group.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help=f"held-out fraction for the folder layout (default {_data_default('val_fraction')})",
    )
    group.add_argument(
        "--mask-values",
        type=int_list,
        metavar="V0,V1,...",
        help="raw mask value of each class, e.g. 0,255 for binary masks",
    )
    group.add_argument(
        "--ignore-index",
        type=int,
        metavar="N",
        help=f"mask value excluded from loss and metrics (default {_data_default('ignore_index')})",
    )
    group.add_argument("--classes", type=str_list, metavar="NAME,...", help="class names")
    group.add_argument(
        "--num-classes",
        type=int,
        metavar="K",
        help="number of classes when masks hold indices 0..K-1",
    )
    group.add_argument(
        "--in-channels",
        type=int,
        choices=IN_CHANNELS,
        help="image channels (default: those of the data)",
    )


def _add_augment_arguments(parser: argparse.ArgumentParser) -> None:
    """The augmentation options (``AugmentConfig``)."""
    group = parser.add_argument_group("augmentation")
    group.add_argument(
        "--crop-size",
        type=int,
        metavar="PX",
        help=f"training crop side (default {_augment_default('crop_size')})",
    )
    group.add_argument(
        "--scale-range",
        type=float_list,
        metavar="LO,HI",
        help="random zoom range (default {},{}, narrowed for runs of under 3,000 steps and "
        "none under 1,000; a range given here is used as given)".format(
            *_augment_default("scale_range")
        ),
    )
    group.add_argument("--hflip", type=float, metavar="P", help="horizontal flip probability")
    group.add_argument("--vflip", type=float, metavar="P", help="vertical flip probability")
    group.add_argument(
        "--class-crop-p",
        type=float,
        metavar="P",
        help="probability that a crop is centred on a pixel of a class drawn uniformly from "
        f"those in the image (default {_augment_default('class_crop_p')})",
    )


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model options: architecture, encoder, weights, any builder option."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--init",
        metavar="MODEL",
        help="start from a trained model: 'default' (the bundled one), an exported .onnx (fp32, "
        "INT8 or an fp16 source) or a .pt checkpoint; its architecture, options, classes and "
        "normalisation are used, classes matched by name (docs/label-studio.md)",
    )
    model.add_argument(
        "--arch", help=f"model name from `fcn.list_models()` (default {_train_default('arch')})"
    )
    model.add_argument("--encoder", help=f"smp encoder for unet & co. (default {DEFAULT_ENCODER})")
    model.add_argument(
        "--encoder-weights",
        metavar="NAME|PATH",
        help="encoder weights: imagenet (downloads) or a .pt file (default none)",
    )
    model.add_argument("--weights", metavar="NAME|PATH", help="model weights option (FCN-VGG)")
    model.add_argument(
        "--model-option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other model option (repeatable)",
    )


def _add_optimisation_arguments(parser: argparse.ArgumentParser) -> None:
    """Budget, optimiser, schedule, loss and precision."""
    opt = parser.add_argument_group("optimisation")
    opt.add_argument(
        "--epochs", type=int, help=f"epoch budget (default {DEFAULT_EPOCHS} without --max-minutes)"
    )
    opt.add_argument(
        "--max-minutes",
        type=float,
        metavar="MIN",
        help="time budget: stop, evaluate and save when it is spent",
    )
    opt.add_argument(
        "--epoch-size",
        type=int,
        metavar="N",
        help="at least N training images per epoch; small sets repeat "
        f"(default {_train_default('epoch_size')})",
    )
    opt.add_argument(
        "--batch-size",
        type=int,
        help=f"images per step and device (default {_train_default('batch_size')})",
    )
    opt.add_argument(
        "--optimizer", choices=OPTIMIZERS, help=f"default {_train_default('optimizer')}"
    )
    opt.add_argument(
        "--lr",
        type=float,
        help="peak learning rate (default "
        + ", ".join(f"{v:g} {k}" for k, v in DEFAULT_LR.items())
        + ")",
    )
    opt.add_argument(
        "--weight-decay",
        type=float,
        help="default " + ", ".join(f"{v:g} {k}" for k, v in DEFAULT_WEIGHT_DECAY.items()),
    )
    opt.add_argument(
        "--momentum", type=float, help=f"SGD momentum (default {_train_default('momentum')})"
    )
    opt.add_argument("--schedule", choices=SCHEDULES, help=f"default {_train_default('schedule')}")
    opt.add_argument(
        "--warmup",
        metavar="N|Ne",
        help=f"warmup steps, or epochs with 'e' (default {_train_default('warmup')})",
    )
    opt.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the gradient norm")
    opt.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="validate, save and export an exponential moving average of the weights with this "
        "decay, e.g. 0.995 (default: off, the raw weights)",
    )
    opt.add_argument("--loss", choices=LOSSES, help=f"default {_train_default('loss')}")
    opt.add_argument(
        "--class-weights",
        type=float_list,
        metavar="W0,W1,...",
        help="cross-entropy weight per class",
    )
    opt.add_argument(
        "--amp", action="store_true", default=None, help="float16 mixed precision (CUDA only)"
    )
    opt.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 autocast on CPU (default: on when the CPU supports it "
        "natively, AVX512-BF16/AMX, where it is about 2x faster; FCN-VGG models train in "
        "float32 unless --bf16 is given)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the run goes, resuming, seed, device and what is written per epoch."""
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, metavar="RUN", help="run folder (default runs/ARCH-TIME)")
    run.add_argument(
        "--resume",
        type=Path,
        metavar="RUN/last.pt",
        help="continue a run with its saved options (--out, --device, --workers, "
        "--epochs and --max-minutes may change)",
    )
    run.add_argument("--seed", type=int, help="seed for split, init, order, augmentation")
    run.add_argument(
        "--device", help=f"auto, cpu, cuda or cuda:N (default {_train_default('device')})"
    )
    run.add_argument(
        "--workers",
        type=int,
        help="DataLoader worker processes (default: 0 on CPU, up to 8 on GPU)",
    )
    run.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory format (default on)",
    )
    run.add_argument(
        "--val-share",
        type=float,
        metavar="F",
        help="validate after an epoch only while validation stays within this share of the "
        f"time; the last epoch always (default {_train_default('val_share')}; 1 = every epoch)",
    )
    run.add_argument(
        "--plots",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write curves.png and predictions.png each epoch (default on)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fcn train``."""
    parser = subparsers.add_parser(
        "train",
        help="train a segmentation model",
        description="Train a model; writes best.pt, last.pt, metrics.csv, curves.png and "
        "predictions.png to --out. Defaults are tuned: AdamW, warmup + cosine decay to zero "
        "within the budget, cross-entropy + Dice, 256-pixel crops, batch 8.",
    )
    add_data_arguments(parser, data_required=False)
    _add_augment_arguments(parser)
    _add_model_arguments(parser)
    _add_optimisation_arguments(parser)
    _add_run_arguments(parser)
    parser.set_defaults(func=run_train)


# The command-line options that are DataConfig fields of the same name (train and evaluate).
DATA_KEYS = (
    "layout",
    "val_fraction",
    "mask_values",
    "ignore_index",
    "classes",
    "num_classes",
    "in_channels",
    "seed",
)
_AUGMENT_KEYS = ("crop_size", "scale_range", "hflip", "vflip", "class_crop_p")
_TRAIN_KEYS = (
    "arch",
    "epochs",
    "max_minutes",
    "epoch_size",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "schedule",
    "warmup",
    "grad_clip",
    "ema",
    "loss",
    "class_weights",
    "amp",
    "bf16",
    "device",
    "workers",
    "seed",
    "channels_last",
    "val_share",
    "plots",
)
_RUNTIME_KEYS = ("device", "workers", "epochs", "max_minutes", "plots")


def given(args: argparse.Namespace, keys: Any) -> dict[str, Any]:
    """The options among ``keys`` that were given on the command line."""
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def build_config(args: argparse.Namespace) -> Any:
    """``TrainConfig`` from the parsed arguments (only given options override defaults)."""
    from fcn.registry import model_options

    if args.data is None:
        raise ValueError("--data DIR is required (unless --resume RUN/last.pt)")
    augment = given(args, _AUGMENT_KEYS)
    if "scale_range" in augment:
        if len(augment["scale_range"]) != 2:
            raise ValueError(f"--scale-range needs LO,HI, got {augment['scale_range']}")
        augment["scale_range"] = tuple(augment["scale_range"])
        augment["zoom_by_length"] = False  # the user's range, whatever the run's length
    data = DataConfig(
        root=str(args.data),
        augment=AugmentConfig(**augment),
        **given(args, DATA_KEYS),
    )
    options = dict(args.model_option)
    for key in ("encoder", "encoder_weights", "weights"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    train = given(args, _TRAIN_KEYS)
    arch = train.get("arch", _train_default("arch"))
    if "encoder" not in options and "encoder" in model_options(arch):
        options["encoder"] = DEFAULT_ENCODER
    if args.init is not None:
        arch, options = _init_model(args, arch, options)
        train["arch"] = arch
    out = args.out or Path("runs") / f"{arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    return TrainConfig(data=data, out=str(out), model_options=options, init=args.init, **train)


def _init_model(
    args: argparse.Namespace, arch: str, options: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """``--init``'s architecture and options; explicit ones must agree with them."""
    from training.init.source import builder_options, describe_init

    init = describe_init(args.init)
    own = builder_options(init)
    if args.arch is not None and args.arch != init.arch:
        raise ValueError(f"--arch {args.arch} given, but --init {args.init} is a {init.arch}")
    given_options = {k: v for k, v in options.items() if k not in ("encoder_weights", "weights")}
    if args.encoder is None and not args.model_option:
        given_options = {}
    clash = {k: v for k, v in given_options.items() if own.get(k) != v}
    if clash:
        raise ValueError(
            f"model options {clash} given, but --init {args.init} was built with {own}"
        )
    return init.arch, own


def run_train(args: argparse.Namespace) -> int:
    from training.loop.metrics import format_table
    from training.loop.train import resume_config, train

    if args.resume is not None:
        overrides = given(args, _RUNTIME_KEYS)
        overrides["out"] = str(args.out or args.resume.parent)
        cfg = resume_config(args.resume, **overrides)
    else:
        cfg = build_config(args)
    result = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", 0)) == 0:
        if result.metrics is not None:
            print(format_table(result.metrics))
        print(
            f"{result.epochs} epochs, {result.steps} steps in {result.elapsed_s / 60:.1f} min "
            f"({result.images_per_s:.2f} training images/s); best mIoU {result.best_miou:.4f}; "
            f"checkpoints in {result.out}"
        )
    return 0
