"""Inference-only rewrites of a model: fold BatchNorm, run activations in place, project before upsampling,
channels_last; and in-place ``torch.compile`` of a model's dense parts.

A BatchNorm in inference mode is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``.
Right after a convolution (or a linear layer) it folds into that layer's weight and bias, which removes one pass
over every feature map. The transform is a plain ``nn.Module`` rewrite that knows three patterns:

* :class:`~spinenet.layers.ops.ConvNormAct` (every convolution of the backbones and the segmentation head);
* adjacent ``(Conv2d | ConvTranspose2d, BatchNorm2d)`` and ``(Linear, BatchNorm1d)`` children of an
  ``nn.Sequential`` (the Mask R-CNN box and mask heads);
* any module with a ``fold_batchnorm_()`` method, which folds its own (the detector heads share one convolution
  across levels with one BatchNorm per level, so they keep one folded copy of the convolution per level).

The activation after a folded convolution runs in place on the convolution's fresh output (no extra allocation);
oneDNN's fused convolution + activation kernel (``mkldnn._convolution_pointwise``) measured no faster than
convolution followed by an in-place activation in eager mode on the AVX-512 CPU of ``docs/performance.md``, so it
is not used. Cross-scale connections that upsample apply their 1x1 projection (and its folded BatchNorm) at the
source resolution and upsample the result: nearest upsampling copies pixels and a 1x1 convolution acts per pixel,
so the two commute and the projection costs ``4 ** levels`` times fewer multiply-adds (spec 3.3).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .blocks import Bottleneck, Residual
from .ops import ConvNormAct
from .resample import Resample, SeparableResample

_IN_PLACE_ACTIVATIONS = (nn.ReLU, nn.SiLU, nn.Hardswish)


def fold_batchnorm(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of ``layer`` (``Conv2d``, ``ConvTranspose2d`` or ``Linear``) with the inference-mode ``bn`` that
    follows it folded into its weight and bias (torch's ``fuse_conv_bn_eval`` / ``fuse_linear_bn_eval``)."""
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError(f"cannot fold {bn}: it has no running statistics (track_running_stats=False)")
    if isinstance(layer, nn.Linear):
        return fuse_linear_bn_eval(layer.eval(), bn.eval())
    if isinstance(layer, nn.ConvTranspose2d):
        return fuse_conv_bn_eval(layer.eval(), bn.eval(), transpose=True)
    if isinstance(layer, nn.Conv2d):
        return fuse_conv_bn_eval(layer.eval(), bn.eval())
    raise ValueError(f"cannot fold a BatchNorm into {type(layer).__name__}; expected Conv2d, ConvTranspose2d or "
                     "Linear")


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return isinstance(bn, nn.BatchNorm1d) and bn.num_features == layer.out_features
    conv = isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d))
    return conv and isinstance(bn, nn.BatchNorm2d) and bn.num_features == layer.out_channels


def _fold_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules)
    for first, second in zip(names, names[1:]):
        layer, bn = seq._modules[first], seq._modules[second]
        if layer is not None and bn is not None and _foldable(layer, bn) and bn.track_running_stats:
            seq._modules[first] = fold_batchnorm(layer, bn)
            seq._modules[second] = nn.Identity()
            after = names.index(second) + 1
            if after < len(names) and seq._modules[names[after]] is not None:
                _in_place(seq._modules[names[after]])  # acts on the folded layer's fresh output


def _in_place(act: nn.Module) -> nn.Module:
    if isinstance(act, _IN_PLACE_ACTIVATIONS):
        act.inplace = True
    return act


def optimize_for_inference(model: nn.Module, *, channels_last: bool | None = None,
                           inplace: bool = False) -> nn.Module:
    """An inference-only copy of ``model``: BatchNorm folded, activations in place, projection before upsampling,
    channels_last (module docstring). Outputs stay within the project's 1e-4 rule of ``model.eval()``.

    ``channels_last``: ``None`` (default) uses it on CPU and CUDA, where oneDNN / cuDNN convolutions are faster in
    NHWC; ``False`` keeps the memory format. ``inplace=True`` rewrites ``model`` itself instead of a copy. The
    result is in eval mode and must not be trained (its BatchNorms are gone).
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        fold = getattr(module, "fold_batchnorm_", None)
        if callable(fold):
            fold()
        if isinstance(module, ConvNormAct) and isinstance(module.bn, nn.modules.batchnorm._BatchNorm):
            module.conv = fold_batchnorm(module.conv, module.bn)
            module.bn = nn.Identity()
            _in_place(module.act)
        elif isinstance(module, nn.Sequential):
            _fold_sequential(module)
        if isinstance(module, (Resample, SeparableResample)):
            module.project_first = True
        if isinstance(module, (Bottleneck, Residual)):
            _in_place(module.act)  # on the fresh residual sum
    if channels_last is None:
        devices = {p.device.type for p in model.parameters()}
        channels_last = bool(devices) and devices <= {"cpu", "cuda"}
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def channels_last_for_bf16(model: nn.Module, device: torch.device | str, precision: str) -> nn.Module:
    """``model`` in channels_last when bf16 autocast runs on a CPU (else unchanged): oneDNN's bf16 convolutions
    are NHWC kernels, and in NCHW every convolution pays layout reorders (slower than fp32; docs/performance.md).
    Training and inference alike; the state dict is unchanged."""
    if precision == "bf16" and torch.device(device).type == "cpu":
        return model.to(memory_format=torch.channels_last)
    return model


def remaining_batchnorms(model: nn.Module) -> list[str]:
    """Names of the BatchNorm modules a model still holds (empty after :func:`optimize_for_inference` on every
    registered model)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def compile_dense(model: nn.Module, **options) -> nn.Module:
    """``torch.compile`` in place (``nn.Module.compile``: state-dict keys unchanged) the parts of ``model`` that
    run dense tensors: its ``backbone``, ``head`` and ``rpn.head`` when it has them (torchvision's detection wrappers
    around them, with anchor matching and data-dependent post-processing, stay eager), else the whole model.
    ``options`` go to ``torch.compile`` (e.g. ``backend``, ``mode``). Returns ``model``."""
    parts = [getattr(model, name, None) for name in ("backbone", "head")]
    rpn = getattr(model, "rpn", None)
    parts.append(getattr(rpn, "head", None))
    parts = [p for p in parts if isinstance(p, nn.Module)]
    for part in parts or [model]:
        part.compile(**options)
    return model
