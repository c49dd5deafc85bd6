"""SpineNet RetinaNet detectors on torchvision's ``RetinaNet`` (paper section 4.1, spec 2.3, 4.4, 4.5, 7).

``create_detector(name, num_classes=91, ...)`` builds one of the table rows below: a SpineNet backbone whose
P3-P7 endpoints feed the head directly (no FPN: the scale-permuted backbone *is* the feature pyramid), the
official RetinaNet head (:mod:`.retinanet_head`), official anchors (:mod:`.anchors`), official box coding
(:mod:`.box_coder`; the box predictor keeps the official **(dy, dx, dh, dw)** channel order) and the official
losses (:mod:`.retinanet_loss`). torchvision supplies the rest unchanged: the ``GeneralizedRCNNTransform``
(ImageNet mean/std, resize of the long side to ``image_size``, zero padding to a multiple of
``backbone.size_divisibility`` = 128), IoU matching (``Matcher(0.5, 0.5, allow_low_quality_matches=True)``), and
the train/eval ``forward`` contract (losses dict in train mode, ``[{boxes, scores, labels}]`` in the original image
coordinates in eval mode).

Post-processing follows Model Garden's ``MultilevelDetectionGenerator`` (nms_version v2), not torchvision's
per-level variant: decode every anchor, clip to the (resized) image, score = sigmoid with logit 0 (background)
dropped, per class keep the ``topk_candidates`` best anchors over all levels with score > ``score_thresh``,
class-wise NMS at ``nms_thresh``, then the ``detections_per_img`` best overall. ``box_decoding="tf1"`` (what
``spinenet convert --source tpu`` saves) decodes and clips with the TF1 "+1" convention instead
(:mod:`.tf1_boxes`). Known differences: torchvision's
NMS suppresses IoU > threshold where the official one suppresses IoU >= threshold, and the official NMS also
drops boxes whose four coordinates are all 0 -- both only matter on exact ties.

Matching difference (documented, not replicated): for a ground-truth box whose best IoU is below 0.5, torchvision
makes its best anchor(s) positive but assigns each such anchor to the box *it* overlaps most; the official
``force_match_for_each_col`` assigns it to the ground truth it was forced for. They differ only when the forced
anchor overlaps another box more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import math

import torch
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, nms

from ..backbone import SpineNet, check_input
from ..backbones import BACKBONE_OVERRIDES, Table, backbone_from_json, config_to_json, get_model_def, resolve_config
from ..constants import NUM_COCO_LABELS, coco_class_names
from .anchors import MultilevelAnchors
from .atss import DEFAULT_TOPK, anchor_levels, atss_match
from .base import DenseForward, TaskModel, load_weights, training_overrides
from .box_coder import BoxCoder
from .retinanet_head import RetinaNetHead
from .retinanet_loss import retinanet_loss
from .tf1_boxes import TF1BoxCoder, check_box_decoding

DETECTOR_FORMAT = "spinenet-detector/1"
ASPECT_RATIOS = (0.5, 1.0, 2.0)
NUM_SCALES = 3
# Official RetinaNet settings (spec 7.2 / 7.3, Model Garden MultilevelDetectionGenerator defaults).
# ``box_decoding``: "standard" (Model Garden) or "tf1" (tensorflow/tpu "+1" convention, :mod:`.tf1_boxes`).
POSTPROCESS_DEFAULTS: dict[str, float | int | str] = {"score_thresh": 0.05, "nms_thresh": 0.5,
                                                      "detections_per_img": 100, "topk_candidates": 5000,
                                                      "box_decoding": "standard"}
LOSS_DEFAULTS: dict[str, float] = {"focal_alpha": 0.25, "focal_gamma": 1.5, "huber_delta": 0.1,
                                   "box_loss_weight": 50.0}
# Anchor labelling: "iou" is the official rule (IoU >= 0.5, plus each box's best anchor); "atss" the optional
# adaptive selection of :mod:`.atss`.
MATCHERS = ("iou", "atss")
MATCHING_DEFAULTS: dict[str, Any] = {"matcher": "iou", "atss_topk": DEFAULT_TOPK}
HEAD_OVERRIDES = ("head_convs", "head_width", "anchor_size")
# Settings that touch no tensor, by the detector config section holding them (a saved detector may change them).
CONFIG_SECTIONS: dict[str, dict[str, Any]] = {"postprocess": POSTPROCESS_DEFAULTS, "loss": LOSS_DEFAULTS,
                                              "matching": MATCHING_DEFAULTS}
DETECTOR_OVERRIDES = HEAD_OVERRIDES + tuple(k for section in CONFIG_SECTIONS.values() for k in section)


@dataclass(frozen=True)
class DetectorDef:
    """One registered RetinaNet: backbone name, head geometry, anchor size and default input (spec 2.3, 7).

    ``activation`` is the official RetinaNet config's (protocol C: swish for the ResNet-block family; Model
    Garden mobile yamls: hard_swish for 49/49S, swish for 49XS); backbone and head share it, as officially.
    """

    name: str
    backbone: str
    head_convs: int
    head_width: int
    separable: bool
    anchor_size: float
    image_size: int
    activation: str
    description: str = ""

    task = "retinanet"  # not a field: the registry's task of these rows


_DETECTORS = Table("detector")



def register_detector(defn: DetectorDef) -> DetectorDef:
    return _DETECTORS.register(defn)


@dataclass(frozen=True)
class DetectorFamily:
    """How rows of another definition type (e.g. ``MaskRCNNDef``) build and rebuild: ``create(defn, **kwargs)``
    and ``from_config(config)`` for configs whose ``format`` is ``config_format``."""

    config_format: str
    create: Callable[..., nn.Module]
    from_config: Callable[[Mapping[str, Any]], nn.Module]


# Detector families other than RetinaNet, keyed by their definition type (one table, no checks on names).
_FAMILIES: dict[type, DetectorFamily] = {}


def register_detector_family(def_type: type, config_format: str, create: Callable[..., nn.Module],
                             from_config: Callable[[Mapping[str, Any]], nn.Module]) -> None:
    """Let :func:`create_detector` / :func:`create_detector_from_config` build rows of ``def_type``."""
    _FAMILIES[def_type] = DetectorFamily(config_format, create, from_config)


for _row in (
    # name                           backbone               convs width sep    anchor size  activation
    ("retinanet_spinenet49s",        "spinenet49s",          4,  128, False, 3.0,  640, "swish"),
    ("retinanet_spinenet49",         "spinenet49",           4,  256, False, 3.0,  640, "swish"),
    ("retinanet_spinenet96",         "spinenet96",           4,  256, False, 3.0, 1024, "swish"),
    ("retinanet_spinenet143",        "spinenet143",          4,  256, False, 4.0, 1280, "swish"),
    ("retinanet_spinenet190",        "spinenet190",          7,  512, False, 4.0, 1280, "swish"),
    ("retinanet_spinenet_mobile49",  "spinenet_mobile49",    4,   48, True,  3.0,  384, "hard_swish"),
    ("retinanet_spinenet_mobile49s", "spinenet_mobile49s",   4,   40, True,  3.0,  384, "hard_swish"),
    ("retinanet_spinenet_mobile49xs", "spinenet_mobile49xs", 4,   24, True,  3.0,  256, "swish"),
):
    register_detector(DetectorDef(*_row, description=f"RetinaNet with {get_model_def(_row[1]).description}"))


def list_detectors(pattern: str | None = None) -> list[str]:
    """Registered detector names in table order, optionally filtered by a shell pattern (``"*mobile*"``)."""
    return _DETECTORS.names(pattern)


def get_detector_def(name: str) -> DetectorDef:
    return _DETECTORS.get(name)


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, score_thresh: float, nms_thresh: float,
                      topk_candidates: int, detections_per_img: int,
                      label_offset: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official class-aware selection (MG NMS v2) for one image.

    ``boxes`` ``[M, 4]`` xyxy (already clipped), ``scores`` ``[M, C]`` probabilities of the foreground classes.
    Per class: the ``topk_candidates`` best anchors with score > ``score_thresh``; NMS per class; the
    ``detections_per_img`` best overall, by descending score. Labels are ``column + label_offset``.
    """
    anchor_idx, cls_idx = torch.where(scores > score_thresh)
    cand = scores[anchor_idx, cls_idx]
    if cand.numel() > topk_candidates:
        # "top-k per class, then threshold" == "threshold, then top-k per class": rank within each class.
        order = torch.argsort(cand, descending=True, stable=True)
        order = order[torch.argsort(cls_idx[order], stable=True)]
        anchor_idx, cls_idx, cand = anchor_idx[order], cls_idx[order], cand[order]
        counts = torch.bincount(cls_idx, minlength=scores.shape[1])
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(cand.numel(), device=cand.device) - starts[cls_idx]
        keep = rank < topk_candidates
        anchor_idx, cls_idx, cand = anchor_idx[keep], cls_idx[keep], cand[keep]
    cand_boxes = boxes[anchor_idx]
    keep = batched_nms(cand_boxes, cand, cls_idx, nms_thresh)[:detections_per_img]
    return cand_boxes[keep], cand[keep], cls_idx[keep] + label_offset


