"""The RetinaNet head used with SpineNet (paper section 4.1; spec 2.3; Model Garden ``RetinaNetHead``).

Two subnets (class and box), each ``num_convs`` 3x3 convolutions *with bias* whose weights are shared across
levels, each followed by a BatchNorm that is kept **per level** (one BN per conv per level; shared convs with
per-level statistics is what the official code does, and what its checkpoints hold) and the activation; then a
3x3 predictor. ``separable=True`` is the SpineNet-Mobile head: every conv, predictors included, is a Keras
``SeparableConv2D`` (depthwise 3x3 without bias, depth multiplier 1, then pointwise 1x1 with bias).

Output channels follow the official layout: class ``a * num_classes + k`` and box ``a * 4 + j`` with ``j`` over
(dy, dx, dh, dw) (see :mod:`spinenet.models.box_coder`), so both flatten to torchvision's ``[N, H*W*A, K]``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..layers.fuse import fold_batchnorm
from ..layers.ops import get_activation

PRIOR_PROBABILITY = 0.01  # focal-loss prior of the class predictor bias (Lin et al. 2017; official head)


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D`` with depth multiplier 1: depthwise ``k x k`` (no bias) then pointwise 1x1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.pointwise.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _conv(in_channels: int, out_channels: int, separable: bool) -> nn.Module:
    if separable:
        return SeparableConv2d(in_channels, out_channels, 3)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True)


def _init_conv(conv: nn.Module, std: float, bias: float) -> None:
    """Official initialisers: RandomNormal(std) kernels for plain convs; Keras' default glorot-uniform for both
    separable kernels (the official head passes no initialiser there); constant bias."""
    if isinstance(conv, SeparableConv2d):
        # torch's xavier fans for [C, 1, k, k] / [O, C, 1, 1] sum to Keras' fans of [k, k, C, 1] / [1, 1, C, O]
        nn.init.xavier_uniform_(conv.depthwise.weight)
        nn.init.xavier_uniform_(conv.pointwise.weight)
    else:
        nn.init.normal_(conv.weight, 0.0, std)
    nn.init.constant_(conv.bias, bias)


class RetinaNetHead(nn.Module):
    """Class and box subnets over levels ``min_level..max_level`` with per-level BatchNorm (spec 2.3).

    ``bn_momentum`` uses the PyTorch convention (1 - TF momentum). ``forward`` follows torchvision's
    ``RetinaNetHead`` contract (list of level features in, ``cls_logits`` / ``bbox_regression`` flattened over
    levels out); :meth:`forward_levels` gives the raw per-level NCHW maps (what the official head returns).
    """

    def __init__(self, in_channels: int, num_classes: int, num_anchors: int = 9, num_convs: int = 4,
                 num_filters: int = 256, num_levels: int = 5, separable: bool = False, activation: str = "relu",
                 bn_eps: float = 1e-3, bn_momentum: float = 0.01) -> None:
        super().__init__()
        if num_convs < 1 or num_filters < 1 or num_levels < 1:
            raise ValueError(f"RetinaNet head: num_convs ({num_convs}), num_filters ({num_filters}) and num_levels "
                             f"({num_levels}) must be positive")
        self.num_classes, self.num_anchors, self.num_levels = num_classes, num_anchors, num_levels
        widths = [in_channels] + [num_filters] * num_convs

        def tower() -> nn.ModuleList:
            return nn.ModuleList(_conv(widths[i], widths[i + 1], separable) for i in range(num_convs))

        def norms() -> nn.ModuleList:  # [level][conv]
            return nn.ModuleList(
                nn.ModuleList(nn.BatchNorm2d(num_filters, eps=bn_eps, momentum=bn_momentum) for _ in range(num_convs))
                for _ in range(num_levels))

        self.cls_convs, self.cls_norms = tower(), norms()
        self.classifier = _conv(widths[-1], num_anchors * num_classes, separable)
        self.box_convs, self.box_norms = tower(), norms()
        self.box_regressor = _conv(widths[-1], num_anchors * 4, separable)
        self.act = get_activation(activation)
        self.level_convs: nn.ModuleList | None = None  # set by fold_batchnorm_ (inference only)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: towers N(0, 0.01) with zero bias, predictors N(0, 1e-5), class bias
        ``-log((1 - 0.01) / 0.01)`` so every anchor starts at probability 0.01, box bias 0; BN gamma 1, beta 0."""
        for conv in [*self.cls_convs, *self.box_convs]:
            _init_conv(conv, 0.01, 0.0)
        _init_conv(self.classifier, 1e-5, -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))
        _init_conv(self.box_regressor, 1e-5, 0.0)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    def _subnet(self, x: torch.Tensor, convs: nn.ModuleList, norms: nn.ModuleList) -> torch.Tensor:
        for conv, norm in zip(convs, norms):
            x = self.act(norm(conv(x)))
        return x

    def fold_batchnorm_(self) -> None:
        """Inference only (:func:`spinenet.optimize_for_inference`): per level, a copy of each shared tower conv
        with that level's BatchNorm folded in (``[level][cls convs + box convs]``); the norms become identities.
        Separable convs fold into their pointwise part."""
        def fold(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
            if isinstance(conv, SeparableConv2d):
                folded = copy.deepcopy(conv)
                folded.pointwise = fold_batchnorm(conv.pointwise, bn)
                return folded
            return fold_batchnorm(conv, bn)

        if self.level_convs is not None:
            return
        self.level_convs = nn.ModuleList(
            nn.ModuleList([*(fold(c, n) for c, n in zip(self.cls_convs, cls_norms)),
                           *(fold(c, n) for c, n in zip(self.box_convs, box_norms))])
            for cls_norms, box_norms in zip(self.cls_norms, self.box_norms))
        identities = lambda: nn.ModuleList(  # noqa: E731
            nn.ModuleList(nn.Identity() for _ in self.cls_convs) for _ in range(self.num_levels))
        self.cls_norms, self.box_norms = identities(), identities()

    def forward_levels(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Raw outputs per level: class ``[N, A*K, H, W]`` and box ``[N, A*4, H, W]`` (official channel order)."""
        if len(features) != self.num_levels:
            raise ValueError(f"RetinaNet head: built for {self.num_levels} levels, got {len(features)} feature maps")
        cls_out, box_out = [], []
        n = len(self.cls_convs)
        for i, x in enumerate(features):
            cls_convs, box_convs = ((self.cls_convs, self.box_convs) if self.level_convs is None
                                    else (self.level_convs[i][:n], self.level_convs[i][n:]))
            cls_out.append(self.classifier(self._subnet(x, cls_convs, self.cls_norms[i])))
            box_out.append(self.box_regressor(self._subnet(x, box_convs, self.box_norms[i])))
        return cls_out, box_out

    @staticmethod
    def flatten(maps: list[torch.Tensor], per_anchor: int) -> torch.Tensor:
        """``[N, A*C, H, W]`` per level -> ``[N, sum H*W*A, C]`` (cells row-major, then anchor)."""
        out = []
        for m in maps:
            n, _, h, w = m.shape
            out.append(m.reshape(n, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, per_anchor))
        return torch.cat(out, dim=1)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        cls_out, box_out = self.forward_levels(features)
        return {"cls_logits": self.flatten(cls_out, self.num_classes), "bbox_regression": self.flatten(box_out, 4)}
