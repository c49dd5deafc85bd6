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

TF1 RetinaNet checkpoints (tensorflow/tpu, :func:`tpu_retinanet_map`) keep the head under ``retinanet/class_net`` and
``retinanet/box_net`` (the SpineNet-Mobile config ``use_separable_conv: true`` swaps each ``tf.layers.conv2d`` for a
``tf.layers.separable_conv2d`` of the same name, predictors included); their anchors use the aspect ratios
(1, 2, 0.5), so the predictor channels are permuted to our (0.5, 1, 2) while the box order (dy, dx, dh, dw) is
kept. Checked on the official TF1 RetinaNet fixture (``tpu_retinanet_spinenet49_tiny``, tests/test_convert_tpu.py);
no fixture has a separable TF1 head.
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


# ------------------------------------------------------------------------------------------- TF1 (tensorflow/tpu)
#: Aspect ratios of the TF1 RetinaNet configs (``retinanet_config.py``: ``aspect_ratios: [1.0, 2.0, 0.5]``, spec 7.2);
#: Model Garden and our anchors use (0.5, 1.0, 2.0). Both put scales outer and ratios inner (anchor a = s * 3 + r).
TPU_ASPECT_RATIOS = (1.0, 2.0, 0.5)


def anchor_channel_order(num_scales: int, ours: tuple[float, ...], theirs: tuple[float, ...],
                         per_anchor: int) -> tuple[int, ...]:
    """For each of our predictor channels ``a * per_anchor + k``, the checkpoint channel holding it.

    Our anchor ``a = s * len(ours) + i`` has ratio ``ours[i]``; the checkpoint stores that anchor at
    ``s * len(theirs) + theirs.index(ours[i])``. ``per_anchor`` is ``num_classes`` (class predictor) or 4 (box
    predictor; the (dy, dx, dh, dw) order inside an anchor is the same in both, so only anchors move).
    """
    if sorted(ours) != sorted(theirs):
        raise ValueError(f"anchor aspect ratios differ: ours {tuple(ours)}, checkpoint {tuple(theirs)}; a converted "
                         "head needs the same set of anchors")
    order: list[int] = []
    for s in range(num_scales):
        for ratio in ours:
            a = s * len(theirs) + list(theirs).index(ratio)
            order += [a * per_anchor + k for k in range(per_anchor)]
    return tuple(order)


def _tpu_conv(ours: str, theirs: str, conv: nn.Module, order: tuple[int, ...] | None = None) -> list[TensorMap]:
    """A TF1 ``tf.layers.conv2d`` (``kernel``, ``bias``) or ``separable_conv2d`` (``depthwise_kernel``,
    ``pointwise_kernel``, ``bias``); ``order`` permutes the output channels (predictors)."""
    if hasattr(conv, "depthwise"):
        return [TensorMap(f"{ours}.depthwise.weight", f"{theirs}/depthwise_kernel", "depthwise"),
                TensorMap(f"{ours}.pointwise.weight", f"{theirs}/pointwise_kernel", "conv", order),
                TensorMap(f"{ours}.pointwise.bias", f"{theirs}/bias", "copy", order)]
    return [TensorMap(f"{ours}.weight", f"{theirs}/kernel", "conv", order),
            TensorMap(f"{ours}.bias", f"{theirs}/bias", "copy", order)]


def tpu_retinanet_head_map(head: nn.Module, levels: list[int], num_scales: int, aspect_ratios: tuple[float, ...],
                           scope: str = "retinanet", torch_prefix: str = "",
                           tf_aspect_ratios: tuple[float, ...] = TPU_ASPECT_RATIOS) -> list[TensorMap]:
    """TensorMaps for a :class:`RetinaNetHead` from a TF1 RetinaNet checkpoint (``heads.RetinanetHead``, spec 4.3).

    TF1 names (variable scope ``retinanet``): ``class_net/class-<i>/{kernel,bias}`` (shared over levels),
    ``class_net/class-<i>-<level>/<bn var>`` (per-level BN, named by the level itself, 3..7),
    ``class_net/class-predict/{kernel,bias}``; the same under ``box_net/box-...``. Separable heads store
    ``depthwise_kernel`` / ``pointwise_kernel`` / ``bias``. The predictors' anchors are reordered from the TF1
    aspect ratios ``tf_aspect_ratios`` to ``aspect_ratios`` (:func:`anchor_channel_order`).

    The names follow ``heads.py`` of tensorflow/tpu; checked on the TF1 RetinaNet fixture (4 plain convs).
    """
    maps: list[TensorMap] = []
    cls_order = anchor_channel_order(num_scales, tuple(aspect_ratios), tuple(tf_aspect_ratios), head.num_classes)
    box_order = anchor_channel_order(num_scales, tuple(aspect_ratios), tuple(tf_aspect_ratios), 4)
    for subnet, tf_net, tf_name, predictor, order in (("cls", "class_net", "class", "classifier", cls_order),
                                                      ("box", "box_net", "box", "box_regressor", box_order)):
        convs, norms = getattr(head, f"{subnet}_convs"), getattr(head, f"{subnet}_norms")
        for i, conv in enumerate(convs):
            maps += _tpu_conv(f"{torch_prefix}{subnet}_convs.{i}", f"{scope}/{tf_net}/{tf_name}-{i}", conv)
        for level_index, level_norms in enumerate(norms):
            level = levels[level_index]
            for i in range(len(level_norms)):
                maps += [TensorMap(f"{torch_prefix}{subnet}_norms.{level_index}.{i}.{ours}",
                                   f"{scope}/{tf_net}/{tf_name}-{i}-{level}/{theirs}", "copy")
                         for ours, theirs in BN_VARS]
        maps += _tpu_conv(f"{torch_prefix}{predictor}", f"{scope}/{tf_net}/{tf_name}-predict", getattr(head, predictor),
                          order)
    return maps


def tpu_retinanet_map(model: nn.Module, backbone_scope: str | None = None, head_scope: str = "retinanet",
                      tf_aspect_ratios: tuple[float, ...] = TPU_ASPECT_RATIOS) -> list[TensorMap]:
    """Every tensor of a :class:`~spinenet.models.SpineNetRetinaNet` from a TF1 RetinaNet checkpoint: the backbone
    under ``spinenet/`` or, for SpineNet-Mobile, ``spinenet_mbconv/``
    (:func:`~spinenet.convert.mapping.tpu_backbone_map`; ``backbone_scope`` overrides) and the head under
    ``retinanet/`` (:func:`tpu_retinanet_head_map`, anchors reordered; the mobile head's
    ``tf.layers.separable_conv2d`` layers carry the same names)."""
    from .mapping import tpu_backbone_map

    anchors = model.anchor_generator
    maps = [TensorMap(f"backbone.{m.torch_key}", m.tf_key, m.transform)
            for m in tpu_backbone_map(model.backbone, backbone_scope)]
    return maps + tpu_retinanet_head_map(model.head, anchors.levels, anchors.num_scales, anchors.aspect_ratios,
                                         head_scope, "head.", tf_aspect_ratios)
