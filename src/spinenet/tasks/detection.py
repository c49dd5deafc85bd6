"""Detection as an engine task: RetinaNet and Mask R-CNN on SpineNet, COCO / VOC / tree data, COCO metrics; their
evaluation, predictions and drawings from a checkpoint."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from ..engine.config import Recipe
from .inference import EvalResult, PredictResult, TrainedModel, prepare_outputs

DETECTION_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
MASK_METRICS = tuple(f"mask_{k}" for k in DETECTION_METRICS)  # COCO segm metrics of Mask R-CNN models


def _to_device(images: list[torch.Tensor], targets: list[dict] | None, device: torch.device):
    """uint8 [3,H,W] images -> float in [0, 1] on ``device`` (normalisation happens inside the model)."""
    images = [img.to(device, non_blocking=True).float().div_(255) for img in images]
    if targets is None:
        return images, None
    targets = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in t.items()} for t in targets]
    return images, targets


class DetectionTask:
    name = "detection"
    primary_metric = "AP50"

    def __init__(self, model: str, data: str, val_data: str | None = None, classes: str | None = None) -> None:
        self.model_name, self.data, self.val_data = model, data, val_data
        self.classes = classes  # e.g. "dead_alive" for the SOAP tree set

    # -------------------------------------------------------------------------------------------- datasets
    @property
    def needs_masks(self) -> bool:
        """Whether the model trains on instance masks (its registry task is ``maskrcnn``)."""
        from ..registry import get_entry

        return get_entry(self.model_name).task == "maskrcnn"

    def _open(self, path: str, classes: list[str] | None = None, tile_size: int | None = None,
              overlap: int | None = None):
        from ..data import dataset_from_path

        kwargs: dict[str, Any] = {}
        if path.startswith("trees:") and tile_size and path.split(":", 1)[1].startswith("yell"):
            kwargs["tile_size"] = tile_size  # data.tile_size=N (default: the sets' 400 px tiles)
            if overlap:
                kwargs["overlap"] = overlap  # data.tile_overlap=N: neighbouring training tiles share N px
        if path.startswith("nuclei:") and tile_size:
            kwargs["tile_size"] = tile_size
        if path.endswith(".json") and self.needs_masks:
            kwargs["masks"] = True
        if path.startswith("trees:") and self.classes:
            kwargs["classes"] = self.classes
        elif classes is not None and not path.startswith("trees:") and not path.endswith(".json"):
            kwargs["classes"] = classes[1:]  # VOC: keep the training set's label order
        return dataset_from_path(path, **kwargs)

    @staticmethod
    def _checked(dataset, spec: str, flag: str):
        """Drop unreadable images at load and print what was dropped (images; for COCO / VOC files also the boxes
        without area, and those clipped to the image: the tiled built-in sets drop boxes by design)."""
        from ..data.detection import CocoDetection, VOCDetection

        bad = dataset.drop_unreadable()
        s = dict(dataset.stats)
        if not isinstance(dataset, (CocoDetection, VOCDetection)):
            s["dropped_boxes"] = s["clipped_boxes"] = 0  # the tiles of the built-in sets drop and clip by design
        notes = []
        if bad:
            shown = ", ".join(str(p) for p in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            notes.append(f"skipped {len(bad)} image file(s) that are not readable images ({shown})")
        if s.get("dropped_boxes"):
            notes.append(f"dropped {s['dropped_boxes']} box(es) without area (zero or negative width or height "
                         "after clipping to the image)")
        if s.get("clipped_boxes"):
            notes.append(f"clipped {s['clipped_boxes']} box(es) to the image")
        if notes:
            print(f"{flag} {spec}: {s['images']} images, {s['boxes']} boxes; " + "; ".join(notes))
        if not len(dataset):
            raise ValueError(f"{flag} {spec}: no readable images are left; check the image files")
        return dataset

    def build_datasets(self, recipe: Recipe) -> tuple[Dataset, Dataset | None]:
        data = recipe.data  # DetectionData
        tile = data.tile_size or None
        train = self._checked(self._open(self.data, tile_size=tile, overlap=data.tile_overlap), self.data, "--data")
        if train.stats["boxes"] == 0:
            raise ValueError(f"--data {self.data}: no boxes to train on ({len(train)} images, none with a usable "
                             "annotation); a detector learns from annotated objects: add annotations, or check "
                             "that the annotation file is the right one")
        if self.needs_masks and not getattr(train, "with_masks", False):
            raise ValueError(f"--model {self.model_name} trains on instance masks, but --data {self.data} has boxes "
                             "only; give a COCO .json with 'segmentation' per annotation or nuclei:<half>, or "
                             "train a retinanet_* model")
        val_tile = tile if data.val_tile_size is None else data.val_tile_size  # 0: whole images
        val = (self._checked(self._open(self.val_data, list(train.classes), tile_size=val_tile or None),
                             self.val_data, "--val-data") if self.val_data else None)
        if val is not None and list(val.classes) != list(train.classes):
            raise ValueError(f"--val-data classes {val.classes[1:]} differ from --data classes {train.classes[1:]}")
        return train, val

    def train_transform(self, recipe: Recipe):
        from ..data.transforms import (ColorJitter, Compose, RandomHorizontalFlip, RandomTranspose,
                                       RandomVerticalFlip, ScaleJitterCrop)

        data = recipe.data  # DetectionData

        def transform(image: torch.Tensor, target: dict, generator: torch.Generator):
            steps = [RandomHorizontalFlip(data.hflip, generator)]
            # The optional steps only join when enabled, so recipes without them keep their random stream.
            if data.vflip > 0:
                steps.append(RandomVerticalFlip(data.vflip, generator))
            if data.transpose > 0:
                steps.append(RandomTranspose(data.transpose, generator))
            if data.color_jitter > 0:
                steps.append(ColorJitter(data.color_jitter, generator))
            steps.append(ScaleJitterCrop(data.image_size, (data.scale_min, data.scale_max), generator))
            return Compose(steps)(image, target)

        return transform

    def collate(self, batch: list):
        from ..data import collate_detection

        return collate_detection(batch)

    # ----------------------------------------------------------------------------------------------- model
    def build_model(self, recipe: Recipe, train_set: Dataset) -> nn.Module:
        from ..models import create_detector

        overrides = recipe.model_overrides()  # ``model.<field>=value`` included
        # the data set's class names and category ids travel in the model configuration (weights files too)
        return create_detector(self.model_name, num_classes=len(train_set.classes), image_size=recipe.data.image_size,
                               class_names=list(train_set.classes), category_ids=list(train_set.category_ids),
                               **overrides)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        images, targets = _to_device(*batch, device)
        losses = model(images, targets)
        return {"loss": sum(losses.values()), **losses}

    def checkpoint_extras(self, train_set: Dataset) -> dict[str, Any]:
        return {"classes": list(train_set.classes), "category_ids": list(train_set.category_ids)}

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, model: nn.Module, dataset: Dataset, device: torch.device, recipe: Recipe | None = None,
                 batch_size: int = 4) -> dict[str, float]:
        with inference_size(model, eval_image_size(recipe)):
            predictions = predict_dataset(model, dataset, device, batch_size)
        return evaluate_predictions(predictions, dataset)

    # ------------------------------------------------------------------------------------------- inference
    model_tasks = ("retinanet", "maskrcnn")

    @classmethod
    def evaluate_checkpoint(cls, trained: TrainedModel, data: str, *, out: str | None = None,
                            image_size: int | None = None, classes: str | None = None) -> EvalResult:
        """COCO box AP (and mask AP for Mask R-CNN on a set with instance masks) of a detector on ``data`` at the
        long side ``image_size`` (default: its recipe's ``eval.image_size``, else its training size); with
        ``out``, the COCO results JSON there. ``classes``: a class mode of the built-in sets (``dead_alive``).

        A model that names its classes, on a data set with another number of classes, is scored on the data set's
        categories matched to its labels (:func:`match_categories`; e.g. Google's 91-label COCO detectors on a COCO
        file's 80 categories): the detections of its other labels are dropped, and the first line says so."""
        from ..data import dataset_from_path
        from ..metrics import predictions_to_coco_results, save_results_json

        model = trained.ready()
        dataset = dataset_from_path(data, **({"classes": classes} if classes else {}))
        match = None
        if trained.class_names is not None and len(trained.class_names) != len(dataset.classes):
            match = _match_dataset(trained, dataset, data)
        else:
            trained.check_classes(dataset.classes, data)
        with inference_size(model, image_size or eval_image_size(trained.recipe)):
            predictions = predict_dataset(model, dataset, trained.device)
        lines = []
        label_to_category: dict[int, int] | list[int] = dataset.category_ids
        if match is not None:  # only the labels of the data set's categories are scored
            predictions, dropped = _keep_labels(predictions, match.label_to_category)
            label_to_category, total = match.label_to_category, len(trained.classes) - 1
            lines.append(f"evaluating {len(label_to_category)} of the model's {total} classes matched by {match.by}; "
                         f"dropped {dropped} detection(s) of its other {total - len(label_to_category)} classes")
        metrics = evaluate_predictions(predictions, dataset, label_to_category)
        lines.append("  ".join(f"{k} {metrics[k]:.4f}" for k in DETECTION_METRICS))
        if "mask_AP" in metrics:  # Mask R-CNN on a set with instance masks: COCO segm metrics
            lines.append("  ".join(f"{k} {metrics[k]:.4f}" for k in MASK_METRICS))
        if out:
            ids = list(predictions)
            results = predictions_to_coco_results([predictions[i] for i in ids], ids, label_to_category)
            save_results_json(out, results)
            lines.append(f"wrote {len(results)} detections to {out}")
        return EvalResult(metrics, lines)

    @classmethod
    def predict_images(cls, trained: TrainedModel, images: Sequence[str], *, out: str,
                       image_size: int | None = None, score_thresh: float = 0.3,
                       overwrite: bool = False) -> PredictResult:
        """Detections at or above ``score_thresh`` per image: COCO-style records (``bbox`` xywh, ``score``,
        ``category_id``, ``category``; Mask R-CNN also ``segmentation`` RLEs) in ``out/predictions.json`` and the
        drawn image ``<stem>_pred.png`` (:meth:`visualize`)."""
        from ..data.images import decode_image
        from ..data.masks import masks_to_rles
        from ..files import write_json
        from ..visualize import save_png

        model = trained.ready()
        model.score_thresh = min(model.score_thresh, score_thresh)  # a lower display threshold reaches NMS too
        folder = Path(out)
        stems = prepare_outputs(images, folder, ("_pred.png",), overwrite, decode_image)
        classes, category_ids = trained.classes, trained.category_ids
        size = image_size or eval_image_size(trained.recipe)
        records: list[dict[str, Any]] = []
        for image_path, stem in zip(images, stems):
            image = decode_image(image_path)
            with torch.no_grad(), inference_size(model, size):
                (det,) = model([image.to(trained.device).float() / 255])
            keep = det["scores"] >= score_thresh
            det = {k: v[keep].cpu() for k, v in det.items()}  # Mask R-CNN "masks": [K, 1, H, W] probabilities
            rles = masks_to_rles(det["masks"]) if "masks" in det else [None] * len(det["boxes"])
            for box, score, label, rle in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(),
                                              rles):
                records.append({"file_name": str(image_path), "drawn": f"{stem}_pred.png",
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                "score": score, "category_id": int(category_ids[label]), "category": classes[label],
                                **({"segmentation": rle} if rle is not None else {})})
            save_png(cls.visualize(image, det, classes), folder / f"{stem}_pred.png")
        write_json(folder / "predictions.json", records, indent=1)
        return PredictResult(records, [f"{len(records)} detections on {len(images)} images -> "
                                       f"{folder}/predictions.json and *_pred.png"])

    @staticmethod
    def visualize(image: torch.Tensor, prediction: dict[str, torch.Tensor], classes: Sequence[str]) -> torch.Tensor:
        """The detections ``prediction`` (``boxes`` xyxy, ``labels``, ``scores``; Mask R-CNN ``masks``) drawn on
        the uint8 ``[3, H, W]`` image: boxes in their class's palette colour, labelled ``<class> <score>``, each
        instance's mask filled in its own colour (:func:`spinenet.visualize.draw_detections`)."""
        from ..visualize import draw_detections

        labels = [int(i) for i in prediction["labels"].tolist()]
        return draw_detections(image, prediction["boxes"], labels, [classes[i] for i in labels],
                               prediction.get("scores"), masks=prediction.get("masks"))


def eval_image_size(recipe: Recipe | None) -> int | None:
    """The long side a recipe evaluates at (its ``eval.image_size``); ``None``: the training size."""
    return (recipe.eval.image_size or None) if recipe is not None else None


@contextlib.contextmanager
def inference_size(model: nn.Module, size: int | None):
    """Temporarily resize inputs' long side to ``size`` instead of the model's ``image_size`` (e.g. to run at the
    images' native resolution); ``None`` changes nothing."""
    if size is None:
        yield model
        return
    transform = model.transform
    saved = transform.min_size, transform.max_size
    transform.min_size, transform.max_size = (size,), size
    try:
        yield model
    finally:
        transform.min_size, transform.max_size = saved


def predict_dataset(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 4) -> dict[int, dict]:
    """``{image_id: {"boxes", "scores", "labels"}}`` for every image of ``dataset`` (model in eval mode); Mask
    R-CNN outputs also get ``segmentation``, one COCO RLE per detection (masks binarised at 0.5)."""
    from ..data.masks import masks_to_rles

    model.eval()
    out: dict[int, dict] = {}
    indices = list(range(len(dataset)))
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            items = [dataset[i] for i in indices[start:start + batch_size]]
            images, _ = _to_device([img for img, _ in items], None, device)
            for (_, target), det in zip(items, model(images)):
                masks = det.pop("masks", None)
                out[int(target["image_id"])] = {k: v.float().cpu() for k, v in det.items()}
                if masks is not None:  # RLE now: full-image float masks of a whole set would not fit in memory
                    out[int(target["image_id"])]["segmentation"] = masks_to_rles(masks)
    return out


def evaluate_predictions(predictions: dict[int, dict], dataset: Dataset,
                         label_to_category: dict[int, int] | Sequence[int] | None = None) -> dict[str, float]:
    """COCO box AP (and mask AP when both the predictions and the ground truth have masks) of ``predictions``
    (:func:`predict_dataset`) on ``dataset``; ``label_to_category``: each predicted label's category id in the
    data set (default: the data set's own ``category_ids``, a model trained on its classes)."""
    from ..metrics import evaluate_coco

    gt = dataset.to_coco()
    if label_to_category is None:
        label_to_category = dataset.category_ids
    metrics = evaluate_coco(predictions, gt, label_to_category)
    out = {k: float(metrics[k]) for k in DETECTION_METRICS}
    # mask AP when the model predicts masks and the ground truth has them (a boxes-only set gets box AP only)
    if (predictions and all("segmentation" in p for p in predictions.values())
            and gt["annotations"] and all("segmentation" in a for a in gt["annotations"])):
        segm = evaluate_coco(predictions, gt, label_to_category, iou_type="segm")
        out.update({f"mask_{k}": float(segm[k]) for k in DETECTION_METRICS})
    return out


# ------------------------------------------------------------------------------------------ matching classes
@dataclass(frozen=True)
class CategoryMatch:
    """The model labels that stand for a data set's categories: ``label_to_category`` maps each matched label to
    its category id in the data set; ``by`` says how they were matched (``"category id"`` or ``"name"``)."""

    label_to_category: dict[int, int]
    by: str


def _name_key(name: str) -> str:
    """A class name compared case-insensitively, runs of white space as one space."""
    return " ".join(str(name).split()).casefold()


def match_categories(categories: Sequence[tuple[int, str]], model_names: Sequence[str],
                     model_ids: Sequence[int] | None = None, *, data: str = "the data set",
                     source: str = "the model") -> CategoryMatch:
    """Which label of a detector predicts each of a data set's ``categories`` (``(category id, name)`` pairs,
    background excluded), so that a detector can be evaluated on a data set with fewer or other classes than its
    own: Google's 91-label COCO detectors on a COCO annotation file's 80 categories, for one.

    ``model_names`` names every label, label 0 (the background) included; ``model_ids`` gives each label's
    category id when the model's ids and the data set's are one id space (COCO's), else ``None``.

    * **By category id** when ``model_ids`` holds every category's id. Each category's name must then be its
      label's (case-insensitive): another name at the same id is a ``ValueError`` naming both, as the file's ids
      would then mean other classes than the model's.
    * **By name** (case-insensitive) otherwise. A category whose name no label has is a ``ValueError`` naming the
      unmatched categories and what to do; so is a name that several labels share or two categories that match
      one label.

    Labels that no category matches are left out of ``label_to_category``: their predictions have no ground truth
    to be scored against."""
    cats = [(int(cid), str(name)) for cid, name in categories]
    names = [str(n) for n in model_names]
    if model_ids is not None:
        label_of_id = {int(cid): label for label, cid in enumerate(model_ids) if label > 0}
        if all(cid in label_of_id for cid, _ in cats):
            differ = [f"id {cid} is {name!r} in {data} but {names[label_of_id[cid]]!r} in {source}"
                      for cid, name in cats if _name_key(name) != _name_key(names[label_of_id[cid]])]
            if differ:
                more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
                raise ValueError(f"category {'; '.join(differ[:3])}{more}: an id names another class in the data "
                                 "than in the model; number the categories as the model does (COCO's ids for "
                                 "Google's detectors), or give them ids the model does not use to match by name")
            return CategoryMatch({label_of_id[cid]: cid for cid, _ in cats}, "category id")

    labels_of_name: dict[str, list[int]] = {}
    for label, name in enumerate(names[1:], start=1):
        labels_of_name.setdefault(_name_key(name), []).append(label)
    missing = [f"{name!r} (id {cid})" for cid, name in cats if _name_key(name) not in labels_of_name]
    if missing:
        known = list(dict.fromkeys(names[1:]))
        shown = ", ".join(repr(n) for n in known[:12]) + (f" and {len(known) - 12} more" if len(known) > 12 else "")
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"{data} has categories that no class of the model in {source} matches by id or name: "
                         f"{', '.join(missing[:5])}{more} (the model's classes: {shown}); evaluate on data whose "
                         f"categories are among the model's (remove or rename those), or train a model for them")
    mapping: dict[int, int] = {}
    for cid, name in cats:
        labels = labels_of_name[_name_key(name)]
        if len(labels) > 1:
            raise ValueError(f"category {name!r} (id {cid}) of {data} names {len(labels)} labels of the model in "
                             f"{source} ({labels}); match by category id, or give the model distinct class names")
        if labels[0] in mapping:
            raise ValueError(f"categories {mapping[labels[0]]} and {cid} of {data} both match the model's class "
                             f"{names[labels[0]]!r}; give each category its own name")
        mapping[labels[0]] = cid
    return CategoryMatch(mapping, "name")


