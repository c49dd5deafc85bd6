"""The SpineNet backbone as a PyTorch module, wired from a resolved :class:`~spinenet.graph.Graph`."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .graph import Graph, Node
from .layers import (BlockGroup, Bottleneck, ConvNormAct, MaxPool2dSame, MBConv, Resample, Residual, SeparableResample,
                     get_activation, make_norm)


def trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """Normal(0, std) truncated at two standard deviations, by resampling what falls outside.

    Same distribution as ``nn.init.trunc_normal_`` but about 10x faster on the 100M-parameter members.
    """
    with torch.no_grad():
        tensor.normal_(0.0, std)
        while True:
            outside = tensor.abs() > 2 * std
            count = int(outside.sum())
            if count == 0:
                return tensor
            tensor[outside] = torch.randn(count, dtype=tensor.dtype, device=tensor.device) * std


def init_weights(module: nn.Module) -> None:
    """The official initialisation (spec 3.10): Keras ``VarianceScaling`` (scale 1, fan_in, truncated normal at
    two standard deviations, std corrected by 0.8796) for conv kernels, zero biases, BN gamma 1 and beta 0
    and fresh running statistics."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            trunc_normal_(m.weight, math.sqrt(1.0 / fan_in) / 0.87962566103423978)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()


def zero_init_residual(module: nn.Module) -> int:
    """Set to zero the gamma of the last BN on every residual branch (bottleneck ``conv3``, residual ``conv2``,
    MBConv ``project`` where it has a shortcut), so each block starts as its shortcut; returns how many.

    Not the official initialisation (spec 3.10: gamma 1 everywhere): a training option (``Recipe``
    ``zero_init_residual``) for short from-scratch runs, as in Goyal et al. 2017 and torchvision's ResNets.
    """
    count = 0
    for m in module.modules():
        if isinstance(m, Bottleneck):
            last = m.conv3
        elif isinstance(m, Residual):
            last = m.conv2
        elif isinstance(m, MBConv) and m.use_residual:
            last = m.project
        else:
            continue
        nn.init.zeros_(last.bn.weight)
        count += 1
    return count


class BlockNode(nn.Module):
    """One scale-permuted entry: resample each parent, sum (+ absorbed raw extras), activate, run the blocks."""

    def __init__(self, node: Node, graph: Graph, norm, act: str, same_padding: bool, mbconv: dict) -> None:
        super().__init__()
        if graph.family == "mobile":
            self.resample = nn.ModuleList(
                SeparableResample(e.source_channels, e.target_channels, e.level_delta(node.level), graph.flavor,
                                  norm, act) for e in node.parents)
        else:
            self.resample = nn.ModuleList(
                Resample(e.source_channels, e.mid_channels, e.target_channels, e.level_delta(node.level),
                         graph.flavor, norm, act) for e in node.parents)
        self.act = get_activation(act) if node.parents else nn.Identity()
        self.block = BlockGroup(node.block_fn, node.in_channels, node.filters, node.stride, node.repeats, norm, act,
                                node.drop_rate, same_padding, **mbconv)


