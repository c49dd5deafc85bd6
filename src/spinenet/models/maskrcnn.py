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
binarised at 0.5 after pasting; ground-truth boxes join the RoI candidates (official ``mix_gt_boxes``). Known
differences, not replicated: torchvision's RPN codes deltas as (dx, dy, dw, dh) where the official code uses
(dy, dx, dh, dw) (only a channel order, irrelevant when training from scratch), and its Fast R-CNN box loss is
smooth-L1 with beta 1/9 (official Huber delta 1.0).

With 91 classes the parameter counts and multiply-adds (:func:`maskrcnn_macs`) come within 0.2% of the
official model zoo (tests/test_maskrcnn.py).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from ..layers.fuse import fold_batchnorm
from ..layers.ops import get_activation
from ..registry import config_to_json, get_model_def
from .anchors import MultilevelAnchors
from .detection import ASPECT_RATIOS, _backbone_from_json, _positive_int, _Transform, detector_backbone_config, \
    register_detector, register_detector_family

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
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # official MSRA fill
    nn.init.zeros_(conv.bias)
    return [conv, nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum), get_activation(activation)]


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


class _DenseForward(nn.Module):
    """Backbone + RPN head on a tensor (what ``count_macs`` runs); RoI heads depend on the proposals."""

    def __init__(self, backbone: nn.Module, rpn_head: RPNHead) -> None:
        super().__init__()
        self.backbone, self.rpn_head = backbone, rpn_head

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.rpn_head(list(self.backbone(x).values()))


class SpineNetMaskRCNN(MaskRCNN):
    """torchvision ``MaskRCNN`` with SpineNet P3-P7 (or P2-P7), official anchors and BN heads.

    Build it with :func:`spinenet.models.create_detector` (``maskrcnn_*`` names). ``config`` is the
    JSON-serialisable description :func:`spinenet.models.create_detector_from_config` rebuilds it from. Train
    mode: ``model(images, targets)`` with ``boxes``, ``labels`` and ``masks`` (``uint8 [K, H, W]``) -> losses;
    eval mode: ``[{boxes, labels, scores, masks}]`` with ``masks`` ``float [K, 1, H, W]`` probabilities pasted
    into the original image.
    """

    def __init__(self, backbone: nn.Module, anchors: MultilevelAnchors, rpn_head: RPNHead, box_head: BoxHead,
                 mask_head: MaskHead, num_classes: int, image_size: int, mask_width: int, activation: str,
                 bn_eps: float, bn_momentum: float, config: dict[str, Any] | None = None, **settings: Any) -> None:
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
        return _DenseForward(self.backbone, self.rpn.head)

    def total_macs(self, size: int | tuple[int, int] | None = None) -> int:
        """Multiply-adds with the RoI heads at the official 1000 proposals / 100 masks (:func:`maskrcnn_macs`)."""
        return maskrcnn_macs(self, size)


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
                    weights: str | None = None, **overrides: Any) -> SpineNetMaskRCNN:
    """Build a registered SpineNet Mask R-CNN (called by :func:`spinenet.models.create_detector`).

    ``overrides``: head geometry (``rpn_convs``, ``rpn_width``, ``box_convs``, ``box_width``, ``box_fcs``,
    ``box_fc_dim``, ``mask_convs``, ``mask_width``, or ``head_width`` for the three conv widths),
    ``anchor_size``, torchvision's RPN / RoI settings (:data:`MASKRCNN_DEFAULTS`); everything else goes to the
    backbone (``min_level=2`` for P2, ``filter_size_scale``, ``activation``, ``bn_momentum``, ...).
    """
    name = defn.name
    if weights is not None:  # a `spinenet convert --task maskrcnn` file (or a backbone file)
        from ..convert.weights import load_detector

        return load_detector(name, weights, num_classes=num_classes, image_size=image_size, **overrides)
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
    missing = {"name", "num_classes", "image_size", "backbone", "heads", "anchors", "settings"} - set(config)
    if missing:
        raise ValueError(f"Mask R-CNN config: missing field(s) {sorted(missing)}")
    h, a = config["heads"], config["anchors"]
    backbone = _backbone_from_json(config["backbone"])
    anchors = MultilevelAnchors(a["min_level"], a["max_level"], a["num_scales"], a["aspect_ratios"],
                                a["anchor_size"])
    norm = (h["activation"], h["bn_eps"], h["bn_momentum"])
    rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors, h["rpn_convs"], h["rpn_width"],
                       len(anchors.levels), *norm)
    box_head = BoxHead(backbone.out_channels, h["box_convs"], h["box_width"], h["box_fcs"], h["box_fc_dim"], *norm)
    mask_head = MaskHead(backbone.out_channels, h["mask_convs"], h["mask_width"], *norm)
    return SpineNetMaskRCNN(backbone, anchors, rpn_head, box_head, mask_head, config["num_classes"],
                            config["image_size"], h["mask_width"], *norm, config=dict(config), **config["settings"])


register_detector_family(MaskRCNNDef, MASKRCNN_FORMAT, create_maskrcnn, create_maskrcnn_from_config)
