"""Constants every layer may read: the ImageNet input statistics and class names (spec 3.13, 7.3).

The official TF1 SpineNet classifiers predict 1001 logits: index 0 is an unused "background" class and index
``k`` (1..1000) is ImageNet class ``k - 1`` in the standard synset order (the order of the ILSVRC-2012 devkit
and of torchvision's ImageNet weights). The names are read at run time from torchvision's weight metadata
(``ResNet50_Weights.IMAGENET1K_V1.meta["categories"]``) rather than kept as a second copy here.
"""

from __future__ import annotations

from functools import lru_cache

NUM_IMAGENET_CLASSES = 1000
BACKGROUND_NAME = "background"

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
