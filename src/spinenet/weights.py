"""SpineNet weights files: safetensors whose metadata holds the model's full configuration (``spinenet-weights/1``).

A weights file stores a model's state dict plus, in the safetensors metadata,

* ``format`` -- ``spinenet-weights/1``;
* ``task`` -- the model's declared task: ``backbone``, ``retinanet``, ``maskrcnn``, ``classification`` or
  ``segmentation``;
* ``config`` -- the model's versioned JSON configuration (``model.to_config()``): for a backbone its resolved
  configuration (architecture, scaling, flavour, activation, BN epsilon/momentum, levels); for a task model its
  builder configuration, which nests the backbone's under ``"backbone"``;
* ``provenance`` -- JSON: where the tensors came from (source checkpoint, preset, match report counts).

So ``create_model(name, weights=PATH)`` rebuilds exactly the model that was saved, custom widths included, and
takes what fine-tuning needs: another ``num_classes`` (the class predictor named by the model is re-initialised
and reported), or just the backbone out of any file. Anything that would change a saved tensor's meaning
(activation, BN epsilon, scaling, flavour, head geometry) must match the file, or a ``ValueError`` says which
field differs. This module reads and writes files for every model through the model contract
(:mod:`spinenet.models.base`): it knows the backbone's configuration, never a task's.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn

from .backbones import BACKBONE_OVERRIDES, TRAINING_ONLY, backbone_overrides, tensor_settings
from .files import write_atomic
from .specs import as_architecture

WEIGHTS_FORMAT = "spinenet-weights/1"
TASKS = ("backbone", "retinanet", "maskrcnn", "classification", "segmentation")
log = logging.getLogger("spinenet")


class Entry(Protocol):
    """What loading needs of a registry entry: its name, task, backbone name, builder and model class."""

    name: str
    task: str
    backbone: str
    build: Callable[..., nn.Module]
    model_class: type


@dataclass
class LoadReport:
    """What loading a weights file into a model did (printed by the CLI, kept on ``model.weights_report``)."""

    path: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # in the file with another shape (predictors)
    fresh: list[str] = field(default_factory=list)  # not in the file (e.g. a head when seeding from a backbone)
    unused: list[str] = field(default_factory=list)  # in the file, not in the model (e.g. a detector's head)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors from {self.path}"]
        if self.reinitialised:
            parts.append(f"re-initialised {len(self.reinitialised)} (another shape in the file): "
                         + ", ".join(self.reinitialised[:6]))
        if self.fresh:
            parts.append(f"{len(self.fresh)} freshly initialised (not in the file), e.g. {', '.join(self.fresh[:3])}")
        if self.unused:
            parts.append(f"{len(self.unused)} file tensors unused, e.g. {', '.join(self.unused[:3])}")
        return "; ".join(parts)


@dataclass
class WeightsFile:
    """A parsed weights file: ``task``, ``config`` (JSON form), ``state`` and ``provenance``."""

    path: Path
    task: str
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    provenance: dict[str, Any]

    def backbone_config(self) -> dict[str, Any]:
        """The JSON configuration of the file's backbone (a task model nests it under ``"backbone"``)."""
        return dict(self.config if self.task == "backbone" else self.config["backbone"])

    def backbone_state(self) -> dict[str, torch.Tensor]:
        if self.task == "backbone":
            return dict(self.state)
        return {k[len("backbone."):]: v for k, v in self.state.items() if k.startswith("backbone.")}


# ------------------------------------------------------------------------------------------------------ files
def model_task(model: nn.Module) -> str:
    """The task ``model`` declares (``ValueError`` for a module outside the model contract)."""
    task = getattr(model, "task", None)
    if task not in TASKS or not hasattr(model, "to_config"):
        raise ValueError(f"cannot save a {type(model).__name__}: expected a model built by spinenet.create_model "
                         f"(one of the tasks {TASKS})")
    return task


