"""``fcn train``: the training loop, top to bottom.

build the parts (training/loop/setup.py: data, model, optimizer, loss, loaders, budget) ->
(resume their states) -> time one validation image (the rate validations are planned with,
training/loop/validation.py) -> for each epoch: ``train_one_epoch`` (the budget re-plans
before every step, training/loop/optim.py) -> ``_validate`` all images after the last
epoch, in-budget only what fits -> rank 0 writes ``last.pt`` (and ``best.pt`` when an exact
validation improves), ``metrics.csv``, ``curves.png`` and ``predictions.png`` -> stop at the
epoch or time budget. ``--resume RUN/last.pt`` continues a run exactly: the checkpoint
(training/checkpoint.py) holds model, optimizer, scaler, schedule/budget, epoch, step and RNG
states, and the data order and augmentation depend only on ``(seed, epoch)``
(training/loop/sampling.py).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.checkpoint import (
    Checkpoint,
    CheckpointError,
    TrainingState,
    copy_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    train_config,
)
from training.config import TrainConfig
from training.init.apply import init_config
from training.init.source import InitModel
from training.loop import distributed
from training.loop.epoch import EpochStats, evaluate, train_one_epoch
from training.loop.metrics import Metrics
from training.loop.progress import chance_miou, too_short_advice
from training.loop.runlog import MetricsLog, write_plots
from training.loop.sampling import eval_loader
from training.loop.setup import Parts, build_parts, configure_threads, seed_everything
from training.loop.validation import ValidationPlan
from training.loop.zoom import FULL_ZOOM_FROM, NO_ZOOM_BELOW, zoom_range

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
    advice: str | None = None  # what to change when the run was too short to learn


def resume_config(path: str | os.PathLike, **overrides: Any) -> TrainConfig:
    """The configuration saved in checkpoint ``path``, with ``overrides`` applied.

    Only runtime options should be overridden (``out``, ``device``, ``workers``, ``epochs``,
    ``max_minutes``); anything else makes the continuation differ from the original run.
    """
    try:
        cfg = train_config(load_checkpoint(path).config)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; cannot resume") from exc
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise ValueError(f"unknown training option {key!r}")
        setattr(cfg, key, value)
    cfg.__post_init__()
    return cfg


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
    started = time.perf_counter()  # a time budget counts from here: data loading included
    init = None
    if cfg.init is not None and resume is None:  # a resumed run has its own weights
        cfg, init = init_config(cfg)
    info, device = distributed.setup(cfg.device)
    try:
        return _train(cfg, info, device, resume, stop_after, started, init)
    finally:
        distributed.cleanup()


@dataclass
class _Progress:
    """Where the run stands (restored on ``--resume``) and what it has done in this process."""

    epoch: int = 0
    step: int = 0
    best: float = -math.inf
    images: int = 0  # training images seen by this process's epochs, all ranks
    train_seconds: float = 0.0
    save_seconds: float = 0.0  # the last epoch end's checkpoint and plots (a guess until then)
    zoom_logged: tuple[float, float] | None = None  # the zoom range last reported
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Validation:
    """One validation's outcome (``metrics`` None: skipped or no validation set)."""

    metrics: Metrics | None = None
    samples: list = field(default_factory=list)
    images: int = 0
    exact: bool = True  # the current weights were scored on every image (or none exist)


def _train(
    cfg: TrainConfig,
    info: distributed.DistInfo,
    device: torch.device,
    resume: str | os.PathLike | None,
    stop_after: int | None,
    started: float,
    init: InitModel | None = None,
) -> TrainResult:
    configure_threads(info, device)
    seed_everything(cfg.seed)
    parts = build_parts(cfg, info, device, started, init)
    progress = _Progress(save_seconds=_save_guess(cfg, parts.model))
    if resume is not None:
        _restore(parts, progress, load_checkpoint(resume, map_location=device), resume)
    log = _start_log(cfg, parts, progress, info, device)
    plan = ValidationPlan(
        [parts.val_ds.image_size(i) for i in range(len(parts.val_ds))], share=cfg.val_share
    )
    _probe_validation(cfg, parts, plan, device)
    _warn_if_late(parts, plan, info)
    max_epochs = cfg.budget_epochs or 10**9
    validated = _Validation()
    _keep_reserve(parts, plan, progress)
    while progress.epoch < max_epochs and not parts.budget.done(progress.step):
        stats = _train_epoch(cfg, parts, progress, info, device)
        _replan(parts, progress, device)
        last = (
            progress.epoch >= max_epochs
            or parts.budget.done(progress.step)
            or (stop_after is not None and progress.epoch >= stop_after)
        )
        tick = time.perf_counter()
        validated = _validate(cfg, parts, plan, last, info, device)
        _save_epoch(cfg, parts, progress, log, stats, validated)
        if not last:  # the cost of an epoch end recurs; the reserve holds the last one's
            parts.budget.add_overhead(time.perf_counter() - tick)
        if last:
            break
        _keep_reserve(parts, plan, progress)
        _replan(parts, progress, device)
    if not validated.exact:
        # The budget ran out after an in-budget validation or none: score the final weights.
        validated = _validate(cfg, parts, plan, True, info, device)
        _save_epoch(cfg, parts, progress, log, stats, validated)
    distributed.barrier()
    return _finish(cfg, parts, progress, plan, validated.metrics, info)


