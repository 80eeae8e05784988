"""The loop's parts: learning-rate schedule, step budget, seeded sampling, epoch, evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from tests.training.tiny_runs import tiny_config
from training.data.datasets import build_datasets
from training.loop import optim
from training.loop.distributed import DistInfo
from training.loop.epoch import (
    autocast,
    cpu_has_native_bf16,
    evaluate,
    predict_tiled,
    train_one_epoch,
    use_cpu_bf16,
)
from training.loop.metrics import ConfusionMatrix
from training.loop.optim import StepBudget, get_lr
from training.loop.sampling import EpochSampler, SeededItems, SizeBatches, build_loaders
from training.loop.zoom import FULL_ZOOM_FROM, NO_ZOOM_BELOW, zoom_range

pytestmark = pytest.mark.usefixtures("single_thread")


def budget_for(cfg, **kwargs) -> StepBudget:
    """The budget ``cfg`` gives (as the training loop builds it)."""
    return StepBudget(
        base_lr=cfg.base_lr,
        schedule=cfg.schedule,
        warmup=cfg.warmup,
        epochs=cfg.budget_epochs,
        max_minutes=cfg.max_minutes,
        **kwargs,
    )


def test_get_lr_warmup_then_cosine_or_poly_to_zero() -> None:
    kw = {"base_lr": 1.0, "warmup": 10, "total": 110}
    assert get_lr(0, schedule="cosine", **kw) == pytest.approx(0.1)
    assert get_lr(9, schedule="cosine", **kw) == pytest.approx(1.0)
    assert get_lr(10, schedule="cosine", **kw) == pytest.approx(1.0)
    assert get_lr(60, schedule="cosine", **kw) == pytest.approx(0.5)
    assert get_lr(110, schedule="cosine", **kw) == pytest.approx(0.0, abs=1e-12)
    assert get_lr(60, schedule="poly", **kw) == pytest.approx(0.5**0.9)
    assert get_lr(110, schedule="poly", **kw) == 0.0
    assert get_lr(80, schedule="constant", **kw) == 1.0


def test_epoch_budget_and_warmup_units(tmp_path) -> None:
    cfg = tiny_config(tmp_path, tmp_path, epochs=3, warmup="2e")
    budget = budget_for(cfg, steps_per_epoch=20)
    assert budget.total == 60 and budget.warmup == 40
    # A warmup longer than a quarter of the run is shortened to that quarter.
    assert budget.lr(14) == pytest.approx(cfg.base_lr)
    assert not budget.done(59) and budget.done(60)


def test_time_budget_estimates_total_steps_so_decay_ends_at_the_deadline(
    tmp_path, monkeypatch
) -> None:
    clock = [0.0]
    monkeypatch.setattr(optim.time, "perf_counter", lambda: clock[0])
    cfg = tiny_config(tmp_path, tmp_path, epochs=None, max_minutes=1.0, warmup="5")
    budget = budget_for(cfg, steps_per_epoch=1000)
    budget.reserve = 4.0  # kept for the final evaluation
    clock[0] = 3.0  # start-up before the first step
    step = 0
    while not budget.done(step):
        if budget.needs_refresh(step):
            budget.observe(step)
        clock[0] += 0.5 if step else 2.0  # a slow first step, then 0.5 s per step
        step += 1
    # Re-planned before every step: the run ends within half a step of the deadline.
    assert 60 - 4 - 0.25 <= clock[0] <= 60 - 4 + 0.25
    assert budget.lr(step - 1) < 0.01 * cfg.base_lr  # cosine decayed to ~0
    state = budget.state_dict()
    assert state["elapsed"] == pytest.approx(clock[0] - 0.0)


def test_sampler_order_depends_only_on_seed_and_epoch() -> None:
    def epoch(seed: int, e: int, rank: int = 0, world: int = 1) -> list[tuple]:
        info = DistInfo(rank=rank, world_size=world)
        sampler = EpochSampler(10, epoch_size=24, batch_size=4, seed=seed, info=info)
        sampler.set_epoch(e)
        return list(sampler)

    first = epoch(0, 0)
    assert len(first) == 24 and first == epoch(0, 0)
    assert first != epoch(0, 1) and first != epoch(1, 0)
    assert sorted(i for i, *_ in first[:10]) == list(range(10))  # a full pass before repeats
    shards = [epoch(0, 0, rank=r, world=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 12
    assert [x for pair in zip(*shards, strict=True) for x in pair] == first


def test_sampler_pads_to_whole_batches_on_every_rank() -> None:
    info = DistInfo(rank=1, world_size=3)
    sampler = EpochSampler(5, epoch_size=0, batch_size=4, seed=0, info=info)
    assert len(sampler) == 4 and len(list(sampler)) == 4


def test_seeded_items_are_reproducible(demo_root, tmp_path) -> None:
    train_ds, _, _ = build_datasets(tiny_config(demo_root, tmp_path).data)
    items = SeededItems(train_ds)
    a, b, c = items[(3, 11, None)], items[(3, 11, None)], items[(3, 12, None)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_sampler_hands_its_zoom_range_to_every_item() -> None:
    sampler = EpochSampler(6, epoch_size=8, batch_size=4, seed=0, info=DistInfo())
    assert {zoom for *_, zoom in sampler} == {None}  # the transform's own range
    sampler.set_zoom((0.8, 1.25))
    assert {zoom for *_, zoom in sampler} == {(0.8, 1.25)}


@pytest.mark.parametrize(
    ("planned", "expected"),
    [
        (None, (1.0, 1.0)),  # a time budget before its speed is measured: a short run
        (200, (1.0, 1.0)),
        (NO_ZOOM_BELOW, (1.0, 1.0)),
        ((NO_ZOOM_BELOW + FULL_ZOOM_FROM) // 2, (0.5**0.5, 2.0**0.5)),
        (FULL_ZOOM_FROM, (0.5, 2.0)),
        (50_000, (0.5, 2.0)),
    ],
)
def test_zoom_grows_with_the_planned_length_of_the_run(planned, expected) -> None:
    assert zoom_range((0.5, 2.0), planned) == pytest.approx(expected)


def test_a_time_budget_has_no_planned_length_until_a_step_is_timed() -> None:
    common = dict(base_lr=1e-3, schedule="cosine", warmup="0", steps_per_epoch=4)
    assert StepBudget(epochs=3, max_minutes=None, **common).planned_steps() == 12
    budget = StepBudget(epochs=None, max_minutes=60.0, **common)
    assert budget.planned_steps() is None
    budget.observe(0)
    budget.observe(2)  # two steps timed
    assert budget.planned_steps() == budget.total > 2


def test_loaders_give_identical_batches_with_and_without_workers(demo_root, tmp_path) -> None:
    """Also with a zoom range set after the loaders were built: it reaches persistent workers."""
    train_ds, val_ds, info = build_datasets(tiny_config(demo_root, tmp_path).data)
    batches = []
    for workers, zoom in ((0, None), (2, None), (0, (1.0, 1.0)), (2, (1.0, 1.0))):
        loader, _ = build_loaders(
            train_ds,
            val_ds,
            batch_size=4,
            epoch_size=8,
            workers=workers,
            seed=0,
            ignore_index=255,
            info=DistInfo(),
        )
        loader.sampler.set_epoch(1)
        loader.sampler.set_zoom(zoom)
        batches.append(torch.cat([images for images, _ in loader]))
    assert torch.equal(batches[0], batches[1]) and torch.equal(batches[2], batches[3])
    assert not torch.equal(batches[0], batches[2])  # the zoom changed the crops


class PixelNet(nn.Module):
    """A 1x1 convolution: tiny and deterministic."""

    def __init__(self, channels: int = 3, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_train_one_epoch_sets_lr_per_step_and_stops_on_budget(demo_root, tmp_path) -> None:
    cfg = tiny_config(demo_root, tmp_path, epochs=1, epoch_size=16, warmup="0")
    train_ds, val_ds, _ = build_datasets(cfg.data)
    loader, _ = build_loaders(
        train_ds,
        val_ds,
        batch_size=4,
        epoch_size=16,
        workers=0,
        seed=0,
        ignore_index=255,
        info=DistInfo(),
    )
    torch.manual_seed(0)
    model = PixelNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    budget = budget_for(cfg, steps_per_epoch=len(loader))
    budget.set_total(3)  # stop after 3 of the 4 steps
    stats, step = train_one_epoch(
        model,
        loader,
        nn.CrossEntropyLoss(ignore_index=255),
        optimizer,
        scaler,
        budget,
        0,
        device=torch.device("cpu"),
        grad_clip=1.0,
    )
    assert (step, stats.steps, stats.images) == (3, 3, 12)
    assert math.isfinite(stats.loss) and stats.images_per_s > 0
    assert optimizer.param_groups[0]["lr"] == pytest.approx(budget.lr(2))


def test_evaluate_matches_a_direct_count(demo_root, tmp_path) -> None:
    cfg = tiny_config(demo_root, tmp_path)
    _, val_ds, info = build_datasets(cfg.data, split="all")
    torch.manual_seed(0)
    model = PixelNet()
    loader = DataLoader(val_ds, batch_size=5)
    result = evaluate(model, loader, info.num_classes, device=torch.device("cpu"), keep=3)
    expected = ConfusionMatrix(info.num_classes)
    with torch.no_grad():
        for index in range(len(val_ds)):
            image, mask = val_ds[index]
            expected.update(model(image[None]).argmax(1)[0], mask)
    assert torch.equal(result.matrix.matrix, expected.matrix)
    assert len(result.samples) == 3 and result.samples[0][0].shape == val_ds[0][0].shape


def test_precision_choice() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_cpu_bf16(None, cpu) == cpu_has_native_bf16()  # auto: native support only
    assert use_cpu_bf16(True, cpu) and not use_cpu_bf16(False, cpu)
    assert not use_cpu_bf16(True, cuda)  # CUDA uses --amp (float16) instead
    conv = nn.Conv2d(1, 1, 1)
    with autocast(cpu, bf16=True):
        assert conv(torch.zeros(1, 1, 2, 2)).dtype == torch.bfloat16
    with autocast(cpu, amp=True):  # --amp is CUDA only: CPU stays float32
        assert conv(torch.zeros(1, 1, 2, 2)).dtype == torch.float32


def test_evaluate_tiles_large_images_with_the_same_counts(demo_root, tmp_path) -> None:
    # A 1x1 convolution sees no context, so blended tiles must reproduce the whole-image
    # prediction exactly: the tiled path may change memory, never the metric.
    cfg = tiny_config(demo_root, tmp_path)
    _, val_ds, info = build_datasets(cfg.data, split="all")
    torch.manual_seed(0)
    model = PixelNet()
    loader = DataLoader(val_ds, batch_size=2)
    cpu = torch.device("cpu")
    whole = evaluate(model, loader, info.num_classes, device=cpu)
    tiled = evaluate(model, loader, info.num_classes, device=cpu, tile_threshold=0)
    assert torch.equal(whole.matrix.matrix, tiled.matrix.matrix)
    assert whole.matrix.matrix.sum() > 0
    image = val_ds[0][0]
    prediction = predict_tiled(model, image, info.num_classes, tile=24, overlap=8)
    with torch.no_grad():
        assert torch.equal(prediction, model(image[None]).argmax(1)[0])


def test_size_batches_group_equal_sizes_and_cover_every_index_once() -> None:
    sizes = [(10, 10), (20, 10), (10, 10), (20, 10), (10, 10), (400, 400), (400, 400)]
    batches = list(SizeBatches(sizes, batch_size=2, info=DistInfo(), max_pixels=200_000))
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    for batch in batches:
        assert len({sizes[i] for i in batch}) == 1  # no padding between sizes
        assert len(batch) <= 2
    assert [5] in batches and [6] in batches  # 160,000 pixels each: one per batch
    shards = [SizeBatches(sizes, batch_size=2, info=DistInfo(rank=r, world_size=2)) for r in (0, 1)]
    indices = [i for shard in shards for batch in shard for i in batch]
    assert sorted(indices) == list(range(len(sizes)))
