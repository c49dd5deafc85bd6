"""What ``spinenet eval`` and ``spinenet predict`` share across tasks, and the interface each task implements.

A training checkpoint holds everything its model needs: ``model_config`` (rebuilt by the registry,
:func:`spinenet.registry.model_from_config`, whatever the task), ``model`` (the weights), ``classes`` and the
training ``recipe`` (evaluation crop and size, input scale). :func:`load_trained` reads one into a
:class:`TrainedModel`; the model's declared ``task`` (the registry's vocabulary: ``retinanet``, ``maskrcnn``,
``classification``, ``segmentation``) selects the task (:func:`spinenet.tasks.inference_task`), which evaluates,
predicts and draws (:class:`InferenceTask`). The CLI only parses arguments and prints the lines a task returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence

import torch
from torch import nn

from ..engine.config import Recipe
from ..files import write_json

Prepare = Callable[[nn.Module], nn.Module]


@dataclass
class TrainedModel:
    """A checkpoint's trained model on ``device`` in eval mode, with the checkpoint it came from. ``prepare``
    transforms the model before it runs (e.g. :func:`spinenet.optimize_for_inference`; see :meth:`ready`)."""

    ckpt: dict[str, Any]
    source: str
    model: nn.Module
    device: torch.device
    prepare: Prepare | None = None
    task: str = field(init=False)

    def __post_init__(self) -> None:
        self.task = self.model.task  # read before any transform: the registry task the model declares

    @property
    def classes(self) -> list[str]:
        return list(self.ckpt["classes"])

    @property
    def recipe(self) -> Recipe:
        """The checkpoint's training recipe (flat recipes of earlier checkpoints are migrated)."""
        return Recipe.from_dict(self.ckpt.get("recipe") or {"task": self.ckpt["task"]}, source=self.source)

    def ready(self, model: nn.Module | None = None) -> nn.Module:
        """``model`` (default: the loaded one) after ``prepare``."""
        model = self.model if model is None else model
        return self.prepare(model) if self.prepare else model


def load_task_model(ckpt: dict[str, Any], device: torch.device, source: str = "checkpoint") -> nn.Module:
    """The trained model of a checkpoint, rebuilt from its ``model_config`` by the registry, on ``device``, in
    eval mode."""
    from ..registry import model_from_config

    try:
        model = model_from_config(ckpt["model_config"])
    except KeyError:
        raise ValueError(f"{source} has no 'model_config'; it is not a spinenet training checkpoint") from None
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def load_trained(path: str | os.PathLike[str], device: str | torch.device | None = None,
                 prepare: Prepare | None = None) -> TrainedModel:
    """Read a training checkpoint (``checkpoints/final.pt``) and rebuild its model on ``device`` (default: CUDA
    when available)."""
    from ..engine import resolve_device
    from ..engine.checkpoint import load_checkpoint

    dev = resolve_device(device)
    ckpt = load_checkpoint(path, map_location="cpu")
    return TrainedModel(ckpt, str(path), load_task_model(ckpt, dev, str(path)), dev, prepare)


@dataclass
class EvalResult:
    """What an evaluation measured (``metrics``) and the ``lines`` that tell a user (the metrics, the files)."""

    metrics: dict[str, float]
    lines: list[str]


@dataclass
class PredictResult:
    """The records written to ``predictions.json`` and the ``lines`` that tell a user."""

    records: list[dict[str, Any]]
    lines: list[str]


class InferenceTask(Protocol):
    """Evaluate, predict and visualize: what every task provides for a trained model (``spinenet eval`` /
    ``spinenet predict`` call only this)."""

    model_tasks: ClassVar[tuple[str, ...]]  # the registry tasks of the models this task runs

    @classmethod
    def evaluate_checkpoint(cls, trained: TrainedModel, data: str, *, out: str | None = None,
                            image_size: int | None = None, classes: str | None = None) -> EvalResult:
        """Metrics of ``trained`` on the data set ``data``; ``out``: where to write the task's result files."""
        ...

    @classmethod
    def predict_images(cls, trained: TrainedModel, images: Sequence[str], *, out: str,
                       image_size: int | None = None, score_thresh: float = 0.3,
                       overwrite: bool = False) -> PredictResult:
        """Predictions on image files: ``predictions.json`` and the task's images in the folder ``out``."""
        ...

    @staticmethod
    def visualize(image: torch.Tensor, prediction: Any, classes: Sequence[str]) -> torch.Tensor:
        """A uint8 ``[3, H, W]`` picture of one image's ``prediction`` (:mod:`spinenet.visualize`)."""
        ...


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


def refuse_classes(classes: str | None) -> None:
    """A class mode (``--classes dead_alive``) belongs to the built-in detection sets; other tasks refuse one."""
    if classes:
        raise ValueError("--classes selects a class mode of the built-in detection sets")


def evaluate_and_report(trained: TrainedModel, task: Any, model: nn.Module, dataset: Any, data: str,
                        recipe: Recipe, out: str | None, written: str) -> EvalResult:
    """Run ``task.evaluate`` under the recipe's precision and, with ``out`` (a folder), write ``metrics.json``
    there beside the task's own report files (``written`` names them for the user)."""
    from ..engine.trainer import autocast_context

    with torch.no_grad(), autocast_context(trained.device, recipe.optim.precision):
        metrics = task.evaluate(model, dataset, trained.device, recipe)
    lines = ["  ".join(f"{k} {v:.4f}" for k, v in metrics.items())]
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / "metrics.json", {"checkpoint": trained.source, "data": data, **metrics})
        lines.append(f"metrics.json and {written} in {out}")
    return EvalResult(metrics, lines)
