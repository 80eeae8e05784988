"""``--init``: the run's configuration from the model, and its weights into the new network."""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from training.config import TrainConfig
from training.init.batchnorm import calibrate, trace_modules
from training.init.classes import match_classes
from training.init.onnx_weights import onnx_state
from training.init.source import InitError, InitModel, builder_options, read_init

logger = logging.getLogger(__name__)
CALIBRATION_IMAGES = 16


def init_config(cfg: TrainConfig) -> tuple[TrainConfig, InitModel]:
    """``cfg`` with the init model's architecture, options, channels and normalisation.

    Data options given explicitly (mean, std, channels) must agree with the model.

    Raises:
        InitError: the file cannot be read, or contradicts an explicit option.
    """
    init = read_init(cfg.init)
    data = cfg.data
    for key in ("in_channels", "mean", "std"):
        given, own = getattr(data, key), getattr(init, key)
        if given is not None and own and given != own:
            raise InitError(
                f"{key} {given} given, but the model {init.path} was trained with {own}"
            )
    data = dataclasses.replace(
        data,
        in_channels=init.in_channels,
        mean=list(init.mean) or data.mean,
        std=list(init.std) or data.std,
        compute_stats=False,
    )
    cfg = dataclasses.replace(cfg, data=data, arch=init.arch, model_options=builder_options(init))
    return cfg, init


def _graph(model: nn.Module) -> tuple[nn.Module, int]:
    from fcn.padding import unwrap

    return unwrap(model)


def load_init(
    model: nn.Module, init: InitModel, classes: list[str]
) -> tuple[nn.Module, list[tuple[str, str]]]:
    """Put ``init``'s weights into ``model`` (built for ``classes``).

    Returns:
        ``(module, folded)``: the module the weights went into and its ``(convolution,
        BatchNorm)`` pairs that export had folded (the BatchNorm an identity now;
        :func:`training.init.batchnorm.calibrate` them).

    Raises:
        InitError: weights that cannot be mapped onto ``model``.
    """
    if init.state is not None:  # a checkpoint: the state dict of the whole model
        state = {k: v.float() if v.is_floating_point() else v for k, v in init.state.items()}
        state = match_classes(model, state, init.classes, classes)
        _load(model, state, init)
        return model, []
    graph, multiple = _graph(model)
    size = max(64, multiple) if 64 % multiple == 0 else multiple
    convs, follows = trace_modules(graph.cpu(), init.in_channels, size)
    state, folded = onnx_state(graph, init.proto, convs, follows)
    state = match_classes(graph, state, init.classes, classes)
    _load(graph, state, init)
    return graph, [(follows[norm], norm) for norm in folded]


def _load(module: nn.Module, state: dict[str, torch.Tensor], init: InitModel) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise InitError(f"{init.path} does not fit the model built for this run: {exc}") from exc


def start_from(
    model: nn.Module, init: InitModel, classes: list[str], dataset, device: torch.device
) -> None:
    """Load ``init`` into ``model`` and calibrate folded BatchNorms on ``dataset``'s images."""
    module, folded = load_init(model.cpu(), init, classes)
    model.to(device)
    if folded:
        count = min(len(dataset), CALIBRATION_IMAGES)
        images = [dataset[i][0] for i in range(count)]
        batches = [torch.stack(images[i : i + 4]).to(device) for i in range(0, count, 4)]
        modules = dict(module.named_modules())
        pairs = [(modules[conv], modules[norm]) for conv, norm in folded]
        measured = calibrate(model, pairs, batches)
        logger.info(
            "%d BatchNorms were folded into convolutions in %s; their statistics were "
            "measured on %d training images",
            len(folded),
            init.path,
            measured,
        )
    kept = [c for c in classes if c in init.classes]
    logger.info(
        "started from %s (%s): %d of %d classes kept their weights%s",
        init.path,
        init.kind,
        len(kept),
        len(classes),
        "" if len(kept) == len(classes) else f", new: {[c for c in classes if c not in kept]}",
    )
