"""Classification as an engine task: SpineNet classifiers (paper section 4.2, spec 3.13) on image folders or
Fashion-MNIST; top-1 / top-5 accuracy and a confusion-matrix PNG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from ..engine.config import Recipe
from ..metrics import classification_metrics
from .inference import (EvalResult, PredictResult, TrainedModel, check_classes, evaluate_and_report,
                        prepare_outputs, refuse_classes)


def eval_crop(recipe: Recipe | None) -> float:
    """Evaluation centre-crop fraction: the recipe's ``eval.crop``, default the paper's 0.875."""
    return recipe.eval.crop if recipe is not None else 0.875


def eval_hflip(recipe: Recipe | None) -> bool:
    """``eval.hflip=true``: evaluation and prediction average the logits of each image and its mirror image
    (test-time augmentation; off by default)."""
    return recipe.eval.hflip if recipe is not None else False


def classify(model: nn.Module, images: torch.Tensor, hflip: bool = False) -> torch.Tensor:
    """Float32 logits of a normalised-size batch; with ``hflip`` the mean of the image's and its mirror's logits."""
    logits = model(images).float()
    if hflip:
        logits = (logits + model(images.flip(-1)).float()) / 2
    return logits


def _checked(dataset: Dataset, spec: str, flag: str) -> Dataset:
    """Image folders: drop the files that are not images at load, and say so (built-in sets have none)."""
    if hasattr(dataset, "drop_unreadable"):
        bad = dataset.drop_unreadable()
        if bad:
            shown = ", ".join(str(p) for p in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            print(f"{flag} {spec}: {len(dataset)} images; skipped {len(bad)} file(s) that are not readable images "
                  f"({shown})")
    return dataset


class ClassificationTask:
    """``spinenet train --task classification``: the model name is a classifier (:func:`list_classifiers`)."""

    name = "classification"
    primary_metric = "top1"

    def __init__(self, model: str, data: str, val_data: str | None = None,
                 report_dir: str | os.PathLike[str] | None = None) -> None:
        self.model_name, self.data, self.val_data = model, data, val_data
        self.report_dir = Path(report_dir) if report_dir is not None else None

    def build_datasets(self, recipe: Recipe) -> tuple[Dataset, Dataset | None]:
        from ..data.classification import classification_dataset_from_path

        train = _checked(classification_dataset_from_path(self.data), self.data, "--data")
        val = (_checked(classification_dataset_from_path(self.val_data, train.classes), self.val_data, "--val-data")
               if self.val_data else None)
        if val is not None:
            check_classes(val.classes, train.classes, self.val_data, f"--data {self.data}")
        return train, val

    def train_transform(self, recipe: Recipe):
        from ..data.classification import classification_train_transform

        data = recipe.data
        return classification_train_transform(data.image_size, (data.scale_min, data.scale_max), data.hflip)

    def collate(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([image for image, _ in batch]), torch.tensor([label for _, label in batch])

    def build_model(self, recipe: Recipe, train_set: Dataset) -> nn.Module:
        from ..models import create_classifier

        overrides = recipe.model_overrides()  # ``model.<field>=value``, label smoothing included
        return create_classifier(self.model_name, num_classes=len(train_set.classes),
                                 image_size=recipe.data.image_size, class_names=list(train_set.classes), **overrides)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        images, labels = batch
        return model(images.to(device, non_blocking=True), labels.to(device, non_blocking=True))

    def checkpoint_extras(self, train_set: Dataset) -> dict[str, Any]:
        return {"classes": list(train_set.classes)}

    def evaluate(self, model: nn.Module, dataset: Dataset, device: torch.device, recipe: Recipe | None = None,
                 batch_size: int = 200) -> dict[str, float]:
        size = recipe.data.image_size if recipe is not None else int(model.config.get("image_size", 224))
        logits, labels = predict_dataset(model, dataset, device, size, eval_crop(recipe), batch_size,
                                         eval_hflip(recipe))
        metrics, matrix = classification_metrics(logits, labels, len(dataset.classes))
        metrics["unreadable_images"] = float(dataset.stats.get("unreadable_images", 0))
        if self.report_dir is not None:
            save_confusion_matrix(matrix, dataset.classes, self.report_dir / "confusion_matrix.png",
                                  title=f"{getattr(dataset, 'name', '')}: top-1 {metrics['top1']:.4f}")
        return metrics

    # ------------------------------------------------------------------------------------------- inference
    model_tasks = ("classification",)

    @classmethod
    def evaluate_checkpoint(cls, trained: TrainedModel, data: str, *, out: str | None = None,
                            image_size: int | None = None, classes: str | None = None) -> EvalResult:
        """Top-1 / top-5 of a classifier on an image folder or ``fashion-mnist:...``; with ``out`` (a folder),
        ``metrics.json`` and ``confusion_matrix.png`` there. ``image_size`` replaces the training size."""
        from ..data.classification import classification_dataset_from_path
        from ..layers.fuse import channels_last_for_bf16

        refuse_classes(classes)
        recipe = trained.recipe
        model = trained.ready(channels_last_for_bf16(trained.model, trained.device, recipe.optim.precision))
        dataset = classification_dataset_from_path(data, trained.class_names)
        trained.check_classes(dataset.classes, data)
        if image_size:
            recipe = recipe.replace(image_size=image_size)
        task = cls(model=trained.model.config["name"], data=data, report_dir=out)
        return evaluate_and_report(trained, task, model, dataset, data, recipe, out, "confusion_matrix.png")

    @classmethod
    def predict_images(cls, trained: TrainedModel, images: Sequence[str], *, out: str,
                       image_size: int | None = None, score_thresh: float = 0.3, overwrite: bool = False,
                       top_k: int = 5) -> PredictResult:
        """The top-``k`` classes of each image (centre crop as in evaluation) in ``out/predictions.json``, and the
        image labelled with them, ``<stem>_pred.png`` (:meth:`visualize`)."""
        from ..data.classification import center_crop_resize
        from ..data.images import decode_image
        from ..files import write_json
        from ..visualize import save_png

        model = trained.ready()
        recipe = trained.recipe
        folder = Path(out)
        stems = prepare_outputs(images, folder, ("_pred.png",), overwrite, decode_image)
        size = image_size or recipe.data.image_size
        crop, hflip = eval_crop(recipe), eval_hflip(recipe)
        records: list[dict[str, Any]] = []
        for path, stem in zip(images, stems):
            image = decode_image(path)
            with torch.no_grad():
                logits = classify(model, center_crop_resize(image, size, crop)[None].to(trained.device), hflip)
            top = [{"class": name, "probability": round(p, 6)}
                   for name, p in trained.model.decode(logits.cpu(), top_k)[0]]
            records.append({"file_name": str(path), "drawn": f"{stem}_pred.png", "top": top})
            save_png(cls.visualize(image, logits[0].cpu(), trained.classes, top_k), folder / f"{stem}_pred.png")
        write_json(folder / "predictions.json", records, indent=1)
        lines = [f"{r['file_name']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"][:3])
                 for r in records]
        return PredictResult(records, [*lines, f"{len(records)} images -> {folder}/predictions.json and *_pred.png"])

    @staticmethod
    def visualize(image: torch.Tensor, prediction: torch.Tensor, classes: Sequence[str],
                  top_k: int = 5) -> torch.Tensor:
        """The image (uint8 ``[3, H, W]``) framed in the colour of its top class and labelled with its ``top_k``
        classes and their probabilities (:func:`spinenet.visualize.draw_classification`); ``prediction``: the
        image's logits ``[C]``."""
        from ..visualize import draw_classification

        top = prediction.float().softmax(-1).topk(min(top_k, prediction.numel()))
        ids = top.indices.tolist()
        return draw_classification(image, ids, [classes[k] for k in ids], top.values.tolist())


