"""``spinenet eval`` / ``spinenet predict`` for classification and segmentation checkpoints.

The CLI reads the checkpoint once and dispatches on its ``task`` entry; detection keeps its own code in
:mod:`spinenet.cli`. Everything a checkpoint needs to rebuild its model is inside it: ``model_config`` (the
classifier / segmenter config), ``classes`` and the training ``recipe`` (evaluation crop, input size and scale).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..engine.recipes import Recipe


def load_task_model(ckpt: dict[str, Any], device: torch.device, source: str = "checkpoint") -> nn.Module:
    """The trained classifier or segmenter of a checkpoint, on ``device``, in eval mode."""
    task = ckpt["task"]
    if task == "classification":
        from ..models.classification import create_classifier_from_config as build
    elif task == "segmentation":
        from ..models.segmentation import create_segmenter_from_config as build
    else:
        raise ValueError(f"{source} holds a {task!r} model; expected classification or segmentation")
    model = build(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def check_classes(data_classes: Sequence[str], ckpt_classes: Sequence[str], data: str, source: str) -> None:
    """A clear error when the data's classes are not the checkpoint's (count first, then names)."""
    if len(data_classes) != len(ckpt_classes):
        raise ValueError(f"{data} has {len(data_classes)} classes {list(data_classes)[:12]}, but {source} was trained "
                         f"on {len(ckpt_classes)} classes {list(ckpt_classes)[:12]}; evaluate on data with the "
                         f"checkpoint's classes, or train a model for these")
    if list(data_classes) != list(ckpt_classes):
        raise ValueError(f"{data} has classes {list(data_classes)}, {source} {list(ckpt_classes)} (same count, "
                         f"other names or order)")


def _recipe(ckpt: dict[str, Any]) -> Recipe:
    return Recipe.from_dict(ckpt.get("recipe", {}))


def eval_command(ckpt: dict[str, Any], source: str, data: str, device: torch.device, out: str | None = None,
                 image_size: int | None = None, prepare: Callable[[nn.Module], nn.Module] | None = None
                 ) -> dict[str, float]:
    """Metrics of a classification / segmentation checkpoint on ``data``; with ``out`` (a folder), also
    ``metrics.json`` and the confusion-matrix PNG or the overlay PNGs there. ``prepare`` transforms the loaded
    model (e.g. :func:`spinenet.optimize_for_inference`)."""
    from ..layers.fuse import channels_last_for_bf16

    recipe = _recipe(ckpt)
    model = channels_last_for_bf16(load_task_model(ckpt, device, source), device, recipe.precision)
    model = prepare(model) if prepare else model
    report = Path(out) if out else None
    from ..engine.trainer import autocast_context

    if ckpt["task"] == "classification":
        from ..data.classification import classification_dataset_from_path
        from .classification import ClassificationTask

        dataset = classification_dataset_from_path(data, ckpt["classes"])
        check_classes(dataset.classes, ckpt["classes"], data, source)
        if image_size:
            recipe = recipe.replace(image_size=image_size)
        task: Any = ClassificationTask(model=ckpt["model_config"]["name"], data=data, report_dir=report)
    else:
        from ..data.segmentation import segmentation_dataset_from_path
        from .segmentation import SegmentationTask

        if image_size:
            raise ValueError("--image-size applies to classification and detection; segmentation runs at the "
                             "data's own size (times the recipe's input_scale)")
        dataset = segmentation_dataset_from_path(data)
        check_classes(dataset.classes, ckpt["classes"], data, source)
        task = SegmentationTask(model=ckpt["model_config"]["name"], data=data, report_dir=report)
    with torch.no_grad(), autocast_context(device, recipe.precision):
        metrics = task.evaluate(model, dataset, device, recipe)
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        tmp = report / ".metrics.json.tmp"
        tmp.write_text(json.dumps({"checkpoint": source, "data": data, **metrics}, indent=2) + "\n")
        os.replace(tmp, report / "metrics.json")
    return metrics


def predict_command(ckpt: dict[str, Any], source: str, images: Sequence[str], device: torch.device, out: str,
                    image_size: int | None = None, top_k: int = 5,
                    prepare: Callable[[nn.Module], nn.Module] | None = None) -> list[dict[str, Any]]:
    """Classification: top-``k`` classes per image. Segmentation: a label PNG (``*_mask.png``, class ids) and an
    overlay PNG (``*_pred.png``) per image. Both write ``predictions.json`` in ``out``; returns its records.
    ``prepare`` transforms the loaded model (e.g. :func:`spinenet.optimize_for_inference`)."""
    model = load_task_model(ckpt, device, source)
    model = prepare(model) if prepare else model
    recipe = _recipe(ckpt)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    classes = list(ckpt["classes"])
    if ckpt["task"] == "classification":
        from ..data.classification import center_crop_resize
        from ..data.detection import decode_image
        from .classification import classify, eval_crop, eval_hflip

        size = image_size or recipe.image_size
        crop, hflip = eval_crop(recipe), eval_hflip(recipe)
        for path in images:
            if not Path(path).is_file():
                raise FileNotFoundError(f"image {path} does not exist")
            image = center_crop_resize(decode_image(path), size, crop)
            with torch.no_grad():
                logits = classify(model, image[None].to(device), hflip).cpu()
            top = [{"class": name, "probability": round(p, 6)} for name, p in model.decode(logits, top_k)[0]]
            records.append({"file_name": str(path), "top": top})
    else:
        from PIL import Image

        from ..data.segmentation import read_image_float
        from ..models.segmentation import draw_overlay
        from .segmentation import eval_window, input_percentiles, predict_logits

        if image_size:
            raise ValueError("--image-size applies to classification and detection; segmentation runs at the "
                             "images' own size (times the recipe's input_scale)")
        scale = float(recipe.extra.get("input_scale", 1.0))
        window, overlap = eval_window(recipe)
        for path in images:
            image = read_image_float(path)
            pred = predict_logits(model, image, device, scale, window, overlap, input_percentiles(recipe)).argmax(0)
            stem = Path(path).stem
            tmp = folder / f".{stem}_mask.png.tmp.png"
            Image.fromarray(pred.to(torch.uint8).numpy()).save(tmp)
            os.replace(tmp, folder / f"{stem}_mask.png")
            rgb = (image.clamp(0, 1) * 255).round().to(torch.uint8)
            overlay = draw_overlay(rgb, pred, num_classes=len(classes))
            tmp = folder / f".{stem}_pred.png.tmp.png"
            overlay.save(tmp)
            os.replace(tmp, folder / f"{stem}_pred.png")
            fractions = torch.bincount(pred.flatten(), minlength=len(classes)).double() / pred.numel()
            records.append({"file_name": str(path), "mask": f"{stem}_mask.png", "overlay": f"{stem}_pred.png",
                            "class_fraction": {c: round(float(f), 6) for c, f in zip(classes, fractions)}})
    tmp = folder / ".predictions.json.tmp"
    tmp.write_text(json.dumps(records, indent=1) + "\n")
    os.replace(tmp, folder / "predictions.json")
    return records
