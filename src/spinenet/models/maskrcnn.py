"""SpineNet Mask R-CNN on torchvision's ``MaskRCNN`` (paper section 5.4 / Table 6; spec 5.5, 7.2).

``create_detector("maskrcnn_spinenet49")`` builds one of the rows below. As in the official TPU configs
(``spinenet*_mrcnn.yaml``, ``multilevel_features: identity``) the SpineNet endpoints P3-P7 feed the heads
directly -- no FPN -- and RoIs are pooled from those levels by name (``MultiScaleRoIAlign(["3", ..., "7"])``,
never torchvision's default ``"0".."3"``). An RoI of side ``s`` (= sqrt of its area) is read from level
``floor(4 + log2(s / 224))`` clamped to the backbone's levels, which is the official ``multilevel_crop_and_resize``
rule and torchvision's ``LevelMapper``. ``min_level=2, flavor="model_garden"`` adds P2 from the backbone's
level-2 output block (only the Model Garden SpineNet has one; the TPU code's graph ends at P3).

Heads (official TPU ``heads.py`` with ``use_batch_norm: true``; widths from the yamls):

* RPN: ``rpn_convs`` shared 3x3 convs with **per-level** BatchNorm (the official head keeps one BN per level),
  then 1x1 objectness (one logit per anchor) and 1x1 box deltas. One conv for every model: that is what the
  zoo's parameter counts and FLOPs hold (the 190 yaml's ``rpn_head: num_convs: 7`` would add 8 M parameters,
  +4.8 %; ``rpn_convs=7`` builds that literal reading).
* Box head: ``box_convs`` 3x3 convs + BN + activation on the 7x7 RoI features, flatten, ``box_fcs`` fully
  connected layers + BN + activation (4 convs + 1 FC of 1024 in every SpineNet yaml; 512 for 49S), then the
  class and class-specific box predictors (torchvision's ``FastRCNNPredictor``).
* Mask head: ``mask_convs`` 3x3 convs + BN + activation on 14x14 RoI features, a 2x2 stride-2 transposed conv +
  BN + activation, and a 1x1 conv to one 28x28 mask logit map per class.

49S heads are 128 wide (FC 512), 49-143 256 wide (FC 1024), 190 384 wide with 7 convs everywhere (yaml).
Anchors are the official ones (:mod:`.anchors`): Mask R-CNN's base config keeps **one** scale and three aspect
ratios per location, size ``anchor_size * 2**level`` (anchor_size 3; 5 for 190). BN: TF momentum 0.99 /
eps 1e-3 (PyTorch momentum 0.01), relu (swish for 190), as the yamls.

torchvision supplies the rest, with the official settings where they are exposed: RPN matching 0.7 / 0.3,
256 anchors per image at half positives; the best 2000 (test: 1000) proposals per level before NMS 0.7, 1000 kept;
512 RoIs per image at a quarter positives (IoU 0.5); detections score > 0.05, NMS 0.5, 100 per image; masks
binarised at 0.5 after pasting; ground-truth boxes join the RoI candidates (official ``mix_gt_boxes``). Boxes decode
and clip the torchvision way, or with ``box_decoding="tf1"`` (what ``spinenet convert --source tpu`` saves) as the
TF1 code does (:mod:`.tf1_boxes`: "+1" convention, clipping to the last pixel). Known
differences, not replicated: torchvision's RPN codes deltas as (dx, dy, dw, dh) where the official code uses
(dy, dx, dh, dw) (only a channel order, irrelevant when training from scratch), and its Fast R-CNN box loss is
smooth-L1 with beta 1/9 (official Huber delta 1.0).

With 91 classes the parameter counts and multiply-adds (:func:`maskrcnn_macs`) come within 0.2% of the
official model zoo (tests/test_maskrcnn.py).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import MultiScaleRoIAlign, nms, roi_align

from ..backbone import check_input
from ..backbones import BACKBONE_OVERRIDES, backbone_from_json, config_to_json, get_model_def
from ..layers.fuse import fold_batchnorm
from ..layers.ops import ConvNormAct, get_activation, make_norm
from .anchors import MultilevelAnchors
from .base import DenseForward, TaskModel, load_weights, training_overrides
from .detection import ASPECT_RATIOS, DetectorLabels, _positive_int, _Transform, detector_backbone_config, \
    detector_classes, register_detector, register_detector_family, resize_and_reclass, saved_classes
from .tf1_boxes import check_box_decoding, use_tf1_decoding

MASKRCNN_FORMAT = "spinenet-maskrcnn/1"
BOX_POOL_SIZE = 7  # RoIAlign output of the box head (official and torchvision)
MASK_POOL_SIZE = 14  # RoIAlign output of the mask head; the transposed conv doubles it to the 28x28 mask target
# Official Mask R-CNN settings (spec 7.2; TPU maskrcnn_config.py), under torchvision's argument names.
MASKRCNN_DEFAULTS: dict[str, float | int] = {
    "rpn_pre_nms_top_n_train": 2000, "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_train": 1000, "rpn_post_nms_top_n_test": 1000, "rpn_nms_thresh": 0.7,
    "rpn_fg_iou_thresh": 0.7, "rpn_bg_iou_thresh": 0.3, "rpn_batch_size_per_image": 256,
    "rpn_positive_fraction": 0.5, "box_batch_size_per_image": 512, "box_positive_fraction": 0.25,
    "box_fg_iou_thresh": 0.5, "box_bg_iou_thresh": 0.5, "box_score_thresh": 0.05, "box_nms_thresh": 0.5,
    "box_detections_per_img": 100,
    "box_decoding": "standard",  # or "tf1": TF1's "+1" decoding and clipping (.tf1_boxes), read by SpineNetMaskRCNN
}
HEAD_FIELDS = ("rpn_convs", "rpn_width", "box_convs", "box_width", "box_fcs", "box_fc_dim", "mask_convs",
               "mask_width")
# ``head_width`` sets the three conv widths at once (the RetinaNet override name, handy for tiny test models).
MASKRCNN_OVERRIDES = HEAD_FIELDS + ("head_width", "anchor_size") + tuple(MASKRCNN_DEFAULTS)


@dataclass(frozen=True)
class MaskRCNNDef:
    """One registered Mask R-CNN: backbone, head geometry (spec 7.2), anchor size and default input size."""

    name: str
    backbone: str
    rpn_convs: int
    rpn_width: int
    box_convs: int
    box_width: int
    box_fcs: int
    box_fc_dim: int
    mask_convs: int
    mask_width: int
    anchor_size: float
    image_size: int
    activation: str
    description: str = ""
    family = "maskrcnn"  # not a field: read by ``spinenet list``
    task = "maskrcnn"  # not a field: the registry's task of these rows


# TF BN momentum 0.99 / eps 1e-3 of every SpineNet Mask R-CNN yaml, in the PyTorch convention.
BN_EPS, BN_MOMENTUM = 1e-3, 0.01

for _row in (
    # name                   backbone       rpn        box (convs, width, fcs, fc)   mask       anchor input act
    ("maskrcnn_spinenet49s", "spinenet49s", 1, 128,    4, 128, 1, 512,              4, 128,    3.0,  640, "relu"),
    ("maskrcnn_spinenet49",  "spinenet49",  1, 256,    4, 256, 1, 1024,             4, 256,    3.0,  640, "relu"),
    ("maskrcnn_spinenet96",  "spinenet96",  1, 256,    4, 256, 1, 1024,             4, 256,    3.0, 1024, "relu"),
    ("maskrcnn_spinenet143", "spinenet143", 1, 256,    4, 256, 1, 1024,             4, 256,    3.0, 1280, "relu"),
    ("maskrcnn_spinenet190", "spinenet190", 1, 384,    7, 384, 1, 1024,             7, 384,    5.0, 1536, "swish"),
):
    register_detector(MaskRCNNDef(*_row, description=f"Mask R-CNN with {get_model_def(_row[1]).description}"))


class RPNHead(nn.Module):
    """Region proposal head: shared 3x3 convs with per-level BN, then 1x1 objectness and 1x1 box deltas.

    torchvision's RPN contract: ``forward(list of [N, C, H, W])`` -> (``[N, A, H, W]`` logits, ``[N, 4A, H, W]``
    deltas) per level, channel ``a * 4 + j`` for anchor ``a``.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_convs: int, num_filters: int, num_levels: int,
                 activation: str, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        widths = [in_channels] + [num_filters] * num_convs
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1) for i in range(num_convs))
        self.norms = nn.ModuleList(  # [level][conv]: "the batch normalization layers are not shared between levels"
            nn.ModuleList(nn.BatchNorm2d(num_filters, eps=bn_eps, momentum=bn_momentum) for _ in range(num_convs))
            for _ in range(num_levels))
        self.act = get_activation(activation)
        self.cls_logits = nn.Conv2d(widths[-1], num_anchors, 1)
        self.bbox_pred = nn.Conv2d(widths[-1], num_anchors * 4, 1)
        for conv in [*self.convs, self.cls_logits, self.bbox_pred]:  # official: N(0, 0.01), zero bias
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.level_convs: nn.ModuleList | None = None  # set by fold_batchnorm_ (inference only)

    def fold_batchnorm_(self) -> None:
        """Inference only (:func:`spinenet.optimize_for_inference`): per level, copies of the shared convs with
        that level's BatchNorms folded in; the norms become identities."""
        if self.level_convs is not None:
            return
        self.level_convs = nn.ModuleList(nn.ModuleList(fold_batchnorm(c, n) for c, n in zip(self.convs, norms))
                                         for norms in self.norms)
        self.norms = nn.ModuleList(nn.ModuleList(nn.Identity() for _ in self.convs) for _ in self.norms)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(features) != len(self.norms):
            raise ValueError(f"RPN head: built for {len(self.norms)} levels, got {len(features)} feature maps")
        logits, deltas = [], []
        for i, (x, norms) in enumerate(zip(features, self.norms)):
            for conv, norm in zip(self.convs if self.level_convs is None else self.level_convs[i], norms):
                x = self.act(norm(conv(x)))
            logits.append(self.cls_logits(x))
            deltas.append(self.bbox_pred(x))
        return logits, deltas


