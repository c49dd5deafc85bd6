"""ImageNet-1k class names and the TF1 1001-class label convention (spec 3.13); they live in
:mod:`spinenet.constants`, at the bottom of the package, so that models read them without importing ``data``."""

from __future__ import annotations

from ..constants import (BACKGROUND_NAME, NUM_IMAGENET_CLASSES, imagenet_1001_names, imagenet_class_names,
                         imagenet_to_label_1001, label_1001_to_imagenet)

__all__ = ["BACKGROUND_NAME", "NUM_IMAGENET_CLASSES", "imagenet_1001_names", "imagenet_class_names",
           "imagenet_to_label_1001", "label_1001_to_imagenet"]
