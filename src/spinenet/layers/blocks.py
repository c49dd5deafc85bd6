"""Residual, bottleneck and MBConv blocks (spec 3.2, 3.14) with stochastic depth on the residual branch."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from .ops import ConvNormAct, HardSigmoid, NormLayer, get_activation


def add_residual(y: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """``y + shortcut``, written into ``y`` (always a fresh conv / BN / drop-path output here, and not saved for
    backward) unless the sum would promote ``y``'s dtype (mixed precision): same values, one allocation less."""
    if y.dtype == torch.promote_types(y.dtype, shortcut.dtype) and y.shape == shortcut.shape:
        return y.add_(shortcut)
    return y + shortcut


class Bottleneck(nn.Module):
    """1x1 (C) -> 3x3 (C, stride) -> 1x1 (4C), plus a projected or identity shortcut; ``act(y + shortcut)``."""

    expansion = 4

    def __init__(self, in_channels: int, filters: int, stride: int, norm: NormLayer, act: str,
                 drop_rate: float = 0.0, same_padding: bool = False) -> None:
        super().__init__()
        out = filters * self.expansion
        self.shortcut = (ConvNormAct(in_channels, out, 1, norm, None, stride=stride, same_padding=same_padding)
                         if in_channels != out or stride != 1 else None)
        self.conv1 = ConvNormAct(in_channels, filters, 1, norm, act)
        self.conv2 = ConvNormAct(filters, filters, 3, norm, act, stride=stride, same_padding=same_padding)
        self.conv3 = ConvNormAct(filters, out, 1, norm, None)
        self.drop_path = StochasticDepth(drop_rate, "row")
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        y = self.drop_path(self.conv3(self.conv2(self.conv1(x))))
        return self.act(add_residual(y, shortcut))


class Residual(nn.Module):
    """3x3 (C, stride) -> 3x3 (C), plus a projected or identity shortcut; ``act(y + shortcut)``."""

    expansion = 1

    def __init__(self, in_channels: int, filters: int, stride: int, norm: NormLayer, act: str,
                 drop_rate: float = 0.0, same_padding: bool = False) -> None:
        super().__init__()
        self.shortcut = (ConvNormAct(in_channels, filters, 1, norm, None, stride=stride, same_padding=same_padding)
                         if in_channels != filters or stride != 1 else None)
        self.conv1 = ConvNormAct(in_channels, filters, 3, norm, act, stride=stride, same_padding=same_padding)
        self.conv2 = ConvNormAct(filters, filters, 3, norm, None)
        self.drop_path = StochasticDepth(drop_rate, "row")
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.act(add_residual(self.drop_path(self.conv2(self.conv1(x))), shortcut))


class SqueezeExcite(nn.Module):
    """Global mean -> 1x1 (bias) -> inner act -> 1x1 (bias) -> gate, multiplied into the input."""

    def __init__(self, channels: int, reduced: int, inner: str, gate: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.inner = get_activation(inner)
        self.gate = HardSigmoid() if gate == "hard_sigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.expand(self.inner(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted bottleneck with squeeze-excitation (spec 3.14).

    The SE width is ``max(1, int(in_channels * se_ratio))`` of the *unexpanded* input. Model Garden gates SE with
    relu inside and a hard sigmoid; the TF1 code with swish inside and a sigmoid (``se_style``).
    """

    expansion = 1

    def __init__(self, in_channels: int, filters: int, stride: int, norm: NormLayer, act: str,
                 drop_rate: float = 0.0, same_padding: bool = False, expand_ratio: int = 6,
                 se_ratio: float = 0.2, se_style: str = "model_garden") -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = ConvNormAct(in_channels, hidden, 1, norm, act) if expand_ratio != 1 else None
        self.depthwise = ConvNormAct(hidden, hidden, 3, norm, act, stride=stride, groups=hidden,
                                     same_padding=same_padding)
        inner, gate = ("relu", "hard_sigmoid") if se_style == "model_garden" else ("swish", "sigmoid")
        self.se = SqueezeExcite(hidden, max(1, int(in_channels * se_ratio)), inner, gate) if se_ratio else None
        self.project = ConvNormAct(hidden, filters, 1, norm, None)
        self.use_residual = in_channels == filters and stride == 1
        self.drop_path = StochasticDepth(drop_rate, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        if self.use_residual:
            y = add_residual(self.drop_path(y), x)
        return y


BLOCKS = {"bottleneck": Bottleneck, "residual": Residual, "mbconv": MBConv}


def make_block(block_fn: str, in_channels: int, filters: int, stride: int, norm: NormLayer, act: str,
               drop_rate: float, same_padding: bool, **mbconv: object) -> nn.Module:
    if block_fn == "mbconv":
        return MBConv(in_channels, filters, stride, norm, act, drop_rate, same_padding, **mbconv)  # type: ignore[arg-type]
    return BLOCKS[block_fn](in_channels, filters, stride, norm, act, drop_rate, same_padding)


class BlockGroup(nn.Sequential):
    """``repeats`` blocks in series (spec 3.11): the first may stride and project, the rest keep the shape."""

    def __init__(self, block_fn: str, in_channels: int, filters: int, stride: int, repeats: int, norm: NormLayer,
                 act: str, drop_rate: float = 0.0, same_padding: bool = False, **mbconv: object) -> None:
        out = filters * BLOCKS[block_fn].expansion
        blocks = [make_block(block_fn, in_channels, filters, stride, norm, act, drop_rate, same_padding, **mbconv)]
        blocks += [make_block(block_fn, out, filters, 1, norm, act, drop_rate, same_padding, **mbconv)
                   for _ in range(1, repeats)]
        super().__init__(*blocks)
