"""Checkpoints: safe loading, the contract's layout and full config, rebuilding the model."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from training.checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    CheckpointError,
    CheckpointVersionError,
    copy_checkpoint,
    load_checkpoint,
    load_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
    train_config,
)

KEYS = {
    "version",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "step",
    "rng",
    "best_metric",
    "config",
    "metrics",
}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run(trained_run):
    return trained_run[0]


def test_checkpoint_loads_with_weights_only_and_has_every_part(run) -> None:
    state = torch.load(run / "last.pt", weights_only=True)
    assert KEYS <= set(state)
    assert state["version"] == CHECKPOINT_VERSION
    assert (state["epoch"], state["step"]) == (2, 6)
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert state["optimizer"]["state"]  # AdamW moments are there
    assert isinstance(state["best_metric"], float)


def test_config_follows_the_contract_and_holds_every_option(run, demo_root) -> None:
    config = load_checkpoint(run / "best.pt").config
    assert config["model"] == {
        "arch": "linknet",
        "num_classes": 5,
        "in_channels": 3,
        "options": {"encoder": "mobilenet_v2"},
    }
    data = config["data"]  # the data description, stored once
    assert data["classes"] == ["background", "ellipse", "rectangle", "triangle", "star"]
    assert len(data["palette"]) == 5 and len(data["mean"]) == len(data["std"]) == 3
    assert data["ignore_index"] == 255
    assert data["root"] == str(demo_root) and data["augment"]["crop_size"] == 48
    assert set(config) == {"model", "data", "train"} and "data" not in config["train"]
    json.dumps(config)  # JSON-serialisable
    cfg = train_config(config)  # every training option round-trips
    assert (cfg.epochs, cfg.batch_size, cfg.loss, cfg.optimizer) == (2, 4, "ce+dice", "adamw")


def test_load_model_rebuilds_the_network(run) -> None:
    model, config = load_model(run / "best.pt")
    assert not model.training
    logits = model(torch.zeros(1, 3, 37, 45))
    assert logits.shape == (1, config["model"]["num_classes"], 37, 45)


def test_copy_is_atomic_and_independent_of_later_saves(tmp_path) -> None:
    save_checkpoint(tmp_path / "last.pt", Checkpoint(model={}, config={}, step=1))
    copy_checkpoint(tmp_path / "last.pt", tmp_path / "best.pt")
    save_checkpoint(tmp_path / "last.pt", Checkpoint(model={}, config={}, step=2))
    assert load_checkpoint(tmp_path / "best.pt").step == 1
    assert load_checkpoint(tmp_path / "last.pt").step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temp files


def test_rng_state_round_trips_through_a_safe_load(tmp_path) -> None:
    torch.save({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_bad_files_give_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an fcn checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_version_1_checkpoint_still_loads_evaluates_and_resumes(run, tmp_path) -> None:
    """Files written before the layout had a version (no ``version`` key) read as version 1."""
    state = torch.load(run / "last.pt", weights_only=True)
    del state["version"]
    torch.save(state, tmp_path / "v1.pt")
    old = load_checkpoint(tmp_path / "v1.pt")
    assert old.version == 1 and (old.epoch, old.step) == (2, 6)
    assert old.training_state().optimizer["state"]
    model, config = load_model(tmp_path / "v1.pt")
    assert config["model"]["arch"] == "linknet" and not model.training
    # Written again, it is in the current layout with the same contents.
    save_checkpoint(tmp_path / "v2.pt", old)
    assert torch.load(tmp_path / "v2.pt", weights_only=True)["version"] == CHECKPOINT_VERSION


@pytest.mark.parametrize("version", [CHECKPOINT_VERSION + 1, 0, "2"])
def test_an_unknown_version_is_refused_by_name(run, tmp_path, version) -> None:
    state = torch.load(run / "last.pt", weights_only=True)
    state["version"] = version
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(CheckpointVersionError, match=f"layout version {version!r}") as caught:
        load_checkpoint(tmp_path / "future.pt")
    assert caught.value.version == version


def test_a_weights_only_checkpoint_cannot_be_resumed(run, tmp_path) -> None:
    from training.loop.train import train

    saved = load_checkpoint(run / "best.pt")
    saved.training = None
    save_checkpoint(tmp_path / "weights.pt", saved)
    assert "optimizer" not in torch.load(tmp_path / "weights.pt", weights_only=True)
    cfg = train_config(saved.config)
    cfg.out = str(tmp_path / "again")
    with pytest.raises(CheckpointError, match="no training state"):
        train(cfg, resume=tmp_path / "weights.pt")
