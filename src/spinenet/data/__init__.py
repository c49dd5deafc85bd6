"""Datasets, augmentation and evaluation helpers for the three tasks, and the catalog that names them.

Detection datasets yield ``(uint8 image [3, H, W], target dict)`` with contiguous labels ``1..C`` and expose
``classes``, ``category_ids``, ``label_to_category``, ``category_to_label``, ``to_coco()`` and ``stats``
(details in :mod:`spinenet.data.detection`). Every named dataset (``trees:...``, ``nuclei:...``,
``fashion-mnist:...``) and every file format is registered in :mod:`spinenet.data.catalog`; importing this
package imports every dataset module, which is what fills the catalog.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from . import classification, nuclei_instances, segmentation, trees  # noqa: F401  (they register in the catalog)
from .catalog import list_datasets, open_dataset
from .detection import (
    BACKGROUND,
    CocoDetection,
    DetectionDataset,
    VOCDetection,
    dataset_from_path,
    decode_image,
    parse_voc_xml,
)
from .evaluation import evaluate_coco, predictions_to_coco_results, save_results_json
from .transforms import eval_transforms, train_transforms
from .trees import trees_dataset

__all__ = [
    "BACKGROUND",
    "CocoDetection",
    "DetectionDataset",
    "VOCDetection",
    "collate_detection",
    "dataset_from_path",
    "decode_image",
    "eval_transforms",
    "evaluate_coco",
    "list_datasets",
    "open_dataset",
    "parse_voc_xml",
    "predictions_to_coco_results",
    "save_results_json",
    "train_transforms",
    "trees_dataset",
]


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """``DataLoader`` collate for detection: images differ in size and box counts, so keep lists, not stacks."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
