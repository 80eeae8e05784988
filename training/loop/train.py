"""``fcn train``: the training loop, top to bottom.

setup (device, process group, seeds) -> data -> model, optimizer, loss -> (resume) -> for each
epoch: ``train_one_epoch`` -> ``evaluate`` when the validation cadence says so (at most
``val_share`` of the time, always after the last epoch) -> rank 0 writes ``metrics.csv``,
``last.pt`` (and ``best.pt`` when validation mIoU improves), ``curves.png`` and ``predictions.png`` -> stop at
the epoch or time budget. ``--resume RUN/last.pt`` continues a run exactly: the checkpoint
holds model, optimizer, scaler, schedule/budget, epoch, step and RNG states, and the data
order and augmentation depend only on ``(seed, epoch)`` (training/loop/sampling.py).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import fcn
from training.checkpoint import (
    checkpoint_config,
    copy_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    train_config,
)
from training.config import TrainConfig
from training.data.datasets import DatasetInfo, build_datasets
from training.loop import distributed
from training.loop.ema import build_ema
from training.loop.epoch import EpochStats, evaluate, train_one_epoch, use_cpu_bf16
from training.loop.losses import build_loss
from training.loop.metrics import Metrics
from training.loop.optim import StepBudget, build_optimizer
from training.loop.runlog import MetricsLog, write_plots
from training.loop.sampling import build_loaders

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced (rank 0's view; other ranks get the same numbers)."""

    out: Path
    epochs: int
    steps: int
    best_miou: float
    metrics: Metrics | None  # the last validation
    images_per_s: float  # training throughput over all epochs of this run
    elapsed_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    validations: int = 0  # how many epochs were validated
    val_seconds: float = 0.0  # time spent validating


class ValidationCadence:
    """Decides after each epoch whether to validate, so validation takes at most ``share``
    of the run's time (the last epoch is always validated).

    A validation is due when the time spent validating so far plus one more validation stays
    within ``share`` of the time elapsed, or when one costs under ``CHEAP_SECONDS`` anyway
    (small validation sets then validate every epoch). Before the first validation its cost
    is estimated from the pixels to predict and the training speed (a forward pass costs
    about a third of a training step); afterwards it is the last one's measured cost. In
    distributed runs rank 0 decides for all.
    """

    CHEAP_SECONDS = 2.0

    def __init__(self, *, share: float, pixels: int, crop_pixels: int) -> None:
        self.share = share
        self.pixels = pixels
        self.crop_pixels = crop_pixels
        self.estimate = 0.0
        self.measured = False
        self.count = 0
        self.seconds = 0.0

    def due(self, last: bool, elapsed: float, stats: Any, device: torch.device) -> bool:
        if not self.measured and stats.seconds > 0 and stats.images:
            train_pixels_per_s = stats.images * self.crop_pixels / stats.seconds
            self.estimate = self.pixels / (3.0 * train_pixels_per_s)
        want = (
            last
            or self.share >= 1.0
            or self.estimate < self.CHEAP_SECONDS
            or self.seconds + self.estimate <= self.share * elapsed
        )
        return bool(distributed.broadcast_int(int(want), device))

    def spent(self, seconds: float) -> None:
        self.count += 1
        self.seconds += seconds
        self.estimate = seconds
        self.measured = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resume_config(path: str | os.PathLike, **overrides: Any) -> TrainConfig:
    """The configuration saved in checkpoint ``path``, with ``overrides`` applied.

    Only runtime options should be overridden (``out``, ``device``, ``workers``, ``epochs``,
    ``max_minutes``); anything else makes the continuation differ from the original run.
    """
    try:
        cfg = train_config(load_checkpoint(path)["config"])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; cannot resume") from exc
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise ValueError(f"unknown training option {key!r}")
        setattr(cfg, key, value)
    cfg.__post_init__()
    return cfg


def _configure_threads(info: distributed.DistInfo, device: torch.device) -> None:
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


