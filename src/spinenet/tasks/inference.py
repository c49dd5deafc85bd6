"""What ``spinenet eval`` and ``spinenet predict`` share across tasks, and the interface each task implements.

A training checkpoint holds everything its model needs: ``model_config`` (rebuilt by the registry,
:func:`spinenet.registry.model_from_config`, whatever the task), ``model`` (the weights), ``classes`` and the
training ``recipe`` (evaluation crop and size, input scale). :func:`load_trained` reads one into a
:class:`TrainedModel`; the model's declared ``task`` (the registry's vocabulary: ``retinanet``, ``maskrcnn``,
``classification``, ``segmentation``) selects the task (:func:`spinenet.tasks.inference_task`), which evaluates,
predicts and draws (:class:`InferenceTask`). The CLI only parses arguments and prints the lines a task returns.

:func:`load_trained` also takes a ``spinenet-weights/1`` file (``spinenet convert``, :func:`spinenet.save_weights`;
recognised by :func:`is_weights_file`). Such a file holds the model's configuration and weights but no training
recipe, so evaluation and prediction use :func:`weights_recipe`: the task's recipe defaults with the model's own
input size, in float32. Its class names are the configuration's ``class_names`` and, for a detector, its labels'
category ids the configuration's ``category_ids`` (both written by training and by ``spinenet convert``); a file
that names no classes (written before detectors carried them, or with a class count that has no names) labels
classes by their ids and is checked against a data set by the class count only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence

import torch
from torch import nn

from ..constants import RECIPE_TASKS
from ..engine.config import Recipe
from ..files import write_json

Prepare = Callable[[nn.Module], nn.Module]


SOURCES = ("eval and predict take a training checkpoint (checkpoints/final.pt) or a spinenet-weights/1 file "
           "(written by `spinenet convert` or spinenet.save_weights)")


@dataclass
class TrainedModel:
    """A checkpoint's trained model on ``device`` in eval mode, with the checkpoint it came from (for a weights
    file, the entries it stands in for: ``task``, ``model_config``, ``recipe`` and, when the file has them,
    ``classes`` and ``category_ids``; :func:`load_weights_file`). ``prepare`` transforms the model before it runs (e.g.
    :func:`spinenet.optimize_for_inference`; see :meth:`ready`)."""

    ckpt: dict[str, Any]
    source: str
    model: nn.Module
    device: torch.device
    prepare: Prepare | None = None
    task: str = field(init=False)

    def __post_init__(self) -> None:
        self.task = self.model.task  # read before any transform: the registry task the model declares

    @property
    def class_names(self) -> list[str] | None:
        """The class names in label order; ``None`` when the source names none (a weights file whose configuration
        has no ``class_names``)."""
        names = self.ckpt.get("classes")
        return None if names is None else [str(n) for n in names]

    @property
    def classes(self) -> list[str]:
        """:attr:`class_names`, else each label's id as its name (``"0"``, ``"1"``, ...)."""
        return self.class_names or [str(i) for i in range(int(self.ckpt["model_config"]["num_classes"]))]

    @property
    def category_ids(self) -> list[int]:
        """The data set's category id of each label (detection records); label ``k`` is id ``k`` when the source
        has no mapping (the 91-id COCO space of converted detectors, the built-in sets, files that predate it)."""
        return [int(c) for c in self.ckpt.get("category_ids") or range(len(self.classes))]

    @property
    def recipe(self) -> Recipe:
        """The checkpoint's training recipe (flat recipes of earlier checkpoints are migrated); a weights file's
        :func:`weights_recipe`."""
        return Recipe.from_dict(self.ckpt.get("recipe") or {"task": self.ckpt["task"]}, source=self.source)

    def check_classes(self, data_classes: Sequence[str], data: str) -> None:
        """A clear error when the data set ``data`` has other classes than the model: the count, then the names
        when the source names its classes (:func:`check_classes`)."""
        names = self.class_names
        if names is not None:
            check_classes(data_classes, names, data, self.source)
        elif len(data_classes) != len(self.classes):
            raise ValueError(f"{data} has {len(data_classes)} classes {list(data_classes)[:12]}, but the model in "
                             f"{self.source} has {len(self.classes)} outputs; evaluate on data with as many classes")

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


