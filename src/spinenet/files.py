"""Writing result files: JSON that is valid JSON, written atomically with the mode the umask gives.

Python's ``json`` writes ``NaN`` and ``Infinity`` for non-finite floats, which JSON does not allow (``jq``,
JavaScript and most parsers reject the file). A metric that cannot be computed (COCO AP on a set without
ground truth, a loss that diverged) is written as ``null`` instead. Pure Python, at the bottom of the layering,
so every writer of metrics (engine, tasks, CLI, search) uses it; :func:`write_atomic` also writes the weights files
and checkpoints.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["json_safe", "write_atomic", "write_json"]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) replaced by ``None``, through dicts, lists and tuples;
    numbers with ``item()`` (numpy / torch scalars) become Python numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike[str], value: Any, indent: int | None = 2) -> Path:
    """Write ``json_safe(value)`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    text = json.dumps(json_safe(value), indent=indent, allow_nan=False) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Write ``path`` through ``write(temporary path)`` on a temporary file beside it, then rename that over
    ``path``: a reader sees the old file or the complete new one, never a part. The temporary file is removed
    when ``write`` fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
