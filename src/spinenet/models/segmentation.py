"""Semantic segmentation on SpineNet (the paper's future work, section 6; not an official model).

The scale-permuted backbone already is a feature pyramid, so the head stays light, in the spirit of the
Panoptic-FPN / Semantic-FPN heads: every endpoint P3..P7 gets a 1x1 conv + BN to ``head_width`` channels
(a per-level projection, so levels are not summed in one shared space), is resized bilinearly to P3's size and
summed; the sum goes through the network activation, ``head_convs`` 3x3 conv-BN-act layers, dropout and a 1x1
classifier (with bias); the logits are upsampled bilinearly to the input size. Everything uses the backbone's
activation and BN settings. Output stride 8 before the final upsampling, as in the usual light heads.

Inputs follow the classifiers (:mod:`.classification`): a float ``[N, 3, H, W]`` batch with RGB in ``[0, 1]``
(uint8 is divided by 255), normalised with the ImageNet mean/std inside the model; any ``H, W`` works (the
backbone closes non-integer level ratios with TF1's nearest resize), and the logits have the input's size.
Masks are int ``[N, H, W]`` with class ids ``0..num_classes-1`` and ``ignore_index`` (255) for unlabelled pixels.

Backbone defaults are the classification ones (swish, BN epsilon 1e-5, PyTorch momentum 0.1), so an ImageNet
classifier's backbone state dict loads as is (``segmenter.backbone.load_state_dict(clf.backbone.state_dict())``);
stochastic depth defaults to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import SpineNet, init_weights
from ..backbones import BACKBONE_OVERRIDES, Table, backbone_from_json, config_to_json, get_model_def
from ..layers import ConvNormAct, get_activation, make_norm
# the metrics and overlay drawing of segmenters live with every task's; these names stay importable from here
from ..metrics import IGNORE_INDEX, confusion_matrix, iou_from_confusion, mean_iou  # noqa: F401
from ..visualize import draw_overlay, segmentation_palette  # noqa: F401
from .base import LogitsExport, TaskModel, load_weights, set_classes, training_overrides
from .classification import (CLASSIFIER_BACKBONE_DEFAULTS, InputNormalize, as_image_batch, backbone_config,
                             normalize_json)

SEGMENTER_FORMAT = "spinenet-segmenter/1"
SEGMENTER_BACKBONE_DEFAULTS: dict[str, Any] = {**CLASSIFIER_BACKBONE_DEFAULTS, "stochastic_depth_rate": 0.0}
CLASSIFIER_INIT_STD = 0.01
HEAD_OVERRIDES = ("head_width", "head_convs", "dropout")


@dataclass(frozen=True)
class SegmenterDef:
    """One registered segmenter: backbone and head geometry (widths follow the RetinaNet heads' scale, halved)."""

    name: str
    backbone: str
    head_width: int
    head_convs: int = 2
    dropout: float = 0.1
    description: str = ""

    task = "segmentation"  # not a field: the registry's task of these rows


_SEGMENTERS = Table("segmenter")
# Names of the segmenters in the 0.1.0 release (the backbone's name); create_segmenter still takes them.
LEGACY_NAMES: dict[str, str] = _SEGMENTERS.legacy



def register_segmenter(defn: SegmenterDef) -> SegmenterDef:
    return _SEGMENTERS.register(defn)


for _name, _width in (("spinenet49s", 64), ("spinenet49", 128), ("spinenet96", 128), ("spinenet143", 128),
                      ("spinenet190", 256), ("spinenet_mobile49", 48), ("spinenet_mobile49s", 40),
                      ("spinenet_mobile49xs", 24)):
    register_segmenter(SegmenterDef(f"segmenter_{_name}", _name, _width,
                                    description=f"{get_model_def(_name).description} + light P3-P7 fusion head"))
    LEGACY_NAMES[_name] = f"segmenter_{_name}"


def list_segmenters(pattern: str | None = None) -> list[str]:
    """Registered segmenter names (``segmenter_<backbone>``), optionally filtered by a shell pattern."""
    return _SEGMENTERS.names(pattern)


# ``segmenter_name(name)``: ``name``, or today's name for a segmenter name of the 0.1.0 release (with a
# ``DeprecationWarning``)
segmenter_name = _SEGMENTERS.current_name


def get_segmenter_def(name: str) -> SegmenterDef:
    return _SEGMENTERS.get(segmenter_name(name))


# --------------------------------------------------------------------------------------------------- the model
class SegmentationHead(nn.Module):
    """Per-level 1x1 projection -> bilinear resize to the finest level -> sum -> act -> 3x3 convs -> 1x1 logits."""

    def __init__(self, levels: Sequence[int], in_channels: int, num_classes: int, width: int, num_convs: int,
                 dropout: float, activation: str, bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        norm = make_norm(bn_eps, bn_momentum)
        self.levels = [str(level) for level in sorted(levels)]
        self.lateral = nn.ModuleDict({level: ConvNormAct(in_channels, width, 1, norm, None) for level in self.levels})
        self.act = get_activation(activation)
        self.convs = nn.Sequential(*[ConvNormAct(width, width, 3, norm, activation) for _ in range(num_convs)])
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        if self.classifier.weight.device.type != "meta":  # built on meta for counting: nothing to initialise
            init_weights(self)  # the backbone's VarianceScaling convs, BN gamma 1 / beta 0
            nn.init.normal_(self.classifier.weight, std=CLASSIFIER_INIT_STD)
            nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        size = tuple(features[self.levels[0]].shape[-2:])
        fused = None
        for level in self.levels:
            x = self.lateral[level](features[level])
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            fused = x if fused is None else fused + x
        return self.classifier(self.dropout(self.convs(self.act(fused))))


class SpineNetSegmenter(TaskModel, nn.Module):
    """SpineNet backbone + a light P3-P7 fusion head (module docstring). Build with :func:`create_segmenter`.

    ``forward(images)`` -> logits ``[N, num_classes, H, W]`` at the input size; ``forward(images, masks)`` ->
    ``{"loss": cross-entropy}`` (pixels equal to ``ignore_index`` ignored; 0 when a batch has no labelled
    pixel), in either mode. ``predict(images)`` -> label maps ``[N, H, W]``.
    """

    task = "segmentation"
    config_format = SEGMENTER_FORMAT
    reinit_on_num_classes = ("head.classifier.",)
    legacy_names = LEGACY_NAMES

    def __init__(self, backbone: SpineNet, head: SegmentationHead, num_classes: int,
                 ignore_index: int = IGNORE_INDEX, normalize: Mapping[str, Sequence[float]] | None = None,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.normalize = InputNormalize(normalize["mean"] if normalize else None,
                                        normalize["std"] if normalize else None)
        self.backbone, self.head = backbone, head
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.config = dict(config or {})

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor],
                masks: torch.Tensor | Sequence[torch.Tensor] | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
        x = self.normalize(as_image_batch(images, "SpineNetSegmenter"))
        logits = self.head(self.backbone(x))
        logits = F.interpolate(logits, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        if masks is None:
            return logits
        return {"loss": self.loss(logits, masks)}

    def loss(self, logits: torch.Tensor, masks: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Pixel-wise cross-entropy over labelled pixels (``ignore_index`` skipped)."""
        masks = self._check_masks(masks, logits)
        valid = masks != self.ignore_index
        if not bool(valid.any()):  # F.cross_entropy would return NaN (0 / 0)
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), masks, ignore_index=self.ignore_index)

    def _check_masks(self, masks: torch.Tensor | Sequence[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        if not isinstance(masks, torch.Tensor):
            masks = torch.stack([torch.as_tensor(m) for m in masks])
        if masks.dim() == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        n, _, h, w = logits.shape
        if tuple(masks.shape) != (n, h, w):
            raise ValueError(f"SpineNetSegmenter: masks must be [N, H, W] = {[n, h, w]} like the images, "
                             f"got {list(masks.shape)}")
        if masks.is_floating_point():
            raise ValueError("SpineNetSegmenter: masks must hold integer class ids, got a floating-point tensor")
        masks = masks.to(logits.device, torch.int64)
        bad = (masks != self.ignore_index) & ((masks < 0) | (masks >= self.num_classes))
        if bool(bad.any()):
            values = sorted(set(masks[bad].unique().tolist()))[:10]
            raise ValueError(f"SpineNetSegmenter: mask values {values} are neither a class id "
                             f"(0..{self.num_classes - 1}) nor ignore_index={self.ignore_index}")
        return masks

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SpineNetSegmenter:
        return create_segmenter_from_config(config)

    @classmethod
    def config_for_weights(cls, saved: Mapping[str, Any], *, num_classes: int | None = None,
                           class_names: Sequence[str] | None = None, ignore_index: int | None = None,
                           normalize: bool | Mapping[str, Sequence[float]] | None = None,
                           **overrides: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
        """A saved segmenter with another dropout, ``ignore_index``, ``class_names``, normalisation, training-only
        backbone settings, or another ``num_classes`` (the 1x1 classifier is re-initialised); the head width and
        depth must be the saved ones."""
        config = cls.migrate_config(saved)
        head = config["head"]
        for key, field in (("head_width", "width"), ("head_convs", "num_convs")):
            if key in overrides and overrides[key] != head[field]:
                raise ValueError(f"saved with {key}={head[field]!r}; you asked for {overrides[key]!r}")
        unknown = set(overrides) - set(HEAD_OVERRIDES) - set(BACKBONE_OVERRIDES)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)} for a segmenter; known: {sorted(HEAD_OVERRIDES)}, "
                             "num_classes, class_names, ignore_index, normalize and the backbone's")
        if "dropout" in overrides:
            head["dropout"] = overrides["dropout"]
        training_overrides(config, overrides, "head")
        if ignore_index is not None:
            config["ignore_index"] = ignore_index
        if normalize is not None:
            config["normalize"] = normalize_json(normalize)
        return config, set_classes(config, num_classes, class_names, cls.reinit_on_num_classes)

    def export_module(self, size: tuple[int, int], **options: Any) -> nn.Module:
        """Logits ``[N, num_classes, H, W]`` at the input size, for a fixed ``H, W`` (:class:`SegmenterExport`)."""
        return SegmenterExport(self, size)

    @torch.no_grad()
    def predict(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-pixel argmax ``[N, H, W]`` (int64), in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self(images).argmax(dim=1)
        finally:
            self.train(was_training)


SegmenterExport = LogitsExport  # the export wrapper of the model contract (models.base)


# ---------------------------------------------------------------------------------------------------- builders
def _int_at_least(value: Any, low: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    return value


def create_segmenter(name: str, num_classes: int | None = None, *, ignore_index: int = IGNORE_INDEX,
                     class_names: Sequence[str] | None = None, normalize: bool | Mapping[str, Sequence[float]] = True,
                     weights: str | None = None, **overrides: Any) -> SpineNetSegmenter:
    """Build a SpineNet semantic segmenter (module docstring; names :func:`list_segmenters`).

    ``num_classes`` counts every class the masks use (background included if it is labelled). ``overrides``:
    head-level ``head_width`` (default per row: 128 for 49/96/143), ``head_convs`` (2), ``dropout`` (0.1);
    everything else goes to :func:`spinenet.create_model` over the defaults swish, ``bn_eps=1e-5``,
    ``bn_momentum=0.1``, ``stochastic_depth_rate=0`` (tpu flavour for the ResNet family).

    ``weights``: a ``spinenet-weights/1`` file. A segmenter file rebuilds the saved model (``num_classes``
    defaults to the file's; another count re-initialises the 1x1 classifier); any other file seeds the backbone
    (:mod:`spinenet.weights`). ``name`` is ``segmenter_<backbone>``; the backbone's own name (the 0.1.0 segmenter
    names) still works, with a ``DeprecationWarning``.
    """
    name = segmenter_name(name)
    if weights is not None:
        given = {"ignore_index": ignore_index if ignore_index != IGNORE_INDEX else None,
                 "class_names": list(class_names) if class_names is not None else None,
                 "normalize": normalize if normalize is not True else None}
        return load_weights(name, weights, num_classes=num_classes, **given, **overrides)
    if num_classes is None:
        raise ValueError(f"create_segmenter({name!r}): give num_classes (every class the masks use), or weights=")
    defn = get_segmenter_def(name)
    what = f"create_segmenter({name!r})"
    num_classes = _int_at_least(num_classes, 2, f"{what}: num_classes")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or 0 <= ignore_index < num_classes:
        raise ValueError(f"{what}: ignore_index={ignore_index!r} must be an integer outside 0..{num_classes - 1}")
    head_opts = {k: overrides.pop(k) for k in list(overrides) if k in HEAD_OVERRIDES}
    cfg = backbone_config(defn.backbone, f"{what} (head overrides: {list(HEAD_OVERRIDES)})",
                          SEGMENTER_BACKBONE_DEFAULTS, overrides)
    names = None if class_names is None else [str(n) for n in class_names]
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{what}: class_names has {len(names)} entries but num_classes is {num_classes}")
    config = {
        "format": SEGMENTER_FORMAT,
        "name": name,
        "num_classes": num_classes,
        "ignore_index": ignore_index,
        "class_names": names,
        "normalize": normalize_json(normalize),
        "backbone": config_to_json(cfg),
        "head": {"width": head_opts.get("head_width", defn.head_width),
                 "num_convs": head_opts.get("head_convs", defn.head_convs),
                 "dropout": head_opts.get("dropout", defn.dropout),
                 "activation": cfg["activation"], "bn_eps": cfg["bn_eps"], "bn_momentum": cfg["bn_momentum"]},
    }
    return create_segmenter_from_config(config)


def create_segmenter_from_config(config: Mapping[str, Any]) -> SpineNetSegmenter:
    """Rebuild a segmenter from ``model.config`` (e.g. read back from a checkpoint); same modules, fresh weights."""
    SpineNetSegmenter.check_format(config, "segmenter")
    config = SpineNetSegmenter.migrate_config(config)
    missing = {"name", "num_classes", "backbone", "head"} - set(config)
    if missing:
        raise ValueError(f"segmenter config: missing field(s) {sorted(missing)}")
    head_cfg = config["head"]
    num_classes = _int_at_least(config["num_classes"], 2, "segmenter config: num_classes")
    dropout = head_cfg.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"segmenter config: head.dropout must be a number in [0, 1), got {dropout!r}")
    normalize = normalize_json(config.get("normalize"))
    backbone = backbone_from_json(config["backbone"], "segmenter config: backbone")
    head = SegmentationHead(backbone.graph.levels, backbone.out_channels, num_classes,
                            _int_at_least(head_cfg["width"], 1, "head_width"),
                            _int_at_least(head_cfg["num_convs"], 0, "head_convs"), float(dropout),
                            head_cfg["activation"], head_cfg["bn_eps"], head_cfg["bn_momentum"])
    full = {"ignore_index": IGNORE_INDEX, "class_names": None, **config, "normalize": normalize}
    return SpineNetSegmenter(backbone, head, num_classes, full["ignore_index"], normalize, config=full)

