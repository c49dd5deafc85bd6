"""SpineNet weight files: safetensors whose metadata holds the full resolved model configuration.

A weights file (``spinenet-weights/1``) stores a model's state dict plus, in the safetensors metadata,

* ``format`` -- ``spinenet-weights/1``;
* ``task`` -- ``backbone``, ``retinanet``, ``maskrcnn`` or ``classification``;
* ``config`` -- JSON of ``model.config``: for a backbone the resolved configuration (architecture file, scaling,
  flavour, activation, BN eps/momentum, levels); for a detector or classifier its builder config, which nests the
  backbone's and adds head geometry, anchors, classes and class names;
* ``provenance`` -- JSON: where the tensors came from (source checkpoint, preset, match report counts).

So ``create_model(name, weights=PATH)``, ``create_detector(name, weights=PATH)`` and
``create_classifier(name, weights=PATH)`` rebuild exactly the model that was saved, custom widths included.
They also take what fine-tuning needs: another ``num_classes`` (backbone and towers kept, class predictor
re-initialised and reported), or just the backbone out of a detector or classifier file. Anything that would
change a saved tensor's meaning (activation, BN epsilon, scaling, flavour, head geometry) must match the file, or
a ``ValueError`` says which field differs.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

WEIGHTS_FORMAT = "spinenet-weights/1"
TASKS = ("backbone", "retinanet", "maskrcnn", "classification")
# Backbone overrides that only matter for training; a weights file may be rebuilt with other values.
TRAINING_ONLY = ("stochastic_depth_rate", "bn_momentum")
log = logging.getLogger("spinenet")


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
        return dict(self.config if self.task == "backbone" else self.config["backbone"])

    def backbone_state(self) -> dict[str, torch.Tensor]:
        if self.task == "backbone":
            return dict(self.state)
        return {k[len("backbone."):]: v for k, v in self.state.items() if k.startswith("backbone.")}


# ------------------------------------------------------------------------------------------------------ files
def model_task(model: nn.Module) -> str:
    from ..backbone import SpineNet

    if isinstance(model, SpineNet):
        return "backbone"
    fmt = getattr(model, "config", {}).get("format", "")
    if fmt.startswith("spinenet-detector/"):
        return "retinanet"
    if fmt.startswith("spinenet-classifier/"):
        return "classification"
    if fmt.startswith("spinenet-maskrcnn/"):
        return "maskrcnn"
    raise ValueError(f"cannot save a {type(model).__name__}: expected a SpineNet backbone, detector or classifier")


def model_config_json(model: nn.Module) -> dict[str, Any]:
    from ..registry import config_to_json

    if model_task(model) == "backbone":
        return config_to_json(model.config)
    return json.loads(json.dumps(model.config))


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def save_weights(model: nn.Module, path: str | os.PathLike, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s state dict and full configuration to a safetensors file, atomically (temp + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": WEIGHTS_FORMAT, "task": model_task(model), "config": json.dumps(model_config_json(model)),
                "provenance": json.dumps(dict(provenance or {}))}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(state, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates its files 0600; give the mode open() would
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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


def backbone_overrides(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``create_model`` overrides that rebuild the backbone described by a JSON backbone config."""
    from ..specs import Architecture

    out = {k: cfg[k] for k in ("flavor", "min_level", "max_level", "activation", "stochastic_depth_rate", "bn_eps",
                               "bn_momentum")}
    out["block_specs"] = Architecture.from_dict(cfg["architecture"], source="weights file: backbone.architecture")
    out.update(cfg["scaling"])
    return out


def _check_backbone(cfg: Mapping[str, Any], name: str, overrides: Mapping[str, Any], path: Path, what: str) -> None:
    """Refuse a backbone name or override that disagrees with the file (training-only settings may differ)."""
    from ..specs import as_architecture

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