def _conv_bn_act(in_channels: int, out_channels: int, activation: str, eps: float, momentum: float) -> list[nn.Module]:
    """3x3 conv (with bias, official MSRA fill) -> BN -> act as three modules of the head's flat ``Sequential``
    (state-dict keys ``<index>.weight``, as torchvision's heads and the released weights files have them)."""
    block = ConvNormAct(in_channels, out_channels, 3, make_norm(eps, momentum), activation, bias=True)
    nn.init.kaiming_normal_(block.conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(block.conv.bias)
    return list(block)


class BoxHead(nn.Sequential):
    """Fast R-CNN box head: ``num_convs`` x (3x3 conv, BN, act) on ``[R, C, 7, 7]``, flatten, ``num_fcs`` x
    (FC, BN, act) -> ``[R, fc_dim]``."""

    def __init__(self, in_channels: int, num_convs: int, num_filters: int, num_fcs: int, fc_dim: int,
                 activation: str, bn_eps: float, bn_momentum: float) -> None:
        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(num_convs):
            layers += _conv_bn_act(width, num_filters, activation, bn_eps, bn_momentum)
            width = num_filters
        layers.append(nn.Flatten())
        width *= BOX_POOL_SIZE * BOX_POOL_SIZE
        for _ in range(num_fcs):
            fc = nn.Linear(width, fc_dim)
            nn.init.xavier_uniform_(fc.weight)  # Keras' default dense initialiser
            nn.init.zeros_(fc.bias)
            layers += [fc, nn.BatchNorm1d(fc_dim, eps=bn_eps, momentum=bn_momentum), get_activation(activation)]
            width = fc_dim
        super().__init__(*layers)
        self.out_features = width


class MaskHead(nn.Sequential):
    """Mask head body: ``num_convs`` x (3x3 conv, BN, act) on ``[R, C, 14, 14]``."""

    def __init__(self, in_channels: int, num_convs: int, num_filters: int, activation: str, bn_eps: float,
                 bn_momentum: float) -> None:
        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(num_convs):
            layers += _conv_bn_act(width, num_filters, activation, bn_eps, bn_momentum)
            width = num_filters
        super().__init__(*layers)
        self.out_channels = width


class MaskPredictor(nn.Sequential):
    """2x2 stride-2 transposed conv + BN + act (14 -> 28), then a 1x1 conv to one mask logit map per class."""

    def __init__(self, in_channels: int, num_filters: int, num_classes: int, activation: str, bn_eps: float,
                 bn_momentum: float) -> None:
        up = nn.ConvTranspose2d(in_channels, num_filters, 2, stride=2)
        logits = nn.Conv2d(num_filters, num_classes, 1)
        for conv in (up, logits):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        super().__init__(OrderedDict([("conv5_mask", up),
                                      ("bn", nn.BatchNorm2d(num_filters, eps=bn_eps, momentum=bn_momentum)),
                                      ("act", get_activation(activation)), ("mask_fcn_logits", logits)]))


class SpineNetMaskRCNN(TaskModel, DetectorLabels, MaskRCNN):
    """torchvision ``MaskRCNN`` with SpineNet P3-P7 (or P2-P7), official anchors and BN heads.

    Build it with :func:`spinenet.models.create_detector` (``maskrcnn_*`` names). ``config`` is the
    JSON-serialisable description :func:`spinenet.models.create_detector_from_config` rebuilds it from. Train
    mode: ``model(images, targets)`` with ``boxes``, ``labels`` and ``masks`` (``uint8 [K, H, W]``) -> losses;
    eval mode: ``[{boxes, labels, scores, masks}]`` with ``masks`` ``float [K, 1, H, W]`` probabilities pasted
    into the original image.
    """

    task = "maskrcnn"
    config_format = MASKRCNN_FORMAT
    reinit_on_num_classes = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")

    def __init__(self, backbone: nn.Module, anchors: MultilevelAnchors, rpn_head: RPNHead, box_head: BoxHead,
                 mask_head: MaskHead, num_classes: int, image_size: int, mask_width: int, activation: str,
                 bn_eps: float, bn_momentum: float, config: dict[str, Any] | None = None,
                 box_decoding: str = "standard", **settings: Any) -> None:
        levels = [str(level) for level in anchors.levels]
        super().__init__(
            backbone, num_classes=None, min_size=image_size, max_size=image_size, rpn_head=rpn_head,
            box_roi_pool=MultiScaleRoIAlign(levels, BOX_POOL_SIZE, sampling_ratio=2),
            box_head=box_head, box_predictor=FastRCNNPredictor(box_head.out_features, num_classes),
            mask_roi_pool=MultiScaleRoIAlign(levels, MASK_POOL_SIZE, sampling_ratio=2), mask_head=mask_head,
            mask_predictor=MaskPredictor(mask_head.out_channels, mask_width, num_classes, activation, bn_eps,
                                         bn_momentum),
            size_divisible=backbone.size_divisibility, **settings)
        # torchvision insists on its own AnchorGenerator type in __init__; ours has the same call interface.
        self.rpn.anchor_generator = anchors
        t = self.transform
        self.transform = _Transform(image_size, image_size, t.image_mean, t.image_std,
                                    size_divisible=backbone.size_divisibility)
        predictor = self.roi_heads.box_predictor  # official initialisers of the two predictors
        nn.init.normal_(predictor.cls_score.weight, std=0.01)
        nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
        nn.init.zeros_(predictor.cls_score.bias)
        nn.init.zeros_(predictor.bbox_pred.bias)
        # configs saved before box_decoding existed decode the standard (torchvision) way
        self.box_decoding = check_box_decoding(box_decoding, "Mask R-CNN")
        if box_decoding == "tf1":
            use_tf1_decoding(self.rpn, self.roi_heads)
        self.num_classes = num_classes
        self.config = dict(config or {})

    @property
    def score_thresh(self) -> float:
        """The detection score threshold (same attribute name as the RetinaNet detectors)."""
        return self.roi_heads.score_thresh

    @score_thresh.setter
    def score_thresh(self, value: float) -> None:
        self.roi_heads.score_thresh = value

    def macs_module(self) -> nn.Module:
        """Backbone + RPN head on one tensor, for :func:`spinenet.profile.count_macs`."""
        return DenseForward(self.backbone, self.rpn.head)

    def total_macs(self, size: int | tuple[int, int] | None = None) -> int:
        """Multiply-adds with the RoI heads at the official 1000 proposals / 100 masks (:func:`maskrcnn_macs`)."""
        return maskrcnn_macs(self, size)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SpineNetMaskRCNN:
        return create_maskrcnn_from_config(config)

    @classmethod
    def config_for_weights(cls, saved: Mapping[str, Any], *, num_classes: int | None = None,
                           image_size: int | None = None, class_names: Sequence[str] | None = None,
                           category_ids: Sequence[int] | None = None,
                           **overrides: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
        """A saved Mask R-CNN with other RPN / RoI settings (:data:`MASKRCNN_DEFAULTS`), input size, training-only
        backbone settings, class names or category ids, or another ``num_classes`` (box and mask predictors
        re-initialised); the head geometry must be the saved one."""
        config = cls.migrate_config(saved)
        heads = config["heads"]
        saved_geometry = {**{f: heads[f] for f in HEAD_FIELDS}, "anchor_size": config["anchors"]["anchor_size"]}
        if "head_width" in overrides:
            overrides.update({f: overrides["head_width"] for f in HEAD_FIELDS if f.endswith("_width")
                              and f not in overrides})
        for key, value in saved_geometry.items():
            if key in overrides and overrides[key] != value:
                raise ValueError(f"saved with {key}={value!r}; you asked for {overrides[key]!r}")
        unknown = set(overrides) - set(MASKRCNN_OVERRIDES) - set(BACKBONE_OVERRIDES)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)} for a Mask R-CNN; known: "
                             f"{sorted(MASKRCNN_OVERRIDES)} and the backbone's")
        config["settings"].update({k: v for k, v in overrides.items() if k in MASKRCNN_DEFAULTS})
        training_overrides(config, overrides, "heads")
        return config, resize_and_reclass(config, image_size, num_classes, cls.reinit_on_num_classes, class_names,
                                          category_ids)

    def export_module(self, size: tuple[int, int], **options: Any) -> nn.Module:
        """Boxes, scores, labels and masks for ``box_detections_per_img`` detections at a fixed size
        (:class:`MaskRCNNExport`)."""
        return MaskRCNNExport(self, size, **options).eval()


