"""Task models built on SpineNet backbones: RetinaNet and Mask R-CNN detectors, classifiers, segmenters.

Each honours one contract (:mod:`.base`); :mod:`spinenet.registry` lists them under unique names.
"""

from .base import TaskModel
from .classification import (
    SpineNetClassifier,
    create_classifier,
    create_classifier_from_config,
    get_classifier_def,
    list_classifiers,
)
from .detection import (
    DetectorDef,
    SpineNetRetinaNet,
    create_detector,
    create_detector_from_config,
    detector_macs,
    get_detector_def,
    list_detectors,
)
from .maskrcnn import MaskRCNNDef, SpineNetMaskRCNN
from .segmentation import (
    SpineNetSegmenter,
    create_segmenter,
    create_segmenter_from_config,
    list_segmenters,
    mean_iou,
)

__all__ = ["DetectorDef", "MaskRCNNDef", "SpineNetClassifier", "SpineNetMaskRCNN", "SpineNetRetinaNet",
           "SpineNetSegmenter", "TaskModel", "create_classifier", "create_classifier_from_config", "create_detector",
           "create_detector_from_config", "create_segmenter", "create_segmenter_from_config", "detector_macs",
           "get_classifier_def", "get_detector_def", "list_classifiers", "list_detectors", "list_segmenters",
           "mean_iou"]