def is_weights_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a safetensors file (a ``spinenet-weights/1`` file) rather than a training checkpoint:
    by its ``.safetensors`` suffix, or by its content -- a safetensors file starts with the 8-byte little-endian
    length of its JSON header and the header's ``{``, a ``torch.save`` checkpoint is a zip archive."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8


def weights_recipe(model_task: str, config: dict[str, Any]) -> Recipe:
    """What evaluation and prediction use for a weights file, which carries no training recipe: the defaults of
    the recipe task training ``model_task`` models, with

    * ``data.image_size`` = the model configuration's ``image_size`` (detectors and classifiers): a detector
      resizes the long side to it (``eval.image_size`` stays unset), a classifier resizes its centre crop
      (``eval.crop`` 0.875 of the short side, spec 7.2) to it;
    * ``eval.window`` = 0 where the task has sliding windows (segmentation): the whole image in one pass, as
      there is no training crop to size windows by; input scale 1, no percentile normalisation;
    * ``optim.precision`` = ``fp32``: the weights as saved, no autocast.

    Input normalisation (mean/std) lives in the models themselves, so it comes with the configuration."""
    recipe = Recipe(name="weights-file", task=RECIPE_TASKS[model_task])
    values: dict[str, Any] = {"optim.precision": "fp32"}
    if config.get("image_size"):
        values["data.image_size"] = int(config["image_size"])
    if "eval.window" in recipe.settings():
        values["eval.window"] = 0
    return recipe.with_values(values)


def load_weights_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], nn.Module]:
    """The model of a ``spinenet-weights/1`` file, built by the registry (:func:`spinenet.load_weights`), and the
    checkpoint entries the file stands in for (``task``, ``model_config``, ``recipe``: :func:`weights_recipe`;
    ``classes`` and ``category_ids`` when the configuration has ``class_names`` and ``category_ids``). A file that
    is not a readable spinenet weights file, holds an unknown model or a backbone is a ``ValueError`` naming the
    file and what to give instead."""
    from ..registry import load_weights

    try:
        model = load_weights(path)
    except ValueError as err:
        text = str(err)
        raise ValueError(f"{text if str(path) in text else f'{path}: {text}'}; {SOURCES}") from None
    if model.task not in RECIPE_TASKS:
        raise ValueError(f"{path} holds a {model.task} model, which has no evaluation or prediction; {SOURCES} of "
                         f"a detector, classifier or segmenter (a backbone file seeds training: model.init_weights=)")
    config = model.to_config()
    ckpt: dict[str, Any] = {"task": RECIPE_TASKS[model.task], "model_config": config,
                            "recipe": weights_recipe(model.task, config).to_dict()}
    names, ids = config.get("class_names"), config.get("category_ids")
    if names and len(names) == config.get("num_classes"):
        ckpt["classes"] = [str(n) for n in names]
    if ids and len(ids) == config.get("num_classes"):
        ckpt["category_ids"] = [int(i) for i in ids]
    return ckpt, model


def load_trained(path: str | os.PathLike[str], device: str | torch.device | None = None,
                 prepare: Prepare | None = None) -> TrainedModel:
    """Read a training checkpoint (``checkpoints/final.pt``) or a ``spinenet-weights/1`` file
    (:func:`is_weights_file`, :func:`load_weights_file`) and rebuild its model on ``device`` (default: CUDA when
    available)."""
    from ..engine import resolve_device
    from ..engine.checkpoint import load_checkpoint

    dev = resolve_device(device)
    if is_weights_file(path):
        ckpt, model = load_weights_file(path)
        return TrainedModel(ckpt, str(path), model.to(dev).eval(), dev, prepare)
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
