"""The contract every task model honours, so that weights files, export and the registry never look at a task.

A task model (RetinaNet, Mask R-CNN, classifier, segmenter; the backbone honours the first three points too):

* declares ``task`` (``retinanet``, ``maskrcnn``, ``classification``, ``segmentation``; ``backbone``);
* round-trips its configuration through one versioned JSON: ``model.to_config()`` -> ``cls.from_config(config)``
  rebuilds the same modules (fresh weights). The JSON carries ``"format"`` (e.g. ``spinenet-detector/1``) and
  nests the backbone's configuration under ``"backbone"``; it is the ``config`` of ``spinenet-weights/1`` files
  and the ``model_config`` of training checkpoints. ``cls.migrate_config`` brings configurations written by
  earlier releases to the current form;
* says what a saved model may change when it is loaded again: ``cls.config_for_weights(saved, name=...,
  num_classes=..., **overrides)`` returns the configuration to build and the state-dict prefixes to
  re-initialise (the class predictor when the class count changes; ``reinit_on_num_classes``), and raises
  ``ValueError`` naming the field for a request the saved tensors cannot serve;
* provides its export wrapper: ``model.export_module(size, **options)``, a traceable module returning the task's
  real output at a fixed input size (``spinenet export``).

Builders accept ``weights=PATH``. Reading weights files belongs to :mod:`spinenet.weights`, one layer above the
models, which installs itself here with :func:`set_weights_loader` when it is imported (``import spinenet`` does
that), so that no model module imports anything above it.
"""

from __future__ import annotations

import json
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from ..backbone import check_input

_WEIGHTS_LOADER: Callable[..., nn.Module] | None = None


def set_weights_loader(loader: Callable[..., nn.Module]) -> None:
    """Install ``loader(name, weights, **kwargs)`` (``spinenet.create_model``) for the builders' ``weights=``."""
    global _WEIGHTS_LOADER
    _WEIGHTS_LOADER = loader


def load_weights(name: str, weights: str, **kwargs: Any) -> nn.Module:
    """``create_model(name, weights=weights, **kwargs)`` through the installed loader."""
    if _WEIGHTS_LOADER is None:  # only reachable when spinenet.models is loaded without the spinenet package
        raise RuntimeError("weights=: import spinenet first (it installs the weights-file loader)")
    return _WEIGHTS_LOADER(name, weights=weights, **kwargs)


class TaskModel:
    """Mixin with the contract's shared parts; a task model class sets the class attributes and ``from_config``."""

    task: ClassVar[str]
    config_format: ClassVar[str]
    reinit_on_num_classes: ClassVar[tuple[str, ...]] = ()
    legacy_names: ClassVar[Mapping[str, str]] = {}
    config: dict[str, Any]

    def to_config(self) -> dict[str, Any]:
        """A JSON copy of ``config`` (what weights files and checkpoints store)."""
        return json.loads(json.dumps(self.config))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def migrate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` in the current form: a name of an earlier release becomes today's (:attr:`legacy_names`)."""
        out = json.loads(json.dumps(dict(config)))
        out["name"] = cls.legacy_names.get(out.get("name"), out.get("name"))
        return out

    @classmethod
    def check_format(cls, config: Any, what: str) -> None:
        if not isinstance(config, Mapping) or config.get("format") != cls.config_format:
            found = config.get("format") if isinstance(config, Mapping) else type(config).__name__
            raise ValueError(f"{what} config: field 'format' is {found!r}; expected {cls.config_format!r}")

    def export_module(self, size: tuple[int, int], **options: Any) -> nn.Module:
        raise NotImplementedError


def training_overrides(config: dict[str, Any], overrides: Mapping[str, Any], *heads: str) -> None:
    """Apply the training-only backbone settings (stochastic depth, BN momentum) a saved model may change, to its
    ``"backbone"`` section and, for BN momentum, to the head sections named in ``heads``."""
    for key in ("stochastic_depth_rate", "bn_momentum"):
        if overrides.get(key) is not None:
            config["backbone"][key] = overrides[key]
            if key == "bn_momentum":
                for head in heads:
                    config[head]["bn_momentum"] = overrides[key]


def set_classes(config: dict[str, Any], num_classes: int | None, class_names: Sequence[str] | None,
                reinit_prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """Apply another class count and/or class names to a saved classifier or segmenter configuration; returns
    the parameter prefixes to re-initialise (``reinit_prefixes`` when the count changes, else none)."""
    reinit: tuple[str, ...] = ()
    if num_classes is not None and num_classes != config["num_classes"]:
        config["num_classes"], config["class_names"] = num_classes, None
        reinit = reinit_prefixes
    if class_names is not None:
        if len(class_names) != config["num_classes"]:
            raise ValueError(f"class_names has {len(class_names)} entries, num_classes is {config['num_classes']}")
        config["class_names"] = [str(n) for n in class_names]
    return reinit


class DenseForward(nn.Module):
    """Backbone + a detector's dense head on one tensor, what :func:`spinenet.profile.count_macs` runs: no pre- or
    post-processing, and no RoI heads (their work depends on the proposals). ``method`` names the head's call on
    the list of level features (``forward`` for torchvision's RPN head, ``forward_levels`` for RetinaNet's)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, method: str = "forward") -> None:
        super().__init__()
        self.backbone, self.head, self.method = backbone, head, method

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return getattr(self.head, self.method)(list(self.backbone(x).values()))


class LogitsExport(nn.Module):
    """A classifier or segmenter on a fixed-size ``[N, 3, H, W]`` RGB batch in [0, 1], returning its logits
    (``[N, num_classes]``, or ``[N, num_classes, H, W]`` at the input size)."""

    output_names = ["logits"]

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.size = model, tuple(size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_input(images, self.size)
        return self.model(images)
