"""``torch.hub`` entry points: every model of ``spinenet.list_models()`` under its registry name.

    model = torch.hub.load("path/to/spinenet-torch", "retinanet_spinenet49", source="local", num_classes=3)
    model = torch.hub.load("path/to/spinenet-torch", "spinenet49", source="local", weights="spinenet49.safetensors")

Each entry is ``spinenet.create_model(name, weights=None, **overrides)``; nothing is downloaded (``weights`` is a
local ``spinenet-weights/1`` file, e.g. from ``spinenet convert``). Only entry points are public names here
(``torch.hub.list`` lists every public callable).
"""

from __future__ import annotations

import sys as _sys
import typing as _t
from pathlib import Path as _Path

dependencies = ["torch", "torchvision", "safetensors"]

_SRC = str(_Path(__file__).resolve().parent / "src")
if _SRC not in _sys.path:  # the package lives under src/ in the checkout
    _sys.path.insert(0, _SRC)

from spinenet.registry import create_model as _create_model  # noqa: E402
from spinenet.registry import get_entry as _get_entry  # noqa: E402
from spinenet.registry import list_models as _list_models  # noqa: E402


def _entry(name: str) -> _t.Callable[..., _t.Any]:
    def build(*, weights: str | None = None, **overrides: _t.Any):
        return _create_model(name, weights=weights, **overrides)

    entry = _get_entry(name)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"{entry.description} ({entry.task}; default input {entry.default_size}). "
                     f"spinenet.create_model({name!r}, weights=None, **overrides).")
    return build


for _name in _list_models():
    globals()[_name] = _entry(_name)
del _name