def _class_names(names: Sequence[str] | None, num_classes: int, what: str) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"{what}: class_names must be a list of {num_classes} names, got {names!r}")
    if len(names) != num_classes:
        raise ValueError(f"{what}: class_names has {len(names)} entries but num_classes is {num_classes} (one name "
                         "per label, the background label 0 included)")
    return [str(n) for n in names]


def _category_ids(ids: Sequence[int] | None, num_classes: int, what: str) -> list[int] | None:
    """``ids`` as a list, or ``None`` when there are none or label ``k`` is id ``k`` (nothing to map)."""
    if ids is None:
        return None
    if (isinstance(ids, str) or not isinstance(ids, Sequence)
            or any(isinstance(i, bool) or not isinstance(i, int) for i in ids)):
        raise ValueError(f"{what}: category_ids must be a list of {num_classes} integers, got {ids!r}")
    if len(ids) != num_classes or len(set(ids)) != len(ids):
        raise ValueError(f"{what}: category_ids must hold {num_classes} distinct ids (one per label, the background "
                         f"label 0 included), got {len(ids)} ({len(set(ids))} distinct)")
    return None if list(ids) == list(range(num_classes)) else [int(i) for i in ids]


def detector_classes(num_classes: int, class_names: Sequence[str] | None, category_ids: Sequence[int] | None,
                     what: str) -> dict[str, Any]:
    """A detector configuration's ``class_names`` and ``category_ids``: one entry per label, the unused label 0
    included (a detection data set's ``classes`` and ``category_ids``). Without names, the official 91 labels
    get COCO's (label = COCO category id, :func:`spinenet.constants.coco_class_names`) and any other count
    ``None`` (labels named by their ids). ``category_ids`` is ``None`` when label ``k`` is category id ``k``
    (COCO's 91-id space, the built-in sets), else the data set's ids (a COCO file's 80 labels map to ids with
    gaps)."""
    if class_names is None and num_classes == NUM_COCO_LABELS:
        class_names = coco_class_names()
    return {"class_names": _class_names(class_names, num_classes, what),
            "category_ids": _category_ids(category_ids, num_classes, what)}


