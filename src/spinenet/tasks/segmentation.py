"""Semantic segmentation as an engine task (the paper's future work, section 6): the light P3-P7 fusion segmenter
(:mod:`spinenet.models.segmentation`) on the stardist nuclei; foreground / mean IoU against an Otsu threshold
baseline computed on the same images, and overlay PNGs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..engine.config import Recipe
from ..metrics import confusion_matrix, segmentation_metrics
from .inference import (EvalResult, PredictResult, TrainedModel, evaluate_and_report, prepare_outputs,
                        refuse_classes)


def input_scale(recipe: Recipe | None) -> float:
    """Images are resized by ``data.input_scale`` (default 1) before the model, in training, evaluation and
    ``predict``; logits are resized back, so metrics are always at the data's own resolution."""
    return recipe.data.input_scale if recipe is not None else 1.0


def input_percentiles(recipe: Recipe | None) -> tuple[float, float] | None:
    """``(low, high)`` of the per-image percentile normalisation (:func:`spinenet.data.segmentation.
    percentile_normalize`), applied to every image before the model in training, evaluation and ``predict``:
    ``data.norm_low`` / ``data.norm_high`` (percentiles, 0-100). ``None`` (off) unless ``norm_high`` is set."""
    if recipe is None or recipe.data.norm_high is None:
        return None
    return recipe.data.norm_low, recipe.data.norm_high


EVAL_OVERLAP = 0.5