def load_backbone(name: str, path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """``create_model(name, weights=path)``: the backbone of any weights file (backbone, detector, classifier)."""
    from ..registry import create_model

    wf = read_weights(path)
    cfg = wf.backbone_config()
    _check_backbone(cfg, name, overrides, wf.path, f"create_model({name!r}, weights=...)")
    model = create_model(name, **{**backbone_overrides(cfg), **{k: v for k, v in overrides.items() if v is not None}})
    return _attach(model, _with_head_unused(load_state(model, wf.backbone_state(), wf.path), wf))


def _with_head_unused(report: LoadReport, wf: WeightsFile) -> LoadReport:
    """Name the file's non-backbone tensors (a detector's or classifier's head) as unused."""
    if wf.task != "backbone":
        report.unused += [k for k in wf.state if not k.startswith("backbone.")]
    return report


def _split_detector_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from ..models.detection import CONFIG_SECTIONS, HEAD_OVERRIDES

    head = {k: overrides.pop(k) for k in list(overrides) if k in HEAD_OVERRIDES}
    # post-processing, loss and matching settings touch no tensor: a saved detector takes other values
    free = {k: overrides.pop(k) for k in list(overrides) if any(k in keys for keys in CONFIG_SECTIONS.values())}
    return head, free, overrides


def load_detector(name: str, path: str | os.PathLike, num_classes: int | None = None, image_size: int | None = None,
                  **overrides: Any) -> nn.Module:
    """``create_detector(name, weights=path, ...)``.

    From a detector file: the same detector (another ``num_classes`` re-initialises the class predictor only).
    From a backbone or classifier file: the detector with that backbone and a fresh head.
    """
    from ..models.detection import CONFIG_SECTIONS, create_detector, create_detector_from_config, get_detector_def

    what = f"create_detector({name!r}, weights=...)"
    wf = read_weights(path)
    if wf.task == "maskrcnn":
        return _load_maskrcnn(name, wf, num_classes, image_size, overrides, what)
    defn = get_detector_def(name)
    head_opts, free_opts, backbone_opts = _split_detector_overrides({k: v for k, v in overrides.items()
                                                                     if v is not None})
    backbone_cfg = wf.backbone_config()
    _check_backbone(backbone_cfg, defn.backbone, backbone_opts, wf.path, what)
    if wf.task != "retinanet":
        model = create_detector(name, num_classes=91 if num_classes is None else num_classes, image_size=image_size,
                                **head_opts, **free_opts,
                                **{**backbone_overrides(backbone_cfg), **backbone_opts})
        state = {f"backbone.{k}": v for k, v in wf.backbone_state().items()}
        return _attach(model, _with_head_unused(load_state(model, state, wf.path, fresh=("head.",)), wf))
    config = json.loads(json.dumps(wf.config))
    if config["name"] != name:
        raise ValueError(f"{what}: {wf.path} holds a {config['name']!r} detector; build that name, or pass a "
                         "backbone-only file to seed another detector")
    saved_head = {"head_convs": config["head"]["num_convs"], "head_width": config["head"]["num_filters"],
                  "anchor_size": config["anchors"]["anchor_size"]}
    for key, value in head_opts.items():
        if value != saved_head[key]:
            raise ValueError(f"{what}: {wf.path} was saved with {key}={saved_head[key]!r}; you asked for {value!r}")
    for key in TRAINING_ONLY:
        if backbone_opts.get(key) is not None:
            config["backbone"][key] = backbone_opts[key]
            if key == "bn_momentum":
                config["head"]["bn_momentum"] = backbone_opts[key]
    for key, value in free_opts.items():
        section = next(name for name, keys in CONFIG_SECTIONS.items() if key in keys)
        config.setdefault(section, {})[key] = value  # files saved before "matching" existed lack that section
    if image_size is not None:
        config["image_size"] = image_size
    reinit: tuple[str, ...] = ()
    if num_classes is not None and num_classes != config["num_classes"]:
        config["num_classes"] = num_classes
        config.pop("class_names", None)
        reinit = ("head.classifier.",)
    model = create_detector_from_config(config)  # a re-initialised predictor keeps the official prior-0.01 init
    return _attach(model, load_state(model, wf.state, wf.path, reinit=reinit))


def _load_maskrcnn(name: str, wf: WeightsFile, num_classes: int | None, image_size: int | None,
                   overrides: Mapping[str, Any], what: str) -> nn.Module:
    """A Mask R-CNN file rebuilds exactly the saved Mask R-CNN (``spinenet convert --task maskrcnn``); another
    class count or head geometry is not supported yet (seed a new model from the backbone instead)."""
    from ..models.detection import create_detector_from_config

    config = json.loads(json.dumps(wf.config))
    if config["name"] != name:
        raise ValueError(f"{what}: {wf.path} holds a {config['name']!r} Mask R-CNN; build that name")
    if num_classes is not None and num_classes != config["num_classes"]:
        raise ValueError(f"{what}: {wf.path} has {config['num_classes']} classes; loading a Mask R-CNN file with "
                         f"another num_classes ({num_classes}) is not supported yet")
    extra = {k: v for k, v in overrides.items() if v is not None and k not in TRAINING_ONLY}
    if extra:
        raise ValueError(f"{what}: {wf.path} fixes the whole Mask R-CNN configuration; drop {sorted(extra)}")
    if overrides.get("bn_momentum") is not None:
        config["backbone"]["bn_momentum"] = config["heads"]["bn_momentum"] = overrides["bn_momentum"]
    if image_size is not None:
        config["image_size"] = image_size
    model = create_detector_from_config(config)
    return _attach(model, load_state(model, wf.state, wf.path))


def load_classifier(name: str, path: str | os.PathLike, num_classes: int | None = None,
                    class_names: list[str] | None = None, **kwargs: Any) -> nn.Module:
    """``create_classifier(name, weights=path, ...)``: the same classifier (another ``num_classes`` re-initialises
    the dense layer), or a fresh head on the backbone of a backbone or detector file."""
    from ..models.classification import create_classifier, create_classifier_from_config

    what = f"create_classifier({name!r}, weights=...)"
    wf = read_weights(path)
    head_keys = ("dropout", "label_smoothing", "normalize", "image_size")
    head_opts = {k: kwargs.pop(k) for k in list(kwargs) if k in head_keys}
    backbone_cfg = wf.backbone_config()
    from ..models.classification import get_classifier_def

    _check_backbone(backbone_cfg, get_classifier_def(name).backbone, kwargs, wf.path, what)
    if wf.task != "classification":
        model = create_classifier(name, 1001 if num_classes is None else num_classes, class_names=class_names,
                                  **head_opts, **{**backbone_overrides(backbone_cfg), **kwargs})
        state = {f"backbone.{k}": v for k, v in wf.backbone_state().items()}
        return _attach(model, _with_head_unused(load_state(model, state, wf.path, fresh=("head.",)), wf))
    config = json.loads(json.dumps(wf.config))
    if config["name"] != name:
        raise ValueError(f"{what}: {wf.path} holds a {config['name']!r} classifier; build that name instead")
    for key in TRAINING_ONLY:
        if kwargs.get(key) is not None:
            config["backbone"][key] = kwargs[key]
    if "normalize" in head_opts:
        from ..models.classification import normalize_json

        head_opts["normalize"] = normalize_json(head_opts["normalize"])
    config.update(head_opts)
    reinit: tuple[str, ...] = ()
    if num_classes is not None and num_classes != config["num_classes"]:
        config["num_classes"] = num_classes
        config["class_names"] = None
        reinit = ("head.fc.",)
    if class_names is not None:
        if len(class_names) != config["num_classes"]:
            raise ValueError(f"{what}: class_names has {len(class_names)} entries, num_classes is "
                             f"{config['num_classes']}")
        config["class_names"] = [str(n) for n in class_names]
    model = create_classifier_from_config(config)
    return _attach(model, load_state(model, wf.state, wf.path, reinit=reinit))


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Initialise an already built ``model`` from a weights file, for fine-tuning (the engine's ``init_weights``).

    The backbone must match exactly (same configuration, ``ValueError`` naming the differing field otherwise);
    a detector/classifier head is taken from a file of the same task where shapes agree, predictors with another
    class count are re-initialised, and heads absent from the file (backbone files) keep their initialisation.
    """
    wf = read_weights(path)
    task = model_task(model)
    if task == "backbone":
        _check_backbone(wf.backbone_config(), model.config["name"], _backbone_settings(model.config), wf.path,
                        "init_weights")
        return _with_head_unused(load_state(model, wf.backbone_state(), wf.path), wf)
    mine = json.loads(json.dumps(model.config))
    _check_backbone(wf.backbone_config(), mine["backbone"]["name"], _backbone_settings(mine["backbone"]), wf.path,
                    "init_weights")
    if wf.task == task:
        if task == "retinanet":
            for key in ("num_convs", "num_filters", "separable"):
                if mine["head"][key] != wf.config["head"][key]:
                    raise ValueError(f"init_weights: {wf.path} has head {key}={wf.config['head'][key]!r}, the model "
                                     f"{mine['head'][key]!r}; set model.head_convs/model.head_width to match")
            reinit = ("head.classifier.",)
        else:
            reinit = ("head.fc.",)
        return load_state(model, wf.state, wf.path, reinit=reinit, fresh=reinit)
    state = {f"backbone.{k}": v for k, v in wf.backbone_state().items()}
    return _with_head_unused(load_state(model, state, wf.path, fresh=("head.",)), wf)


def _backbone_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The tensor-relevant settings of a JSON backbone config, as overrides to compare against a file."""
    out = {k: cfg[k] for k in ("flavor", "min_level", "max_level", "activation", "bn_eps")}
    out.update(cfg["scaling"])
    out["block_specs"] = cfg["architecture"]
    return out
