"""One registry of named models: ``create_model(name, **overrides)`` and ``list_models(pattern)``."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from typing import Any

import torch

from .backbone import SpineNet, init_weights
from .graph import resolve
from .specs import FLAVORS, MOBILE_SCALING_MAP, SCALING_MAP, Architecture, Scaling, as_architecture, default_architecture

# PyTorch BN momentum = 1 - TF momentum. TF1 (tpu) RetinaNet/backbone default 0.997 / 1e-4; Model Garden 0.99 / 1e-3.
BN_DEFAULTS = {"tpu": (1e-4, 0.003), "model_garden": (1e-3, 0.01)}


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


_REGISTRY: dict[str, ModelDef] = {}


class Table:
    """A named table of frozen definitions (detectors, classifiers, segmenters): register once, list, look up."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rows: dict[str, Any] = {}

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


def register(defn: ModelDef) -> ModelDef:
    if defn.name in _REGISTRY:
        raise ValueError(f"model {defn.name!r} is already registered")
    _REGISTRY[defn.name] = defn
    return defn


for _id, _size in (("49S", 640), ("49", 640), ("96", 1024), ("143", 1280), ("143L", 1280), ("190", 1280)):
    register(ModelDef(f"spinenet{_id.lower()}", "resnet", SCALING_MAP[_id], _size,
                      description=f"SpineNet-{_id} (ResNet blocks)"))
for _id, _size in (("49", 384), ("49S", 384), ("49XS", 256)):
    register(ModelDef(f"spinenet_mobile{_id.lower()}", "mobile", MOBILE_SCALING_MAP[_id], _size,
                      flavor="model_garden", activation="swish", description=f"SpineNet-Mobile-{_id} (MBConv + SE)"))


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, optionally filtered by a shell-style pattern (``"spinenet_mobile*"``)."""
    names = sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].family != "resnet", _REGISTRY[n].scaling.block_repeats,
                                             _REGISTRY[n].scaling.filter_size_scale, n))
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_model_def(name: str) -> ModelDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = fnmatch.filter(_REGISTRY, f"*{name.lower()}*")
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Known: {', '.join(list_models())}") from None


SCALING_FIELDS = ("endpoints_num_filters", "filter_size_scale", "resample_alpha", "block_repeats", "se_ratio",
                  "expand_ratio")


def resolve_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The full configuration of ``name`` with ``overrides`` applied (what the model is built from)."""
    defn = get_model_def(name)
    known = set(SCALING_FIELDS) | {"flavor", "min_level", "max_level", "activation", "stochastic_depth_rate",
                                   "bn_eps", "bn_momentum", "block_specs"}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"create_model({name!r}): unknown override(s) {sorted(unknown)}; known: {sorted(known)}")
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


def create_model(name: str, *, weights: str | None = None, **overrides: Any) -> SpineNet:
    """Build a registered SpineNet backbone (paper section 3; scaling rules section 3.4).

    Overrides: ``flavor`` ("tpu": the TF1 code behind the paper's checkpoints, default for ResNet blocks;
    "model_garden": TF2 Model Garden), ``min_level``/``max_level``, ``activation`` (relu|swish|hard_swish),
    ``stochastic_depth_rate``, ``bn_eps``, ``bn_momentum`` (PyTorch convention: 1 - TF momentum), every scaling
    field (``filter_size_scale``, ``endpoints_num_filters``, ``resample_alpha``, ``block_repeats``; mobile also
    ``se_ratio``, ``expand_ratio``) and ``block_specs`` (an :class:`~spinenet.specs.Architecture`, a path to a
    ``spinenet-arch/1`` file, a mapping or a list of ``(level, block_fn, input_offsets, is_output)``).

    ``weights``: a ``spinenet-weights/1`` safetensors file (``spinenet convert``; a backbone, detector or classifier
    file, whose backbone is taken): the model is rebuilt from the configuration saved in it and loaded; overrides
    that would change the saved tensors' meaning raise ``ValueError`` (see :mod:`spinenet.convert.weights`).
    """
    if weights is not None:
        from .convert.weights import load_backbone

        return load_backbone(name, weights, **overrides)
    return build_from_config(resolve_config(name, **overrides))


def config_to_json(cfg: dict[str, Any]) -> dict[str, Any]:
    """A JSON-serialisable copy of a resolved configuration (architecture and scaling as dicts)."""
    out = dict(cfg)
    arch: Architecture = out.pop("architecture")
    out["architecture"] = arch.to_dict()
    out["scaling"] = out["scaling"].to_dict()
    return out
