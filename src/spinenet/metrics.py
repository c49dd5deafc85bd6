"""Every metric of the package in one module: COCO detection AP, classification accuracy, segmentation IoU.

**Detection** (paper section 5, spec section 5): a thin layer over pycocotools' ``COCOeval``. Detector outputs
(torchvision convention: ``xyxy`` boxes in input-image pixels, contiguous labels ``1..C``) become COCO result
records with the dataset's own category ids; the standard 12-number summary runs quietly and comes back as a dict.
Undefined numbers -- COCOeval's ``-1``, e.g. ``APs`` when the ground truth has no small objects -- are ``nan``
rather than a fake 0 or -1; with no detections at all every defined AP/AR is ``0.0``. Mask R-CNN predictions carry
``segmentation`` (one COCO RLE per detection); ``evaluate_coco(..., iou_type="segm")`` scores those against the
ground truth's polygons / RLEs (COCO mask AP).

**Classification** (paper section 4.2): top-1 / top-5 accuracy, cross-entropy and the confusion matrix.

**Segmentation**: a dataset-level confusion matrix over pixels, per-class and mean IoU from it, pixel accuracy.

Only torch, numpy and pycocotools: the task models, the data sets, the tasks and the search all read it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["IGNORE_INDEX", "METRIC_NAMES", "classification_metrics", "coco_from_dict", "confusion_matrix",
           "evaluate_coco", "iou_from_confusion", "mean_iou", "predictions_to_coco_results", "save_results_json",
           "segmentation_metrics"]


# --------------------------------------------------------------------------------------------- COCO detection
# The order of COCOeval.stats for iouType "bbox".
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

LabelMap = Mapping[int, int] | Sequence[int]


def _label_map(label_to_category: LabelMap) -> dict[int, int]:
    """Accept a dict ``{label: category_id}`` or a dataset's ``category_ids`` list (index = label)."""
    if isinstance(label_to_category, Mapping):
        return {int(k): int(v) for k, v in label_to_category.items()}
    return {label: int(cid) for label, cid in enumerate(label_to_category) if label > 0}


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def coco_from_dict(dataset: Mapping[str, Any]) -> Any:
    """Build a pycocotools ``COCO`` index from a dict without its prints.

    Fills the fields COCOeval needs but hand-made files often lack (``iscrowd``, ``area``, ``info``).
    """
    from pycocotools.coco import COCO

    data = copy.deepcopy(dict(dataset))
    data.setdefault("info", {})
    data.setdefault("annotations", [])
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def predictions_to_coco_results(
    predictions: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    label_to_category: LabelMap,
) -> list[dict[str, Any]]:
    """Detector outputs -> COCO result records ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
    (plus ``segmentation`` when the prediction has one RLE per detection under that key).

    ``predictions[i]`` (``boxes`` xyxy pixels, ``scores``, ``labels``) belongs to ``image_ids[i]``. Boxes must be
    in the pixel frame of the ground truth (the original image, not a resized copy). A label without a
    category (e.g. background 0) is a ``ValueError``: it would silently score as a false positive otherwise.
    """
    if len(predictions) != len(image_ids):
        raise ValueError(f"{len(predictions)} predictions but {len(image_ids)} image ids; they must pair up")
    mapping = _label_map(label_to_category)
    results: list[dict[str, Any]] = []
    for pred, image_id in zip(predictions, image_ids):
        boxes = _as_numpy(pred["boxes"]).astype(np.float64).reshape(-1, 4)
        scores = _as_numpy(pred["scores"]).astype(np.float64).reshape(-1)
        labels = _as_numpy(pred["labels"]).astype(np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"image id {image_id}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels differ"
            )
        segs = pred.get("segmentation")
        if segs is not None and len(segs) != len(boxes):
            raise ValueError(f"image id {image_id}: {len(segs)} mask RLEs for {len(boxes)} boxes")
        for k, (box, score, label) in enumerate(zip(boxes.tolist(), scores.tolist(), labels.tolist())):
            if label not in mapping:
                raise ValueError(
                    f"image id {image_id}: predicted label {label} has no category (known labels "
                    f"{sorted(mapping)[:10]}...); was the detector built for this dataset?"
                )
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": mapping[label],
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": float(score),
                    **({"segmentation": segs[k]} if segs is not None else {}),
                }
            )
    return results