def eval_window(recipe: Recipe | None) -> tuple[int, float]:
    """``(window, overlap)`` of sliding-window inference: ``eval.window`` (pixels of the model input, default the
    training crop ``data.image_size``; 0 = the whole image in one pass) and ``eval.overlap`` (fraction of the
    window shared by neighbouring windows, default 0.5). Without a recipe: the whole image.

    Windows at the training crop size keep every level's spatial size (and so BN's running statistics and the
    padding share of the top levels) as in training; one pass over a larger image does not (README)."""
    if recipe is None:
        return 0, EVAL_OVERLAP
    window = recipe.data.image_size if recipe.eval.window is None else recipe.eval.window
    return window, recipe.eval.overlap


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets covering ``0..length`` with the given stride; the last window ends at the border."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def sliding_window_logits(model: nn.Module, image: torch.Tensor, window: int, overlap: float = EVAL_OVERLAP,
                          device: torch.device | str = "cpu", batch_size: int = 8) -> torch.Tensor:
    """``[C, H, W]`` float32 logits of a float ``[3, H, W]`` image from ``window x window`` tiles with the given
    overlap, each pixel the mean of the logits of every tile covering it. An image side shorter than the window is
    zero-padded to it (as training crops are) and the padding cut off again. ``window=0``: one pass."""
    h, w = image.shape[-2:]
    if window <= 0:
        return model(image[None].to(device)).float()[0].cpu()
    padded = F.pad(image, (0, max(window - w, 0), 0, max(window - h, 0)))
    ph, pw = padded.shape[-2:]
    stride = max(1, round(window * (1 - overlap)))
    boxes = [(y, x) for y in _window_starts(ph, window, stride) for x in _window_starts(pw, window, stride)]
    total = count = None
    for k in range(0, len(boxes), batch_size):
        chunk = boxes[k:k + batch_size]
        tiles = torch.stack([padded[:, y:y + window, x:x + window] for y, x in chunk])
        logits = model(tiles.to(device)).float().cpu()
        if total is None:
            total = torch.zeros(logits.shape[1], ph, pw)
            count = torch.zeros(1, ph, pw)
        for (y, x), tile in zip(chunk, logits):
            total[:, y:y + window, x:x + window] += tile
            count[:, y:y + window, x:x + window] += 1
    return (total / count)[:, :h, :w]


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

        data = recipe.data  # SegmentationData
        return segmentation_train_transform(data.image_size, (data.scale_min, data.scale_max), data.hflip,
                                            data.vflip, data.rot90, data.input_scale,
                                            percentiles=input_percentiles(recipe), gain=data.gain, gamma=data.gamma,
                                            gain_grid=data.gain_grid)

    def collate(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([image for image, _ in batch]), torch.stack([mask for _, mask in batch])

    def build_model(self, recipe: Recipe, train_set: Dataset) -> nn.Module:
        from ..models import create_segmenter

        overrides = recipe.model_overrides()  # ``model.<field>=value`` included
        return create_segmenter(self.model_name, num_classes=len(train_set.classes),
                                class_names=list(train_set.classes), **overrides)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        images, masks = batch
        return model(images.to(device, non_blocking=True), masks.to(device, non_blocking=True))

    def checkpoint_extras(self, train_set: Dataset) -> dict[str, Any]:
        return {"classes": list(train_set.classes)}

    def evaluate(self, model: nn.Module, dataset: Dataset, device: torch.device,
                 recipe: Recipe | None = None) -> dict[str, float]:
        scale = input_scale(recipe)
        if recipe is None and hasattr(model, "config"):
            scale = float(model.config.get("input_scale", 1.0))
        window, overlap = eval_window(recipe)
        return evaluate_segmentation(model, dataset, device, scale, self.report_dir, window, overlap,
                                     input_percentiles(recipe))

    # ------------------------------------------------------------------------------------------- inference
    model_tasks = ("segmentation",)

    @classmethod
    def evaluate_checkpoint(cls, trained: TrainedModel, data: str, *, out: str | None = None,
                            image_size: int | None = None, classes: str | None = None) -> EvalResult:
        """Foreground / mean IoU of a segmenter on ``nuclei:<half>``; with ``out`` (a folder), ``metrics.json``
        and ``overlays/`` (image | truth | prediction) there."""
        from ..data.segmentation import segmentation_dataset_from_path
        from ..layers.fuse import channels_last_for_bf16

        refuse_classes(classes)
        recipe = trained.recipe
        model = trained.ready(channels_last_for_bf16(trained.model, trained.device, recipe.optim.precision))
        if image_size:
            raise ValueError("--image-size applies to classification and detection; segmentation runs at the "
                             "data's own size (times the recipe's input_scale)")
        dataset = segmentation_dataset_from_path(data)
        trained.check_classes(dataset.classes, data)
        task = cls(model=trained.model.config["name"], data=data, report_dir=out)
        return evaluate_and_report(trained, task, model, dataset, data, recipe, out, "overlays/")

    @classmethod
    def predict_images(cls, trained: TrainedModel, images: Sequence[str], *, out: str,
                       image_size: int | None = None, score_thresh: float = 0.3,
                       overwrite: bool = False) -> PredictResult:
        """Per image a label PNG (``*_mask.png``, class ids) and an overlay (``*_pred.png``) in ``out``, and the
        class fractions in ``out/predictions.json``."""
        from ..data.images import read_image_float
        from ..files import write_json
        from ..visualize import save_png

        model = trained.ready()
        recipe = trained.recipe
        if image_size:
            raise ValueError("--image-size applies to classification and detection; segmentation runs at the "
                             "images' own size (times the recipe's input_scale)")
        folder = Path(out)
        stems = prepare_outputs(images, folder, ("_mask.png", "_pred.png"), overwrite, read_image_float)
        classes = trained.classes
        scale, (window, overlap) = input_scale(recipe), eval_window(recipe)
        records: list[dict[str, Any]] = []
        for path, stem in zip(images, stems):
            image = read_image_float(path)
            pred = predict_logits(model, image, trained.device, scale, window, overlap,
                                  input_percentiles(recipe)).argmax(0)
            save_png(pred.to(torch.uint8), folder / f"{stem}_mask.png")
            save_png(cls.visualize(image, pred, classes), folder / f"{stem}_pred.png")
            fractions = torch.bincount(pred.flatten(), minlength=len(classes)).double() / pred.numel()
            records.append({"file_name": str(path), "mask": f"{stem}_mask.png", "overlay": f"{stem}_pred.png",
                            "class_fraction": {c: round(float(f), 6) for c, f in zip(classes, fractions)}})
        write_json(folder / "predictions.json", records, indent=1)
        lines = [f"{r['file_name']}: -> {r['mask']}, {r['overlay']}" for r in records]
        return PredictResult(records, [*lines, f"{len(records)} images -> {out}/predictions.json"])

    @staticmethod
    def visualize(image: torch.Tensor, prediction: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """The class map ``prediction`` (``[H, W]`` ids) blended over the image (float in [0, 1] or uint8
        ``[3, H, W]``), class ``k`` in the palette's colour ``k``, background (class 0) left as is."""
        from ..visualize import draw_class_map

        return draw_class_map(_as_uint8(image), prediction, num_classes=len(classes))


def predict_logits(model: nn.Module, image: torch.Tensor, device: torch.device,
                   input_scale: float = 1.0, window: int = 0, overlap: float = EVAL_OVERLAP,
                   percentiles: tuple[float, float] | None = None) -> torch.Tensor:
    """``[C, H, W]`` float32 logits at the image's own size for one float ``[3, H, W]`` image, normalised by its
    own ``percentiles`` when given (as in training), rescaled by ``input_scale`` and run in ``window`` px tiles
    (:func:`sliding_window_logits`; 0 = one pass)."""
    from ..data.segmentation import percentile_normalize, rescale

    model.eval()
    h, w = image.shape[-2:]
    if percentiles is not None:
        image = percentile_normalize(image, *percentiles)
    scaled, _ = rescale(image, None, input_scale)
    with torch.no_grad():
        logits = sliding_window_logits(model, scaled, window, overlap, device)[None]
    if tuple(logits.shape[-2:]) != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits[0]


def evaluate_segmentation(model: nn.Module, dataset: Dataset, device: torch.device, input_scale: float = 1.0,
                          report_dir: str | os.PathLike[str] | None = None, window: int = 0,
                          overlap: float = EVAL_OVERLAP,
                          percentiles: tuple[float, float] | None = None) -> dict[str, float]:
    """Foreground IoU (class 1 when there are 2 classes), mean IoU and pixel accuracy over the whole dataset (one
    confusion matrix), the same foreground IoU of an Otsu threshold of each image (brighter side = foreground,
    computed here, in this run, on the image as given), and their difference ``fg_iou_minus_otsu``. Predictions
    come from :func:`predict_logits` (``window`` px tiles, 0 = one pass; ``percentiles`` normalisation). With
    ``report_dir``, writes ``overlays/<data>_<i>.png``: image | ground truth | prediction."""
    from ..data.segmentation import otsu_threshold

    num_classes = len(dataset.classes)
    ignore = getattr(model, "ignore_index", 255)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    otsu_matrix = torch.zeros(2, 2, dtype=torch.int64)
    for i in range(len(dataset)):
        image, mask = dataset[i]
        pred = predict_logits(model, image, device, input_scale, window, overlap, percentiles).argmax(0)
        matrix += confusion_matrix(pred, mask, num_classes, ignore)
        if num_classes == 2:
            grey = image.float().mean(0)
            otsu = (grey > otsu_threshold(grey.numpy())).long()
            otsu_matrix += confusion_matrix(otsu, mask, 2, ignore)
        if report_dir is not None:
            save_overlay_panel(image, mask, pred, num_classes,
                               Path(report_dir) / "overlays" / f"{_slug(getattr(dataset, 'name', 'data'))}_{i}.png")
    return segmentation_metrics(matrix, otsu_matrix if num_classes == 2 else None)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    """A float image in [0, 1] as uint8 (rounded); a uint8 image as is."""
    return image if image.dtype == torch.uint8 else (image.float().clamp(0, 1) * 255).round().to(torch.uint8)


def overlay_panel(image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """image | ground truth overlay | prediction overlay side by side, 4 px white between: uint8 ``[3, H, 3W + 8]``."""
    from ..visualize import draw_class_map

    rgb = _as_uint8(image)
    gap = torch.full((3, rgb.shape[1], 4), 255, dtype=torch.uint8)
    return torch.cat([rgb, gap, draw_class_map(rgb, mask, num_classes=num_classes), gap,
                      draw_class_map(rgb, pred, num_classes=num_classes)], dim=2)


def save_overlay_panel(image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, num_classes: int,
                       path: str | os.PathLike[str]) -> Path:
    """:func:`overlay_panel` written as one PNG (atomically)."""
    from ..visualize import save_png

    return save_png(overlay_panel(image, mask, pred, num_classes), path)