def _has_dataset_ids(trained: TrainedModel) -> bool:
    """Whether a detector's labels carry a data set's category ids rather than being numbered ``1..C``: the
    91-label COCO space of Google's detectors (label ``k`` = COCO id ``k``, named COCO's way), or the ids of the
    COCO file a model was trained on when they are not its labels."""
    from ..constants import coco_class_names

    ids = trained.category_ids
    return ids != list(range(len(ids))) or (trained.class_names == coco_class_names())


def _match_dataset(trained: TrainedModel, dataset: Any, data: str) -> CategoryMatch:
    """:func:`match_categories` of a detector and a detection data set. Ids are compared only when both sides
    have category ids of their own: a COCO annotation file (the built-in sets and VOC folders number their
    classes ``1..C``) and a model whose labels carry ids (:func:`_has_dataset_ids`)."""
    from ..data.detection import CocoDetection

    categories = list(zip(dataset.category_ids[1:], dataset.classes[1:]))
    comparable = isinstance(dataset, CocoDetection) and _has_dataset_ids(trained)
    return match_categories(categories, trained.classes, trained.category_ids if comparable else None,
                            data=data, source=trained.source)


def _keep_labels(predictions: dict[int, dict], labels: Any) -> tuple[dict[int, dict], int]:
    """``predictions`` (:func:`predict_dataset`) without the detections whose label is not in ``labels``, and how
    many detections were dropped."""
    wanted = torch.tensor(sorted(int(label) for label in labels), dtype=torch.long)
    kept: dict[int, dict] = {}
    dropped = 0
    for image_id, pred in predictions.items():
        keep = torch.isin(pred["labels"].long(), wanted)
        dropped += int((~keep).sum())
        flags = keep.tolist()
        # tensors per detection (boxes, scores, labels) and Mask R-CNN's list of RLEs ("segmentation")
        kept[image_id] = {key: value[keep] if isinstance(value, torch.Tensor)
                          else [item for item, flag in zip(value, flags) if flag] for key, value in pred.items()}
    return kept, dropped
