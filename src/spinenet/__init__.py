"""spinenet-torch: SpineNet scale-permuted backbones (Du et al., CVPR 2020) in PyTorch."""

from .backbone import SpineNet
from .graph import Graph, resolve
from .registry import create_model, list_models
from .specs import Architecture, BlockSpec, Scaling

__version__ = "0.1.0"
__all__ = ["Architecture", "BlockSpec", "Graph", "Scaling", "SpineNet", "create_model", "list_models", "resolve"]
