"""What a training run is built from: threads, seeds, data, model, optimizer, loaders, budget.

``build_parts`` assembles them once per run (training/loop/train.py); ``--resume`` then loads
their states from the checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import fcn
from training.checkpoint import checkpoint_config
from training.config import TrainConfig
from training.data.datasets import DatasetInfo, SegmentationDataset, build_datasets
from training.init.apply import start_from
from training.init.classes import run_classes
from training.init.source import InitModel
from training.loop import distributed
from training.loop.ema import build_ema
from training.loop.epoch import use_cpu_bf16
from training.loop.losses import build_loss
from training.loop.optim import StepBudget, build_optimizer
from training.loop.sampling import build_loaders


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_threads(info: distributed.DistInfo, device: torch.device) -> None:
    if device.type == "cpu" and info.enabled:
        # Ranks on one machine share its cores; oversubscribed OpenMP threads spin and crawl.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: pick the fastest kernels


def _build_model(
    cfg: TrainConfig, data: DatasetInfo, info: distributed.DistInfo, device: torch.device
) -> nn.Module:
    model = fcn.build_model(
        cfg.arch, num_classes=data.num_classes, in_channels=data.in_channels, **cfg.model_options
    )
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    if info.enabled and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # batch statistics over all GPUs
    return model


def _workers(requested: int | None, info: distributed.DistInfo, device: torch.device) -> int:
    """``None`` -> 0 on CPU: the augmentation is cheap next to a CPU training step and worker
    processes would take cores from it. On GPU the loader must keep up with the device."""
    if requested is not None:
        return requested
    if device.type == "cpu":
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    return max(1, min(8, (os.cpu_count() or 2) // local - 1))


def _adopt_classes(data: DatasetInfo, init: InitModel) -> DatasetInfo:
    """The data's classes named as the init model's when the data names none."""
    classes = run_classes(init, data.classes)
    if classes == data.classes:
        return data
    palette = init.palette if len(init.palette) == len(classes) else data.palette
    return dataclasses.replace(data, classes=classes, palette=[list(c) for c in palette])


@dataclass
class Parts:
    """What a run trains with: built once (``_build``), restored on ``--resume``."""

    train_ds: SegmentationDataset
    val_ds: SegmentationDataset
    data: DatasetInfo
    config: dict[str, Any]  # the checkpoint's ``config``
    model: nn.Module  # the network the optimizer steps
    net: nn.Module  # ``model``, DDP-wrapped in distributed runs
    ema: Any  # torch.optim.swa_utils.AveragedModel, or None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    budget: StepBudget
    bf16: bool

    @property
    def saved(self) -> nn.Module:
        """What is validated and saved as "model": the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model


def build_parts(
    cfg: TrainConfig,
    info: distributed.DistInfo,
    device: torch.device,
    started: float,
    init: InitModel | None = None,
) -> Parts:
    """Data, model (and its moving average), optimizer, loss, loaders and step budget.

    ``init`` (``--init``, training/init): the model whose weights the network starts from;
    unnamed data classes take its class names.
    """
    train_ds, val_ds, data = build_datasets(cfg.data)
    if init is not None:
        data = _adopt_classes(data, init)
    model = _build_model(cfg, data, info, device)
    if init is not None:
        start_from(model, init, data.classes, train_ds, device)
    net = model
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    loss_fn = build_loss(
        cfg.loss,
        num_classes=data.num_classes,
        ignore_index=data.ignore_index,
        class_weights=cfg.class_weights,
    ).to(device)
    train_loader, val_loader = build_loaders(
        train_ds,
        val_ds,
        batch_size=cfg.batch_size,
        epoch_size=cfg.epoch_size,
        workers=_workers(cfg.workers, info, device),
        seed=cfg.seed,
        ignore_index=data.ignore_index,
        info=info,
        pin_memory=device.type == "cuda",
    )
    budget = StepBudget(
        base_lr=cfg.base_lr,
        schedule=cfg.schedule,
        warmup=cfg.warmup,
        epochs=cfg.budget_epochs,
        max_minutes=cfg.max_minutes,
        steps_per_epoch=len(train_loader),
        started=started,
    )
    return Parts(
        train_ds=train_ds,
        val_ds=val_ds,
        data=data,
        config=checkpoint_config(cfg, data),
        model=model,
        net=net,
        ema=build_ema(model, cfg.ema) if cfg.ema is not None else None,
        optimizer=build_optimizer(model, cfg),
        scaler=torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda"),
        loss_fn=loss_fn,
        train_loader=train_loader,
        val_loader=val_loader,
        budget=budget,
        bf16=use_cpu_bf16(cfg.bf16, device, cfg.arch),
    )