def train(
    cfg: TrainConfig, *, resume: str | os.PathLike | None = None, stop_after: int | None = None
) -> TrainResult:
    """Run the training loop described by ``cfg``.

    Args:
        cfg: every option (see training/config.py).
        resume: a ``last.pt`` to continue from (its weights, optimizer, schedule, epoch, RNG).
        stop_after: stop once this many epochs are complete, as if interrupted (tests).

    Returns:
        ``TrainResult``.

    Raises:
        ValueError: bad options or data (messages name the problem).
    """
    info, device = distributed.setup(cfg.device)
    try:
        return _train(cfg, info, device, resume, stop_after)
    finally:
        distributed.cleanup()


def _train(
    cfg: TrainConfig,
    info: distributed.DistInfo,
    device: torch.device,
    resume: str | os.PathLike | None,
    stop_after: int | None,
) -> TrainResult:
    _configure_threads(info, device)
    seed_everything(cfg.seed)
    train_ds, val_ds, data_info = build_datasets(cfg.data)
    config = checkpoint_config(cfg, data_info)
    model = _build_model(cfg, data_info, info, device)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    loss_fn = build_loss(
        cfg.loss,
        num_classes=data_info.num_classes,
        ignore_index=data_info.ignore_index,
        class_weights=cfg.class_weights,
    ).to(device)
    train_loader, val_loader = build_loaders(
        train_ds,
        val_ds,
        batch_size=cfg.batch_size,
        epoch_size=cfg.epoch_size,
        workers=_workers(cfg.workers, info, device),
        seed=cfg.seed,
        ignore_index=data_info.ignore_index,
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
    )
    bf16 = use_cpu_bf16(cfg.bf16, device)
    # What is validated and saved as "model": the moving average when there is one.
    ema = build_ema(model, cfg.ema) if cfg.ema is not None else None
    saved = ema.module if ema is not None else model
    epoch, step, best = 0, 0, -math.inf
    if resume is not None:
        state = load_checkpoint(resume, map_location=device)
        saved.load_state_dict(state["model"])
        if ema is not None:
            model.load_state_dict(state["train_model"])
            ema.n_averaged.fill_(int(state["ema_updates"]))
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        budget.load_state_dict(state["scheduler"])
        epoch, step, best = int(state["epoch"]), int(state["step"]), float(state["best_metric"])
        set_rng_state(state["rng"])
        logger.info("resumed %s at epoch %d, step %d (best mIoU %.4f)", resume, epoch, step, best)
    net = model
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    out = Path(cfg.out)
    log = MetricsLog(out / "metrics.csv", data_info.classes) if info.is_main else None
    if log is not None:
        log.start(keep_epochs=epoch)
        logger.info(
            "training %s (%s) on %s%s: %d train / %d val images, %d steps per epoch of %d images, "
            "budget %s -> %s",
            cfg.arch,
            cfg.model_options,
            device,
            " (bfloat16 autocast)" if bf16 else "",
            len(train_ds),
            len(val_ds),
            len(train_loader),
            len(train_loader) * cfg.batch_size * info.world_size,
            _budget_text(cfg),
            out,
        )
    max_epochs = cfg.budget_epochs or 10**9
    cadence = ValidationCadence(
        share=cfg.val_share,
        pixels=sum(h * w for h, w in map(val_ds.image_size, range(len(val_ds)))),
        crop_pixels=cfg.data.augment.crop_size**2,
    )
    history: list[dict[str, Any]] = []
    metrics: Metrics | None = None
    images = 0
    train_seconds = 0.0
    while epoch < max_epochs and not budget.done(step):
        train_loader.sampler.set_epoch(epoch)
        stats, step = train_one_epoch(
            net,
            train_loader,
            loss_fn,
            optimizer,
            scaler,
            budget,
            step,
            device=device,
            amp=cfg.amp,
            bf16=bf16,
            grad_clip=cfg.grad_clip,
            channels_last=cfg.channels_last,
            progress=info.is_main,
            description=f"epoch {epoch + 1}",
            ema=(lambda: ema.update_parameters(model)) if ema is not None else None,
        )
        epoch += 1
        images += stats.images * info.world_size
        train_seconds += stats.seconds
        metrics, samples = None, []
        keep = cfg.grid_images if (info.is_main and cfg.plots) else 0
        last = (
            epoch >= max_epochs
            or budget.done(step)
            or (stop_after is not None and epoch >= stop_after)
        )
        if len(val_ds) and cadence.due(last, budget.elapsed(), stats, device):
            distributed.broadcast_buffers(model)
            if ema is not None:  # the average of rank 0's buffers, as every rank's
                distributed.broadcast_buffers(ema.module)
            result = evaluate(
                saved,
                val_loader,
                data_info.num_classes,
                device=device,
                amp=cfg.amp,
                bf16=bf16,
                channels_last=cfg.channels_last,
                keep=keep,
            )
            cadence.spent(result.seconds)
            metrics, samples = result.matrix.compute(data_info.classes), result.samples
        tick = time.perf_counter()
        # Without a validation set every epoch is "best"; with one, only a validated one can be.
        improved = not len(val_ds) or (metrics is not None and _score(metrics) > best)
        if metrics is not None and improved:
            best = _score(metrics)
        if info.is_main:
            state = {
                "model": saved.state_dict(),
                **(
                    {"train_model": model.state_dict(), "ema_updates": int(ema.n_averaged)}
                    if ema is not None
                    else {}
                ),
                "optimizer": optimizer.state_dict(),
                "scheduler": budget.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "step": step,
                "rng": rng_state(),
                "best_metric": best,
                "metrics": metrics.to_dict() if metrics is not None else None,
                "config": config,
            }
            save_checkpoint(out / "last.pt", state)
            if improved:
                copy_checkpoint(out / "last.pt", out / "best.pt")
            row = log.append(epoch, step, stats, metrics, budget.elapsed())
            history.append(row)
            _log_epoch(epoch, step, stats, metrics, budget.elapsed())
            if cfg.plots:
                write_plots(out, log.path, samples, data_info)
        # The final validation and save must fit in a time budget: keep their cost in reserve.
        budget.reserve = cadence.estimate + time.perf_counter() - tick
        if budget.seconds is not None:
            budget.set_total(distributed.broadcast_int(budget.observe(step), device))
        if stop_after is not None and epoch >= stop_after:
            break
    distributed.barrier()
    elapsed = budget.elapsed()
    throughput = images / train_seconds if train_seconds else 0.0
    if info.is_main:
        logger.info(
            "done: %d epochs, %d steps in %.1f min, %.2f images/s (training), "
            "%d validations in %.0f s (%.0f%% of the time), best mIoU %.4f",
            epoch,
            step,
            elapsed / 60,
            throughput,
            cadence.count,
            cadence.seconds,
            100 * cadence.seconds / elapsed if elapsed else 0.0,
            best,
        )
    return TrainResult(
        out,
        epoch,
        step,
        best,
        metrics,
        throughput,
        elapsed,
        history,
        validations=cadence.count,
        val_seconds=cadence.seconds,
    )


def _budget_text(cfg: TrainConfig) -> str:
    parts = [f"{cfg.budget_epochs} epochs"] if cfg.budget_epochs else []
    if cfg.max_minutes is not None:
        parts.append(f"{cfg.max_minutes:g} min")
    return " or ".join(parts)


def _score(metrics: Metrics) -> float:
    return metrics.miou if not math.isnan(metrics.miou) else -math.inf


def _log_epoch(
    epoch: int, step: int, stats: EpochStats, metrics: Metrics | None, elapsed: float
) -> None:
    val = ""
    if metrics is not None:
        per_class = " ".join(
            f"{name} {iou:.3f}"
            for name, iou in zip(metrics.classes, metrics.per_class_iou, strict=True)
        )
        val = f", val mIoU {metrics.miou:.4f} ({per_class})"
    logger.info(
        "epoch %d: step %d, loss %.4f, lr %.2e, %.2f images/s%s, %.1f min",
        epoch,
        step,
        stats.loss,
        stats.lr,
        stats.images_per_s,
        val,
        elapsed / 60,
    )
