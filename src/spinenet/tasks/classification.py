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

        train = classification_dataset_from_path(self.data)
        val = classification_dataset_from_path(self.val_data, train.classes) if self.val_data else None
        if val is not None:
            from .inference import check_classes

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


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor,
                           num_classes: int) -> tuple[dict[str, float], torch.Tensor]:
    """``({"top1", "top5", "loss"}, confusion [C, C])``; rows = true class, columns = predicted class.
    With fewer than 5 classes top-5 counts every class (= 1.0)."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    correct = top == labels[:, None]
    matrix = torch.bincount(labels * num_classes + top[:, 0], minlength=num_classes ** 2).reshape(num_classes,
                                                                                                   num_classes)
    metrics = {"top1": float(correct[:, 0].float().mean()), "top5": float(correct.any(dim=1).float().mean()),
               "loss": float(torch.nn.functional.cross_entropy(logits, labels)), "images": float(len(labels))}
    return metrics, matrix


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