def save_results_json(path: str | os.PathLike[str], results: Sequence[Mapping[str, Any]]) -> Path:
    """Write COCO results atomically (temp file in the same folder, then ``os.replace``); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(list(results), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def _normalise_predictions(
    predictions: Any, image_ids: Sequence[int] | None, label_to_category: LabelMap
) -> list[dict[str, Any]]:
    if isinstance(predictions, Mapping):  # {image_id: prediction dict}
        return predictions_to_coco_results(list(predictions.values()), list(predictions.keys()), label_to_category)
    predictions = list(predictions)
    if not predictions:
        return []
    if "bbox" in predictions[0]:  # already COCO result records
        return [dict(p) for p in predictions]
    if image_ids is None:
        try:
            image_ids = [int(p["image_id"]) for p in predictions]
        except KeyError:
            raise ValueError(
                "predictions need image ids: pass image_ids=, a {image_id: prediction} dict, or dicts with 'image_id'"
            ) from None
    return predictions_to_coco_results(predictions, image_ids, label_to_category)


def evaluate_coco(
    predictions: Any,
    coco_gt: Mapping[str, Any] | Any,
    label_to_category: LabelMap,
    *,
    image_ids: Sequence[int] | None = None,
    eval_image_ids: Sequence[int] | None = None,
    verbose: bool = False,
    iou_type: str = "bbox",
) -> dict[str, float]:
    """COCO bbox metrics of ``predictions`` against ``coco_gt`` (a COCO-format dict or a pycocotools ``COCO``).

    ``predictions`` may be ``{image_id: {"boxes", "scores", "labels"}}``, a list of such dicts with
    ``image_ids`` (or each with an ``"image_id"`` key), or ready COCO result records. Every ground-truth image is
    evaluated unless ``eval_image_ids`` restricts it (an image without detections is all misses, as it should
    be). Returns floats in ``[0, 1]`` keyed ``AP, AP50, AP75, APs, APm, APl`` plus ``AR1 .. ARl``; undefined
    entries are ``nan``. pycocotools' prints are captured unless ``verbose``. ``iou_type="segm"`` gives mask AP
    (predictions need ``segmentation`` RLEs, the ground truth ``segmentation`` polygons or RLEs).
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type={iou_type!r}: expected 'bbox' or 'segm'")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = coco_gt if isinstance(coco_gt, COCO) else coco_from_dict(coco_gt)
    results = _normalise_predictions(predictions, image_ids, label_to_category)
    if iou_type == "segm":
        if any("segmentation" not in r for r in results):
            raise ValueError("iou_type='segm' needs a 'segmentation' RLE in every prediction (a Mask R-CNN's)")
        # without "bbox", loadRes takes areas and boxes from the masks, as COCO's mask evaluation does
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    known = set(gt.getImgIds())
    stray = sorted({r["image_id"] for r in results} - known)
    if stray:
        raise ValueError(f"predictions for image ids {stray[:10]} that the ground truth does not contain")
    eval_ids = sorted(known) if eval_image_ids is None else [int(i) for i in eval_image_ids]

    has_gt = len(gt.getAnnIds(imgIds=eval_ids, iscrowd=False)) > 0
    if not results:
        # loadRes cannot take an empty list; with nothing detected every defined recall/precision is 0.
        value = 0.0 if has_gt else math.nan
        metrics = {name: value for name in METRIC_NAMES}
        if has_gt:  # an area range with no ground truth stays undefined, as COCOeval would report it
            for name, rng in (("APs", "small"), ("APm", "medium"), ("APl", "large")):
                if not _has_gt_in_range(gt, eval_ids, rng):
                    metrics[name] = metrics["AR" + name[2:]] = math.nan
        if verbose:
            print("evaluate_coco: no detections; " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        return metrics

    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(gt, dt, iouType=iou_type)
        evaluator.params.imgIds = eval_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (float(v) if v >= 0 else math.nan) for name, v in zip(METRIC_NAMES, evaluator.stats)}


_AREA_RANGES = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}