def model_config_json(model: nn.Module) -> dict[str, Any]:
    """``model.to_config()``: the JSON a weights file stores."""
    model_task(model)
    return model.to_config()


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def save_weights(model: nn.Module, path: str | os.PathLike, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s state dict and full configuration to a safetensors file, atomically (temp + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": WEIGHTS_FORMAT, "task": model_task(model), "config": json.dumps(model.to_config()),
                "provenance": json.dumps(dict(provenance or {}))}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}

    def write(tmp: Path) -> None:
        save_file(state, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates its files 0600; give the mode open() would

    return write_atomic(path, write)


def read_weights(path: str | os.PathLike) -> WeightsFile:
    """Parse a ``spinenet-weights/1`` safetensors file (``FileNotFoundError`` / ``ValueError`` naming the file)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (convert one with `spinenet convert`)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types for foreign or truncated files
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: metadata field 'format' is {metadata.get('format')!r}, expected {WEIGHTS_FORMAT!r}; "
                         "only files written by `spinenet convert` / save_weights carry the model configuration")
    task = metadata.get("task")
    if task not in TASKS:
        raise ValueError(f"{path}: metadata field 'task' is {task!r}; expected one of {TASKS}")
    try:
        config = json.loads(metadata["config"])
        provenance = json.loads(metadata.get("provenance") or "{}")
    except (KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: metadata field 'config' is missing or not JSON ({err})") from None
    return WeightsFile(path, task, config, state, provenance)


# -------------------------------------------------------------------------------------------------- loading
def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike, *,
               reinit: tuple[str, ...] = (), fresh: tuple[str, ...] = ()) -> LoadReport:
    """Copy ``state`` into ``model``, all or nothing.

    Entries under a prefix in ``reinit`` may have another shape in the file (they keep their fresh
    initialisation); entries under a prefix in ``fresh`` may be absent. Any other absent or differently shaped
    tensor raises ``ValueError`` and leaves ``model`` unchanged.
    """
    report = LoadReport(str(path))
    own = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, target in own.items():
        src = state.get(key)
        if src is None:
            if key.startswith(fresh) or key.endswith("num_batches_tracked"):
                report.fresh.append(key)
            else:
                problems.append(f"missing {key}")
            continue
        if tuple(src.shape) != tuple(target.shape):
            if key.startswith(reinit):
                report.reinitialised.append(key)
            else:
                problems.append(f"{key}: {tuple(src.shape)} in the file, {tuple(target.shape)} in the model")
            continue
        new[key] = src.to(dtype=target.dtype, device=target.device)
        report.loaded.append(key)
    if problems:
        raise ValueError(f"{path}: cannot load into {type(model).__name__} ({len(problems)} problems: "
                         f"{'; '.join(problems[:5])}); nothing was loaded")
    report.unused = [k for k in state if k not in own]
    model.load_state_dict({**own, **new})
    return report


def _attach(model: nn.Module, report: LoadReport) -> nn.Module:
    model.weights_report = report
    log.info(report.summary())
    return model


def check_backbone(cfg: Mapping[str, Any], name: str, overrides: Mapping[str, Any], path: Path, what: str) -> None:
    """Refuse a backbone name or override that disagrees with the file (training-only settings may differ)."""
    if cfg.get("name") != name:
        raise ValueError(f"{what}: {path} holds a {cfg.get('name')!r} backbone, not {name!r}; build "
                         f"{cfg.get('name')!r} or convert the checkpoint for {name!r}")
    for key, value in overrides.items():
        if key in TRAINING_ONLY or value is None:
            continue
        if key == "block_specs":
            saved = cfg["architecture"]
            mine = as_architecture(value, cfg["family"]).to_dict()
            if mine != saved:
                raise ValueError(f"{what}: block_specs differ from the architecture saved in {path}")
            continue
        saved = cfg["scaling"].get(key) if key in cfg["scaling"] else cfg.get(key, "<absent>")
        if saved == "<absent>":
            raise ValueError(f"{what}: unknown override {key!r}")
        if saved != value:
            raise ValueError(f"{what}: {path} was saved with {key}={saved!r}, the model asks for {key}={value!r}. "
                             f"Build with {key}={saved!r} (the weights only fit that) or convert again")


def _backbone_prefix(model: nn.Module) -> str:
    """Where the backbone's tensors sit in ``model``'s state dict (task models hold it as ``model.backbone``)."""
    return "" if model_task(model) == "backbone" else "backbone."


def _seed_backbone(model: nn.Module, wf: WeightsFile) -> LoadReport:
    """Load the file's backbone into ``model``'s; everything else keeps its initialisation and is reported."""
    prefix = _backbone_prefix(model)
    state = {prefix + k: v for k, v in wf.backbone_state().items()}
    fresh = tuple(k for k in model.state_dict() if not k.startswith(prefix)) if prefix else ()
    report = load_state(model, state, wf.path, fresh=fresh)
    if wf.task != "backbone":  # the file's own head
        report.unused += [k for k in wf.state if not k.startswith("backbone.")]
    return report


def load_model(entry: Entry, path: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """``create_model(entry.name, weights=path, **kwargs)``.

    From a file of the entry's task: the saved model, with the changes its class allows
    (``config_for_weights``: e.g. another ``num_classes`` re-initialises the class predictor). From a file of any
    other task: the model ``entry`` builds, its backbone loaded from the file's and the rest freshly initialised.
    """
    what = f"create_model({entry.name!r}, weights=...)"
    wf = read_weights(path)
    overrides = {k: v for k, v in kwargs.items() if v is not None}
    check_backbone(wf.backbone_config(), entry.backbone,
                   {k: v for k, v in overrides.items() if k in BACKBONE_OVERRIDES}, wf.path, what)
    cls = entry.model_class
    if wf.task == entry.task and hasattr(cls, "config_for_weights"):
        saved = cls.migrate_config(wf.config)
        if saved.get("name") != entry.name:
            raise ValueError(f"{what}: {wf.path} holds a {saved.get('name')!r} {wf.task} model; build that name, "
                             "or pass a backbone-only file to seed another model")
        try:
            config, reinit = cls.config_for_weights(saved, **overrides)
        except ValueError as err:
            raise ValueError(f"{what}: {wf.path}: {err}") from None
        model = cls.from_config(config)  # a re-initialised predictor keeps its builder's initialisation
        return _attach(model, load_state(model, wf.state, wf.path, reinit=reinit))
    model = entry.build(entry.name, **{**backbone_overrides(wf.backbone_config()), **overrides})
    return _attach(model, _seed_backbone(model, wf))


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Initialise an already built ``model`` from a weights file, for fine-tuning (the engine's ``init_weights``).

    The backbone must match exactly (same configuration, ``ValueError`` naming the differing field otherwise);
    a file of the model's own task gives every tensor whose shape agrees (the class predictor the model names in
    ``reinit_on_num_classes`` may differ and keeps its initialisation); a file of another task gives the backbone.
    """
    wf = read_weights(path)
    task = model_task(model)
    backbone = model if task == "backbone" else model.backbone
    check_backbone(wf.backbone_config(), backbone.config["name"], tensor_settings(backbone.to_config()), wf.path,
                   "init_weights")
    if wf.task == task and task != "backbone":
        prefixes = tuple(type(model).reinit_on_num_classes)
        return load_state(model, wf.state, wf.path, reinit=prefixes, fresh=prefixes)
    return _seed_backbone(model, wf)