def _restore(
    parts: Parts, progress: _Progress, checkpoint: Checkpoint, source: str | os.PathLike
) -> None:
    """Continue from ``checkpoint``: weights, optimizer, scaler, schedule and RNG states."""
    state = checkpoint.training_state(source)
    parts.saved.load_state_dict(checkpoint.model)
    if parts.ema is not None:
        if state.raw_model is None:
            raise CheckpointError(f"{source} was not trained with --ema; cannot resume with it")
        parts.model.load_state_dict(state.raw_model)
        parts.ema.n_averaged.fill_(state.ema_updates)
    parts.optimizer.load_state_dict(state.optimizer)
    parts.scaler.load_state_dict(state.scaler)
    parts.budget.load_state_dict(state.scheduler)
    set_rng_state(state.rng)
    logger.info(
        "resumed %s at epoch %d, step %d (best mIoU %.4f)",
        source,
        checkpoint.epoch,
        checkpoint.step,
        checkpoint.best_metric,
    )
    progress.epoch, progress.step = checkpoint.epoch, checkpoint.step
    progress.best = checkpoint.best_metric


def _start_log(
    cfg: TrainConfig,
    parts: Parts,
    progress: _Progress,
    info: distributed.DistInfo,
    device: torch.device,
) -> MetricsLog | None:
    """Rank 0's ``metrics.csv`` (continued on resume) and the run's opening line."""
    if not info.is_main:
        return None
    log = MetricsLog(Path(cfg.out) / "metrics.csv", parts.data.classes)
    log.start(keep_epochs=progress.epoch)
    logger.info(
        "training %s (%s) on %s in %s: %d train / %d val images, %d steps per epoch of %d "
        "images, budget %s -> %s",
        cfg.arch,
        cfg.model_options,
        device,
        _precision_text(cfg, parts.bf16, device),
        len(parts.train_ds),
        len(parts.val_ds),
        len(parts.train_loader),
        len(parts.train_loader) * cfg.batch_size * info.world_size,
        _budget_text(cfg),
        cfg.out,
    )
    return log


def _train_epoch(
    cfg: TrainConfig,
    parts: Parts,
    progress: _Progress,
    info: distributed.DistInfo,
    device: torch.device,
) -> EpochStats:
    """One epoch (or what is left of the budget); advances ``progress``."""
    parts.train_loader.sampler.set_epoch(progress.epoch)
    _set_zoom(cfg, parts, progress, info)
    ema, model = parts.ema, parts.model
    stats, progress.step = train_one_epoch(
        parts.net,
        parts.train_loader,
        parts.loss_fn,
        parts.optimizer,
        parts.scaler,
        parts.budget,
        progress.step,
        device=device,
        amp=cfg.amp,
        bf16=parts.bf16,
        grad_clip=cfg.grad_clip,
        channels_last=cfg.channels_last,
        progress=info.is_main,
        description=f"epoch {progress.epoch + 1}",
        ema=(lambda: ema.update_parameters(model)) if ema is not None else None,
    )
    progress.epoch += 1
    progress.images += stats.images * info.world_size
    progress.train_seconds += stats.seconds
    return stats


def _set_zoom(
    cfg: TrainConfig, parts: Parts, progress: _Progress, info: distributed.DistInfo
) -> None:
    """This epoch's zoom range, from the run's planned length (training/loop/zoom.py)."""
    augment = cfg.data.augment
    if not augment.zoom_by_length:
        return
    planned = parts.budget.planned_steps()
    zoom = zoom_range(augment.scale_range, planned)
    parts.train_loader.sampler.set_zoom(zoom)
    shown = progress.zoom_logged
    moved = shown is None or max(abs(a - b) for a, b in zip(zoom, shown, strict=True)) > 0.05
    if info.is_main and moved:
        progress.zoom_logged = zoom
        length = f"{planned:,} planned steps" if planned is not None else "speed not measured yet"
        logger.info(
            "random zoom %.2f-%.2f (%s; none under %s steps, the whole %.2f-%.2f from %s)",
            *zoom,
            length,
            f"{NO_ZOOM_BELOW:,}",
            *augment.scale_range,
            f"{FULL_ZOOM_FROM:,}",
        )


