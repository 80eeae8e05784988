"""One training epoch and one evaluation pass: the two halves of the training loop.

Both keep the device busy: the loss is accumulated on the device and read back only when
progress is shown (``.item()`` is a host sync that would stall a GPU pipeline every step),
and evaluation counts the confusion matrix on the device. Evaluation runs in the training's
precision (bfloat16 autocast on CPUs that have it, where it is faster than float32; measured in
docs/benchmarks.md) and predicts very large images tile by tile.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from service.backends.cpu import cpu_has_bf16
from service.engine.tiling import blended_strips
from training.loop.distributed import broadcast_int
from training.loop.metrics import ConfusionMatrix
from training.loop.optim import StepBudget
from training.loop.progress import Progress

logger = logging.getLogger(__name__)


@dataclass
class EpochStats:
    """What one call of ``train_one_epoch`` did."""

    loss: float  # mean training loss over the epoch's steps
    steps: int
    images: int
    seconds: float
    lr: float  # the last step's learning rate

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EvalResult:
    """A confusion matrix over the whole (all-reduced) evaluation set and a few samples."""

    matrix: ConfusionMatrix
    samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    seconds: float = 0.0


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX; Linux only) and no
    ``ONEDNN_MAX_CPU_ISA`` cap takes those kernels away (serving's reader, one rule for both).

    Elsewhere oneDNN emulates bfloat16 and is slower than float32, so it must stay off.
    """
    return cpu_has_bf16()


# Models whose CPU training stays float32 unless ``--bf16`` asks otherwise. FCN-VGG's backward
# pass under CPU bfloat16 autocast aborted the process with glibc heap corruption on AMX CPUs
# (torch 2.14.1; the forward pass alone and float32 training were fine), and a default must
# never crash: float32 is the precision that works on every CPU.
CPU_BF16_UNSAFE = frozenset({"fcn32s", "fcn16s", "fcn8s"})


def use_cpu_bf16(requested: bool | None, device: torch.device, arch: str | None = None) -> bool:
    """``--bf16`` resolved: only on CPU; ``None`` means "when the CPU supports it natively and
    the model trains safely in it" (not the ``CPU_BF16_UNSAFE`` ones)."""
    if device.type != "cpu":
        return False
    if requested is not None:
        return requested
    return arch not in CPU_BF16_UNSAFE and cpu_has_native_bf16()


def autocast(device: torch.device, amp: bool = False, bf16: bool = False):
    """float16 autocast on CUDA with ``amp``, bfloat16 on CPU with ``bf16``, else a no-op.

    Weights, gradients and optimizer state stay float32 either way; only the convolutions
    and matrix products run in half precision.
    """
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    if bf16 and device.type == "cpu":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return nullcontext()


def to_device(
    images: torch.Tensor, masks: torch.Tensor, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, masks.to(device, non_blocking=True)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    budget: StepBudget,
    step: int,
    *,
    device: torch.device,
    amp: bool = False,
    bf16: bool = False,
    grad_clip: float | None = None,
    channels_last: bool = False,
    progress: bool = False,
    description: str = "train",
    ema: Callable[[], None] | None = None,
) -> tuple[EpochStats, int]:
    """Train until the loader is exhausted or the budget is spent.

    Args:
        model: the network (DDP-wrapped in distributed runs), in train mode on return.
        loader: yields ``(images (N, C, H, W), masks (N, H, W))`` batches.
        loss_fn: ``loss(logits, masks) -> scalar``.
        optimizer: its learning rate is set from ``budget.lr(step)`` before each step.
        scaler: gradient scaler (disabled unless AMP on CUDA).
        budget: the learning-rate schedule and stopping rule.
        step: optimizer steps done before this epoch.
        device: where the model lives.
        amp: float16 autocast (CUDA only).
        bf16: bfloat16 autocast (CPU only; faster on CPUs with AVX512-BF16/AMX, see
            docs/benchmarks.md).
        grad_clip: clip the gradients' global L2 norm to this value.
        channels_last: feed NHWC tensors (faster convolutions on CPU and recent GPUs).
        progress: show the steps' progress (training/loop/progress.py: a bar on a
            terminal, log lines elsewhere).
        description: the progress label.
        ema: called after each optimizer step (updates the weights' moving average).

    Returns:
        ``(EpochStats, step after the epoch)``.
    """
    model.train()
    total_loss = torch.zeros((), device=device)
    steps = images = 0
    lr = budget.lr(step)
    bar = None
    if progress:
        bar = Progress(
            description, total=min(len(loader), max(0, budget.total - step)), unit="step"
        )
    start = time.perf_counter()

    def shown() -> dict[str, str]:
        seconds = time.perf_counter() - start
        return {
            "run step": f"{step}/{budget.total}" if budget.total < 10**9 else str(step),
            "loss": f"{total_loss.item() / max(steps, 1):.4f}",  # a host sync: only when shown
            "lr": f"{lr:.2e}",
            "images/s": f"{images / seconds:.2f}" if seconds > 0 else "?",
        }

    for batch_images, batch_masks in loader:
        if budget.needs_refresh(step):
            budget.set_total(broadcast_int(budget.observe(step), device))
        if budget.done(step):
            break
        lr = budget.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch_images, batch_masks = to_device(batch_images, batch_masks, device, channels_last)
        with autocast(device, amp, bf16):
            logits = model(batch_images)
        loss = loss_fn(logits.float(), batch_masks)  # softmax and Dice sums in float32
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema()
        total_loss += loss.detach()
        step += 1
        steps += 1
        images += batch_images.shape[0]
        if bar is not None:
            epoch_steps = min(len(loader), steps + max(0, budget.total - step))
            per_step = (time.perf_counter() - start) / steps
            bar.update(total=epoch_steps, eta=budget.eta(step, per_step), fields=shown)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    mean_loss = total_loss.item() / steps if steps else float("nan")
    return EpochStats(mean_loss, steps, images, seconds, lr), step


