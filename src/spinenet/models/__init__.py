"""Task models built on SpineNet backbones: RetinaNet detectors (torchvision assembly)."""

from .detection import (
    DetectorDef,
    SpineNetRetinaNet,
    create_detector,
    create_detector_from_config,
    detector_macs,
    get_detector_def,
    list_detectors,
)

__all__ = ["DetectorDef", "SpineNetRetinaNet", "create_detector", "create_detector_from_config", "detector_macs",
           "get_detector_def", "list_detectors"]
