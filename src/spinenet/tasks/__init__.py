"""Tasks plugged into the shared engine: ``get_task(name, **kwargs)``."""

from __future__ import annotations

from typing import Any


def get_task(name: str, **kwargs: Any):
    if name == "detection":
        from .detection import DetectionTask

        return DetectionTask(**kwargs)
    if name == "classification":
        from .classification import ClassificationTask

        return ClassificationTask(**kwargs)
    if name == "segmentation":
        from .segmentation import SegmentationTask

        return SegmentationTask(**kwargs)
    raise ValueError(f"unknown task {name!r}; available: detection, classification, segmentation")