class SpineNet(nn.Module):
    """A scale-permuted backbone (Du et al., CVPR 2020, section 3) returning ``{"3": P3, ..., "7": P7}``.

    Build it through :func:`spinenet.create_model`. Attributes follow the detector-backbone contract:
    ``out_channels`` (channels of every endpoint), ``feature_info`` (per level: name, channels, stride) and
    ``size_divisibility`` (what detectors pad their inputs to: ``2 ** L`` for the deepest block level ``L`` the
    graph keeps, so every level's map is an exact power-of-two reduction; that is 128 whenever a level-7 block
    feeds a requested endpoint, also with ``max_level`` < 7).
    """

    task = "backbone"

    def __init__(self, graph: Graph, activation: str = "relu", bn_eps: float = 1e-4, bn_momentum: float = 0.003,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.graph = graph
        self.config = dict(config or {})
        norm = make_norm(bn_eps, bn_momentum)
        same = graph.flavor == "model_garden"
        mobile = graph.family == "mobile"
        mbconv = ({"expand_ratio": graph.scaling.expand_ratio, "se_ratio": graph.scaling.se_ratio,
                   "se_style": graph.flavor} if mobile else {})
        if mobile:
            self.stem = nn.Sequential(ConvNormAct(3, graph.stem_channels, 3, norm, activation, stride=2,
                                                  same_padding=same))
        else:
            self.stem = nn.Sequential(ConvNormAct(3, graph.stem_channels, 7, norm, activation, stride=2,
                                                  same_padding=same), MaxPool2dSame(3, 2))
        self.blocks = nn.ModuleDict(
            {str(n.index): BlockNode(n, graph, norm, activation, same, mbconv) for n in graph.nodes})
        self.endpoints = nn.ModuleDict({
            str(level): ConvNormAct(graph.node(index).out_channels, graph.endpoints_num_filters, 1, norm, activation)
            for level, index in graph.endpoints.items()})

        # Free every feature map after its last consumer (the graph is wide; this keeps peak memory down).
        last_use: dict[int, int] = {}
        for pos, n in enumerate(graph.nodes):
            inputs = [e.source for e in n.parents] + list(n.extras)
            if n.is_stem and pos > 0:
                inputs.append(graph.nodes[pos - 1].index)
            for i in inputs:
                last_use[i] = pos
        keep = set(graph.endpoints.values())
        self._release = {pos: [i for i, p in last_use.items() if p == pos and i not in keep]
                         for pos in range(len(graph.nodes))}

        self.out_channels = graph.endpoints_num_filters
        # not 2 ** max_level: with max_level=5 the level-6/7 blocks that feed P3-P5 stay, and a 320 px input would
        # give them 3 x 3 maps resampled onto 10 x 10 ones (misaligned features; AP collapsed at some sizes)
        self.size_divisibility = 2 ** max(node.level for node in graph.nodes)
        self.feature_info = [{"name": str(level), "level": level, "num_chs": graph.endpoints_num_filters,
                              "reduction": 2 ** level} for level in graph.levels]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = x.shape[-2:]

        def size(level: int) -> tuple[int, int]:
            return math.ceil(height / 2 ** level), math.ceil(width / 2 ** level)

        x = self.stem(x)
        feats: dict[int, torch.Tensor] = {}
        for pos, node in enumerate(self.graph.nodes):
            module = self.blocks[str(node.index)]
            if node.is_stem:
                y = module.block(x if pos == 0 else feats[self.graph.nodes[pos - 1].index])
            else:
                target = size(node.level)
                fused = None
                for edge, resample in zip(node.parents, module.resample):
                    r = resample(feats[edge.source], target)
                    fused = r if fused is None else fused.add_(r)  # r is always a fresh tensor
                for extra in node.extras:
                    fused = fused + feats[extra]
                y = module.block(module.act(fused))
            feats[node.index] = y
            for i in self._release[pos]:
                del feats[i]
        return {str(level): self.endpoints[str(level)](feats[index]) for level, index in self.graph.endpoints.items()}

    def to_config(self) -> dict[str, Any]:
        """The resolved configuration as JSON (architecture and scaling as dicts), what weights files store."""
        out = dict(self.config)
        out["architecture"] = out["architecture"].to_dict()
        out["scaling"] = out["scaling"].to_dict()
        return out

    def export_module(self, size: tuple[int, int], **options: Any) -> nn.Module:
        """The traceable wrapper ``spinenet export`` writes: endpoints ``p3 .. p7`` at a fixed input size."""
        return BackboneExport(self, size)


def check_input(images: torch.Tensor, size: tuple[int, int], what: str = "exported model") -> None:
    """``ValueError`` unless ``images`` is ``[N, 3, H, W]`` at the export size."""
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != tuple(size):
        raise ValueError(f"{what}: expects images of shape [N, 3, {size[0]}, {size[1]}] (the size fixed at export); "
                         f"got {list(images.shape)}. Resize/pad the input, or export again with --size")


class BackboneExport(nn.Module):
    """A backbone returning its endpoints as a tuple in level order (ONNX outputs ``p3 .. p7``)."""

    def __init__(self, backbone: SpineNet, size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone, self.size = backbone, tuple(size)
        self.output_names = [f"p{level}" for level in backbone.graph.levels]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_input(images, self.size)
        return tuple(self.backbone(images).values())
