"""Building blocks shared by every SpineNet family: conv/norm/activation helpers, blocks, resampling."""

from .blocks import BlockGroup, Bottleneck, MBConv, Residual, make_block
from .ops import (
    Conv2d,
    ConvNormAct,
    HardSigmoid,
    MaxPool2dSame,
    NormLayer,
    get_activation,
    make_norm,
    resize_nearest,
)
from .fuse import compile_dense, fold_batchnorm, optimize_for_inference, remaining_batchnorms
from .resample import Resample, SeparableResample

__all__ = [
    "BlockGroup", "Bottleneck", "Conv2d", "ConvNormAct", "compile_dense", "fold_batchnorm", "optimize_for_inference",
    "remaining_batchnorms", "HardSigmoid", "MBConv", "MaxPool2dSame", "NormLayer",
    "Residual", "Resample", "SeparableResample", "get_activation", "make_block", "make_norm", "resize_nearest",
]
