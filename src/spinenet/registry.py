"""One registry of named models: every backbone and task model under one unique name, with its task.

``create_model(name, *, weights=None, **overrides)`` builds any of them (fresh, or from a ``spinenet-weights/1``
file), ``list_models(pattern=None, task=None)`` lists them. Tasks: ``backbone``, ``retinanet``, ``maskrcnn``,
``classification``, ``segmentation`` (``detection`` selects RetinaNet and Mask R-CNN together). Names: a
backbone keeps its own name (``spinenet49``); a task model carries its task as a prefix
(``retinanet_spinenet49``, ``maskrcnn_spinenet49``, ``classifier_spinenet49``, ``segmenter_spinenet49``).

The rows themselves live with their models (:mod:`spinenet.backbones`, :mod:`spinenet.models`); this module reads
them into one name space (duplicates raise) and dispatches on the entry's task, never on a name.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from .backbone import SpineNet
from .backbones import (BN_DEFAULTS, SCALING_FIELDS, ModelDef, Table, backbone_from_json, build_from_config,
                        config_to_json, create_backbone, get_model_def, list_backbones, register_backbone,
                        resolve_config)
from .models.base import set_weights_loader
from .weights import load_model, read_weights

__all__ = ["BN_DEFAULTS", "SCALING_FIELDS", "TASKS", "ModelDef", "ModelEntry", "Table", "build_from_config",
           "canonical_name", "config_to_json", "create_model", "get_entry", "get_model_def", "list_models", "load_weights",
           "model_from_config", "register", "register_model", "resolve_config"]

TASKS = ("backbone", "retinanet", "maskrcnn", "classification", "segmentation")
# Task names accepted where a task is asked for, and the registry tasks they stand for.
TASK_ALIASES: dict[str, tuple[str, ...]] = {"detection": ("retinanet", "maskrcnn")}


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its unique ``name``, ``task``, backbone name, default input side, one-line description,
    ``build(name, **overrides)`` (fresh weights) and the ``model_class`` whose contract
    (:mod:`spinenet.models.base`) loads, rebuilds and exports it."""

    name: str
    task: str
    backbone: str
    default_size: int
    description: str
    build: Callable[..., nn.Module]
    model_class: type


_TASK_ENTRIES: dict[str, ModelEntry] = {}
_TABLES_READ = False


def register(defn: ModelDef) -> ModelDef:
    """Register a backbone row (``ValueError`` if the name is taken by any model)."""
    if defn.name in _task_entries():
        raise ValueError(f"model {defn.name!r} is already registered")
    return register_backbone(defn)


def register_model(entry: ModelEntry) -> ModelEntry:
    """Register a task model (``ValueError`` if the name is taken by any model or the task is unknown)."""
    if entry.task not in TASKS:
        raise ValueError(f"register_model({entry.name!r}): task {entry.task!r} is not one of {TASKS}")
    if entry.name in _task_entries() or entry.name in list_backbones():
        raise ValueError(f"model {entry.name!r} is already registered")
    _TASK_ENTRIES[entry.name] = entry
    return entry


def _task_entries() -> dict[str, ModelEntry]:
    """The task models' rows, read from their model modules on first use (keeps ``import spinenet`` light)."""
    global _TABLES_READ
    if not _TABLES_READ:
        _TABLES_READ = True
        from .models import classification, detection, maskrcnn, segmentation

        tables = [(detection._DETECTORS, detection.create_detector, {"retinanet": detection.SpineNetRetinaNet,
                                                                      "maskrcnn": maskrcnn.SpineNetMaskRCNN}),
                  (classification._CLASSIFIERS, classification.create_classifier,
                   {"classification": classification.SpineNetClassifier}),
                  (segmentation._SEGMENTERS, segmentation.create_segmenter,
                   {"segmentation": segmentation.SpineNetSegmenter})]
        rows = []
        for table, build, classes in tables:
            for defn in table.rows.values():
                size = getattr(defn, "image_size", None) or get_model_def(defn.backbone).default_size
                rows.append(ModelEntry(defn.name, defn.task, defn.backbone, size, defn.description, build,
                                       classes[defn.task]))
        for entry in sorted(rows, key=lambda e: TASKS.index(e.task)):  # stable: table order within a task
            register_model(entry)
    return _TASK_ENTRIES


def _backbone_entry(name: str) -> ModelEntry:
    d = get_model_def(name)
    return ModelEntry(d.name, "backbone", d.name, d.default_size, d.description, create_backbone, SpineNet)


