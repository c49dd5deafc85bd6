"""The registered SpineNet backbones (data) and how a backbone configuration resolves, serialises and builds.

One row per member of the family (paper section 3.4: 49S/49/96/143/143L/190; Model Garden's mobile 49/49S/49XS).
:func:`resolve_config` turns a name and overrides into the full configuration a backbone is built from,
:func:`config_to_json` / :func:`backbone_from_json` round-trip it through the JSON that task configs and weights
files nest under ``"backbone"``. Task models build their backbone here; :mod:`spinenet.registry` lists these rows
beside the task models under one name space.
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch

from .backbone import SpineNet, init_weights
from .graph import resolve
from .specs import FLAVORS, MOBILE_SCALING_MAP, SCALING_MAP, Architecture, Scaling, as_architecture, default_architecture

# PyTorch BN momentum = 1 - TF momentum. TF1 (tpu) RetinaNet/backbone default 0.997 / 1e-4; Model Garden 0.99 / 1e-3.
BN_DEFAULTS = {"tpu": (1e-4, 0.003), "model_garden": (1e-3, 0.01)}
SCALING_FIELDS = ("endpoints_num_filters", "filter_size_scale", "resample_alpha", "block_repeats", "se_ratio",
                  "expand_ratio")
# Every override a backbone takes (``create_model(name, **overrides)``).
BACKBONE_OVERRIDES = SCALING_FIELDS + ("flavor", "min_level", "max_level", "activation", "stochastic_depth_rate",
                                       "bn_eps", "bn_momentum", "block_specs")
# Backbone settings that only matter for training; a saved backbone may be rebuilt with other values.
TRAINING_ONLY = ("stochastic_depth_rate", "bn_momentum")


@dataclass(frozen=True)
class ModelDef:
    """A registered backbone: family, scaling and the defaults that differ between families."""

    name: str
    family: str
    scaling: Scaling
    default_size: int
    flavor: str = "tpu"
    activation: str = "relu"
    description: str = ""


class Table:
    """A named table of frozen definitions (one task's variants): register once, list, look up. ``legacy`` maps
    names of an earlier release to today's (:meth:`current_name`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rows: dict[str, Any] = {}
        self.legacy: dict[str, str] = {}

    def register(self, defn: Any) -> Any:
        if defn.name in self.rows:
            raise ValueError(f"{self.kind} {defn.name!r} is already registered")
        get_model_def(defn.backbone)  # fail at import time on a backbone typo
        self.rows[defn.name] = defn
        return defn

    def names(self, pattern: str | None = None) -> list[str]:
        """Names in table order, optionally filtered by a shell-style pattern."""
        return [n for n in self.rows if pattern is None or fnmatch.fnmatch(n, pattern)]

    def get(self, name: str) -> Any:
        try:
            return self.rows[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def current_name(self, name: str) -> str:
        """``name``, or today's name for a name of an earlier release (with a ``DeprecationWarning`` pointing at
        the caller of the builder that asked)."""
        if name in self.legacy and name not in self.rows:
            warnings.warn(f"{self.kind} name {name!r} is deprecated; use {self.legacy[name]!r} (the registry's "
                          "unique name); the old name is kept for one release", DeprecationWarning, stacklevel=3)
            return self.legacy[name]
        return name


_BACKBONES: dict[str, ModelDef] = {}


def register_backbone(defn: ModelDef) -> ModelDef:
    if defn.name in _BACKBONES:
        raise ValueError(f"model {defn.name!r} is already registered")
    _BACKBONES[defn.name] = defn
    return defn


for _id, _size in (("49S", 640), ("49", 640), ("96", 1024), ("143", 1280), ("143L", 1280), ("190", 1280)):
    register_backbone(ModelDef(f"spinenet{_id.lower()}", "resnet", SCALING_MAP[_id], _size,
                               description=f"SpineNet-{_id} (ResNet blocks)"))
for _id, _size in (("49", 384), ("49S", 384), ("49XS", 256)):
    register_backbone(ModelDef(f"spinenet_mobile{_id.lower()}", "mobile", MOBILE_SCALING_MAP[_id], _size,
                               flavor="model_garden", activation="swish",
                               description=f"SpineNet-Mobile-{_id} (MBConv + SE)"))


def list_backbones(pattern: str | None = None) -> list[str]:
    """Backbone names, ResNet family first, smallest first; optionally filtered by a shell-style pattern."""
    names = sorted(_BACKBONES, key=lambda n: (_BACKBONES[n].family != "resnet", _BACKBONES[n].scaling.block_repeats,
                                              _BACKBONES[n].scaling.filter_size_scale, n))
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_model_def(name: str) -> ModelDef:
    """The backbone row ``name`` (``ValueError`` with close names otherwise)."""
    try:
        return _BACKBONES[name]
    except KeyError:
        close = fnmatch.filter(_BACKBONES, f"*{name.lower()}*")
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Known: {', '.join(list_backbones())}") from None


def resolve_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The full configuration of ``name`` with ``overrides`` applied (what the model is built from)."""
    defn = get_model_def(name)
    unknown = set(overrides) - set(BACKBONE_OVERRIDES)
    if unknown:
        raise ValueError(f"create_model({name!r}): unknown override(s) {sorted(unknown)}; known: "
                         f"{sorted(BACKBONE_OVERRIDES)}")
    flavor = overrides.get("flavor") or defn.flavor
    if flavor not in FLAVORS:
        raise ValueError(f"flavor={flavor!r}: expected one of {FLAVORS}")
    arch = default_architecture(defn.family, flavor)
    scaling = defn.scaling
    if overrides.get("block_specs") is not None:
        arch = as_architecture(overrides["block_specs"], defn.family)
        if arch.family != defn.family:
            raise ValueError(f"block_specs: a {arch.family!r} architecture cannot build {name} ({defn.family!r} family)")
        if arch.scaling is not None:
            scaling = arch.scaling
    scaling = replace(scaling, **{k: overrides[k] for k in SCALING_FIELDS if overrides.get(k) is not None})
    eps, momentum = BN_DEFAULTS[flavor]
    return {
        "name": name,
        "family": defn.family,
        "flavor": flavor,
        "architecture": arch,
        "scaling": scaling,
        "min_level": overrides.get("min_level") or 3,
        "max_level": overrides.get("max_level") or 7,
        "activation": overrides.get("activation") or defn.activation,
        "stochastic_depth_rate": float(overrides.get("stochastic_depth_rate") or 0.0),
        "bn_eps": overrides["bn_eps"] if overrides.get("bn_eps") is not None else eps,
        "bn_momentum": overrides["bn_momentum"] if overrides.get("bn_momentum") is not None else momentum,
    }


def build_from_config(cfg: dict[str, Any]) -> SpineNet:
    """Build on the meta device, then materialise once with the official initialisation (no double init)."""
    graph = resolve(cfg["architecture"], cfg["scaling"], cfg["flavor"], cfg["min_level"], cfg["max_level"],
                    cfg["stochastic_depth_rate"])
    device = torch.get_default_device()
    with torch.device("meta"):
        model = SpineNet(graph, cfg["activation"], cfg["bn_eps"], cfg["bn_momentum"], config=cfg)
    if device.type != "meta":
        model.to_empty(device=device)
        init_weights(model)
    return model


def create_backbone(name: str, **overrides: Any) -> SpineNet:
    """Build a registered backbone (fresh weights); :func:`spinenet.create_model` also loads weights files."""
    return build_from_config(resolve_config(name, **overrides))


def config_to_json(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-serialisable copy of a resolved configuration (architecture and scaling as dicts)."""
    out = dict(cfg)
    arch: Architecture = out.pop("architecture")
    out["architecture"] = arch.to_dict()
    out["scaling"] = out["scaling"].to_dict()
    return out


def config_from_json(data: Mapping[str, Any], source: str = "backbone config") -> dict[str, Any]:
    """The resolved configuration of a JSON backbone config (inverse of :func:`config_to_json`)."""
    cfg = dict(data)
    cfg["architecture"] = Architecture.from_dict(cfg["architecture"], source=f"{source}: architecture")
    cfg["scaling"] = Scaling(**cfg["scaling"])
    return cfg


def backbone_from_json(data: Mapping[str, Any], source: str = "backbone config") -> SpineNet:
    """Build (fresh weights) the backbone a JSON backbone config describes, e.g. a task config's ``"backbone"``."""
    return build_from_config(config_from_json(data, source))


def backbone_overrides(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``create_model`` overrides that rebuild the backbone described by a JSON backbone config."""
    out = {k: cfg[k] for k in ("flavor", "min_level", "max_level", "activation", "stochastic_depth_rate", "bn_eps",
                               "bn_momentum")}
    out["block_specs"] = Architecture.from_dict(cfg["architecture"], source="weights file: backbone.architecture")
    out.update(cfg["scaling"])
    return out


def tensor_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a JSON backbone config that give its tensors their meaning, as overrides to compare."""
    out = {k: cfg[k] for k in ("flavor", "min_level", "max_level", "activation", "bn_eps")}
    out.update(cfg["scaling"])
    out["block_specs"] = cfg["architecture"]
    return out