def _tiled_nms(boxes: torch.Tensor, scores: torch.Tensor, group: torch.Tensor, size: tuple[int, int],
               threshold: float) -> torch.Tensor:
    """Greedy NMS within groups, as one ``nms`` call: ``boxes [N, K, 4]`` of group ``group [N, K]`` are moved to
    tile ``(g % 64, g // 64)`` of a grid of image-sized tiles, so boxes of different groups never overlap. Returns
    the kept mask ``[N, K]``."""
    height, width = size
    cols = 64
    shift = torch.stack([(group % cols) * (width + 1), (group // cols) * (height + 1)], dim=-1).to(boxes.dtype)
    keep = nms((boxes + shift.repeat(1, 1, 2)).reshape(-1, 4), scores.reshape(-1), threshold)
    kept = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device).index_fill(0, keep, True)
    return kept.view_as(scores)


def _clip(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    height, width = size
    return torch.stack([boxes[..., 0].clamp(0, width), boxes[..., 1].clamp(0, height),
                        boxes[..., 2].clamp(0, width), boxes[..., 3].clamp(0, height)], dim=-1)


def _not_small(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


class MaskRCNNExport(nn.Module):
    """A :class:`SpineNetMaskRCNN` as one traceable graph with static shapes: normalise, backbone, RPN proposals,
    RoI box head, class-wise selection, mask head on the detections. Returns ``(boxes [N, D, 4], scores [N, D],
    labels [N, D], masks [N, D, 28, 28])`` for ``D = box_detections_per_img``: boxes in input pixels (xyxy), best
    first, and each detection's mask probabilities in its box (the eager model pastes them into the image); rows
    after the last detection are zero.

    Every step is the eager model's (torchvision's RPN ``filter_proposals`` and ``RoIHeads.postprocess_detections``
    with this model's settings), written without data-dependent shapes: per level the ``rpn_pre_nms_top_n_test``
    best anchors, clip, drop boxes under 1e-3 px, NMS per (image, level) as one tiled ``nms`` call, the
    ``rpn_post_nms_top_n_test`` best proposals (a padded row is marked invalid); RoIs pooled from
    ``floor(4 + log2(sqrt(area) / 224))`` (torchvision's ``LevelMapper``) by computing each level and selecting;
    class scores by softmax without the background, decode and clip per class, drop boxes under 1e-2 px and
    scores at or under ``box_score_thresh``; the ``pre_nms_top_k`` best (RoI, class) pairs enter one NMS per
    (image, class); the best ``D`` are kept. It equals the eager selection whenever at least ``D`` detections
    survive among those ``pre_nms_top_k`` candidates or fewer pass the threshold.
    """

    output_names = ["boxes", "scores", "labels", "masks"]

    def __init__(self, model: SpineNetMaskRCNN, size: tuple[int, int], pre_nms_top_k: int = 1000) -> None:
        super().__init__()
        div = model.backbone.size_divisibility
        if size[0] % div or size[1] % div:
            raise ValueError(f"--size {size[0]}x{size[1]}: a Mask R-CNN export needs multiples of {div} (the eager "
                             f"model pads its input to that)")
        self.size = tuple(size)
        height, width = self.size
        self.backbone, self.rpn_head = model.backbone, model.rpn.head
        heads = model.roi_heads
        self.box_head, self.box_predictor = heads.box_head, heads.box_predictor
        self.mask_head, self.mask_predictor = heads.mask_head, heads.mask_predictor
        t = model.transform
        self.register_buffer("pixel_mean", torch.tensor(t.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(t.image_std).view(1, 3, 1, 1), persistent=False)
        gen = model.rpn.anchor_generator
        self.levels = list(gen.levels)
        per_level = [gen.level_anchors(level, math.ceil(height / 2 ** level), math.ceil(width / 2 ** level))
                     for level in self.levels]
        self.anchors_per_level = [int(a.shape[0]) for a in per_level]
        self.register_buffer("anchors", torch.cat(per_level), persistent=False)
        self.rpn_coder, self.box_coder = model.rpn.box_coder, heads.box_coder
        self.rpn_pre_nms = int(model.rpn._pre_nms_top_n["testing"])
        self.rpn_post_nms = int(model.rpn._post_nms_top_n["testing"])
        self.rpn_nms_thresh, self.rpn_min_size = float(model.rpn.nms_thresh), float(model.rpn.min_size)
        self.score_thresh, self.nms_thresh = float(heads.score_thresh), float(heads.nms_thresh)
        self.detections_per_img, self.pre_nms_top_k = int(heads.detections_per_img), int(pre_nms_top_k)
        self.num_classes = int(model.num_classes)
        # the coders above decode as the model does (standard or TF1); TF1 clips to the last pixel
        self.clip_size = (height - 1, width - 1) if model.box_decoding == "tf1" else (height, width)

    def pool(self, features: list[torch.Tensor], boxes: torch.Tensor, output_size: int) -> torch.Tensor:
        """RoIAlign of ``boxes [N, R, 4]`` from the level torchvision's ``MultiScaleRoIAlign`` picks:
        ``[N * R, C, output_size, output_size]``."""
        n, r = boxes.shape[:2]
        flat = boxes.reshape(-1, 4)
        index = torch.arange(n, device=boxes.device, dtype=boxes.dtype).repeat_interleave(r).unsqueeze(1)
        rois = torch.cat([index, flat], dim=1)
        area = (flat[:, 2] - flat[:, 0]) * (flat[:, 3] - flat[:, 1])
        target = torch.floor(4 + torch.log2(torch.sqrt(area) / 224) + 1e-6)
        target = target.clamp(self.levels[0], self.levels[-1])
        pooled = None
        for level, feat in zip(self.levels, features):
            out = roi_align(feat, rois, output_size, spatial_scale=2.0 ** -level, sampling_ratio=2, aligned=False)
            out = out * (target == level).to(out.dtype).view(-1, 1, 1, 1)
            pooled = out if pooled is None else pooled + out
        return pooled

    def proposals(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """RPN proposals ``[N, P, 4]`` and their validity ``[N, P]`` (torchvision's ``filter_proposals``)."""
        objectness, deltas = self.rpn_head(features)
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)  # [N*T, 1], [N*T, 4]
        n = features[0].shape[0]
        objectness = objectness.view(n, -1)
        boxes = self.rpn_coder.decode_single(deltas, self.anchors.repeat(n, 1)).view(n, -1, 4)
        tops, levels, start = [], [], 0
        for i, count in enumerate(self.anchors_per_level):
            k = min(self.rpn_pre_nms, count)
            _, idx = objectness[:, start:start + count].topk(k, dim=1)
            tops.append(idx + start)
            levels.append(torch.full((k,), i, dtype=torch.int64, device=objectness.device))
            start += count
        top = torch.cat(tops, dim=1)  # [N, K]
        level = torch.cat(levels).unsqueeze(0).expand_as(top)
        scores = torch.sigmoid(torch.gather(objectness, 1, top))
        boxes = _clip(torch.gather(boxes, 1, top.unsqueeze(-1).expand(-1, -1, 4)), self.clip_size)
        valid = _not_small(boxes, self.rpn_min_size)
        num_groups = len(self.levels) + 1  # the last group holds the dropped boxes, so they suppress nothing
        batch = torch.arange(n, device=top.device).unsqueeze(1)
        group = batch * num_groups + torch.where(valid, level, torch.full_like(level, num_groups - 1))
        kept = _tiled_nms(boxes, scores, group, self.size, self.rpn_nms_thresh) & valid
        ranked = torch.where(kept, scores, torch.full_like(scores, -1.0))
        best, order = ranked.topk(min(self.rpn_post_nms, ranked.shape[1]), dim=1)
        return torch.gather(boxes, 1, order.unsqueeze(-1).expand(-1, -1, 4)), best >= 0

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        check_input(images, self.size)
        x = (images - self.pixel_mean) / self.pixel_std
        features = list(self.backbone(x).values())
        proposals, proposal_valid = self.proposals(features)
        n, p = proposal_valid.shape
        class_logits, box_regression = self.box_predictor(self.box_head(self.pool(features, proposals, 7)))
        fg = self.num_classes - 1
        boxes = self.box_coder.decode_single(box_regression, proposals.reshape(-1, 4))
        boxes = _clip(boxes.view(n, p, self.num_classes, 4)[:, :, 1:], self.clip_size)  # [N, P, fg, 4]
        scores = torch.softmax(class_logits, -1).view(n, p, self.num_classes)[:, :, 1:]
        valid = proposal_valid.unsqueeze(-1) & (scores > self.score_thresh) & _not_small(boxes, 1e-2)
        scores, boxes, valid = scores.reshape(n, -1), boxes.reshape(n, -1, 4), valid.reshape(n, -1)
        k = min(self.pre_nms_top_k, scores.shape[1])
        top_scores, top = torch.where(valid, scores, torch.full_like(scores, -1.0)).topk(k, dim=1)
        cand = torch.gather(boxes, 1, top.unsqueeze(-1).expand(-1, -1, 4))
        cand_valid = top_scores > self.score_thresh
        cls = top % fg
        batch = torch.arange(n, device=images.device).unsqueeze(1)
        group = batch * (fg + 1) + torch.where(cand_valid, cls, torch.full_like(cls, fg))
        kept = _tiled_nms(cand, top_scores, group, self.size, self.nms_thresh) & cand_valid
        final = torch.where(kept, top_scores, torch.zeros_like(top_scores))
        d = min(self.detections_per_img, k)
        out_scores, order = final.topk(d, dim=1)
        present = out_scores > 0
        out_boxes = torch.gather(cand, 1, order.unsqueeze(-1).expand(-1, -1, 4)) * present.unsqueeze(-1)
        labels = (torch.gather(cls, 1, order) + 1) * present
        mask_logits = self.mask_predictor(self.mask_head(self.pool(features, out_boxes, 14)))  # [N*D, C, 28, 28]
        index = labels.reshape(-1, 1, 1, 1).expand(-1, 1, *mask_logits.shape[-2:])
        masks = torch.sigmoid(torch.gather(mask_logits, 1, index)).view(n, d, *mask_logits.shape[-2:])
        return out_boxes, out_scores, labels, masks * present.view(n, d, 1, 1)


def maskrcnn_macs(model: SpineNetMaskRCNN, size: int | tuple[int, int] | None = None, num_rois: int = 1000,
                  num_masks: int = 100) -> int:
    """Multiply-adds of one image at ``size`` (default: the model's ``image_size``): backbone + RPN convolutions,
    the box head on ``num_rois`` proposals (the official 1000 at test time) and the mask head on ``num_masks``
    detections (100), the convention of the model zoo's Mask R-CNN "FLOPs" (spec 5.5). Runs on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from .detection import detector_macs

    heads = model.roi_heads
    width = model.backbone.out_channels
    with torch.device("meta"):
        box_head, box_predictor = copy.deepcopy(heads.box_head), copy.deepcopy(heads.box_predictor)
        mask_head, mask_predictor = copy.deepcopy(heads.mask_head), copy.deepcopy(heads.mask_predictor)
    for module in (box_head, box_predictor, mask_head, mask_predictor):
        module.to_empty(device="meta").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # counts 2 FLOPs per multiply-add
        box_predictor(box_head(torch.empty(num_rois, width, BOX_POOL_SIZE, BOX_POOL_SIZE, device="meta")))
        mask_predictor(mask_head(torch.empty(num_masks, width, MASK_POOL_SIZE, MASK_POOL_SIZE, device="meta")))
    return detector_macs(model, size) + counter.get_total_flops() // 2


def _count(value: Any, what: str) -> int:
    """A layer count: an integer >= 0 (0 convs / FCs is a valid head, e.g. Model Garden's default box head)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return value


def create_maskrcnn(defn: MaskRCNNDef, *, num_classes: int = 91, image_size: int | None = None,
                    class_names: Sequence[str] | None = None, category_ids: Sequence[int] | None = None,
                    weights: str | None = None, **overrides: Any) -> SpineNetMaskRCNN:
    """Build a registered SpineNet Mask R-CNN (called by :func:`spinenet.models.create_detector`, which documents
    ``num_classes``, ``image_size``, ``class_names`` and ``category_ids``).

    ``overrides``: head geometry (``rpn_convs``, ``rpn_width``, ``box_convs``, ``box_width``, ``box_fcs``,
    ``box_fc_dim``, ``mask_convs``, ``mask_width``, or ``head_width`` for the three conv widths),
    ``anchor_size``, torchvision's RPN / RoI settings (:data:`MASKRCNN_DEFAULTS`); everything else goes to the
    backbone (``min_level=2`` for P2, ``filter_size_scale``, ``activation``, ``bn_momentum``, ...).
    """
    name = defn.name
    if weights is not None:  # a `spinenet convert --task maskrcnn` file (or any file's backbone)
        return load_weights(name, weights, num_classes=num_classes, image_size=image_size, class_names=class_names,
                            category_ids=category_ids, **overrides)
    num_classes = _positive_int(num_classes, f"create_detector({name!r}): num_classes")
    if num_classes < 2:
        raise ValueError(f"create_detector({name!r}): num_classes counts the background label 0, so it must be >= 2")
    image_size = _positive_int(defn.image_size if image_size is None else image_size,
                               f"create_detector({name!r}): image_size")
    opts = {k: overrides.pop(k) for k in list(overrides) if k in MASKRCNN_OVERRIDES}
    width = opts.pop("head_width", None)
    head = {f: opts.pop(f, width if f.endswith("_width") and width is not None else getattr(defn, f))
            for f in HEAD_FIELDS}
    backbone_opts = {"activation": defn.activation, "bn_eps": BN_EPS, "bn_momentum": BN_MOMENTUM, **overrides}
    backbone_cfg = detector_backbone_config(name, defn.backbone, backbone_opts, MASKRCNN_OVERRIDES)
    config = {
        "format": MASKRCNN_FORMAT,
        "name": name,
        "num_classes": num_classes,
        **detector_classes(num_classes, class_names, category_ids, f"create_detector({name!r})"),
        "image_size": image_size,
        "backbone": config_to_json(backbone_cfg),
        "heads": {**{k: _count(v, k) if k.endswith(("_convs", "_fcs")) else _positive_int(v, k)
                     for k, v in head.items()},
                  "activation": backbone_cfg["activation"], "bn_eps": backbone_cfg["bn_eps"],
                  "bn_momentum": backbone_cfg["bn_momentum"]},
        "anchors": {"min_level": backbone_cfg["min_level"], "max_level": backbone_cfg["max_level"],
                    "num_scales": 1, "aspect_ratios": list(ASPECT_RATIOS),
                    "anchor_size": float(opts.pop("anchor_size", defn.anchor_size))},
        "settings": {k: opts.get(k, v) for k, v in MASKRCNN_DEFAULTS.items()},
    }
    try:
        return create_maskrcnn_from_config(config)
    except ValueError as err:
        if backbone_cfg["min_level"] < 3:
            raise ValueError(f"create_detector({name!r}, min_level={backbone_cfg['min_level']}): {err}. P2 exists "
                             "in the Model Garden SpineNet (its extra level-2 output block): pass "
                             "flavor='model_garden'") from None
        raise


def create_maskrcnn_from_config(config: Mapping[str, Any]) -> SpineNetMaskRCNN:
    """Rebuild a Mask R-CNN from ``model.config``; same modules, fresh weights."""
    SpineNetMaskRCNN.check_format(config, "Mask R-CNN")
    missing = {"name", "num_classes", "image_size", "backbone", "heads", "anchors", "settings"} - set(config)
    if missing:
        raise ValueError(f"Mask R-CNN config: missing field(s) {sorted(missing)}")
    h, a = config["heads"], config["anchors"]
    backbone = backbone_from_json(config["backbone"], "Mask R-CNN config: backbone")
    anchors = MultilevelAnchors(a["min_level"], a["max_level"], a["num_scales"], a["aspect_ratios"],
                                a["anchor_size"])
    norm = (h["activation"], h["bn_eps"], h["bn_momentum"])
    rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors, h["rpn_convs"], h["rpn_width"],
                       len(anchors.levels), *norm)
    box_head = BoxHead(backbone.out_channels, h["box_convs"], h["box_width"], h["box_fcs"], h["box_fc_dim"], *norm)
    mask_head = MaskHead(backbone.out_channels, h["mask_convs"], h["mask_width"], *norm)
    full = {**config, **saved_classes(config, "Mask R-CNN config")}
    return SpineNetMaskRCNN(backbone, anchors, rpn_head, box_head, mask_head, config["num_classes"],
                            config["image_size"], h["mask_width"], *norm, config=full, **config["settings"])


register_detector_family(MaskRCNNDef, MASKRCNN_FORMAT, create_maskrcnn, create_maskrcnn_from_config)
