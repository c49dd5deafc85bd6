"""``spinenet eval`` / ``spinenet predict`` for classification and segmentation checkpoints.

The CLI reads the checkpoint once and dispatches on its ``task`` entry; detection keeps its own code in
:mod:`spinenet.cli`. Everything a checkpoint needs to rebuild its model is inside it: ``model_config`` (the
classifier / segmenter config), ``classes`` and the training ``recipe`` (evaluation crop, input size and scale).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..engine.config import Recipe
from ..files import write_json


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


def output_stems(images: Sequence[str | os.PathLike[str]]) -> list[str]:
    """A distinct output name stem per input image: the file's stem (``a/x.png`` -> ``x``); where stems clash,
    the extension is added (``x.png``, ``x.jpg`` -> ``x_png``, ``x_jpg``), then as many parent folders as tell
    the inputs apart (``a/x.png``, ``b/x.png`` -> ``a__x``, ``b__x``). The same file given twice is a
    ``ValueError``."""
    paths = [Path(p).resolve() for p in images]
    seen: dict[Path, str] = {}
    for given, path in zip(images, paths):
        if path in seen:
            raise ValueError(f"image {given} is given twice (also as {seen[path]}); give each image once")
        seen[path] = str(given)
    folders = [p.parent.parts[1:] if p.is_absolute() else p.parent.parts for p in paths]

    def name(i: int, level: int) -> str:
        """Level 2d: ``d`` parent folders and the stem; level 2d + 1: the same with the extension."""
        depth, with_extension = divmod(level, 2)
        base = paths[i].name.replace(".", "_") if with_extension else paths[i].stem
        return "__".join([*folders[i][len(folders[i]) - min(depth, len(folders[i])):], base])

    levels = [0] * len(paths)
    while True:
        names = [name(i, level) for i, level in enumerate(levels)]
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        clashing = [i for i, n in enumerate(names) if counts[n] > 1]
        if not clashing:
            return names
        if all(levels[i] > 2 * len(folders[i]) for i in clashing):  # full paths: only different spellings left
            raise ValueError(f"images {images[clashing[0]]} and {images[clashing[1]]} would write the same outputs "
                             f"({names[clashing[0]]}_*); rename one")
        for i in clashing:
            levels[i] += 1


def prepare_outputs(images: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], suffixes: Sequence[str],
                    overwrite: bool, reader) -> list[str]:
    """Check a ``predict`` command before it writes anything: every input exists and decodes (``reader``, the
    task's image reader; a bad file is a ``ValueError`` naming it, and no image is processed), ``out`` is a
    folder, and none of the files it would write (``predictions.json`` and ``<stem><suffix>`` per image) exists
    unless ``overwrite``. Creates ``out``; returns the output stems (:func:`output_stems`)."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder} is a file; give a folder for the predictions")
    stems = output_stems(images)
    for path in images:
        reader(path)
    targets = [folder / "predictions.json", *(folder / f"{stem}{suffix}" for stem in stems for suffix in suffixes)]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]}{more} already exist(s); pass --overwrite to replace them, or choose "
                              "another --out")
    folder.mkdir(parents=True, exist_ok=True)
    return stems


def _recipe(ckpt: dict[str, Any], source: str = "checkpoint") -> Recipe:
    """The checkpoint's training recipe (flat recipes of earlier checkpoints are migrated)."""
    return Recipe.from_dict(ckpt.get("recipe") or {"task": ckpt["task"]}, source=source)


def eval_command(ckpt: dict[str, Any], source: str, data: str, device: torch.device, out: str | None = None,
                 image_size: int | None = None, prepare: Callable[[nn.Module], nn.Module] | None = None
                 ) -> dict[str, float]:
    """Metrics of a classification / segmentation checkpoint on ``data``; with ``out`` (a folder), also
    ``metrics.json`` and the confusion-matrix PNG or the overlay PNGs there. ``prepare`` transforms the loaded
    model (e.g. :func:`spinenet.optimize_for_inference`)."""
    from ..layers.fuse import channels_last_for_bf16

    recipe = _recipe(ckpt, source)
    model = channels_last_for_bf16(load_task_model(ckpt, device, source), device, recipe.optim.precision)
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
    with torch.no_grad(), autocast_context(device, recipe.optim.precision):
        metrics = task.evaluate(model, dataset, device, recipe)
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        write_json(report / "metrics.json", {"checkpoint": source, "data": data, **metrics})
    return metrics


def predict_command(ckpt: dict[str, Any], source: str, images: Sequence[str], device: torch.device, out: str,
                    image_size: int | None = None, top_k: int = 5, overwrite: bool = False,
                    prepare: Callable[[nn.Module], nn.Module] | None = None) -> list[dict[str, Any]]:
    """Classification: top-``k`` classes per image. Segmentation: a label PNG (``*_mask.png``, class ids) and an
    overlay PNG (``*_pred.png``) per image. Both write ``predictions.json`` in ``out``; returns its records.
    Inputs and outputs are checked first (:func:`prepare_outputs`). ``prepare`` transforms the loaded model
    (e.g. :func:`spinenet.optimize_for_inference`)."""
    from ..data.images import decode_image, read_image_float

    model = load_task_model(ckpt, device, source)
    model = prepare(model) if prepare else model
    recipe = _recipe(ckpt, source)
    folder = Path(out)
    segmentation = ckpt["task"] != "classification"
    if segmentation and image_size:
        raise ValueError("--image-size applies to classification and detection; segmentation runs at the "
                         "images' own size (times the recipe's input_scale)")
    stems = prepare_outputs(images, folder, ("_mask.png", "_pred.png") if segmentation else (), overwrite,
                            read_image_float if segmentation else decode_image)
    records: list[dict[str, Any]] = []
    classes = list(ckpt["classes"])
    if ckpt["task"] == "classification":
        from ..data.classification import center_crop_resize
        from .classification import classify, eval_crop, eval_hflip

        size = image_size or recipe.data.image_size
        crop, hflip = eval_crop(recipe), eval_hflip(recipe)
        for path in images:
            image = center_crop_resize(decode_image(path), size, crop)
            with torch.no_grad():
                logits = classify(model, image[None].to(device), hflip).cpu()
            top = [{"class": name, "probability": round(p, 6)} for name, p in model.decode(logits, top_k)[0]]
            records.append({"file_name": str(path), "top": top})
    else:
        from PIL import Image

        from ..models.segmentation import draw_overlay
        from .segmentation import eval_window, input_percentiles, input_scale, predict_logits

        scale = input_scale(recipe)
        window, overlap = eval_window(recipe)
        for path, stem in zip(images, stems):
            image = read_image_float(path)
            pred = predict_logits(model, image, device, scale, window, overlap, input_percentiles(recipe)).argmax(0)
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
    write_json(folder / "predictions.json", records, indent=1)
    return records