def predict_dataset(model: nn.Module, dataset: Dataset, device: torch.device, image_size: int,
                    crop: float = 0.875, batch_size: int = 200,
                    hflip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, C]`` (float32, CPU) and labels ``[N]`` over every readable image, each centre-cropped to
    ``crop`` of its short side and resized to ``image_size`` (spec 7.2 evaluation); unreadable images are left out.
    ``hflip`` averages each image's logits with its mirror image's (:func:`classify`)."""
    from ..data.classification import center_crop_resize

    model.eval()
    read = getattr(dataset, "read", dataset.__getitem__)
    all_logits, all_labels = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [read(i) for i in range(start, min(start + batch_size, len(dataset)))]
            items = [item for item in items if item is not None]
            if not items:
                continue
            if len({tuple(image.shape) for image, _ in items}) == 1:  # one batched resize (e.g. Fashion-MNIST)
                images = center_crop_resize(torch.stack([image for image, _ in items]), image_size, crop)
            else:
                images = torch.stack([center_crop_resize(image, image_size, crop) for image, _ in items])
            all_logits.append(classify(model, images.to(device), hflip).cpu())
            all_labels.append(torch.tensor([label for _, label in items]))
    if not all_logits:
        raise ValueError(f"{getattr(dataset, 'name', 'dataset')}: no readable image to evaluate")
    return torch.cat(all_logits), torch.cat(all_labels)


def save_confusion_matrix(matrix: torch.Tensor, classes: Sequence[str], path: str | os.PathLike[str],
                          title: str = "") -> Path:
    """A PNG of the row-normalised confusion matrix (true class per row), counts printed when there is room."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    counts = matrix.double()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(classes)
    side = min(max(4.0, 0.55 * n + 2), 30)
    fig = Figure(figsize=(side + 1, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 40:
        ax.set_xticks(range(n), [str(c) for c in classes], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), [str(c) for c in classes], fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path
