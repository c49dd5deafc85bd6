"""Every call the experiments make into recipes, the model tables, tasks and the engine, in one place.

Recipes are built from a registered recipe and ``key=value`` strings (:func:`spinenet.engine.recipes.parse_overrides`),
tasks through :func:`spinenet.tasks.get_task`; :func:`backbone_scaling` reads a registered model's backbone;
:func:`train` runs one checkpointed job with the engine's :class:`~spinenet.engine.trainer.Trainer` and evaluates
the result on extra datasets (cross-site sets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..engine.recipes import Recipe, get_recipe, parse_overrides


def build_recipe(name: str, overrides: Sequence[str]) -> Recipe:
    """Recipe ``name`` with ``key=value`` overrides applied in order (later ones win)."""
    return parse_overrides(get_recipe(name), list(overrides))


def parse_value(text: str) -> Any:
    """A ``key=value`` value as the recipe parser reads untyped extras: int, float, bool, none or the string."""
    from ..engine.recipes import _auto

    return _auto(text)


def backbone_scaling(task: str, model: str) -> dict[str, Any]:
    """The registered backbone scaling and flavour of a detector (``task="detection"``) or classifier."""
    from ..models import get_classifier_def, get_detector_def
    from ..registry import get_model_def

    defn = get_detector_def(model) if task == "detection" else get_classifier_def(model)
    backbone = get_model_def(defn.backbone)
    return {"endpoints_num_filters": backbone.scaling.endpoints_num_filters,
            "filter_size_scale": backbone.scaling.filter_size_scale,
            "resample_alpha": backbone.scaling.resample_alpha, "block_repeats": backbone.scaling.block_repeats,
            "flavor": backbone.flavor}


def backbone_on_meta(arch: Any, **overrides: Any):
    """A ResNet-family SpineNet backbone built from ``arch`` (``block_specs``) on the meta device (for MAC counts)."""
    from ..profile import on_meta
    from ..registry import create_model

    return on_meta(lambda: create_model("spinenet49", block_specs=arch, **overrides))


def recipe_value(recipe: Recipe, key: str, default: Any = None) -> Any:
    """A recipe setting by its override name (``model.max_level``, ``eval_image_size``, ``steps``); ``default``
    where the recipe leaves it unset (``None``)."""
    from ..engine.config import resolve_key

    value = recipe.get(resolve_key(recipe.task, key))
    return default if value is None else value


def recipe_dict(recipe: Recipe) -> dict[str, Any]:
    """The fully resolved recipe as JSON-ready data."""
    return recipe.to_dict()


def build_task(task: str, model: str, data: str, val_data: str | None):
    from ..tasks import get_task

    return get_task(task, model=model, data=data, val_data=val_data)


def open_dataset(task: str, path: str, classes: Sequence[str], recipe: Recipe):
    """An evaluation set of ``task`` (``trees:osbs``, ``fashion-mnist:test:500``) with the training classes."""
    if task == "detection":
        from ..data import dataset_from_path

        kwargs: dict[str, Any] = {}
        data = recipe.data
        tile = data.tile_size if data.val_tile_size is None else data.val_tile_size
        if path.startswith("trees:yell") and tile:
            kwargs["tile_size"] = int(tile)
        return dataset_from_path(path, **kwargs)
    from ..data.classification import classification_dataset_from_path

    return classification_dataset_from_path(path, list(classes))


def model_cost(task: str, model: Any, image_size: int) -> dict[str, int]:
    """Parameters and multiply-adds (backbone, and backbone + head) of a trained model at ``image_size``."""
    from ..profile import count_macs, count_params

    backbone = model.backbone
    whole = model.macs_module() if task == "detection" else model
    return {"params": count_params(model), "backbone_macs": count_macs(backbone, image_size),
            "macs": count_macs(whole, image_size)}


def train(task_name: str, model: str, data: str, val_data: str | None, recipe: Recipe, out: Path,
          extra_eval: dict[str, str], device: str | None, resume: bool) -> dict[str, Any]:
    """Train (or continue from ``out/checkpoints/last.pt`` when ``resume``) and evaluate; returns metrics keyed
    ``<set label>/<metric>`` (the validation set under ``val``), the cost and the step it resumed from."""
    import torch

    from ..engine.trainer import Trainer

    task = build_task(task_name, model, data, val_data)
    trainer = Trainer(task, recipe, out, device=device, resume=resume, progress=False)
    resumed_from = 0
    if resume:
        from ..engine.checkpoint import load_checkpoint

        resumed_from = int(load_checkpoint(trainer.last, map_location="cpu")["step"])
    metrics = trainer.fit()
    if trainer.step != recipe.schedule.steps:
        raise RuntimeError(f"{out}: training stopped at step {trainer.step} of {recipe.schedule.steps}")
    result: dict[str, Any] = {f"val/{k}": float(v) for k, v in metrics.items()}
    model_eval = trainer.eval_model
    model_eval.eval()
    from ..engine.trainer import autocast_context

    for label, path in extra_eval.items():
        dataset = open_dataset(task_name, path, list(trainer.train_set.classes), recipe)
        with torch.no_grad(), autocast_context(trainer.device, recipe.optim.precision):
            extra = task.evaluate(model_eval, dataset, trainer.device, recipe)
        result.update({f"{label}/{k}": float(v) for k, v in extra.items()})
    cost = model_cost(task_name, trainer.model_core, recipe.data.image_size)
    return {"metrics": result, **cost, "resumed_from_step": resumed_from}