def _probe_validation(
    cfg: TrainConfig, parts: Parts, plan: ValidationPlan, device: torch.device
) -> None:
    """Time one prediction of the cheapest validation image: the rate validations are
    planned with before one has run (every rank probes for itself)."""
    if not len(parts.val_ds):
        return
    index = plan.probe_index()
    loader = _subset_loader(parts, [index], batch_size=1, info=distributed.DistInfo())
    result = _evaluate_saved(cfg, parts, loader, device)
    plan.measured(result.seconds, [index])


def _subset_loader(parts: Parts, indices: list[int], batch_size: int, info: distributed.DistInfo):
    """A loader over the validation images ``indices`` (full size, no workers)."""
    return eval_loader(
        parts.val_ds,
        batch_size=batch_size,
        workers=0,
        ignore_index=parts.data.ignore_index,
        info=info,
        indices=indices,
    )


def _evaluate_saved(cfg: TrainConfig, parts: Parts, loader, device: torch.device, **options):
    """Score the weights that would be saved (the EMA's when on) on ``loader``."""
    return evaluate(
        parts.saved,
        loader,
        parts.data.num_classes,
        device=device,
        amp=cfg.amp,
        bf16=parts.bf16,
        channels_last=cfg.channels_last,
        **options,
    )


def _warn_if_late(parts: Parts, plan: ValidationPlan, info: distributed.DistInfo) -> None:
    """Say so at once when the final evaluation alone does not fit in the time left: the run
    still scores its final model exactly, and ends late."""
    budget = parts.budget
    if budget.seconds is None or not info.is_main:
        return
    needed, left = plan.estimate(), budget.seconds - budget.elapsed()
    if needed > left:
        logger.warning(
            "the final evaluation of %d validation images needs about %.0f s at the measured "
            "speed, and %.0f s of the budget are left: the run will end about %.0f s late "
            "(a larger --max-minutes, or fewer or smaller validation images, keep the budget)",
            len(parts.val_ds),
            needed,
            max(left, 0.0),
            needed - max(left, 0.0),
        )


def _save_guess(cfg: TrainConfig, model: nn.Module) -> float:
    """Seconds an epoch end's checkpoint and plots may take, until one was measured.

    The checkpoint holds the weights and two AdamW moments per weight (at ~100 MB/s, a slow
    disk); a first plot pays matplotlib's import.
    """
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return 0.2 + 3 * weight_bytes / 100e6 + (1.0 if cfg.plots else 0.0)


def _keep_reserve(parts: Parts, plan: ValidationPlan, progress: _Progress) -> None:
    """A time budget keeps the final evaluation and save's estimated cost in reserve."""
    parts.budget.reserve = plan.estimate() + progress.save_seconds


def _replan(parts: Parts, progress: _Progress, device: torch.device) -> None:
    """Re-plan a time budget at an epoch end (rank 0's plan for all ranks)."""
    budget = parts.budget
    if budget.seconds is not None:
        budget.set_total(distributed.broadcast_int(budget.observe(progress.step), device))
        budget.pause()


def _validate(
    cfg: TrainConfig,
    parts: Parts,
    plan: ValidationPlan,
    last: bool,
    info: distributed.DistInfo,
    device: torch.device,
) -> _Validation:
    """Validate the saved weights on what the plan chooses (rank 0's choice for all)."""
    count = len(parts.val_ds)
    if not count:
        return _Validation()
    budget = parts.budget
    chosen = plan.choose(last=last, elapsed=budget.elapsed(), time_left=budget.time_left())
    size = distributed.broadcast_int(len(chosen), device)
    if size == 0:
        return _Validation(exact=False)
    indices = list(range(count)) if size == count else sorted(plan.order[:size])
    loader = parts.val_loader
    if size < count:
        loader = _subset_loader(parts, indices, batch_size=cfg.batch_size, info=info)
    distributed.broadcast_buffers(parts.model)
    if parts.ema is not None:  # the average of rank 0's buffers, as every rank's
        distributed.broadcast_buffers(parts.ema.module)
    keep = cfg.grid_images if (info.is_main and cfg.plots) else 0
    result = _evaluate_saved(cfg, parts, loader, device, keep=keep, progress=info.is_main)
    plan.spent(result.seconds, indices)
    metrics = result.matrix.compute(parts.data.classes)
    return _Validation(metrics, result.samples, size, exact=size == count)


def _update_best(progress: _Progress, validated: _Validation, *, validates: bool) -> bool:
    """Whether this epoch is the best so far (and record its score).

    Without a validation set every epoch is "best"; with one, only an exact validation
    (every image) can be: a subset's score is not comparable.
    """
    metrics = validated.metrics if validated.exact else None
    improved = not validates or (metrics is not None and _score(metrics) > progress.best)
    if metrics is not None and improved:
        progress.best = _score(metrics)
    return improved


