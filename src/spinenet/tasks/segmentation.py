"""Semantic segmentation as an engine task (the paper's future work, section 6): the light P3-P7 fusion segmenter
(:mod:`spinenet.models.segmentation`) on the stardist nuclei; foreground / mean IoU against an Otsu threshold
baseline computed on the same images, and overlay PNGs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..engine.recipes import Recipe


def _input_scale(recipe: Recipe | None) -> float:
    """Images are resized by ``input_scale`` (recipe extra, default 1) before the model, in training and evaluation;
    logits are resized back, so metrics are always at the data's own resolution."""
    return float(recipe.extra.get("input_scale", 1.0)) if recipe is not None else 1.0


class SegmentationTask:
    """``spinenet train --task segmentation``: the model name is a segmenter (:func:`list_segmenters`)."""

    name = "segmentation"
    primary_metric = "fg_iou"

    def __init__(self, model: str, data: str, val_data: str | None = None,
                 report_dir: str | os.PathLike[str] | None = None) -> None:
        self.model_name, self.data, self.val_data = model, data, val_data
        self.report_dir = Path(report_dir) if report_dir is not None else None

    def build_datasets(self, recipe: Recipe) -> tuple[Dataset, Dataset | None]:
        from ..data.segmentation import segmentation_dataset_from_path

        train = segmentation_dataset_from_path(self.data)
        val = segmentation_dataset_from_path(self.val_data) if self.val_data else None
        if val is not None and list(val.classes) != list(train.classes):
            raise ValueError(f"--val-data classes {val.classes} differ from --data classes {train.classes}")
        return train, val

    def train_transform(self, recipe: Recipe):
        from ..data.segmentation import segmentation_train_transform

        return segmentation_train_transform(recipe.image_size, (recipe.scale_min, recipe.scale_max), recipe.hflip,
                                            float(recipe.extra.get("vflip", 0.0)),
                                            bool(recipe.extra.get("rot90", False)), _input_scale(recipe))

    def collate(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([image for image, _ in batch]), torch.stack([mask for _, mask in batch])

    def build_model(self, recipe: Recipe, train_set: Dataset) -> nn.Module:
        from ..models import create_segmenter

        overrides: dict[str, Any] = {"activation": recipe.activation,
                                     "stochastic_depth_rate": recipe.stochastic_depth_rate}
        if recipe.bn_momentum is not None:
            overrides["bn_momentum"] = recipe.bn_momentum
        # ``model.<field>=value`` reaches the segmenter / backbone (e.g. model.head_width=64, model.head_convs=1)
        overrides.update({k[len("model."):]: v for k, v in recipe.extra.items() if k.startswith("model.")})
        return create_segmenter(self.model_name, num_classes=len(train_set.classes),
                                class_names=list(train_set.classes), **overrides)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        images, masks = batch
        return model(images.to(device, non_blocking=True), masks.to(device, non_blocking=True))

    def checkpoint_extras(self, train_set: Dataset) -> dict[str, Any]:
        return {"classes": list(train_set.classes)}

    def evaluate(self, model: nn.Module, dataset: Dataset, device: torch.device,
                 recipe: Recipe | None = None) -> dict[str, float]:
        scale = _input_scale(recipe)
        if recipe is None and hasattr(model, "config"):
            scale = float(model.config.get("input_scale", 1.0))
        return evaluate_segmentation(model, dataset, device, scale, self.report_dir)


def predict_logits(model: nn.Module, image: torch.Tensor, device: torch.device,
                   input_scale: float = 1.0) -> torch.Tensor:
    """``[C, H, W]`` float32 logits at the image's own size for one float ``[3, H, W]`` image."""
    from ..data.segmentation import rescale

    model.eval()
    h, w = image.shape[-2:]
    scaled, _ = rescale(image, None, input_scale)
    with torch.no_grad():
        logits = model(scaled[None].to(device)).float()
    if tuple(logits.shape[-2:]) != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits[0].cpu()


def evaluate_segmentation(model: nn.Module, dataset: Dataset, device: torch.device, input_scale: float = 1.0,
                          report_dir: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """Foreground IoU (class 1 when there are 2 classes), mean IoU and pixel accuracy over the whole dataset (one
    confusion matrix), the same foreground IoU of an Otsu threshold of each image (brighter side = foreground,
    computed here, in this run), and their difference ``fg_iou_minus_otsu``. With ``report_dir``, writes
    ``overlays/<data>_<i>.png``: image | ground truth | prediction."""
    from ..data.segmentation import otsu_threshold
    from ..models.segmentation import confusion_matrix, iou_from_confusion

    num_classes = len(dataset.classes)
    ignore = getattr(model, "ignore_index", 255)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    otsu_matrix = torch.zeros(2, 2, dtype=torch.int64)
    for i in range(len(dataset)):
        image, mask = dataset[i]
        pred = predict_logits(model, image, device, input_scale).argmax(0)
        matrix += confusion_matrix(pred, mask, num_classes, ignore)
        if num_classes == 2:
            grey = image.float().mean(0)
            otsu = (grey > otsu_threshold(grey.numpy())).long()
            otsu_matrix += confusion_matrix(otsu, mask, 2, ignore)
        if report_dir is not None:
            save_overlay_panel(image, mask, pred, num_classes,
                               Path(report_dir) / "overlays" / f"{_slug(getattr(dataset, 'name', 'data'))}_{i}.png")
    miou, per_class = iou_from_confusion(matrix)
    metrics = {"miou": miou, "pixel_acc": float(matrix.diagonal().sum() / matrix.sum().clamp(min=1))}
    if num_classes == 2:
        metrics["fg_iou"] = float(per_class[1])
        metrics["otsu_fg_iou"] = float(iou_from_confusion(otsu_matrix)[1][1])
        metrics["fg_iou_minus_otsu"] = metrics["fg_iou"] - metrics["otsu_fg_iou"]
    else:
        metrics["fg_iou"] = float(np.nanmean(per_class[1:].numpy()))  # mean over the non-background classes
    return metrics


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def save_overlay_panel(image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, num_classes: int,
                       path: str | os.PathLike[str]) -> Path:
    """image | ground truth overlay | prediction overlay, side by side, as one PNG (written atomically)."""
    from PIL import Image

    from ..models.segmentation import draw_overlay

    rgb = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    panels = [Image.fromarray(rgb.permute(1, 2, 0).numpy()), draw_overlay(rgb, mask, num_classes=num_classes),
              draw_overlay(rgb, pred, num_classes=num_classes)]
    w, h = panels[0].size
    out = Image.new("RGB", (3 * w + 8, h), (255, 255, 255))
    for k, panel in enumerate(panels):
        out.paste(panel, (k * (w + 4), 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    out.save(tmp)
    os.replace(tmp, path)
    return path
