"""TF1 (tensorflow/tpu) Mask R-CNN checkpoint names for :class:`~spinenet.models.maskrcnn.SpineNetMaskRCNN`
(spec 4.3, 8).

Derived from ``models/official/detection/modeling/architecture/heads.py`` (``RpnHead``, ``FastrcnnHead``,
``MaskrcnnHead``, the version with ``num_convs`` / ``use_batch_norm``), ``nn_ops.py`` (``BatchNormActivation``)
and the SpineNet Mask R-CNN yamls (``configs/spinenet/spinenet*_mrcnn.yaml``: ``multilevel_features: identity``,
``use_batch_norm: true`` in all three heads, ``frcnn_head: num_convs: 4, num_fcs: 1``):

================================================  ====================================================
TF1 variable                                      ours
================================================  ====================================================
``rpn_head/rpn/{kernel,bias}``                    ``rpn.head.convs.0`` (one conv, shared by levels)
``rpn_head/rpn-l<level>-bn/<bn var>``             ``rpn.head.norms.<level index>.0`` (per level)
``rpn_head/rpn-class/{kernel,bias}``              ``rpn.head.cls_logits`` (anchors reordered)
``rpn_head/rpn-box/{kernel,bias}``                ``rpn.head.bbox_pred`` (anchors reordered,
                                                  (dy, dx, dh, dw) -> (dx, dy, dw, dh))
``fast_rcnn_head/conv_<i>/{kernel,bias}``         ``roi_heads.box_head.<3i>``
``fast_rcnn_head/batch_normalization[_<n>]/...``  BNs of the convs, then of the FCs, in creation order
``fast_rcnn_head/fc<6+j>/{kernel,bias}``          ``roi_heads.box_head.<3 * convs + 1 + 3j>`` (inputs
                                                  reordered from TF's (h, w, c) flatten to our (c, h, w))
``fast_rcnn_head/class-predict/{kernel,bias}``    ``roi_heads.box_predictor.cls_score``
``fast_rcnn_head/box-predict/{kernel,bias}``      ``roi_heads.box_predictor.bbox_pred`` (per class
                                                  (dy, dx, dh, dw) -> (dx, dy, dw, dh))
``mask_head/mask-conv-l<i>/{kernel,bias}``        ``roi_heads.mask_head.<3i>``
``mask_head/batch_normalization[_<n>]/...``       the mask convs' BNs, then the deconv's
``mask_head/conv5-mask/{kernel,bias}``            ``roi_heads.mask_predictor.conv5_mask``
``mask_head/mask_fcn_logits/{kernel,bias}``       ``roi_heads.mask_predictor.mask_fcn_logits``
================================================  ====================================================

The unnamed BNs (``batch_norm_activation(net)`` without ``name``) get TF1's per-scope auto-names
``batch_normalization``, ``batch_normalization_1``, ... in call order; with ``use_sync_bn: true`` the layer is
``nn_ops.BatchNormalization`` (a ``tf.layers.BatchNormalization`` subclass), whose default name is the same.
``RpnHead`` builds a single 3x3 conv named ``rpn`` whatever its ``num_convs``, so only ``rpn_convs=1`` maps.

Orderings (so that our decoded boxes equal the official ones): the TF1 Mask R-CNN anchors use aspect ratios
(1, 2, 0.5) with one scale (the Mask R-CNN config's ``anchor`` block), ours (0.5, 1, 2); the RPN outputs are
anchor-major per location in both. TF1 codes box deltas (dy, dx, dh, dw) (``box_utils.encode_boxes``), torchvision
(dx, dy, dw, dh). Box-coder weights agree: RPN (1, 1, 1, 1) in both (TF1 decodes proposals without weights,
torchvision's RPN ``BoxCoder((1, 1, 1, 1))``), Fast R-CNN (10, 10, 5, 5) in both. The class predictors keep
class 0 = background in both; the box predictor is class-major (class k owns outputs 4k..4k+3) in both. The TF1
"+1" decoding itself is the converted model's ``box_decoding="tf1"`` (:mod:`spinenet.models.tf1_boxes`).

Checked on the official TF1 Mask R-CNN fixture (``tpu_maskrcnn_spinenet49_tiny``: every tensor mapped, RPN, box and
mask head outputs reproduced; tests/test_convert_tpu.py), and by a synthetic TF1-layout round trip of other widths
(tests/test_convert_maskrcnn.py).
"""

