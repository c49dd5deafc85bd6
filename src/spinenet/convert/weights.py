"""Weights files live in :mod:`spinenet.weights` (beside the registry); these names stay importable from here."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..backbones import TRAINING_ONLY, backbone_overrides
from ..weights import (TASKS, WEIGHTS_FORMAT, LoadReport, WeightsFile, load_pretrained, load_state, model_config_json,
                       model_task, read_weights, save_weights)

__all__ = ["TASKS", "TRAINING_ONLY", "WEIGHTS_FORMAT", "LoadReport", "WeightsFile", "backbone_overrides",
           "load_backbone", "load_classifier", "load_detector", "load_pretrained", "load_state", "model_config_json",
           "model_task", "read_weights", "save_weights"]


def load_backbone(name: str, path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """``spinenet.create_model(name, weights=path, **overrides)``."""
    from ..registry import create_model

    return create_model(name, weights=str(path), **overrides)


def load_detector(name: str, path: str | os.PathLike, num_classes: int | None = None, image_size: int | None = None,
                  **overrides: Any) -> nn.Module:
    """``spinenet.models.create_detector(name, weights=path, ...)``."""
    from ..models import create_detector

    return create_detector(name, weights=str(path), num_classes=num_classes, image_size=image_size, **overrides)


def load_classifier(name: str, path: str | os.PathLike, num_classes: int | None = None,
                    class_names: list[str] | None = None, **kwargs: Any) -> nn.Module:
    """``spinenet.models.create_classifier(name, weights=path, ...)``."""
    from ..models import create_classifier

    return create_classifier(name, num_classes, class_names=class_names, weights=str(path), **kwargs)