# Validation images with more pixels than this are predicted in overlapping tiles (the
# serving engine's blending, service/engine/tiling.py), so memory stays bounded on any image size.
# Smaller ones run whole: tiling costs extra pixels where tiles overlap.
EVAL_TILE = 1024
EVAL_TILE_OVERLAP = 128
EVAL_TILE_THRESHOLD = 2048 * 2048


def predict_tiled(
    model: nn.Module,
    image: torch.Tensor,
    num_classes: int,
    *,
    tile: int = EVAL_TILE,
    overlap: int = EVAL_TILE_OVERLAP,
    precision: Any = None,
) -> torch.Tensor:
    """Class indices ``(H, W)`` of one ``(C, H, W)`` image from blended overlapping tiles.

    ``precision`` is a context manager factory (autocast) entered around each tile.
    """
    height, width = image.shape[-2:]
    context = precision or nullcontext

    def run_tile(y: int, x: int, h: int, w: int) -> np.ndarray:
        with context():
            logits = model(image[None, :, y : y + h, x : x + w])
        return logits[0].detach().float().cpu().numpy()

    prediction = torch.empty((height, width), dtype=torch.int64)
    for y0, weighted, _ in blended_strips(height, width, num_classes, tile, overlap, run_tile):
        rows = weighted.shape[1]
        prediction[y0 : y0 + rows] = torch.from_numpy(weighted.argmax(0))
    return prediction.to(image.device)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    *,
    device: torch.device,
    amp: bool = False,
    bf16: bool = False,
    channels_last: bool = False,
    keep: int = 0,
    tile_threshold: int = EVAL_TILE_THRESHOLD,
    progress: bool = False,
) -> EvalResult:
    """Predict every batch and count the confusion matrix, summed over all ranks.

    Args:
        model: the bare network (not the DDP wrapper: ranks may hold different batch counts).
        loader: ``(images, masks)`` batches; masks may hold the ignore index.
        num_classes: K.
        device: where the model lives.
        amp: float16 autocast (CUDA only).
        bf16: bfloat16 autocast (CPU only), as in training.
        channels_last: feed NHWC tensors.
        keep: how many ``(image, mask, prediction)`` CPU samples to return for plots.
        tile_threshold: images with more pixels are predicted tile by tile.
        progress: show the images' progress (a bar on a terminal, log lines elsewhere).

    Returns:
        ``EvalResult`` with the all-reduced matrix and up to ``keep`` samples of this rank.
    """
    start = time.perf_counter()
    model.eval()
    matrix = ConfusionMatrix(num_classes, device)
    samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    precision = functools.partial(autocast, device, amp, bf16)
    bar = None
    if progress:
        total = len(getattr(loader, "dataset", ()))
        sampler = getattr(loader, "batch_sampler", None)
        if isinstance(getattr(sampler, "batches", None), list):
            total = sum(map(len, sampler.batches))
        bar = Progress("validating", total=total, unit="image")
    for batch_images, batch_masks in loader:
        batch_images, batch_masks = to_device(batch_images, batch_masks, device, channels_last)
        height, width = batch_images.shape[-2:]
        if height * width > tile_threshold:
            prediction = torch.stack(
                [
                    predict_tiled(model, image, num_classes, precision=precision)
                    for image in batch_images
                ]
            )
        else:
            with precision():
                logits = model(batch_images)
            prediction = logits.argmax(1)
        matrix.update(prediction, batch_masks)
        for i in range(min(keep - len(samples), len(prediction))):
            samples.append(
                (batch_images[i].float().cpu(), batch_masks[i].cpu(), prediction[i].cpu())
            )
        if bar is not None:
            bar.update(len(prediction))
    if bar is not None:
        bar.close()
    matrix.all_reduce()
    return EvalResult(matrix, samples, time.perf_counter() - start)
