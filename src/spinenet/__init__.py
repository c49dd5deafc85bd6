"""spinenet-torch: SpineNet scale-permuted backbones (Du et al., CVPR 2020) in PyTorch."""

from .backbone import SpineNet
from .graph import Graph, resolve
from .layers.fuse import compile_dense, optimize_for_inference
from .registry import create_model, list_models, load_weights, model_from_config
from .specs import Architecture, BlockSpec, Scaling
from .weights import save_weights

__version__ = "0.1.0"
__all__ = ["Architecture", "BlockSpec", "Graph", "Scaling", "SpineNet", "compile_dense", "create_classifier",
           "create_detector", "create_model", "create_segmenter", "list_models", "load_weights", "model_from_config",
           "optimize_for_inference", "resolve", "save_weights"]


def __getattr__(name: str):
    """The per-task builders and lists of :mod:`spinenet.models` (``create_model`` / ``list_models(task=...)``
    serve every task)."""
    if name in ("create_detector", "create_classifier", "create_segmenter", "list_detectors", "list_classifiers",
                "list_segmenters"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'spinenet' has no attribute {name!r}")
