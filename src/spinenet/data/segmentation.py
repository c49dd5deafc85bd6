"""Semantic-segmentation data: the stardist nuclei halves as foreground/background masks, crop augmentation, and
the Otsu threshold baseline the segmenter is measured against.

Datasets yield ``(float image [3, H, W] in [0, 1], int64 mask [H, W])`` (mask: class ids, 255 = unlabelled) and
expose ``classes`` and ``name``. Path specs (:func:`segmentation_dataset_from_path`):

* ``nuclei:left`` / ``nuclei:right`` / ``nuclei:top`` / ``nuclei:bottom``: one half of the stardist nucleus image
  (:mod:`spinenet.data.nuclei`; 256 x 512 or 512 x 256 pixels), classes ``background`` / ``nucleus``. A dataset
  holds that one image: training draws random crops from it (:func:`segmentation_train_transform`), evaluation
  runs on the whole half.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["NucleiSegmentation", "otsu_threshold", "read_image_float", "segmentation_dataset_from_path",
           "segmentation_train_transform"]


class NucleiSegmentation(Dataset):
    """One half of the stardist nuclei image as a 2-class semantic mask (nucleus = any instance id > 0)."""

    classes = ["background", "nucleus"]

    def __init__(self, half: str) -> None:
        from .nuclei import nuclei_half

        image, instances = nuclei_half(half)
        self.half = half
        self.name = f"nuclei:{half}"
        self.image = torch.from_numpy(np.array(image, dtype=np.float32))  # [H, W] in [0, 1], a writable copy
        self.mask = torch.from_numpy((np.asarray(instances) > 0).astype(np.int64))
        self.stats = {"images": 1}

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index not in (0, -1):
            raise IndexError(f"{self.name} holds one image; index {index} is out of range")
        return self.image.expand(3, -1, -1), self.mask


def segmentation_dataset_from_path(spec: str | os.PathLike[str]) -> Dataset:
    """A dataset from a path spec (module docstring)."""
    text = str(spec)
    if text.startswith("nuclei:"):
        return NucleiSegmentation(text.split(":", 1)[1])
    raise ValueError(f"{text!r}: unsupported segmentation data; give nuclei:left|right|top|bottom")


def read_image_float(path: str | os.PathLike[str]) -> torch.Tensor:
    """An image file as float ``[3, H, W]`` in [0, 1]: 8-bit images divided by 255, 16/32-bit greyscale (e.g.
    fluorescence TIFFs) divided by their own maximum, as :func:`spinenet.data.nuclei.load_nuclei` does."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            array = np.asarray(img).astype(np.float32)
            array = array / max(float(array.max()), 1e-12)
            return torch.from_numpy(array).expand(3, -1, -1).contiguous()
        array = np.asarray(img.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


# ------------------------------------------------------------------------------------------------- augmentation
def rescale(image: torch.Tensor, mask: torch.Tensor | None, factor: float):
    """Resize a float image (bilinear) and its mask (nearest) by ``factor``."""
    if factor == 1.0:
        return image, mask
    h, w = image.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                          antialias=factor < 1)[0]
    if mask is not None:
        # "nearest-exact" samples at pixel centres like the bilinear image resize ("nearest" is shifted)
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    return image, mask


def segmentation_train_transform(size: int, scale: tuple[float, float], hflip: float, vflip: float = 0.0,
                                 rot90: bool = False, input_scale: float = 1.0, ignore_index: int = 255):
    """``(image, mask, generator) -> (image, mask)``: rescale by ``input_scale * s`` (``s`` uniform in ``scale``),
    a random ``size x size`` crop (padded with ``ignore_index`` where the image is smaller), flips and optional
    quarter turns."""

    def transform(image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator):
        r = torch.rand(6, generator=generator).tolist()
        image, mask = rescale(image, mask, input_scale * (scale[0] + (scale[1] - scale[0]) * r[0]))
        h, w = image.shape[-2:]
        if h < size or w < size:
            ph, pw = max(size - h, 0), max(size - w, 0)
            image = F.pad(image, (0, pw, 0, ph))
            mask = F.pad(mask, (0, pw, 0, ph), value=ignore_index)
            h, w = image.shape[-2:]
        y, x = int(r[1] * (h - size + 1)), int(r[2] * (w - size + 1))
        image, mask = image[:, y:y + size, x:x + size], mask[y:y + size, x:x + size]
        if r[3] < hflip:
            image, mask = image.flip(-1), mask.flip(-1)
        if r[4] < vflip:
            image, mask = image.flip(-2), mask.flip(-2)
        if rot90:
            k = int(r[5] * 4)
            image, mask = image.rot90(k, (-2, -1)), mask.rot90(k, (-2, -1))
        return image.contiguous(), mask.contiguous()

    return transform


# ----------------------------------------------------------------------------------------------- Otsu baseline
def otsu_threshold(values: Any, bins: int = 256) -> float:
    """Otsu's threshold (1979): the cut of a ``bins``-bin histogram that maximises the between-class variance
    ``w0 * w1 * (mu0 - mu1)^2``; returns the value at the upper edge of the last bin of the lower class."""
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    p = hist / hist.sum()
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)  # weight of the class at or below bin i
    m0 = np.cumsum(p * centers)  # its unnormalised mean
    total = m0[-1]
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    return float(edges[int(np.argmax(between)) + 1])
