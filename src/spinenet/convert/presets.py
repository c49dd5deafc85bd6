"""One row per released SpineNet checkpoint (spec section 8): what to build so the converted model is the trained one.

A :class:`Preset` fixes the model, the task, the class count, the activation and the BatchNorm settings the
official run used (spec 3.8: TF1 RetinaNet/backbone eps 1e-4 / TF momentum 0.997, TF1 Mask R-CNN 1e-3 / 0.99,
TF1 classifier 1e-5 / 0.9, Model Garden 1e-3 / 0.99; protocol-B files relu, "-best" files swish) and the head
geometry, which comes from the detector table (:func:`spinenet.models.list_detectors`: 4x128 for 49S, 4x256 for
49/96/143, 7x512 for 190, anchor size 3 up to 96 and 4 from 143 on, separable 48 for mobile).

Verification status is per part, not per file: ``checks`` names the :data:`CHECKS` that cover a release's
conversion path -- each a comparison in CI of the converted model against outputs of the official code (a parity
fixture of tiny randomised models, or for post-processing the official formulas), with the tests that run it --
and ``gaps`` says what of that release no fixture covers (``block_repeats`` > 1 in the TF1 graph, the 190's
7-conv heads, separable heads, SoftNMS, ...). :func:`status` renders both; ``docs/weights.md`` shows it per row.
``supported`` is False where no name map exists; converting such a preset fails with ``note``.

TF1 Mask R-CNN checkpoints convert as whole Mask R-CNNs (task ``maskrcnn``,
:mod:`spinenet.convert.maskrcnn_mapping`); ``--task backbone`` still takes just their backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

TPU_URL = "https://storage.googleapis.com/cloud-tpu-checkpoints/detection"
MG_URL = "https://storage.googleapis.com/tf_model_garden/vision"

# PyTorch BN momentum = 1 - TF momentum (spec 3.8).
TPU_RETINANET_BN = {"bn_eps": 1e-4, "bn_momentum": 0.003}
TPU_MASKRCNN_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}
TPU_CLASSIFIER_BN = {"bn_eps": 1e-5, "bn_momentum": 0.1}
MG_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}


@dataclass(frozen=True)
class Check:
    """One part of a conversion path that CI compares with the official code: ``part`` (backbone, head,
    post-processing), what exactly, and the tests (``file::function``) that do it."""

    part: str
    what: str
    tests: tuple[str, ...]


_TPU = "tests/test_convert_tpu.py::"
CHECKS: dict[str, Check] = {
    "tpu-backbone": Check("backbone", "TF1 SpineNet with block_repeats 1 (names, padding, pooling, resampling, BN "
                          "epsilon), relu and swish", ("tests/test_parity.py::test_backbone_matches_official",
                                                      "tests/test_convert.py::test_cli_conversion_matches_official",
                                                      _TPU + "test_endpoints_match_tf1")),
    "tpu-mbconv-backbone": Check("backbone", "TF1 SpineNet-MBConv-49 (spinenet_mbconv names, MBConv blocks with "
                                 "swish/sigmoid squeeze-excitation, depthwise resampling)",
                                 (_TPU + "test_endpoints_match_tf1",)),
    "tpu-retinanet-head": Check("head", "TF1 RetinaNet head: 4 shared 3x3 convs with per-level BN, relu, class and "
                                "box predictors in our anchor order", (_TPU + "test_retinanet_head_matches_tf1_in_our_"
                                                                  "anchor_order",)),
    "tpu-retinanet-postprocess": Check("post-processing", "TF1 RetinaNet decoding: \"+1\" boxes, clipping to the "
                                       "last pixel, sigmoid scores without the background logit",
                                       (_TPU + "test_retinanet_detections_follow_the_tf1_formulas",)),
    "tpu-maskrcnn-heads": Check("heads", "TF1 Mask R-CNN heads: RPN (1 conv, per-level BN), Fast R-CNN box head "
                                "(4 convs + 1 FC with BN) and mask head (4 convs + transposed conv), relu, on "
                                "fixed RoI features", (_TPU + "test_maskrcnn_rpn_matches_tf1_in_our_anchor_order",
                                             _TPU + "test_fast_rcnn_head_matches_tf1_on_the_fixture_rois",
                                             _TPU + "test_mask_head_matches_tf1_on_the_fixture_rois")),
    "tpu-maskrcnn-postprocess": Check("post-processing", "TF1 proposal decoding and Fast R-CNN decoding (weights "
                                      "(10, 10, 5, 5), \"+1\" boxes, clipping, softmax scores)",
                                      (_TPU + "test_maskrcnn_proposals_follow_the_tf1_formulas",
                                       _TPU + "test_fast_rcnn_detections_follow_the_tf1_formulas")),
    "tpu-classifier-head": Check("head", "TF1 classification head (all levels merged, pooled, dense)",
                                 ("tests/test_convert.py::test_cli_conversion_matches_official",)),
    "mg-backbone": Check("backbone", "Model Garden SpineNet with block_repeats 1 and 2, relu and swish",
                         ("tests/test_parity.py::test_backbone_matches_official",
                          "tests/test_convert.py::test_cli_conversion_matches_official")),
    "mg-mobile-backbone": Check("backbone", "Model Garden SpineNet-Mobile (49XS)",
                                ("tests/test_convert.py::test_cli_conversion_matches_official",)),
    "mg-retinanet-head": Check("head", "Model Garden RetinaNet head: 4 shared 3x3 convs with per-level BN, relu",
                               ("tests/test_convert.py::test_cli_conversion_matches_official",)),
    "mg-retinanet-postprocess": Check("post-processing", "Model Garden decoding, clipping and class-wise NMS (the "
                                      "official detections)",
                                      ("tests/test_convert.py::test_converted_detector_reproduces_official_"
                                       "detections",)),
}
# What no fixture covers, by release.
REPEATS_GAP = "block_repeats {} in the TF1 graph (the TF1 fixtures have 1)"
HEAD7_GAP = "the {}-wide 7-conv heads (the fixtures have 4 convs)"
SEPARABLE_GAP = "the separable-conv head (no fixture has one)"
SOFTNMS_GAP = "SoftNMS, which the published AP used (the converted model runs hard NMS)"
SSL_GAP = "the self-training config (settings assumed equal to the -best file's)"
ACTIVATION_GAP = "{} in the detection heads (the detector fixtures use relu)"
MASKRCNN_GAP = ("RoIAlign and proposal / detection selection (torchvision's, not TF1's multilevel_crop_and_resize "
                "and NMS)")


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
    checks: tuple[str, ...] = ()
    gaps: tuple[str, ...] = ()
    supported: bool = True
    note: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


def status(preset: Preset) -> str:
    """What CI checks of this release against the official code, and what not (docs/weights.md, the CLI)."""
    parts = list(dict.fromkeys(CHECKS[key].part for key in preset.checks))
    text = f"checked: {', '.join(parts)} ({', '.join(preset.checks)})" if parts else "nothing checked"
    return text + (f"; not checked: {'; '.join(preset.gaps)}" if preset.gaps else "")


PRESETS: dict[str, Preset] = {}


def _add(preset: Preset) -> None:
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is defined twice")
    if preset.task in ("retinanet", "maskrcnn") and preset.activation != "relu":
        preset = replace(preset, gaps=(*preset.gaps, ACTIVATION_GAP.format(preset.activation)))
    PRESETS[preset.name] = preset


_TPU_RETINANET = ("tpu-backbone", "tpu-retinanet-head", "tpu-retinanet-postprocess")
_TPU_MASKRCNN = ("tpu-backbone", "tpu-maskrcnn-heads", "tpu-maskrcnn-postprocess")
_REPEATS = {"49S": 1, "49": 1, "96": 2, "143": 3, "190": 4}  # block_repeats of each model's scaling (spec 2.2)


def _repeats_gap(model_id: str) -> tuple[str, ...]:
    return (REPEATS_GAP.format(_REPEATS[model_id]),) if _REPEATS[model_id] > 1 else ()


for _id, _det, _size, _b, _c in (("49S", "retinanet_spinenet49s", 640, "39.5", "41.5"),
                                 ("49", "retinanet_spinenet49", 640, "42.8", "44.3"),
                                 ("96", "retinanet_spinenet96", 1024, "46.7", "48.5"),
                                 ("143", "retinanet_spinenet143", 1280, "48.0", "50.6")):
    _add(Preset(f"spinenet-{_id}", "tpu", "retinanet", _det, f"{TPU_URL}/retinanet/spinenet-{_id}.tar.gz",
                f"COCO val2017 AP {_b} (protocol B, 350 epochs)", "relu", **TPU_RETINANET_BN, num_classes=91,
                image_size=_size, checks=_TPU_RETINANET, gaps=_repeats_gap(_id)))
    _add(Preset(f"spinenet-{_id}-best", "tpu", "retinanet", _det, f"{TPU_URL}/retinanet/spinenet-{_id}-best.tar.gz",
                f"COCO val2017 AP {_c} (protocol C, 500 epochs)", "swish", **TPU_RETINANET_BN, num_classes=91,
                image_size=_size, checks=_TPU_RETINANET, gaps=_repeats_gap(_id)))
_add(Preset("spinenet-190-best", "tpu", "retinanet", "retinanet_spinenet190",
            f"{TPU_URL}/retinanet/spinenet-190-best.tar.gz", "COCO val2017 AP 52.0 (protocol C, 400 epochs)", "swish",
            **TPU_RETINANET_BN, num_classes=91, image_size=1280, checks=_TPU_RETINANET,
            gaps=(*_repeats_gap("190"), HEAD7_GAP.format(512))))
_add(Preset("spinenetmbconv-49-best", "tpu", "retinanet", "retinanet_spinenet_mobile49",
            f"{TPU_URL}/retinanet/spinenetmbconv-49-best.tar.gz", "COCO val2017 AP 28.6 (600 epochs, swish)", "swish",
            **TPU_RETINANET_BN, num_classes=91, image_size=384,
            checks=("tpu-mbconv-backbone", "tpu-retinanet-postprocess"), gaps=(SEPARABLE_GAP,),
            overrides={"flavor": "tpu"}))
for _id, _ssl in (("143", "52.6"), ("190", "54.2")):
    _add(Preset(f"spinenet-{_id}-ssl", "tpu", "retinanet", f"retinanet_spinenet{_id}",
                f"{TPU_URL}/projects/rethinking-pre-training-and-self-training/spinenet-{_id}-ssl.tar.gz",
                f"COCO val2017 AP {_ssl} (self-training, SoftNMS)", "swish", **TPU_RETINANET_BN, num_classes=91,
                image_size=1280, checks=_TPU_RETINANET,
                gaps=(*_repeats_gap(_id), *((HEAD7_GAP.format(512),) if _id == "190" else ()), SOFTNMS_GAP,
                      SSL_GAP)))
for _id, _size, _metric, _act in (("49", 640, "box AP 42.8 / mask AP 37.8", "relu"),
                                  ("96", 1024, "46.8 / 41.2", "relu"), ("143", 1280, "48.7 / 42.6", "relu"),
                                  ("190", 1536, "52.0 / 45.9", "swish")):
    _add(Preset(f"maskrcnn-spinenet-{_id}", "tpu", "maskrcnn", f"maskrcnn_spinenet{_id}",
                f"{TPU_URL}/maskrcnn/spinenet-{_id}.tar.gz", f"COCO val2017 {_metric} (Mask R-CNN)", _act,
                **TPU_MASKRCNN_BN, num_classes=91, image_size=_size, checks=_TPU_MASKRCNN,
                gaps=(*_repeats_gap(_id), *((HEAD7_GAP.format(384),) if _id == "190" else ()), MASKRCNN_GAP)))
_TPU_CLASSIFIER = ("tpu-backbone", "tpu-classifier-head")
for _id, _top1 in (("49", "77.0"), ("96", "78.2"), ("143", "79.0")):
    _add(Preset(f"spinenet-{_id}-imagenet", "tpu", "classification", f"spinenet{_id}",
                f"{TPU_URL}/classification/spinenet-{_id}-imagenet.tar.gz", f"ImageNet top-1 {_top1} (vanilla, relu)",
                "relu", **TPU_CLASSIFIER_BN, num_classes=1001, image_size=224, checks=_TPU_CLASSIFIER,
                gaps=_repeats_gap(_id)))
for _id, _top1 in (("49", "78.1"), ("96", "79.4"), ("143", "80.1"), ("190", "80.8")):
    _add(Preset(f"spinenet-{_id}-best-imagenet", "tpu", "classification", f"spinenet{_id}",
                f"{TPU_URL}/classification/spinenet-{_id}-best-imagenet.tar.gz",
                f"ImageNet top-1 {_top1} (SD + swish + label smoothing)", "swish", **TPU_CLASSIFIER_BN,
                num_classes=1001, image_size=224, checks=_TPU_CLASSIFIER, gaps=_repeats_gap(_id)))
_MG_RETINANET = ("mg-backbone", "mg-retinanet-head", "mg-retinanet-postprocess")
for _file, _det, _size, _ap in (("spinenet-49-i640", "retinanet_spinenet49", 640, "44.2"),
                                ("spinenet-96-i1024", "retinanet_spinenet96", 1024, "48.5"),
                                ("spinenet-143-i1280", "retinanet_spinenet143", 1280, "50.0")):
    _add(Preset(f"mg-{_file}", "model_garden", "retinanet", _det, f"{MG_URL}/spinenet/{_file}.tar.gz",
                f"COCO val2017 AP {_ap} (500 epochs, SD 0.2, swish)", "swish", **MG_BN, num_classes=91,
                image_size=_size, checks=_MG_RETINANET,
                # the Model Garden fixtures have block_repeats 1 and 2
                gaps=("block_repeats 3 (the Model Garden fixtures have 1 and 2)",) if "143" in _file else ()))
_add(Preset("mg-spinenet49mobile", "model_garden", "retinanet", "retinanet_spinenet_mobile49",
            f"{MG_URL}/retinanet/spinenet49mobile.tar.gz", "COCO val2017 AP 28.1 (600 epochs)", "hard_swish", **MG_BN,
            num_classes=91, image_size=384, checks=("mg-mobile-backbone", "mg-retinanet-postprocess"),
            gaps=(SEPARABLE_GAP, "the 49 scaling (the mobile fixture is 49XS)")))


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def list_presets() -> list[str]:
    return list(PRESETS)
