"""Parameter and multiply-add counts.

Multiply-adds (MACs) are counted for convolutions and linear layers only: a convolution producing an
``N x C_out x H x W`` map costs ``C_out * H * W * (C_in / groups) * k_h * k_w`` per image, a linear layer
``in * out``. Batch norm, activations, pooling, resizing and additions are not counted. This is the paper's
"FLOPs" convention (spec 4.5: its numbers are multiply-adds of backbone + head). The count runs the real module
on PyTorch's ``meta`` device, so it is exact for the graph that is built, at any input size, in milliseconds.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (BN running statistics are buffers and never counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    per_out = (module.in_channels // module.groups) * kh * kw
    return int(output[0].numel()) * per_out


def count_macs(model: nn.Module, size: int | tuple[int, int] = 640, in_channels: int = 3) -> int:
    """Multiply-adds of conv and linear layers for one image of ``size`` (an int means square)."""
    height, width = (size, size) if isinstance(size, int) else size
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += _conv_macs(module, output)
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features * int(output[0].numel() // module.out_features)

    meta = meta_copy(model)
    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            meta.eval()(torch.empty(1, in_channels, height, width, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


def meta_copy(model: nn.Module) -> nn.Module:
    """The same module with parameters on the meta device (no memory, no compute)."""
    if all(p.device.type == "meta" for p in model.parameters()):
        return model
    import copy

    clone = copy.deepcopy(model)
    return clone.to_empty(device="meta")


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """Build a model directly on the meta device (fast for the 100M+ parameter members)."""
    with torch.device("meta"):
        return build()