def saved_classes(config: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The ``class_names`` and ``category_ids`` of a saved detector configuration, checked against its
    ``num_classes``; ``None`` where the configuration has none (files written before detectors carried them)."""
    return {"class_names": _class_names(config.get("class_names"), config["num_classes"], what),
            "category_ids": _category_ids(config.get("category_ids"), config["num_classes"], what)}


def resize_and_reclass(config: dict[str, Any], image_size: int | None, num_classes: int | None,
                       reinit_prefixes: tuple[str, ...], class_names: Sequence[str] | None = None,
                       category_ids: Sequence[int] | None = None) -> tuple[str, ...]:
    """Apply another input size, class count, class names and/or category ids to a saved detector
    configuration (the saved names and ids go with the old count); returns the parameter prefixes to
    re-initialise (``reinit_prefixes`` when the count changes, else none)."""
    if image_size is not None:
        config["image_size"] = image_size
    reinit: tuple[str, ...] = ()
    if num_classes is not None and num_classes != config["num_classes"]:
        config.update(num_classes=num_classes, class_names=None, category_ids=None)
        reinit = reinit_prefixes
    if class_names is not None:
        config["class_names"] = _class_names(class_names, config["num_classes"], "detector")
    if category_ids is not None:
        config["category_ids"] = _category_ids(category_ids, config["num_classes"], "detector")
    return reinit


class DetectorLabels:
    """What a detector's labels stand for, read from its configuration (:func:`detector_classes`)."""

    config: dict[str, Any]

    @property
    def class_names(self) -> list[str] | None:
        """The name of each label (label 0 included), ``None`` when the configuration names none."""
        return self.config.get("class_names")

    @property
    def category_ids(self) -> list[int] | None:
        """The data set's category id of each label, ``None`` when label ``k`` is id ``k``."""
        return self.config.get("category_ids")


class _Transform(GeneralizedRCNNTransform):
    """torchvision's transform, plus a final clip: rescaling by ``original / resized`` can overshoot the image
    border by a float rounding (100.00001 on a 100-pixel side)."""

    def postprocess(self, result: list[dict[str, torch.Tensor]], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        result = super().postprocess(result, image_shapes, original_image_sizes)
        if not self.training:
            for det, size in zip(result, original_image_sizes):
                det["boxes"] = clip_boxes_to_image(det["boxes"], size)
        return result


class SpineNetRetinaNet(TaskModel, DetectorLabels, RetinaNet):
    """torchvision ``RetinaNet`` with SpineNet P3-P7, official anchors, box coding, loss and post-processing.

    Build it with :func:`create_detector`. ``config`` is the JSON-serialisable description that
    :func:`create_detector_from_config` rebuilds the same model from. The backbone's ``{"3": P3, ..., "7": P7}``
    dict goes straight into torchvision's ``forward``, which takes ``list(features.values())``: SpineNet builds
    that dict in ascending level order, which is the order the head's per-level BatchNorms and the anchors use.
    """

    task = "retinanet"
    config_format = DETECTOR_FORMAT
    reinit_on_num_classes = ("head.classifier.",)

    def __init__(self, backbone: SpineNet, head: RetinaNetHead, anchors: MultilevelAnchors, num_classes: int,
                 image_size: int, *, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 detections_per_img: int = 100, topk_candidates: int = 5000, box_decoding: str = "standard",
                 focal_alpha: float = 0.25,
                 focal_gamma: float = 1.5, huber_delta: float = 0.1, box_loss_weight: float = 50.0,
                 matcher: str = "iou", atss_topk: int = DEFAULT_TOPK, config: dict[str, Any] | None = None) -> None:
        super().__init__(backbone, num_classes, min_size=image_size, max_size=image_size, head=head,
                         score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                         fg_iou_thresh=0.5, bg_iou_thresh=0.5, topk_candidates=topk_candidates,
                         size_divisible=backbone.size_divisibility)
        # torchvision insists on its own AnchorGenerator type in __init__; ours has the same call interface.
        self.anchor_generator = anchors
        t = self.transform
        self.transform = _Transform(image_size, image_size, t.image_mean, t.image_std,
                                    size_divisible=backbone.size_divisibility)
        # configs saved before box_decoding existed decode the standard way
        self.box_decoding = check_box_decoding(box_decoding, "detector")
        self.box_coder = TF1BoxCoder() if box_decoding == "tf1" else BoxCoder()
        self.num_classes = num_classes
        self.loss_settings = {"focal_alpha": focal_alpha, "focal_gamma": focal_gamma, "huber_delta": huber_delta,
                              "box_loss_weight": box_loss_weight}
        if matcher not in MATCHERS:
            raise ValueError(f"detector: matcher must be one of {MATCHERS}, got {matcher!r}")
        self.matcher, self.atss_topk = matcher, _positive_int(atss_topk, "detector: atss_topk")
        self.config = dict(config or {})

    def match_anchors(self, anchors: list[torch.Tensor],
                      targets: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """Per image ``[M]``: matched ground-truth index, -1 otherwise. ``matcher="iou"`` (official): IoU >= 0.5,
        plus each box's best anchor; ``"atss"``: adaptive selection (:mod:`.atss`)."""
        matched = []
        levels = None
        for anchors_i, target in zip(anchors, targets):
            if target["boxes"].numel() == 0:
                matched.append(torch.full((anchors_i.shape[0],), -1, dtype=torch.int64, device=anchors_i.device))
            elif self.matcher == "atss":
                if levels is None:  # every image of the batch shares the padded batch's anchors
                    levels = anchor_levels(anchors_i, self.anchor_generator.anchor_size)
                matched.append(atss_match(target["boxes"], anchors_i, levels, self.anchor_generator.num_anchors,
                                          self.atss_topk))
            else:
                matched.append(self.proposal_matcher(box_iou(target["boxes"], anchors_i)))
        return matched

    def compute_loss(self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor],
                     anchors: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return retinanet_loss(head_outputs["cls_logits"], head_outputs["bbox_regression"], anchors, targets,
                              self.match_anchors(anchors, targets), self.box_coder, **self.loss_settings)

    def postprocess_detections(self, head_outputs: dict[str, list[torch.Tensor]], anchors: list[list[torch.Tensor]],
                               image_shapes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        """Official decoding and selection (module docstring), on torchvision's per-level split outputs."""
        cls_logits = torch.cat(head_outputs["cls_logits"], dim=1)
        box_deltas = torch.cat(head_outputs["bbox_regression"], dim=1)
        cls_logits = cls_logits.float()  # scores compared to thresholds and ranked in float32
        detections = []
        for i, image_shape in enumerate(image_shapes):
            boxes = self.box_coder.clip_boxes(self.box_coder.decode(box_deltas[i], torch.cat(anchors[i])), image_shape)
            scores = torch.sigmoid(cls_logits[i][:, 1:])  # logit 0 is background / unused
            b, s, labels = select_detections(boxes, scores, self.score_thresh, self.nms_thresh, self.topk_candidates,
                                             self.detections_per_img)
            detections.append({"boxes": b, "scores": s, "labels": labels})
        return detections

    def macs_module(self) -> nn.Module:
        """A module running backbone + head on one tensor, for :func:`spinenet.profile.count_macs`."""
        return DenseForward(self.backbone, self.head, "forward_levels")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SpineNetRetinaNet:
        return create_detector_from_config(config)

    @classmethod
    def config_for_weights(cls, saved: Mapping[str, Any], *, num_classes: int | None = None,
                           image_size: int | None = None, class_names: Sequence[str] | None = None,
                           category_ids: Sequence[int] | None = None,
                           **overrides: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
        """A saved detector with other post-processing, loss or matching settings, input size, training-only
        backbone settings, class names or category ids, or another ``num_classes`` (the class predictor is
        re-initialised); the head geometry must be the saved one."""
        config = cls.migrate_config(saved)
        saved_head = {"head_convs": config["head"]["num_convs"], "head_width": config["head"]["num_filters"],
                      "anchor_size": config["anchors"]["anchor_size"]}
        for key in HEAD_OVERRIDES:
            if key in overrides and overrides[key] != saved_head[key]:
                raise ValueError(f"saved with {key}={saved_head[key]!r}; you asked for {overrides[key]!r}")
        for section, keys in CONFIG_SECTIONS.items():
            for key in keys:
                if key in overrides:  # files saved before "matching" existed lack that section
                    config.setdefault(section, {})[key] = overrides[key]
        unknown = set(overrides) - set(DETECTOR_OVERRIDES) - set(BACKBONE_OVERRIDES)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)} for a RetinaNet; known: "
                             f"{sorted(DETECTOR_OVERRIDES)} and the backbone's")
        training_overrides(config, overrides, "head")
        return config, resize_and_reclass(config, image_size, num_classes, cls.reinit_on_num_classes, class_names,
                                          category_ids)

    def export_module(self, size: tuple[int, int], *, pre_nms_top_k: int = 1000, **options: Any) -> nn.Module:
        """Boxes, scores and labels for ``detections_per_img`` detections at a fixed size (:class:`DetectorExport`).
        The size must be a multiple of ``backbone.size_divisibility``: the eager model pads its input to that."""
        div = self.backbone.size_divisibility
        if size[0] % div or size[1] % div:
            raise ValueError(f"--size {size[0]}x{size[1]}: a detector export needs multiples of {div} (the eager "
                             f"model pads its input to that); e.g. --size {div * math.ceil(size[0] / div)}x"
                             f"{div * math.ceil(size[1] / div)}")
        return DetectorExport(self, size, pre_nms_top_k).eval()


class DetectorExport(nn.Module):
    """A :class:`SpineNetRetinaNet` as one traceable graph: normalise, backbone, head, decode, select with static
    shapes (:mod:`spinenet.export` explains the selection). Returns ``(boxes, scores, labels)``."""

    output_names = ["boxes", "scores", "labels"]

    def __init__(self, detector: nn.Module, size: tuple[int, int], pre_nms_top_k: int = 1000) -> None:
        super().__init__()
        height, width = size
        self.size = size
        self.backbone, self.head = detector.backbone, detector.head
        t = detector.transform
        self.register_buffer("pixel_mean", torch.tensor(t.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(t.image_std).view(1, 3, 1, 1), persistent=False)
        gen = detector.anchor_generator
        anchors = [gen.level_anchors(level, math.ceil(height / 2 ** level), math.ceil(width / 2 ** level))
                   for level in gen.levels]
        self.register_buffer("anchors", torch.cat(anchors), persistent=False)
        self.box_coder = detector.box_coder
        self.num_classes = detector.num_classes
        self.score_thresh, self.nms_thresh = float(detector.score_thresh), float(detector.nms_thresh)
        self.detections_per_img = int(detector.detections_per_img)
        self.pre_nms_top_k = int(pre_nms_top_k)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_input(images, self.size)
        height, width = self.size
        x = (images - self.pixel_mean) / self.pixel_std
        cls_maps, box_maps = self.head.forward_levels(list(self.backbone(x).values()))
        logits = RetinaNetHead.flatten(cls_maps, self.num_classes).float()  # [N, A, K]
        deltas = RetinaNetHead.flatten(box_maps, 4)
        boxes = self.box_coder.decode(deltas, self.anchors)  # [N, A, 4] xyxy
        boxes = self.box_coder.clip_boxes(boxes, (height, width))  # the detector's decoding (standard or TF1)
        fg = self.num_classes - 1
        scores = torch.sigmoid(logits[..., 1:]).reshape(logits.shape[0], -1)  # index = anchor * fg + class
        k = min(self.pre_nms_top_k, scores.shape[1])
        top_scores, top_index = scores.topk(k, dim=1)
        anchor_index, class_index = top_index // fg, top_index % fg
        cand = torch.gather(boxes, 1, anchor_index.unsqueeze(-1).expand(-1, -1, 4))  # [N, k, 4]
        valid = top_scores > self.score_thresh
        # one NMS call for all images and classes: group g = image * (fg + 1) + class (fg = below threshold) sits
        # at tile (g % cols, g // cols), so no two groups overlap; 2-D tiling keeps offsets (float32 precision) small
        batch = torch.arange(images.shape[0], device=images.device).unsqueeze(1)
        group = batch * (fg + 1) + torch.where(valid, class_index, torch.full_like(class_index, fg))
        cols = 64
        shift = torch.stack([(group % cols) * (width + 1), (group // cols) * (height + 1)], dim=-1).to(cand.dtype)
        shifted = cand + shift.repeat(1, 1, 2)
        keep = nms(shifted.reshape(-1, 4), top_scores.reshape(-1), self.nms_thresh)
        kept = torch.zeros(top_scores.numel(), dtype=torch.bool, device=images.device).index_fill(0, keep, True)
        final = torch.where(kept.view_as(valid) & valid, top_scores, torch.zeros_like(top_scores))
        d = min(self.detections_per_img, k)
        out_scores, order = final.topk(d, dim=1)
        present = out_scores > 0
        out_boxes = torch.gather(cand, 1, order.unsqueeze(-1).expand(-1, -1, 4)) * present.unsqueeze(-1)
        labels = (torch.gather(class_index, 1, order) + 1) * present
        return out_boxes, out_scores, labels


def detector_macs(model: SpineNetRetinaNet, size: int | tuple[int, int] | None = None) -> int:
    """Multiply-adds of backbone + head convolutions at ``size`` (default: the model's ``image_size``); the
    paper's "FLOPs" convention (spec 4.5)."""
    from ..profile import count_macs

    return count_macs(model.macs_module(), size or model.config["image_size"])


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def detector_backbone_config(name: str, backbone: str, backbone_opts: dict, detector_overrides) -> dict:
    """Resolve a detector's backbone config; a bad override names the detector and the detector-level keys."""
    try:
        return resolve_config(backbone, **backbone_opts)
    except ValueError as err:
        raise ValueError(f"create_detector({name!r}): {err}; detector-level overrides: {list(detector_overrides)}") \
            from None


def create_detector(name: str, *, num_classes: int | None = None, image_size: int | None = None,
                    class_names: Sequence[str] | None = None, category_ids: Sequence[int] | None = None,
                    weights: str | None = None, **overrides: Any) -> SpineNetRetinaNet:
    """Build a registered SpineNet RetinaNet (paper section 4.1; table :data:`list_detectors`).

    ``num_classes`` counts logits including the unused label 0 (torchvision's convention; COCO's 91-id space
    gives 91, as the official configs). ``image_size`` is the long side images are resized to (default: the
    row's 640 / 1024 / 1280 / 384 / 256). ``class_names`` names each label, label 0 included (a data set's
    ``classes``; default: COCO's for 91 labels, else none); ``category_ids`` gives each label's category id in
    the data set (default: the label itself; :func:`detector_classes`). ``overrides``: detector-level
    ``head_convs``, ``head_width``, ``anchor_size``, ``score_thresh``, ``nms_thresh``, ``detections_per_img``,
    ``topk_candidates``, ``box_decoding`` (``"standard"``, or ``"tf1"`` for TF1-trained weights,
    :mod:`.tf1_boxes`), ``focal_alpha``, ``focal_gamma``, ``huber_delta``, ``box_loss_weight``, ``matcher``
    (``"iou"``, the official rule, or ``"atss"``, :mod:`.atss`), ``atss_topk``; everything else goes to
    :func:`spinenet.create_model` for the backbone (``flavor``, ``activation``, ``filter_size_scale``,
    ``endpoints_num_filters``, ``bn_eps``, ``stochastic_depth_rate``, ...). The head uses the backbone's
    activation and BN settings, as the official configs do.

    ``weights``: a ``spinenet-weights/1`` file (``spinenet convert``). A detector file rebuilds the saved detector
    (``num_classes`` defaults to the file's; another count re-initialises the class predictor only, for
    fine-tuning); a backbone or classifier file seeds the backbone and leaves the head freshly initialised. The
    report is on ``model.weights_report`` (:mod:`spinenet.weights`).

    Rows of other families in the same table (``maskrcnn_*``, :mod:`.maskrcnn`) are built by their family's
    builder, which takes the same ``num_classes`` / ``image_size`` and its own overrides.
    """
    if weights is not None:
        return load_weights(name, weights, num_classes=num_classes, image_size=image_size, class_names=class_names,
                            category_ids=category_ids, **overrides)
    if num_classes is None:
        num_classes = NUM_COCO_LABELS
    defn = get_detector_def(name)
    family = _FAMILIES.get(type(defn))
    if family is not None:  # e.g. maskrcnn_* rows (models/maskrcnn.py)
        return family.create(defn, num_classes=num_classes, image_size=image_size, class_names=class_names,
                             category_ids=category_ids, weights=weights, **overrides)
    num_classes = _positive_int(num_classes, f"create_detector({name!r}): num_classes")
    if num_classes < 2:
        raise ValueError(f"create_detector({name!r}): num_classes counts the unused label 0, so it must be >= 2")
    image_size = _positive_int(defn.image_size if image_size is None else image_size,
                               f"create_detector({name!r}): image_size")
    detector_opts = {k: overrides.pop(k) for k in list(overrides) if k in DETECTOR_OVERRIDES}
    backbone_opts = {"activation": defn.activation, **overrides}
    backbone_cfg = detector_backbone_config(name, defn.backbone, backbone_opts, DETECTOR_OVERRIDES)
    config = {
        "format": DETECTOR_FORMAT,
        "name": name,
        "num_classes": num_classes,
        **detector_classes(num_classes, class_names, category_ids, f"create_detector({name!r})"),
        "image_size": image_size,
        "backbone": config_to_json(backbone_cfg),
        "head": {"num_convs": detector_opts.get("head_convs", defn.head_convs),
                 "num_filters": detector_opts.get("head_width", defn.head_width),
                 "separable": defn.separable,
                 "activation": backbone_cfg["activation"],
                 "bn_eps": backbone_cfg["bn_eps"],
                 "bn_momentum": backbone_cfg["bn_momentum"]},
        "anchors": {"min_level": backbone_cfg["min_level"], "max_level": backbone_cfg["max_level"],
                    "num_scales": NUM_SCALES, "aspect_ratios": list(ASPECT_RATIOS),
                    "anchor_size": float(detector_opts.get("anchor_size", defn.anchor_size))},
        "postprocess": {k: detector_opts.get(k, v) for k, v in POSTPROCESS_DEFAULTS.items()},
        "loss": {k: float(detector_opts.get(k, v)) for k, v in LOSS_DEFAULTS.items()},
        "matching": {k: detector_opts.get(k, v) for k, v in MATCHING_DEFAULTS.items()},
    }
    return create_detector_from_config(config)


def _backbone_from_json(data: Mapping[str, Any]) -> SpineNet:
    return backbone_from_json(data, "detector config: backbone")


def create_detector_from_config(config: Mapping[str, Any]) -> SpineNetRetinaNet:
    """Rebuild a detector from ``model.config`` (e.g. read back from a checkpoint); same modules, fresh weights."""
    families = {f.config_format: f for f in _FAMILIES.values()}
    if isinstance(config, Mapping) and config.get("format") in families:
        return families[config["format"]].from_config(config)
    if not isinstance(config, Mapping) or config.get("format") != DETECTOR_FORMAT:
        found = config.get("format") if isinstance(config, Mapping) else type(config).__name__
        raise ValueError(f"detector config: field 'format' is {found!r}; expected one of "
                         f"{[DETECTOR_FORMAT, *families]}")
    missing = {"name", "num_classes", "image_size", "backbone", "head", "anchors", "postprocess", "loss"} - set(config)
    if missing:
        raise ValueError(f"detector config: missing field(s) {sorted(missing)}")
    head_cfg, anchor_cfg = config["head"], config["anchors"]
    backbone = _backbone_from_json(config["backbone"])
    anchors = MultilevelAnchors(anchor_cfg["min_level"], anchor_cfg["max_level"], anchor_cfg["num_scales"],
                                anchor_cfg["aspect_ratios"], anchor_cfg["anchor_size"])
    head = RetinaNetHead(backbone.out_channels, config["num_classes"], anchors.num_anchors,
                         _positive_int(head_cfg["num_convs"], "head_convs"),
                         _positive_int(head_cfg["num_filters"], "head_width"), len(anchors.levels),
                         head_cfg["separable"], head_cfg["activation"], head_cfg["bn_eps"], head_cfg["bn_momentum"])
    # configs written before the matcher was selectable have no "matching" entry: the official IoU rule
    matching = {**MATCHING_DEFAULTS, **config.get("matching", {})}
    full = {**config, **saved_classes(config, "detector config")}
    return SpineNetRetinaNet(backbone, head, anchors, config["num_classes"], config["image_size"],
                             **config["postprocess"], **config["loss"], **matching, config=full)