def _tasks(task: str | None) -> tuple[str, ...]:
    if task is None:
        return TASKS
    if task in TASKS:
        return (task,)
    if task in TASK_ALIASES:
        return TASK_ALIASES[task]
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS} (or {', '.join(TASK_ALIASES)})")


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered names, backbones first (ResNet family, smallest first), then RetinaNet, Mask R-CNN, classifier
    and segmenter rows; filtered by a shell-style ``pattern`` (``"*mobile*"``) and a ``task``."""
    tasks = _tasks(task)
    names = list_backbones() if "backbone" in tasks else []
    if tasks != ("backbone",):
        names += [n for n, e in _task_entries().items() if e.task in tasks]
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def canonical_name(name: str, task: str) -> str:
    """Today's name of ``name`` for a model of ``task`` (a classifier or segmenter name of the 0.1.0 release, i.e.
    its backbone's name, becomes ``classifier_*`` / ``segmenter_*``); any other name is returned as is."""
    for entry in _task_entries().values():
        if entry.task in _tasks(task):
            legacy = getattr(entry.model_class, "legacy_names", {})
            if name in legacy:
                return legacy[name]
    return name


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name`` (``ValueError`` naming close matches otherwise)."""
    entries = _task_entries()
    if name in entries:
        return entries[name]
    if name in list_backbones():
        return _backbone_entry(name)
    known = list_models()
    close = [n for n in known if name.lower() in n] or difflib.get_close_matches(name.lower(), known, n=4)
    hint = f" Did you mean {close[:6]}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} See spinenet.list_models() or `spinenet list`") from None


def create_model(name: str, *, weights: str | os.PathLike | None = None, **overrides: Any) -> nn.Module:
    """Build any registered model: a SpineNet backbone (paper section 3; scaling rules section 3.4), a RetinaNet
    (section 4.1), a Mask R-CNN (section 5.4), a classifier (section 4.2) or a segmenter.

    ``overrides`` go to the entry's builder: for a backbone ``flavor`` ("tpu": the TF1 code behind the paper's
    checkpoints, default for ResNet blocks; "model_garden": TF2 Model Garden), ``min_level``/``max_level``,
    ``activation`` (relu|swish|hard_swish), ``stochastic_depth_rate``, ``bn_eps``, ``bn_momentum`` (PyTorch
    convention: 1 - TF momentum), every scaling field (``filter_size_scale``, ``endpoints_num_filters``,
    ``resample_alpha``, ``block_repeats``; mobile also ``se_ratio``, ``expand_ratio``) and ``block_specs`` (an
    :class:`~spinenet.specs.Architecture`, a path to a ``spinenet-arch/1`` file, a mapping or a list of
    ``(level, block_fn, input_offsets, is_output)``); task models add ``num_classes``, ``image_size`` and their
    head settings (:func:`spinenet.models.create_detector`, ``create_classifier``, ``create_segmenter``).

    ``weights``: a ``spinenet-weights/1`` safetensors file (``spinenet convert``,
    :func:`spinenet.weights.save_weights`).
    A file of the model's task rebuilds the saved model (another ``num_classes`` re-initialises the class
    predictor); any other file seeds the backbone. Overrides that would change the saved tensors' meaning raise
    ``ValueError`` (:mod:`spinenet.weights`); the load report is on ``model.weights_report``.
    """
    entry = get_entry(name)
    if weights is not None:
        return load_model(entry, weights, **overrides)
    return entry.build(name, **overrides)


def load_weights(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """The model a weights file holds, built by the name saved in it: ``create_model(<its name>, weights=path)``."""
    wf = read_weights(path)
    classes = {e.task: e.model_class for e in _task_entries().values()}
    migrate = getattr(classes.get(wf.task), "migrate_config", None)
    name = (migrate(wf.config) if migrate else wf.config)["name"]
    return create_model(name, weights=path, **overrides)


def model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild (fresh weights) the model a JSON configuration describes: a task model's ``model.to_config()`` or
    a checkpoint's ``model_config`` (by its ``"format"``), or a backbone's configuration."""
    if not isinstance(config, Mapping):
        raise ValueError(f"model config: expected a mapping, got {type(config).__name__}")
    if "format" not in config and "architecture" in config:
        return backbone_from_json(config)
    by_format = {e.model_class.config_format: e.model_class for e in _task_entries().values()}
    cls = by_format.get(config.get("format"))
    if cls is None:
        raise ValueError(f"model config: field 'format' is {config.get('format')!r}; expected one of "
                         f"{sorted(by_format)} (or a backbone configuration)")
    return cls.from_config(config)


set_weights_loader(create_model)