def _has_gt_in_range(gt: Any, image_ids: Sequence[int], area_range: str) -> bool:
    lo, hi = _AREA_RANGES[area_range]
    anns = gt.loadAnns(gt.getAnnIds(imgIds=list(image_ids), iscrowd=False))
    return any(lo <= a["area"] <= hi for a in anns)


# ---------------------------------------------------------------------------------------------- classification
def classification_metrics(logits: torch.Tensor, labels: torch.Tensor,
                           num_classes: int) -> tuple[dict[str, float], torch.Tensor]:
    """``({"top1", "top5", "loss", "images"}, confusion [C, C])`` of logits ``[N, C]`` against labels ``[N]``;
    rows = true class, columns = predicted (top-1) class. With fewer than 5 classes top-5 counts every class
    (= 1.0)."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    correct = top == labels[:, None]
    matrix = torch.bincount(labels * num_classes + top[:, 0], minlength=num_classes ** 2).reshape(num_classes,
                                                                                                   num_classes)
    metrics = {"top1": float(correct[:, 0].float().mean()), "top5": float(correct.any(dim=1).float().mean()),
               "loss": float(torch.nn.functional.cross_entropy(logits, labels)), "images": float(len(labels))}
    return metrics, matrix


# ------------------------------------------------------------------------------------------------ segmentation
IGNORE_INDEX = 255  # the mask value of unlabelled pixels: no loss and no metric counts them


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``[C, C]`` int64 counts, rows = target class, columns = predicted class, over pixels whose target is not
    ``ignore_index``. ``pred`` may be label maps (same shape as ``target``) or logits with a class dim 1.
    Sum these over a dataset and call :func:`iou_from_confusion` for the dataset-level mean IoU."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(dim=1)
    if pred.shape != target.shape:
        raise ValueError(f"confusion_matrix: pred {list(pred.shape)} and target {list(target.shape)} differ in shape")
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long().to(target.device)
    valid = target != ignore_index
    target, pred = target[valid], pred[valid]
    bad = (target < 0) | (target >= num_classes) | (pred < 0) | (pred >= num_classes)
    if bool(bad.any()):
        raise ValueError(f"confusion_matrix: labels outside 0..{num_classes - 1} (and not ignore_index="
                         f"{ignore_index}) found")
    return torch.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_from_confusion(matrix: torch.Tensor) -> tuple[float, torch.Tensor]:
    """``(mean IoU, per-class IoU [C])``; IoU = TP / (TP + FP + FN). Classes absent from both prediction and
    target have IoU NaN and are left out of the mean (NaN if no class is present at all)."""
    matrix = matrix.double()
    tp = matrix.diagonal()
    union = matrix.sum(0) + matrix.sum(1) - tp
    per_class = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    present = ~per_class.isnan()
    miou = float(per_class[present].mean()) if bool(present.any()) else float("nan")
    return miou, per_class


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
             ignore_index: int = IGNORE_INDEX) -> tuple[float, torch.Tensor]:
    """Mean intersection-over-union of label maps (or logits) against targets: ``(miou, per_class_iou)``."""
    return iou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def segmentation_metrics(matrix: torch.Tensor, baseline: torch.Tensor | None = None) -> dict[str, float]:
    """The segmentation summary of a dataset's confusion ``matrix`` (:func:`confusion_matrix` summed over its
    images): ``miou``, ``pixel_acc`` and ``fg_iou`` -- the IoU of class 1 when there are two classes (background,
    foreground), else the mean IoU of the classes other than 0. With ``baseline`` (the 2 x 2 confusion matrix of a
    reference method on the same pixels, e.g. an Otsu threshold) also ``otsu_fg_iou``, its foreground IoU, and
    ``fg_iou_minus_otsu``."""
    miou, per_class = iou_from_confusion(matrix)
    metrics = {"miou": miou, "pixel_acc": float(matrix.diagonal().sum() / matrix.sum().clamp(min=1))}
    if matrix.shape[0] == 2:
        metrics["fg_iou"] = float(per_class[1])
        if baseline is not None:
            metrics["otsu_fg_iou"] = float(iou_from_confusion(baseline)[1][1])
            metrics["fg_iou_minus_otsu"] = metrics["fg_iou"] - metrics["otsu_fg_iou"]
    else:
        metrics["fg_iou"] = float(np.nanmean(per_class[1:].numpy()))  # mean over the non-background classes
    return metrics
