"""Real fluorescence nuclei, read from the files the ``stardist`` package ships.

``stardist==0.9.2`` (installed with ``--no-deps``; never imported here, only its ``data/images`` folder is read)
carries one 512 x 512 16-bit fluorescence image of cell nuclei (``img2d.tif``) with its instance mask
(``mask2d.tif``: 0 = background, 1..N = nucleus id; 125 nuclei). Both the semantic-segmentation task
(foreground / background) and the instance-mask task (Mask R-CNN) read it through this module, so the halves
used for training and evaluation are defined once:

* ``left`` / ``right``: columns ``[0, 256)`` / ``[256, 512)``; ``top`` / ``bottom``: rows likewise.
  A nucleus cut by the split line keeps only the part on each side (the cut pieces stay instances of their own).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from .images import read_pixels

HALVES = ("left", "right", "top", "bottom")


def nuclei_data_dir() -> Path:
    """The stardist package's ``data/images`` folder, located without importing stardist."""
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the nuclei data comes from the stardist package's data files: install it with "
            "`pip install --no-deps stardist==0.9.2` (it is read, never imported)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


def _read_tif(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall `pip install --no-deps stardist==0.9.2`")
    return read_pixels(path)  # 16-bit greyscale ("I;16"): the stored values, PIL reads it without tifffile


@lru_cache(maxsize=1)
def load_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """``(image, instances)``: the image as float32 scaled to [0, 1] by its own maximum, and the int32 instance
    mask (0 = background, ids 1..N), both ``[512, 512]``. Cached per process; treat the arrays as read-only."""
    folder = nuclei_data_dir()
    image = _read_tif(folder / "img2d.tif").astype(np.float32)
    instances = _read_tif(folder / "mask2d.tif").astype(np.int32)
    if image.shape != instances.shape:
        raise ValueError(f"{folder}: img2d.tif {image.shape} and mask2d.tif {instances.shape} differ in size")
    image /= max(float(image.max()), 1.0)
    image.setflags(write=False)
    instances.setflags(write=False)
    return image, instances


def nuclei_half(half: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``half`` (one of :data:`HALVES`) of :func:`load_nuclei`'s image and instance mask."""
    if half not in HALVES:
        raise ValueError(f"unknown nuclei half {half!r}; choose one of {', '.join(HALVES)}")
    image, instances = load_nuclei()
    h, w = image.shape
    window = {"left": (slice(None), slice(0, w // 2)), "right": (slice(None), slice(w // 2, w)),
              "top": (slice(0, h // 2), slice(None)), "bottom": (slice(h // 2, h), slice(None))}[half]
    return image[window], instances[window]


def opposite_half(half: str) -> str:
    """The half evaluated against when training on ``half`` (``left`` <-> ``right``, ``top`` <-> ``bottom``)."""
    return {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[half]
