"""Convolution, normalization and activation helpers with the two official padding conventions.

``same_padding=True`` reproduces TensorFlow's ``'SAME'`` rule for strided convolutions (Model Garden): the output
is ``ceil(in / stride)`` and the padding is split with the smaller half *before* (2/3 for 7x7/s2 on even sizes).
``False`` is the TF1 code's fixed symmetric ``(k - 1) // 2`` padding, which equals PyTorch's ``padding=k // 2``
(spec 3.12). For stride 1 and odd kernels both rules are the same symmetric padding.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

NormLayer = Callable[[int], nn.Module]
ACTIVATIONS = ("relu", "swish", "hard_swish")


def tf_same_pad(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TF 'SAME' along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose strided padding follows TF 'SAME' (``same_padding=True``) or is symmetric."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = False, same_padding: bool = False) -> None:
        self.dynamic_pad = same_padding and stride > 1
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding=0 if self.dynamic_pad else kernel_size // 2, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_pad:
            kh, kw = self.kernel_size
            top, bottom = tf_same_pad(x.shape[-2], kh, self.stride[0])
            left, right = tf_same_pad(x.shape[-1], kw, self.stride[1])
            x = F.pad(x, (left, right, top, bottom))
        elif self.stride != (1, 1) and 1 in x.shape[-2:]:
            return self._forward_single_line(x)
        return super().forward(x)

    def _forward_single_line(self, x: torch.Tensor) -> torch.Tensor:
        """A strided conv over an axis of size 1 reads one kernel tap on that axis: compute it as that tap.

        Same result, and it avoids a CPU bug: with bf16 autocast (torch 2.14.1, oneDNN), a padded stride-2 conv
        over a width-1 input returns garbage weight gradients (errors of 1e3 to NaN; small inputs reach width 1
        at levels 6-7, e.g. 48 px classification)."""
        weight, stride, padding = self.weight, list(self.stride), list(self.padding)  # type: ignore[arg-type]
        for axis in (0, 1):
            size, k, s, p = x.shape[axis - 2], self.kernel_size[axis], stride[axis], padding[axis]
            if size == 1 and s > 1 and p < k and (1 + 2 * p - k) // s == 0:  # one output along this axis
                weight = weight.narrow(axis + 2, p, 1)
                stride[axis], padding[axis] = 1, 0
        return F.conv2d(x, weight, self.bias, tuple(stride), tuple(padding), self.dilation, self.groups)


class MaxPool2dSame(nn.Module):
    """Max pooling with TF 'SAME' padding (used by both official codes); padding never wins the max."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool_same(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


def max_pool_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Max pooling with TF 'SAME' padding. The padding is the pooling's own implicit ``-inf`` padding, plus
    ``ceil_mode`` for the one extra row/column 'SAME' adds after the map on odd totals: no padded copy of the
    input. A padded copy is made only where that does not reproduce 'SAME' (kernel wider than twice the padding
    allows); either way the windows, hence the maxima, are exactly TF's."""
    top, bottom = tf_same_pad(x.shape[-2], kernel, stride)
    left, right = tf_same_pad(x.shape[-1], kernel, stride)
    if bottom - top in (0, 1) and right - left in (0, 1) and 2 * max(top, left) <= kernel:
        out = F.max_pool2d(x, kernel, stride, padding=(top, left), ceil_mode=True)
        if tuple(out.shape[-2:]) == (math.ceil(x.shape[-2] / stride), math.ceil(x.shape[-1] / stride)):
            return out
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


def resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resize with source index floor(dst * in / out): TF1's legacy resize and plain tiling for integer
    factors alike (spec 3.3), so one call serves both the integer and the non-integer paths."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="nearest")


class HardSigmoid(nn.Module):
    """Model Garden's hard sigmoid, ``relu6(x + 3) * 0.16667`` (literally 0.16667, spec 3.8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) * 0.16667


def get_activation(name: str) -> nn.Module:
    """relu, swish (= SiLU) or hard_swish (= x * relu6(x + 3) / 6), as in spec 3.8."""
    if name == "relu":
        return nn.ReLU(inplace=False)
    if name == "swish":
        return nn.SiLU()
    if name == "hard_swish":
        return nn.Hardswish()
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def make_norm(eps: float, momentum: float) -> NormLayer:
    """BatchNorm factory. ``momentum`` uses the PyTorch convention (= 1 - TF momentum)."""
    return partial(nn.BatchNorm2d, eps=eps, momentum=momentum)


class ConvNormAct(nn.Sequential):
    """conv -> BN -> optional activation (``act=None`` keeps the linear output), as the named children ``conv``,
    ``bn``, ``act``. Being a ``Sequential``, its three modules can also be spliced into a flat ``Sequential``
    (``layers.extend(ConvNormAct(...))``), where they keep that model's index-based state-dict keys."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: NormLayer,
                 act: str | None, stride: int = 1, groups: int = 1, same_padding: bool = False,
                 bias: bool = False) -> None:
        super().__init__(OrderedDict([
            ("conv", Conv2d(in_channels, out_channels, kernel_size, stride, groups, bias, same_padding=same_padding)),
            ("bn", norm(out_channels)),
            ("act", get_activation(act) if act else nn.Identity())]))
