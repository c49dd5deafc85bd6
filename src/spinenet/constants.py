"""Constants every layer may read: the ImageNet input statistics and class names (spec 3.13, 7.3), the COCO
label names of the official detectors, and which engine task serves each registry task.

The official TF1 SpineNet classifiers predict 1001 logits: index 0 is an unused "background" class and index
``k`` (1..1000) is ImageNet class ``k - 1`` in the standard synset order (the order of the ILSVRC-2012 devkit
and of torchvision's ImageNet weights). The names are read at run time from torchvision's weight metadata
(``ResNet50_Weights.IMAGENET1K_V1.meta["categories"]``) rather than kept as a second copy here.

The official COCO detectors (RetinaNet and Mask R-CNN, TF1 and Model Garden; spec 4.4, 8) predict 91 logits: the
official ``create_coco_tf_record.py`` stores each annotation's COCO ``category_id`` as its label and the official
COCO evaluation reads a detection's class back as its ``category_id``, so label ``k`` *is* category id ``k``
(1..90, with the ids COCO leaves unused: 12, 26, 29, 30, 45, 66, 68, 69, 71, 83) and 0 is the background.
torchvision's COCO detection weights use the same 91-id space; their metadata
(``RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"]``: ``"__background__"`` at 0, ``"N/A"`` for the
unused ids) supplies the names.
"""

from __future__ import annotations

from functools import lru_cache

NUM_IMAGENET_CLASSES = 1000
BACKGROUND_NAME = "background"
NUM_COCO_LABELS = 91  # the official detectors' logits: COCO category ids 0..90, 0 = background

# The engine task (recipes, training, evaluation, data) of each task model the registry names.
RECIPE_TASKS = {"retinanet": "detection", "maskrcnn": "detection", "classification": "classification",
                "segmentation": "segmentation"}

# ImageNet RGB mean / std on [0, 1] inputs: the normalisation every SpineNet model applies (spec 7.3).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...] | None:
    try:
        from torchvision.models import ResNet50_Weights
    except ImportError:  # torchvision is a dependency, but keep the names optional for minimal installs
        return None
    names = tuple(ResNet50_Weights.IMAGENET1K_V1.meta.get("categories", ()))
    return names if len(names) == NUM_IMAGENET_CLASSES else None


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in synset order (index = ImageNet class id).

    Falls back to ``"class_0000" .. "class_0999"`` when torchvision's metadata is unavailable, so callers always
    get 1000 entries.
    """
    names = _torchvision_names()
    if names is None:
        return [f"class_{i:04d}" for i in range(NUM_IMAGENET_CLASSES)]
    return list(names)


def imagenet_1001_names() -> list[str]:
    """Names for the TF1 1001-logit convention: ``["background", *1000 ImageNet names]`` (spec 3.13)."""
    return [BACKGROUND_NAME, *imagenet_class_names()]


def label_1001_to_imagenet(label: int) -> int:
    """Map a 1001-convention label (1..1000) to the ImageNet-1k class id (0..999)."""
    if not 1 <= int(label) <= NUM_IMAGENET_CLASSES:
        raise ValueError(f"label {label}: the 1001-class convention uses 1..1000 for ImageNet classes "
                         "(0 is the unused background)")
    return int(label) - 1


def imagenet_to_label_1001(index: int) -> int:
    """Map an ImageNet-1k class id (0..999) to the 1001-convention label (1..1000)."""
    if not 0 <= int(index) < NUM_IMAGENET_CLASSES:
        raise ValueError(f"ImageNet class id {index}: expected 0..{NUM_IMAGENET_CLASSES - 1}")
    return int(index) + 1


@lru_cache(maxsize=1)
def _coco_names() -> tuple[str, ...]:
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights

    names = tuple(RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"])
    if len(names) != NUM_COCO_LABELS:
        raise RuntimeError(f"torchvision's COCO categories have {len(names)} entries, expected {NUM_COCO_LABELS} "
                           "(the 91-id space); install the torchvision version pinned in constraints.txt")
    return names


def coco_class_names() -> list[str]:
    """The names of the official COCO detectors' 91 labels, label = COCO category id (module docstring):
    ``"__background__"`` at 0, ``"person"`` at 1, ..., ``"toothbrush"`` at 90, ``"N/A"`` at the unused ids."""
    return list(_coco_names())
