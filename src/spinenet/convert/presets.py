"""One row per released SpineNet checkpoint (spec section 8): what to build so the converted model is the trained one.

A :class:`Preset` fixes the model, the task, the class count, the activation and the BatchNorm settings the
official run used (spec 3.8: TF1 RetinaNet/backbone eps 1e-4 / TF momentum 0.997, TF1 Mask R-CNN 1e-3 / 0.99,
TF1 classifier 1e-5 / 0.9, Model Garden 1e-3 / 0.99; protocol-B files relu, "-best" files swish) and the head
geometry, which comes from the detector table (:func:`spinenet.models.list_detectors`: 4x128 for 49S, 4x256 for
49/96/143, 7x512 for 190, anchor size 3 up to 96 and 4 from 143 on, separable 48 for mobile).

``verified`` says whether a parity fixture covers that conversion path (backbone map, head map, BN settings):
the Model Garden RetinaNet and the TF1 backbone/classifier paths are; the TF1 RetinaNet head (no fixture), the
TF1 Mask R-CNN checkpoints (backbone scope and heads) and the TF1 mobile (``spinenet_mbconv``) backbone are not. ``supported`` is False
where no name map exists; converting such a preset fails with ``note`` (every released file has a map now).

TF1 Mask R-CNN checkpoints convert as whole Mask R-CNNs (task ``maskrcnn``,
:mod:`spinenet.convert.maskrcnn_mapping`); ``--task backbone`` still takes just their backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TPU_URL = "https://storage.googleapis.com/cloud-tpu-checkpoints/detection"
MG_URL = "https://storage.googleapis.com/tf_model_garden/vision"

# PyTorch BN momentum = 1 - TF momentum (spec 3.8).
TPU_RETINANET_BN = {"bn_eps": 1e-4, "bn_momentum": 0.003}
TPU_MASKRCNN_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}
TPU_CLASSIFIER_BN = {"bn_eps": 1e-5, "bn_momentum": 0.1}
MG_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}


@dataclass(frozen=True)
class Preset:
    """A released checkpoint and the exact model it converts into (spec 8)."""

    name: str
    source: str  # "tpu" | "model_garden"
    task: str  # "backbone" | "retinanet" | "maskrcnn" | "classification"
    model: str  # detector name for retinanet/maskrcnn, classifier/backbone name otherwise
    url: str
    metric: str  # the published number (spec 8)
    activation: str
    bn_eps: float
    bn_momentum: float
    num_classes: int | None = None
    image_size: int | None = None
    verified: bool = False
    supported: bool = True
    note: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {}


def _add(preset: Preset) -> None:
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is defined twice")
    PRESETS[preset.name] = preset


_TPU_RETINANET_NOTE = ("TF1 RetinaNet head map (anchor order (1, 2, 0.5) -> (0.5, 1, 2)) checked against a "
                       "reordering test only: no TF1 RetinaNet fixture; the backbone map is fixture-verified")
for _id, _det, _size, _b, _c in (("49S", "retinanet_spinenet49s", 640, "39.5", "41.5"),
                                 ("49", "retinanet_spinenet49", 640, "42.8", "44.3"),
                                 ("96", "retinanet_spinenet96", 1024, "46.7", "48.5"),
                                 ("143", "retinanet_spinenet143", 1280, "48.0", "50.6")):
    _add(Preset(f"spinenet-{_id}", "tpu", "retinanet", _det, f"{TPU_URL}/retinanet/spinenet-{_id}.tar.gz",
                f"COCO val2017 AP {_b} (protocol B, 350 epochs)", "relu", **TPU_RETINANET_BN, num_classes=91,
                image_size=_size, note=_TPU_RETINANET_NOTE))
    _add(Preset(f"spinenet-{_id}-best", "tpu", "retinanet", _det, f"{TPU_URL}/retinanet/spinenet-{_id}-best.tar.gz",
                f"COCO val2017 AP {_c} (protocol C, 500 epochs)", "swish", **TPU_RETINANET_BN, num_classes=91,
                image_size=_size, note=_TPU_RETINANET_NOTE))
_add(Preset("spinenet-190-best", "tpu", "retinanet", "retinanet_spinenet190", f"{TPU_URL}/retinanet/spinenet-190-best.tar.gz",
            "COCO val2017 AP 52.0 (protocol C, 400 epochs)", "swish", **TPU_RETINANET_BN, num_classes=91,
            image_size=1280, note=_TPU_RETINANET_NOTE))
_add(Preset("spinenetmbconv-49-best", "tpu", "retinanet", "retinanet_spinenet_mobile49",
            f"{TPU_URL}/retinanet/spinenetmbconv-49-best.tar.gz", "COCO val2017 AP 28.6 (600 epochs, swish)", "swish",
            **TPU_RETINANET_BN, num_classes=91, image_size=384,
            note="TF1 spinenet_mbconv backbone names derived from the tensorflow/tpu sources, checked by synthetic "
                 "round trips and against the fixture-verified Model Garden mobile map only; the separable head "
                 "(retinanet/class_net, box_net; anchor order (1, 2, 0.5) -> (0.5, 1, 2)) likewise: no TF1 mobile "
                 "or TF1 RetinaNet fixture exists",
            overrides={"flavor": "tpu"}))
for _id, _ssl in (("143", "52.6"), ("190", "54.2")):
    _add(Preset(f"spinenet-{_id}-ssl", "tpu", "retinanet", f"retinanet_spinenet{_id}",
                f"{TPU_URL}/projects/rethinking-pre-training-and-self-training/spinenet-{_id}-ssl.tar.gz",
                f"COCO val2017 AP {_ssl} (self-training, SoftNMS)", "swish", **TPU_RETINANET_BN, num_classes=91,
                image_size=1280, note="settings assumed equal to spinenet-" + _id + "-best (the self-training config "
                "was not inspected); " + _TPU_RETINANET_NOTE))
_TPU_MASKRCNN_NOTE = ("TF1 Mask R-CNN map (rpn_head, fast_rcnn_head, mask_head; anchors (1, 2, 0.5) -> (0.5, 1, 2), "
                      "deltas (dy, dx, dh, dw) -> (dx, dy, dw, dh)) derived from tensorflow/tpu heads.py and checked "
                      "by a synthetic TF1-layout round trip only: no TF1 Mask R-CNN fixture; RoIAlign sampling and "
                      "proposal selection differ from TF1 (docs/weights.md)")
for _id, _size, _metric, _act in (("49", 640, "box AP 42.8 / mask AP 37.8", "relu"),
                                  ("96", 1024, "46.8 / 41.2", "relu"), ("143", 1280, "48.7 / 42.6", "relu"),
                                  ("190", 1536, "52.0 / 45.9", "swish")):
    _add(Preset(f"maskrcnn-spinenet-{_id}", "tpu", "maskrcnn", f"maskrcnn_spinenet{_id}",
                f"{TPU_URL}/maskrcnn/spinenet-{_id}.tar.gz", f"COCO val2017 {_metric} (Mask R-CNN)", _act,
                **TPU_MASKRCNN_BN, num_classes=91, image_size=_size, note=_TPU_MASKRCNN_NOTE))
for _id, _top1 in (("49", "77.0"), ("96", "78.2"), ("143", "79.0")):
    _add(Preset(f"spinenet-{_id}-imagenet", "tpu", "classification", f"spinenet{_id}",
                f"{TPU_URL}/classification/spinenet-{_id}-imagenet.tar.gz", f"ImageNet top-1 {_top1} (vanilla, relu)",
                "relu", **TPU_CLASSIFIER_BN, num_classes=1001, image_size=224, verified=True))
for _id, _top1 in (("49", "78.1"), ("96", "79.4"), ("143", "80.1"), ("190", "80.8")):
    _add(Preset(f"spinenet-{_id}-best-imagenet", "tpu", "classification", f"spinenet{_id}",
                f"{TPU_URL}/classification/spinenet-{_id}-best-imagenet.tar.gz",
                f"ImageNet top-1 {_top1} (SD + swish + label smoothing)", "swish", **TPU_CLASSIFIER_BN,
                num_classes=1001, image_size=224, verified=True))
for _file, _det, _size, _ap in (("spinenet-49-i640", "retinanet_spinenet49", 640, "44.2"),
                                ("spinenet-96-i1024", "retinanet_spinenet96", 1024, "48.5"),
                                ("spinenet-143-i1280", "retinanet_spinenet143", 1280, "50.0")):
    _add(Preset(f"mg-{_file}", "model_garden", "retinanet", _det, f"{MG_URL}/spinenet/{_file}.tar.gz",
                f"COCO val2017 AP {_ap} (500 epochs, SD 0.2, swish)", "swish", **MG_BN, num_classes=91,
                image_size=_size, verified=True))
_add(Preset("mg-spinenet49mobile", "model_garden", "retinanet", "retinanet_spinenet_mobile49",
            f"{MG_URL}/retinanet/spinenet49mobile.tar.gz", "COCO val2017 AP 28.1 (600 epochs)", "hard_swish", **MG_BN,
            num_classes=91, image_size=384,
            note="mobile backbone map verified on the 49XS fixture; the separable head's names (Keras "
                 "SeparableConv2D) follow the RetinaNet fixture's layout but no fixture has a separable head"))


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def list_presets() -> list[str]:
    return list(PRESETS)
