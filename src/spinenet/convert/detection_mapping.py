"""Model Garden RetinaNet checkpoint names for :class:`spinenet.models.retinanet_head.RetinaNetHead` (spec 4.2).

A Model Garden RetinaNet training checkpoint (``tf.train.Checkpoint(model=..., backbone=..., head=...)``) keeps
the head under the object path ``head/`` (fixture README, "Checkpoint formats"):

==============================================  ============================================
checkpoint (``.../.ATTRIBUTES/VARIABLE_VALUE``)  ours (``RetinaNetHead`` state dict)
==============================================  ============================================
``head/_cls_convs/<i>/{kernel,bias}``            ``cls_convs.<i>.{weight,bias}``
``head/_cls_norms/<level index>/<i>/<bn var>``   ``cls_norms.<level index>.<i>.<bn tensor>``
``head/_classifier/{kernel,bias}``               ``classifier.{weight,bias}``
``head/_box_convs``, ``_box_norms``,             ``box_convs``, ``box_norms``, ``box_regressor``
``_box_regressor``
==============================================  ============================================

``<level index>`` counts from ``min_level`` (0 = P3). Separable heads (SpineNet-Mobile, Keras
``SeparableConv2D``) store ``depthwise_kernel`` / ``pointwise_kernel`` / ``bias`` per conv, mapped to our
``.depthwise.weight`` / ``.pointwise.weight`` / ``.pointwise.bias``. The predictors keep the official channel
order (anchor-major; box deltas (dy, dx, dh, dw)), so every tensor is a plain layout transform: no permutation.
"""

from __future__ import annotations

from torch import nn

from .mapping import BN_VARS, MG_SUFFIX, TensorMap, mg_backbone_map


def _mg_conv(ours: str, theirs: str, conv: nn.Module) -> list[TensorMap]:
    if hasattr(conv, "depthwise"):
        return [TensorMap(f"{ours}.depthwise.weight", f"{theirs}/depthwise_kernel{MG_SUFFIX}", "depthwise"),
                TensorMap(f"{ours}.pointwise.weight", f"{theirs}/pointwise_kernel{MG_SUFFIX}", "conv"),
                TensorMap(f"{ours}.pointwise.bias", f"{theirs}/bias{MG_SUFFIX}", "copy")]
    return [TensorMap(f"{ours}.weight", f"{theirs}/kernel{MG_SUFFIX}", "conv"),
            TensorMap(f"{ours}.bias", f"{theirs}/bias{MG_SUFFIX}", "copy")]


def mg_retinanet_head_map(head: nn.Module, prefix: str = "head", torch_prefix: str = "") -> list[TensorMap]:
    """TensorMaps for a :class:`RetinaNetHead` from Model Garden ``head/...`` keys (``torch_prefix`` is prepended
    to our keys, e.g. ``"head."`` when the maps are applied to a whole detector)."""
    maps: list[TensorMap] = []
    for subnet, predictor_ours, predictor_theirs in (("cls", "classifier", "_classifier"),
                                                     ("box", "box_regressor", "_box_regressor")):
        convs, norms = getattr(head, f"{subnet}_convs"), getattr(head, f"{subnet}_norms")
        for i, conv in enumerate(convs):
            maps += _mg_conv(f"{torch_prefix}{subnet}_convs.{i}", f"{prefix}/_{subnet}_convs/{i}", conv)
        for level_index, level_norms in enumerate(norms):
            for i in range(len(level_norms)):
                maps += [TensorMap(f"{torch_prefix}{subnet}_norms.{level_index}.{i}.{ours}",
                                   f"{prefix}/_{subnet}_norms/{level_index}/{i}/{theirs}{MG_SUFFIX}", "copy")
                         for ours, theirs in BN_VARS]
        maps += _mg_conv(f"{torch_prefix}{predictor_ours}", f"{prefix}/{predictor_theirs}",
                         getattr(head, predictor_ours))
    return maps


def mg_retinanet_map(model: nn.Module, backbone_prefix: str = "backbone", head_prefix: str = "head") -> list[TensorMap]:
    """Every tensor of a :class:`~spinenet.models.SpineNetRetinaNet` from a Model Garden RetinaNet checkpoint
    (backbone ``backbone/layer_with_weights-N/...`` via :func:`mg_backbone_map`, plus the head). Use with
    ``apply_tf_weights(model, ckpt, maps, strict_unused=True)`` to require that every checkpoint weight is used."""
    maps = [TensorMap(f"backbone.{m.torch_key}", m.tf_key, m.transform)
            for m in mg_backbone_map(model.backbone, backbone_prefix)]
    return maps + mg_retinanet_head_map(model.head, head_prefix, torch_prefix="head.")
