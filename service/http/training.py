"""The labelling loop on the running service (``FCN_LABEL_STUDIO_TRAIN=1``): built from the
settings, promoting through the same reload-without-downtime path as ``POST /v1/models/reload``.
"""

from __future__ import annotations

import importlib.util
import logging

from service.http.reload import ReloadFailed, reload_models
from service.loop.runner import LoopConfig, TrainingLoop

logger = logging.getLogger(__name__)

# What the loop's ``fcn train`` / ``fcn export`` subprocesses import: the training install.
TRAINING_MODULES = ("torch", "segmentation_models_pytorch", "onnx")


class TrainingSetupError(ValueError):
    """``FCN_LABEL_STUDIO_TRAIN`` is on but a setting the loop needs is missing."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that refuses the name (an import hook, a broken package)
        return False


def build_loop(service) -> TrainingLoop | None:
    """The app's :class:`TrainingLoop`, or None when the loop is off.

    Raises:
        TrainingSetupError: the models folder or Label Studio's address is not set, or this
            install cannot train (the serve-only install or image has no torch).
    """
    settings = service.settings
    if not settings.label_studio_train:
        return None
    absent = [name for name in TRAINING_MODULES if not _installed(name)]
    if absent:
        raise TrainingSetupError(
            f"FCN_LABEL_STUDIO_TRAIN=1 trains in this install, which lacks {', '.join(absent)}: "
            "install the training side (pip install 'fcnseg[train]') or run the service from "
            "the train image (docker/train.Dockerfile); the serve-only install cannot train"
        )
    missing = [
        name
        for name, value in (
            ("FCN_MODELS_DIR", settings.models_dir),
            ("FCN_LABEL_STUDIO_URL", settings.label_studio_url),
        )
        if value is None
    ]
    if missing:
        raise TrainingSetupError(
            f"FCN_LABEL_STUDIO_TRAIN=1 needs {' and '.join(missing)}: the loop keeps versions in "
            "the models folder and reads annotations from Label Studio"
        )
    token = settings.label_studio_token
    config = LoopConfig(
        models_dir=settings.models_dir,
        model=settings.train_model,
        label_studio_url=settings.label_studio_url,
        token=token.get_secret_value() if token else None,
        allowed_hosts=list(settings.label_studio_allowed_hosts),
        timeout_s=settings.label_studio_timeout_s,
        after_annotations=settings.train_after_annotations,
        after_minutes=settings.train_after_minutes,
        minutes=settings.train_minutes,
        heldout_share=settings.train_heldout_share,
        margin=settings.train_gate_margin,
    )
    name = settings.train_model

    async def reload() -> bool:
        try:
            outcomes = await reload_models(service)
        except ReloadFailed as exc:
            logger.error("reload after training failed: %s", exc)
            return False
        return any(o.name == name and o.status in ("reloaded", "added") for o in outcomes)

    return TrainingLoop(config, reload)
