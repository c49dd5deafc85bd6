"""COCO evaluation of detections: it lives in :mod:`spinenet.metrics` with every other metric; these names stay
importable from here (and from :mod:`spinenet.data`)."""

from __future__ import annotations

from ..metrics import METRIC_NAMES, coco_from_dict, evaluate_coco, predictions_to_coco_results, save_results_json

__all__ = [
    "METRIC_NAMES",
    "coco_from_dict",
    "evaluate_coco",
    "predictions_to_coco_results",
    "save_results_json",
]
