"""Class rows matched by name between the model started from and the run's data.

The run's classes are the data's. Each class the model knows keeps its rows of the class
layers (the convolutions whose output, or input, channels are the classes); a class new to the
model gets the fresh rows the builder initialised. A class the data names but never shows keeps
its rows too: nothing is dropped or re-initialised because pixels of it are absent.

Which convolutions are "class layers": those whose channel count equals the number of classes
in both models (any such layer is remapped, so a hidden layer with exactly as many channels as
there are classes would be remapped too; the project's architectures have none).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from training.init.batchnorm import CONVS
from training.init.source import InitError, InitModel

_GENERIC = re.compile(r"class_\d+")


def run_classes(init: InitModel, data_classes: list[str]) -> list[str]:
    """The run's class names: the data's, or the model's when the data names none.

    Raises:
        InitError: the data's classes are unnamed and not as many as the model's.
    """
    if not all(_GENERIC.fullmatch(name) for name in data_classes):
        return list(data_classes)
    if len(data_classes) == init.num_classes:
        return list(init.classes)
    raise InitError(
        f"the data has {len(data_classes)} unnamed classes and the model {init.path} has "
        f"{init.num_classes} ({', '.join(init.classes)}): name the data's classes (--classes, "
        "or dataset.json) so they can be matched by name"
    )


def _class_dims(module: nn.Module, weight: torch.Tensor, old: int, new: int) -> list[int]:
    out_dim, in_dim = (1, 0) if isinstance(module, nn.ConvTranspose2d) else (0, 1)
    dims = []
    if module.out_channels == new and weight.shape[out_dim] == old:
        dims.append(out_dim)
    if module.in_channels == new and weight.shape[in_dim] == old:
        dims.append(in_dim)
    return sorted(dims)


def _remap(
    src: torch.Tensor, fresh: torch.Tensor, dims: list[int], old: torch.Tensor, new: torch.Tensor
) -> torch.Tensor:
    """``fresh`` with the known classes' entries (along ``dims``) taken from ``src``."""
    sub = src
    for dim in dims:
        sub = sub.index_select(dim, old)
    out = fresh.clone()
    if len(dims) == 1:
        return out.index_copy_(dims[0], new, sub)
    first, second = dims
    rows = out.index_select(first, new).index_copy_(second, new, sub)
    return out.index_copy_(first, new, rows)


def match_classes(
    module: nn.Module, state: dict[str, torch.Tensor], old: list[str], new: list[str]
) -> dict[str, torch.Tensor]:
    """``state`` (for classes ``old``) rewritten for ``module`` built for classes ``new``.

    Raises:
        InitError: no class in common, or a tensor whose shape differs for another reason.
    """
    fresh = module.state_dict()
    if list(old) != list(new):
        pairs = [(i, old.index(name)) for i, name in enumerate(new) if name in old]
        if not pairs:
            raise InitError(
                f"none of the data's classes {new} is one of the model's {old}: nothing to keep"
            )
        new_idx = torch.tensor([i for i, _ in pairs])
        old_idx = torch.tensor([j for _, j in pairs])
        state = dict(state)
        for name, conv in module.named_modules():
            if not isinstance(conv, CONVS) or f"{name}.weight" not in state:
                continue
            dims = _class_dims(conv, state[f"{name}.weight"], len(old), len(new))
            if not dims:
                continue
            key = f"{name}.weight"
            state[key] = _remap(state[key], fresh[key], dims, old_idx, new_idx)
            out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
            if conv.bias is not None and out_dim in dims:
                key = f"{name}.bias"
                state[key] = _remap(state[key], fresh[key], [0], old_idx, new_idx)
    wrong = [
        f"{k} {tuple(v.shape)} (expected {tuple(fresh[k].shape)})"
        for k, v in state.items()
        if k in fresh and v.shape != fresh[k].shape
    ]
    if wrong:
        raise InitError(
            "the model's weights do not fit the model built for this run: " + "; ".join(wrong[:3])
        )
    return state
