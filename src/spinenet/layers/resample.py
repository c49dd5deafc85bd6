"""Cross-scale connections: bring one parent to a target block's level and width (spec 3.3, 3.14).

Every path ends at exactly ``target_size`` = (ceil(H / 2**L), ceil(W / 2**L)) of the target level: the official
operations run first, and a nearest resize (TF1 legacy semantics, = PyTorch 'nearest') closes any remaining gap.
That is the TF1 code's own fallback, extended from the width to both axes, so any input size works.

``project_first`` (set by :func:`spinenet.layers.fuse.optimize_for_inference`, inference only) applies the final
1x1 projection before an upsampling resize instead of after it: nearest upsampling copies pixels and the projection
(with its BatchNorm) acts per pixel, so the result is the same up to float rounding, for ``4 ** levels`` times
fewer multiply-adds. The default keeps the official order, whose multiply-adds the paper counts.
"""

from __future__ import annotations

import torch
from torch import nn

from .ops import ConvNormAct, NormLayer, max_pool_same, resize_nearest


def tpu_pool(x: torch.Tensor, width: int, target_width: int) -> torch.Tensor:
    """The TF1 code's single max-pool after the stride-2 conv, decided from the parent's width (spec 3.3)."""
    ratio = width // target_width
    if ratio <= 2:
        return x
    stride = ratio // 2 if width % target_width == 0 else 2
    kernel = 3 if width / target_width <= 4 else 5
    return max_pool_same(x, kernel, stride)


class Resample(nn.Module):
    """ResNet family: 1x1 (alpha) -> [3x3/s2 + max-pool | nearest up] -> 1x1 to the target width, BN, no act."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, level_delta: int, flavor: str,
                 norm: NormLayer, act: str) -> None:
        super().__init__()
        self.level_delta, self.flavor = level_delta, flavor
        self.reduce = ConvNormAct(in_channels, mid_channels, 1, norm, act)
        self.down = (ConvNormAct(mid_channels, mid_channels, 3, norm, act, stride=2,
                                 same_padding=flavor == "model_garden") if level_delta > 0 else None)
        self.expand = ConvNormAct(mid_channels, out_channels, 1, norm, None)
        self.project_first = False

    def forward(self, x: torch.Tensor, target_size: tuple[int, int]) -> torch.Tensor:
        width = x.shape[-1]
        x = self.reduce(x)
        if self.project_first and self.down is None:
            return resize_nearest(self.expand(x), target_size)
        if self.down is not None:
            x = self.down(x)
            if self.flavor == "model_garden":
                for _ in range(self.level_delta - 1):  # repeated 3x3/s2 'SAME' pools
                    x = max_pool_same(x, 3, 2)
            else:
                x = tpu_pool(x, width, target_size[1])
        x = resize_nearest(x, target_size)
        return self.expand(x)


class SeparableResample(nn.Module):
    """Mobile family: [depthwise 3x3/s2, BN, act] per factor 2 | nearest up -> 1x1 to the target width, BN."""

    def __init__(self, in_channels: int, out_channels: int, level_delta: int, flavor: str, norm: NormLayer,
                 act: str) -> None:
        super().__init__()
        self.down = nn.Sequential(*[
            ConvNormAct(in_channels, in_channels, 3, norm, act, stride=2, groups=in_channels,
                        same_padding=flavor == "model_garden")
            for _ in range(max(level_delta, 0))])
        self.expand = ConvNormAct(in_channels, out_channels, 1, norm, None)
        self.project_first = False

    def forward(self, x: torch.Tensor, target_size: tuple[int, int]) -> torch.Tensor:
        if self.project_first and len(self.down) == 0:
            return resize_nearest(self.expand(x), target_size)
        x = resize_nearest(self.down(x), target_size)
        return self.expand(x)