def _checkpoint(parts: Parts, progress: _Progress, metrics: Metrics | None) -> Checkpoint:
    raw = parts.model.state_dict() if parts.ema is not None else None
    return Checkpoint(
        model=parts.saved.state_dict(),
        config=parts.config,
        epoch=progress.epoch,
        step=progress.step,
        best_metric=progress.best,
        metrics=metrics.to_dict() if metrics is not None else None,
        training=TrainingState(
            optimizer=parts.optimizer.state_dict(),
            scheduler=parts.budget.state_dict(),
            scaler=parts.scaler.state_dict(),
            rng=rng_state(),
            raw_model=raw,
            ema_updates=int(parts.ema.n_averaged) if parts.ema is not None else 0,
        ),
    )


def _save_epoch(
    cfg: TrainConfig,
    parts: Parts,
    progress: _Progress,
    log: MetricsLog | None,
    stats: EpochStats,
    validated: _Validation,
) -> None:
    """``last.pt`` (and ``best.pt``), the ``metrics.csv`` row, the log line, plots (rank 0)."""
    tick = time.perf_counter()
    improved = _update_best(progress, validated, validates=len(parts.val_ds) > 0)
    if log is None:
        return
    out, metrics = Path(cfg.out), validated.metrics
    save_checkpoint(out / "last.pt", _checkpoint(parts, progress, metrics))
    if improved:
        copy_checkpoint(out / "last.pt", out / "best.pt")
    elapsed = parts.budget.elapsed()
    row = log.append(progress.epoch, progress.step, stats, metrics, elapsed, validated.images)
    progress.history.append(row)
    _log_epoch(progress.epoch, progress.step, stats, validated, len(parts.val_ds), elapsed)
    if cfg.plots:
        write_plots(out, log.path, validated.samples, parts.data)
    progress.save_seconds = time.perf_counter() - tick


def _finish(
    cfg: TrainConfig,
    parts: Parts,
    progress: _Progress,
    plan: ValidationPlan,
    metrics: Metrics | None,
    info: distributed.DistInfo,
) -> TrainResult:
    """The run's summary (logged by rank 0, with advice when it was too short to learn)."""
    elapsed = parts.budget.elapsed()
    throughput = progress.images / progress.train_seconds if progress.train_seconds else 0.0
    advice = too_short_advice(
        steps=progress.step,
        warmup=parts.budget.warmup,
        miou=metrics.miou if metrics is not None else None,
        chance=chance_miou(metrics.confusion_matrix) if metrics is not None else None,
        elapsed=elapsed,
        train_seconds=progress.train_seconds,
        val_share=cfg.val_share,
    )
    if info.is_main:
        logger.info(
            "done: %d epochs, %d steps in %.1f min, %.2f images/s (training), "
            "%d validations in %.0f s (%.0f%% of the time), best mIoU %.4f",
            progress.epoch,
            progress.step,
            elapsed / 60,
            throughput,
            plan.count,
            plan.seconds,
            100 * plan.seconds / elapsed if elapsed else 0.0,
            progress.best,
        )
        if advice is not None:
            logger.warning(advice)
    return TrainResult(
        Path(cfg.out),
        progress.epoch,
        progress.step,
        progress.best,
        metrics,
        throughput,
        elapsed,
        progress.history,
        validations=plan.count,
        val_seconds=plan.seconds,
        advice=advice,
    )


def _precision_text(cfg: TrainConfig, bf16: bool, device: torch.device) -> str:
    if bf16:
        return "bfloat16 autocast"
    return "float16 AMP" if cfg.amp and device.type == "cuda" else "float32"


def _budget_text(cfg: TrainConfig) -> str:
    parts = [f"{cfg.budget_epochs} epochs"] if cfg.budget_epochs else []
    if cfg.max_minutes is not None:
        parts.append(f"{cfg.max_minutes:g} min")
    return " or ".join(parts)


def _score(metrics: Metrics) -> float:
    return metrics.miou if not math.isnan(metrics.miou) else -math.inf


def _log_epoch(
    epoch: int,
    step: int,
    stats: EpochStats,
    validated: _Validation,
    val_images: int,
    elapsed: float,
) -> None:
    val = ""
    metrics = validated.metrics
    if metrics is not None:
        per_class = " ".join(
            f"{name} {iou:.3f}"
            for name, iou in zip(metrics.classes, metrics.per_class_iou, strict=True)
        )
        subset = "" if validated.exact else f" on {validated.images} of {val_images} images"
        val = f", val mIoU {metrics.miou:.4f}{subset} ({per_class})"
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