from __future__ import annotations

from torch import nn

from .detection_mapping import anchor_channel_order
from .mapping import BN_VARS, TensorMap, tpu_backbone_map

#: TF1 Mask R-CNN anchors: ``aspect_ratios: [1.0, 2.0, 0.5]``, ``num_scales: 1`` (tensorflow/tpu Mask R-CNN config).
TPU_MASKRCNN_ASPECT_RATIOS = (1.0, 2.0, 0.5)
#: Our delta j (dx, dy, dw, dh) is TF1's delta DELTA_ORDER[j] of (dy, dx, dh, dw).
DELTA_ORDER = (1, 0, 3, 2)


def box_delta_order(num_boxes: int) -> tuple[int, ...]:
    """Channel order for ``num_boxes`` consecutive (dy, dx, dh, dw) quadruples -> (dx, dy, dw, dh)."""
    return tuple(b * 4 + DELTA_ORDER[j] for b in range(num_boxes) for j in range(4))


def rpn_orders(num_scales: int, ours: tuple[float, ...], theirs: tuple[float, ...]) -> tuple[tuple[int, ...],
                                                                                          tuple[int, ...]]:
    """(objectness order, delta order) of the RPN predictors: anchors reordered, then deltas within an anchor."""
    score = anchor_channel_order(num_scales, ours, theirs, 1)
    anchor_of_box = anchor_channel_order(num_scales, ours, theirs, 4)  # whole quadruples move with their anchor
    box = tuple(anchor_of_box[a * 4 + DELTA_ORDER[j]] for a in range(len(score)) for j in range(4))
    return score, box


def flatten_hwc_to_chw(channels: int, height: int, width: int) -> tuple[int, ...]:
    """For each of our flattened inputs ``c * H * W + h * W + w``, TF's index ``(h * W + w) * C + c``."""
    return tuple((h * width + w) * channels + c for c in range(channels) for h in range(height) for w in range(width))


def _conv(ours: str, theirs: str, order: tuple[int, ...] | None = None) -> list[TensorMap]:
    return [TensorMap(f"{ours}.weight", f"{theirs}/kernel", "conv", order),
            TensorMap(f"{ours}.bias", f"{theirs}/bias", "copy", order)]


def _dense(ours: str, theirs: str, order: tuple[int, ...] | None = None,
           in_order: tuple[int, ...] | None = None) -> list[TensorMap]:
    return [TensorMap(f"{ours}.weight", f"{theirs}/kernel", "dense", order, in_order),
            TensorMap(f"{ours}.bias", f"{theirs}/bias", "copy", order)]


def _bn(ours: str, theirs: str) -> list[TensorMap]:
    return [TensorMap(f"{ours}.{o}", f"{theirs}/{t}", "copy") for o, t in BN_VARS]


class _AutoBN:
    """TF1 auto-names of unnamed ``batch_normalization`` layers within one variable scope, in call order."""

    def __init__(self, scope: str) -> None:
        self.scope, self.n = scope, 0

    def next(self) -> str:
        name = "batch_normalization" + ("" if self.n == 0 else f"_{self.n}")
        self.n += 1
        return f"{self.scope}/{name}"


def tpu_rpn_map(head: nn.Module, levels: list[int], num_scales: int, aspect_ratios: tuple[float, ...],
                tf_aspect_ratios: tuple[float, ...] = TPU_MASKRCNN_ASPECT_RATIOS,
                prefix: str = "rpn.head.") -> list[TensorMap]:
    """TensorMaps of :class:`~spinenet.models.maskrcnn.RPNHead` from TF1 ``rpn_head/...``."""
    if len(head.convs) != 1:
        raise ValueError(f"TF1 RpnHead has exactly one 3x3 conv ('rpn_head/rpn'), the model has rpn_convs="
                         f"{len(head.convs)}; build it with --set rpn_convs=1")
    score_order, box_order = rpn_orders(num_scales, tuple(aspect_ratios), tuple(tf_aspect_ratios))
    maps = _conv(f"{prefix}convs.0", "rpn_head/rpn")
    for index, level in enumerate(levels):
        maps += _bn(f"{prefix}norms.{index}.0", f"rpn_head/rpn-l{level}-bn")
    maps += _conv(f"{prefix}cls_logits", "rpn_head/rpn-class", score_order)
    maps += _conv(f"{prefix}bbox_pred", "rpn_head/rpn-box", box_order)
    return maps


