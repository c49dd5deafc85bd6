"""Convert an official TensorFlow SpineNet checkpoint into a ``spinenet-weights/1`` safetensors file (spec 4, 8).

``convert_checkpoint`` (and ``spinenet convert``) builds the PyTorch model the checkpoint was trained as (from a
:mod:`preset <spinenet.convert.presets>` or explicit settings), maps every tensor with the existing name maps
(:mod:`.mapping`, :mod:`.detection_mapping`, :mod:`.maskrcnn_mapping`, :mod:`.classification_mapping`) through
:func:`~spinenet.convert.load.apply_tf_weights` (all or nothing: any missing tensor or shape mismatch raises
and nothing is written), and saves the weights with the full configuration in the metadata
(:mod:`.weights`). Detectors converted from TF1 (``--source tpu``) save ``box_decoding="tf1"``, so they decode
and clip their boxes as the TF1 code does (:mod:`spinenet.models.tf1_boxes`). No TensorFlow is needed:
:class:`~spinenet.convert.tf_checkpoint.TFCheckpoint` reads the files.

The checkpoint may be a prefix (``model.ckpt``, ``ckpt-231000``), its ``.index`` file, a folder holding one
checkpoint, or a released ``.tar.gz`` (extracted to a temporary folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from torch import nn

from ..constants import NUM_COCO_LABELS
from .load import MatchReport, apply_tf_weights
from .presets import get_preset
from .tf_checkpoint import TFCheckpoint

SOURCES = ("tpu", "model_garden")
CONVERT_TASKS = ("backbone", "retinanet", "maskrcnn", "classification")
# BN defaults per (source, task) in the PyTorch momentum convention (spec 3.8, 8).
BN_DEFAULTS = {("tpu", "backbone"): (1e-4, 0.003), ("tpu", "retinanet"): (1e-4, 0.003),
               ("tpu", "classification"): (1e-5, 0.1), ("model_garden", "backbone"): (1e-3, 0.01),
               ("tpu", "maskrcnn"): (1e-3, 0.01),
               ("model_garden", "retinanet"): (1e-3, 0.01)}
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass
class Conversion:
    """The result of :func:`convert_checkpoint`: the written file, the model and the match report."""

    path: Path
    model: nn.Module
    report: MatchReport
    checkpoint: str
    settings: dict[str, Any]


def _step(prefix: Path) -> int:
    match = re.search(r"-(\d+)$", prefix.name)
    return int(match.group(1)) if match else -1


def find_checkpoint(folder: Path, what: str) -> Path:
    """The checkpoint prefix inside ``folder`` (searched recursively); the highest step if there are several."""
    prefixes = sorted({p.with_suffix("") for p in folder.rglob("*.index")}, key=lambda p: (_step(p), str(p)))
    if not prefixes:
        raise FileNotFoundError(f"{what} holds no TensorFlow checkpoint (no *.index file)")
    if len(prefixes) > 1 and _step(prefixes[-1]) == _step(prefixes[-2]):
        raise ValueError(f"{what} holds several checkpoints {[str(p.relative_to(folder)) for p in prefixes]}; "
                         "pass the prefix of the one to convert")
    return prefixes[-1]


@contextlib.contextmanager
def open_checkpoint(path: str | os.PathLike) -> Iterator[TFCheckpoint]:
    """A :class:`TFCheckpoint` for a prefix, ``.index`` file, folder or ``.tar.gz`` (extracted to a temp folder)."""
    path = Path(path)
    if path.name.endswith(TAR_SUFFIXES):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint archive {path} does not exist")
        with tempfile.TemporaryDirectory(prefix="spinenet-ckpt-") as tmp:
            try:
                with tarfile.open(path) as tar:
                    tar.extractall(tmp, filter="data")  # no absolute paths, links out of the folder or devices
            except (tarfile.TarError, OSError) as err:
                raise ValueError(f"{path} is not a readable tar archive ({err})") from None
            yield TFCheckpoint(find_checkpoint(Path(tmp), str(path)))
        return
    if path.is_dir():
        yield TFCheckpoint(find_checkpoint(path, str(path)))
        return
    yield TFCheckpoint(path)


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> overrides; values are JSON where they parse (numbers, true/false, lists)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r} is not key=value")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _detector_name(model: str, family: str = "retinanet") -> str:
    from ..models.detection import get_detector_def, list_detectors

    if model in list_detectors():
        if not model.startswith(family):
            raise ValueError(f"--model {model!r} is not a {family} detector; --task {family} needs a {family}_* name "
                             f"({', '.join(n for n in list_detectors() if n.startswith(family))})")
        return model
    rows = [n for n in list_detectors() if get_detector_def(n).backbone == model and n.startswith(family)]
    if not rows:
        raise ValueError(f"--model {model!r}: not a detector ({', '.join(list_detectors())}) nor a detector's backbone")
    return rows[0]


def build_model(task: str, model: str, source: str, settings: Mapping[str, Any]) -> nn.Module:
    """The PyTorch model a checkpoint of ``task`` converts into (flavour = source, settings as resolved)."""
    opts = {k: v for k, v in settings.items() if v is not None}
    opts.setdefault("flavor", source)
    if task == "backbone":
        from ..registry import create_model

        return create_model(model, **opts)
    if task in ("retinanet", "maskrcnn"):
        from ..models.detection import create_detector

        # 91 logits: the official COCO label space, named by COCO's categories (spinenet.constants)
        num_classes = opts.pop("num_classes", None) or NUM_COCO_LABELS
        return create_detector(_detector_name(model, task), num_classes=num_classes, **opts)
    if task == "classification":
        from ..models.classification import create_classifier, list_classifiers

        num_classes = opts.pop("num_classes", None) or 1001
        # --model names the classifier or its backbone (as for detectors)
        name = f"classifier_{model}" if f"classifier_{model}" in list_classifiers() else model
        return create_classifier(name, num_classes, **opts)
    raise ValueError(f"--task {task!r}: expected one of {CONVERT_TASKS}")


def tensor_maps(model: nn.Module, task: str, source: str) -> list:
    """The name maps of the existing converters for this (task, source)."""
    if task == "backbone":
        from .mapping import mg_backbone_map, tpu_backbone_map

        return tpu_backbone_map(model) if source == "tpu" else mg_backbone_map(model)
    if task == "retinanet":
        from .detection_mapping import mg_retinanet_map, tpu_retinanet_map

        return tpu_retinanet_map(model) if source == "tpu" else mg_retinanet_map(model)
    if task == "maskrcnn":
        from .maskrcnn_mapping import tpu_maskrcnn_map

        if source != "tpu":
            raise ValueError("--task maskrcnn: only TF1 (--source tpu) Mask R-CNN checkpoints have a name map; "
                             "Model Garden Mask R-CNN checkpoints convert with --task backbone")
        return tpu_maskrcnn_map(model)
    from .classification_mapping import tpu_classifier_map

    if source != "tpu":
        raise ValueError("--task classification: only TF1 (--source tpu) SpineNet classifiers were released; "
                         "Model Garden has no SpineNet ImageNet checkpoint")
    return tpu_classifier_map(model)


def convert_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike, *, source: str | None = None,
                       model: str | None = None, task: str | None = None, num_classes: int | None = None,
                       activation: str | None = None, bn_eps: float | None = None,
                       overrides: Mapping[str, Any] | None = None, preset: str | None = None) -> Conversion:
    """Convert an official checkpoint (spec 8) to ``output`` (``.safetensors``); see the module docstring.

    ``preset`` fills every setting of a released checkpoint (:func:`~spinenet.convert.presets.list_presets`);
    explicit arguments override it. ``overrides`` go to the model builder (scaling fields, ``head_width``,
    ``bn_momentum``, ``image_size``, ``class_names``, ``normalize``, ...). Raises ``ValueError`` (nothing written) on
    any missing tensor or shape mismatch.
    """
    settings: dict[str, Any] = {}
    if preset is not None:
        p = get_preset(preset)
        if not p.supported:
            raise ValueError(f"preset {preset!r} cannot be converted yet: {p.note}")
        source, model, task = source or p.source, model or p.model, task or p.task
        settings.update(p.overrides, activation=p.activation, bn_eps=p.bn_eps, bn_momentum=p.bn_momentum,
                        num_classes=p.num_classes, image_size=p.image_size)
        if p.task == "backbone":
            settings.pop("num_classes"), settings.pop("image_size")
    if source not in SOURCES:
        raise ValueError(f"--source {source!r}: expected one of {SOURCES} (or give --preset)")
    if model is None:
        raise ValueError("--model is required without --preset (e.g. spinenet49, retinanet_spinenet49)")
    task = task or "backbone"
    if task not in CONVERT_TASKS:
        raise ValueError(f"--task {task!r}: expected one of {CONVERT_TASKS}")
    if task == "maskrcnn" and source != "tpu":
        raise ValueError("--task maskrcnn: only TF1 (--source tpu) Mask R-CNN checkpoints have a name map; "
                         "Model Garden Mask R-CNN checkpoints convert with --task backbone")
    if (source, task) in BN_DEFAULTS:
        eps, momentum = BN_DEFAULTS[(source, task)]
        settings.setdefault("bn_eps", eps)
        settings.setdefault("bn_momentum", momentum)
    if source == "tpu" and task in ("retinanet", "maskrcnn"):
        # decode as the TF1 code does ("+1" boxes, clipping to the last pixel; spinenet.models.tf1_boxes)
        settings.setdefault("box_decoding", "tf1")
    explicit = {"num_classes": num_classes, "activation": activation, "bn_eps": bn_eps}
    settings.update({k: v for k, v in explicit.items() if v is not None})
    settings.update(overrides or {})
    if task == "backbone" and settings.get("num_classes") is not None:
        raise ValueError("--num-classes applies to --task retinanet|maskrcnn|classification, not to a backbone")
    out = Path(output)
    if out.suffix != ".safetensors":
        raise ValueError(f"-o {out}: the output must be a .safetensors file")
    net = build_model(task, model, source, settings).eval()
    with open_checkpoint(checkpoint) as ckpt:
        report = apply_tf_weights(net, ckpt, tensor_maps(net, task, source))
        where = ckpt.prefix
    provenance = {"checkpoint": str(checkpoint), "prefix": os.path.basename(where), "source": source,
                  "preset": preset, "task": task, "mapped": len(report.mapped), "unused": report.unused[:100],
                  "num_unused": len(report.unused)}
    from .weights import save_weights

    save_weights(net, out, provenance)
    return Conversion(out, net, report, str(checkpoint), {"source": source, "model": model, "task": task, **settings})
