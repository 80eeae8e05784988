"""Datasets: layouts, pairing, splitting, mask mapping, image modes, collate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import AugmentConfig, DataConfig, OptionError
from training.data.datasets import build_datasets, list_pairs, pad_collate
from training.data.layouts import Pair, split_pairs


def config(root: Path, **options) -> DataConfig:
    return DataConfig(root=str(root), **options)


def test_mask_values_map_to_class_indices(make_folder_dataset) -> None:
    root = make_folder_dataset(values=(0, 255, 255, 0))
    _, val_ds, info = build_datasets(config(root, mask_values=[0, 255]), split="all")
    assert (info.num_classes, info.classes, info.in_channels) == (2, ["class_0", "class_1"], 3)
    image, mask = val_ds[0]
    assert image.shape == (3, 24, 32) and image.dtype == torch.float32
    assert mask.dtype == torch.int64 and mask.shape == (24, 32)
    assert mask.flatten()[:4].tolist() == [0, 1, 1, 0]


def test_any_mask_values_list_maps_in_order(make_folder_dataset) -> None:
    root = make_folder_dataset(values=(10, 20, 30, 255))
    _, ds, info = build_datasets(config(root, mask_values=[30, 10, 20]), split="all")
    assert info.num_classes == 3
    assert ds[0][1].flatten()[:4].tolist() == [1, 2, 0, 255]  # 255 stays ignored


def test_undeclared_mask_value_names_file_and_values(make_folder_dataset) -> None:
    root = make_folder_dataset(values=(0, 128, 255, 7))
    with pytest.raises(ValueError, match=r"i00\.png.*\[7, 128\]"):
        build_datasets(config(root, mask_values=[0, 255]))


def test_index_masks_checked_against_num_classes(make_folder_dataset) -> None:
    root = make_folder_dataset(values=(0, 1, 2, 5))
    with pytest.raises(OptionError, match=r"masks/i00\.png.*\[5\].*mask_values") as info:
        build_datasets(config(root, classes=["a", "b", "c"]))
    assert "mask_values" in info.value.options  # the CLI names its flag


def test_num_classes_inferred_from_index_masks(make_folder_dataset) -> None:
    root = make_folder_dataset(values=(0, 1, 2, 255))
    _, _, info = build_datasets(config(root), split="all")
    assert info.num_classes == 3 and len(info.palette) == 3


def test_binary_masks_without_mask_values_is_an_error_with_a_hint(make_folder_dataset) -> None:
    root = make_folder_dataset(values=(0, 255))
    with pytest.raises(OptionError, match="mask_values 0,255") as info:
        build_datasets(config(root))
    assert info.value.options == ("mask_values", "classes", "num_classes")


def test_size_mismatch_names_the_pair(make_folder_dataset, write_image) -> None:
    root = make_folder_dataset()
    write_image(root / "masks" / "i03.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"i03\.png 32x24 vs i03\.png 10x10"):
        build_datasets(config(root, mask_values=[0, 255]))


def test_unmatched_files_are_listed(make_folder_dataset) -> None:
    root = make_folder_dataset()
    (root / "masks" / "i01.png").unlink()
    (root / "images" / "i02.png").rename(root / "images" / "other.png")
    with pytest.raises(ValueError) as info:
        build_datasets(config(root, mask_values=[0, 255]))
    message = str(info.value)
    assert "2 image(s) have no mask" in message and "i01.png" in message and "other.png" in message
    assert "1 mask(s) have no image" in message and "i02.png" in message


def test_split_is_seeded_deterministic_and_disjoint() -> None:
    pairs = [Pair(Path(f"images/{i}.png"), Path(f"masks/{i}.png")) for i in range(50)]
    train, val = split_pairs(pairs, 0.2, seed=3)
    assert (train, val) == split_pairs(list(reversed(pairs)), 0.2, seed=3)
    assert len(val) == 10 and not set(train) & set(val) and set(train) | set(val) == set(pairs)
    assert split_pairs(pairs, 0.2, seed=4)[1] != val
    assert len(split_pairs(pairs[:3], 0.01, seed=0)[1]) == 1  # never an empty val set by rounding


def test_build_datasets_splits_and_lists_val_files(make_folder_dataset) -> None:
    cfg = config(make_folder_dataset(n=10), mask_values=[0, 255], val_fraction=0.3, seed=1)
    train_ds, val_ds, _ = build_datasets(cfg)
    assert (len(train_ds), len(val_ds)) == (7, 3)
    assert val_ds.pairs == list_pairs(cfg, "val")
    assert not {p.stem for p in train_ds.pairs} & {p.stem for p in val_ds.pairs}
    assert len(list_pairs(cfg, "all")) == 10
    none, all_ds, _ = build_datasets(cfg, split="all")
    assert none is None and len(all_ds) == 10


def test_split_layout(tmp_path, make_folder_dataset) -> None:
    make_folder_dataset(n=3, root=tmp_path / "train")
    make_folder_dataset(n=2, root=tmp_path / "val")
    train_ds, val_ds, info = build_datasets(config(tmp_path, mask_values=[0, 255]))
    assert (info.layout, len(train_ds), len(val_ds)) == ("split", 3, 2)


def test_voc_tree_reads_palette_indices(fake_voc) -> None:
    for root in (fake_voc, fake_voc / "VOC2012"):
        train_ds, val_ds, info = build_datasets(config(root, augment=AugmentConfig(crop_size=16)))
        assert info.layout == "voc" and info.num_classes == 21 and info.classes[15] == "person"
        assert info.palette[1] == [128, 0, 0] and (len(train_ds), len(val_ds)) == (3, 2)
    _, mask = val_ds[0]  # 2007_000003: class 20 inside a 255 border
    assert set(mask.unique().tolist()) == {0, 20, 255}


def test_dataset_json_supplies_classes_and_palette(make_folder_dataset) -> None:
    root = make_folder_dataset(values=(0, 1))
    meta = {"classes": ["sky", "tree"], "palette": [[1, 2, 3], [4, 5, 6]]}
    (root / "dataset.json").write_text(json.dumps(meta))
    _, _, info = build_datasets(config(root))
    assert info.classes == ["sky", "tree"] and info.palette == meta["palette"]


@pytest.mark.parametrize(("channels", "expected"), [(1, 1), (3, 3), (4, 4)])
def test_in_channels_follow_the_first_image(make_folder_dataset, channels, expected) -> None:
    root = make_folder_dataset(channels=channels)
    _, ds, info = build_datasets(config(root, mask_values=[0, 255]), split="all")
    assert info.in_channels == expected and len(info.mean) == expected
    assert ds[0][0].shape == (expected, 24, 32)


def test_mixed_modes_are_converted(make_folder_dataset, write_image) -> None:
    root = make_folder_dataset(channels=3)
    write_image(root / "images" / "i04.png", np.full((24, 32), 200, np.uint8))  # grey
    write_image(root / "images" / "i05.png", np.full((24, 32, 4), 90, np.uint8))  # RGBA
    _, ds, info = build_datasets(config(root, mask_values=[0, 255]), split="all")
    assert info.in_channels == 3
    assert all(ds[i][0].shape == (3, 24, 32) for i in range(len(ds)))
    _, ds, _ = build_datasets(config(root, mask_values=[0, 255], in_channels=1), split="all")
    assert ds[0][0].shape == (1, 24, 32)


def test_16_bit_images_scale_by_65535(make_folder_dataset, write_image) -> None:
    root = make_folder_dataset(n=2, channels=1)
    for i, level in enumerate((65535, 13107)):  # 1.0 and 0.2
        write_image(root / "images" / f"i{i:02d}.png", np.full((24, 32), level, np.uint16))
    cfg = config(root, mask_values=[0, 255], mean=[0.0], std=[1.0])
    _, ds, info = build_datasets(cfg, split="all")
    assert info.in_channels == 1
    assert ds[0][0].max().item() == pytest.approx(1.0) and ds[1][0].max().item() == pytest.approx(
        0.2
    )


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"])
def test_image_formats(make_folder_dataset, write_image, suffix) -> None:
    root = make_folder_dataset(n=2)
    for path in (root / "images").glob("*.png"):
        write_image(path.with_suffix(suffix), np.full((24, 32, 3), 128, np.uint8))
        path.unlink()
    _, ds, _ = build_datasets(
        config(root, mask_values=[0, 255], mean=[0] * 3, std=[1] * 3), split="all"
    )
    assert ds[1][0].shape == (3, 24, 32) and abs(ds[1][0].mean().item() - 128 / 255) < 0.02


def test_compute_stats_from_training_images(make_folder_dataset, write_image) -> None:
    root = make_folder_dataset(n=4, channels=1)
    for i in range(4):
        write_image(root / "images" / f"i{i:02d}.png", np.full((24, 32), 51 * (i % 2), np.uint8))
    cfg = config(root, mask_values=[0, 255], val_fraction=0.0, compute_stats=True)
    _, _, info = build_datasets(cfg)
    assert info.mean == pytest.approx([0.1]) and info.std == pytest.approx([0.1])


def test_config_round_trips_through_json() -> None:
    cfg = DataConfig(root="x", mask_values=[0, 255], augment=AugmentConfig(crop_size=64))
    assert DataConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown data options"):
        DataConfig.from_dict({"root": "x", "crop": 3})


def test_pad_collate_pads_masks_with_ignore_index() -> None:
    batch = [
        (torch.ones(1, 4, 6), torch.zeros(4, 6, dtype=torch.int64)),
        (torch.ones(1, 5, 3), torch.ones(5, 3, dtype=torch.int64)),
    ]
    images, masks = pad_collate(batch, ignore_index=99)
    assert images.shape == (2, 1, 5, 6) and masks.shape == (2, 5, 6)
    assert images[0, 0, 4].sum() == 0 and masks[0, 4].tolist() == [99] * 6
    assert masks[1, :, 3:].unique().tolist() == [99] and masks[1, :, :3].unique().tolist() == [1]


def test_real_isbi_membranes(isbi_root) -> None:
    cfg = config(isbi_root, mask_values=[0, 255], classes=["membrane", "interior"])
    train_ds, val_ds, info = build_datasets(cfg)
    assert (len(train_ds), len(val_ds), info.in_channels, info.num_classes) == (24, 6, 1, 2)
    image, mask = val_ds[0]
    assert image.shape == (1, 512, 512) and set(mask.unique().tolist()) == {0, 1}
    assert 0.6 < mask.float().mean().item() < 0.9  # white = interior, about 78%
    image, mask = train_ds[0]
    assert image.shape == (1, 256, 256) and mask.shape == (256, 256)


def test_loader_workers_get_different_augmentations(make_folder_dataset) -> None:
    from training.loop.distributed import DistInfo
    from training.loop.sampling import build_loaders

    cfg = config(make_folder_dataset(n=1, size=(64, 64)), mask_values=[0, 255], val_fraction=0.0)
    train_ds, val_ds, info = build_datasets(cfg)
    loader, _ = build_loaders(
        train_ds,
        val_ds,
        batch_size=1,
        epoch_size=4,
        workers=2,
        seed=0,
        ignore_index=info.ignore_index,
        info=DistInfo(),
    )
    crops = [image for image, _ in loader]
    # One image four times over two forked workers (which start from one random state): the
    # training loader gives each draw its own augmentation seed, so the crops differ.
    assert not torch.equal(crops[0], crops[1])


def test_computed_stats_come_from_train_images_for_every_split(make_folder_dataset) -> None:
    cfg = config(make_folder_dataset(n=6), mask_values=[0, 255], compute_stats=True)
    means = {
        split: build_datasets(cfg, split=split)[2].mean for split in ("trainval", "val", "all")
    }
    assert means["trainval"] == means["val"] == means["all"] != [0.485, 0.456, 0.406]


def test_exif_orientation_applies_before_the_size_check(make_folder_dataset) -> None:
    from PIL import Image

    root = make_folder_dataset(n=2, size=(32, 24))  # masks are 24 wide, 32 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: a stored 32x24 photo shows as 24x32
    (root / "images" / "i00.png").unlink()
    stored = np.zeros((24, 32, 3), np.uint8)
    Image.fromarray(stored).save(root / "images" / "i00.jpg", exif=exif)
    _, ds, _ = build_datasets(config(root, mask_values=[0, 255], cache_mb=0), split="all")
    assert ds[0][0].shape == (3, 32, 24)


def test_voc_ids_without_files_and_unknown_folders_are_errors(fake_voc, tmp_path) -> None:
    (fake_voc / "VOC2012" / "JPEGImages" / "2007_000001.jpg").unlink()
    with pytest.raises(ValueError, match=r"train\.txt lists 1 id\(s\) without files: 2007_000001"):
        build_datasets(config(fake_voc))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no dataset found"):
        build_datasets(config(tmp_path / "empty"))