def _conv_bn_stack(seq: nn.Module, ours: str, conv_name: str, bns: _AutoBN) -> tuple[list[TensorMap], int]:
    """Maps of the leading (conv, BN, act) triples of ``seq``; returns them and the number of convs."""
    maps: list[TensorMap] = []
    i = 0
    while 3 * i < len(seq) and isinstance(seq[3 * i], nn.Conv2d):
        maps += _conv(f"{ours}.{3 * i}", f"{bns.scope}/{conv_name.format(i)}")
        maps += _bn(f"{ours}.{3 * i + 1}", bns.next())
        i += 1
    return maps, i


def tpu_box_head_map(box_head: nn.Module, box_predictor: nn.Module, in_channels: int, pool: int = 7,
                     prefix: str = "roi_heads.") -> list[TensorMap]:
    """TensorMaps of the Fast R-CNN box head + predictor from TF1 ``fast_rcnn_head/...``."""
    bns = _AutoBN("fast_rcnn_head")
    maps, convs = _conv_bn_stack(box_head, f"{prefix}box_head", "conv_{}", bns)
    channels = box_head[3 * (convs - 1)].out_channels if convs else in_channels
    in_order: tuple[int, ...] | None = flatten_hwc_to_chw(channels, pool, pool)
    index = 3 * convs + 1  # after the Flatten
    j = 0
    while index < len(box_head) and isinstance(box_head[index], nn.Linear):
        maps += _dense(f"{prefix}box_head.{index}", f"fast_rcnn_head/fc{6 + j}", in_order=in_order)
        maps += _bn(f"{prefix}box_head.{index + 1}", bns.next())
        in_order = None  # later FCs read our own vectors
        index, j = index + 3, j + 1
    if j == 0:
        raise ValueError("the box head has no FC layer; the TF1 SpineNet Mask R-CNN configs use num_fcs: 1")
    num_classes = box_predictor.cls_score.out_features
    maps += _dense(f"{prefix}box_predictor.cls_score", "fast_rcnn_head/class-predict")
    maps += _dense(f"{prefix}box_predictor.bbox_pred", "fast_rcnn_head/box-predict", box_delta_order(num_classes))
    return maps


def tpu_mask_head_map(mask_head: nn.Module, prefix: str = "roi_heads.") -> list[TensorMap]:
    """TensorMaps of the mask head + predictor from TF1 ``mask_head/...`` (``conv5-mask`` is a
    ``conv2d_transpose``: kernel [kh, kw, out, in] -> ours [in, out, kh, kw], the same axis permutation as a conv)."""
    bns = _AutoBN("mask_head")
    maps, _ = _conv_bn_stack(mask_head, f"{prefix}mask_head", "mask-conv-l{}", bns)
    maps += _conv(f"{prefix}mask_predictor.conv5_mask", "mask_head/conv5-mask")
    maps += _bn(f"{prefix}mask_predictor.bn", bns.next())
    maps += _conv(f"{prefix}mask_predictor.mask_fcn_logits", "mask_head/mask_fcn_logits")
    return maps


def tpu_maskrcnn_map(model: nn.Module, backbone_scope: str | None = None,
                     tf_aspect_ratios: tuple[float, ...] = TPU_MASKRCNN_ASPECT_RATIOS) -> list[TensorMap]:
    """Every tensor of a :class:`~spinenet.models.maskrcnn.SpineNetMaskRCNN` from a TF1 Mask R-CNN checkpoint:
    the backbone under ``spinenet/`` (:func:`~spinenet.convert.mapping.tpu_backbone_map`), the RPN, box and mask
    heads as in the module table."""
    anchors = model.rpn.anchor_generator
    maps = [TensorMap(f"backbone.{m.torch_key}", m.tf_key, m.transform)
            for m in tpu_backbone_map(model.backbone, backbone_scope)]
    maps += tpu_rpn_map(model.rpn.head, anchors.levels, anchors.num_scales, anchors.aspect_ratios, tf_aspect_ratios)
    heads = model.roi_heads
    pool = heads.box_roi_pool.output_size
    pool = pool[0] if isinstance(pool, (tuple, list)) else pool
    maps += tpu_box_head_map(heads.box_head, heads.box_predictor, model.backbone.out_channels, pool)
    maps += tpu_mask_head_map(heads.mask_head)
    return maps
