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

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .catalog import open_dataset, register_dataset
from .images import read_image_float
from .nuclei import HALVES, nuclei_half

__all__ = ["NucleiSegmentation", "otsu_threshold", "percentile_normalize", "read_image_float",
           "segmentation_dataset_from_path", "segmentation_train_transform"]


class NucleiSegmentation(Dataset):
    """One half of the stardist nuclei image as a 2-class semantic mask (nucleus = any instance id > 0)."""

    classes = ["background", "nucleus"]

    def __init__(self, half: str) -> None:
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


@register_dataset("nuclei", "segmentation", splits=HALVES, syntax="nuclei:left|right|top|bottom",
                  source="the stardist package's data/images/ folder (pip install --no-deps stardist==0.9.2)")
def _open_nuclei(half: str, split: str | None, **kwargs: Any) -> NucleiSegmentation:
    if kwargs:
        raise ValueError(f"nuclei:{half}: unknown option(s) {sorted(kwargs)} for segmentation data")
    return NucleiSegmentation(half)


def segmentation_dataset_from_path(spec: str | os.PathLike[str]) -> Dataset:
    """A dataset from a spec (module docstring; :func:`spinenet.data.catalog.open_dataset`)."""
    return open_dataset(spec, "segmentation")


# ------------------------------------------------------------------------------------------------ normalisation
def percentile_normalize(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Per-image contrast normalisation: the ``low`` / ``high`` percentiles (0-100) of all of the image's values
    map to 0 / 1, and the result is clipped to [0, 1].

    Fluorescence intensities depend on staining and exposure, and a few saturated objects can sit far above the
    rest (the stardist image's left half has several). Mapping each image by its own percentiles and clipping
    the outliers gives the network one intensity range in training and evaluation (README, nuclei)."""
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentile normalisation needs 0 <= low < high <= 100, got low={low}, high={high}")
    values = image.detach().float().reshape(-1)
    if values.numel() > 1 << 24:  # torch.quantile's input limit: a strided subsample estimates them as well
        values = values[:: values.numel() // (1 << 24) + 1]
    lo, hi = torch.quantile(values, torch.tensor([low / 100.0, high / 100.0])).tolist()
    return ((image.float() - lo) / max(hi - lo, 1e-12)).clamp_(0.0, 1.0)


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
                                 rot90: bool = False, input_scale: float = 1.0, ignore_index: int = 255,
                                 percentiles: tuple[float, float] | None = None, gain: float = 1.0,
                                 gamma: float = 1.0, gain_grid: int = 1):
    """``(image, mask, generator) -> (image, mask)``: optional :func:`percentile_normalize` of the whole image
    (``percentiles = (low, high)``), rescale by ``input_scale * s`` (``s`` uniform in ``scale``), a random
    ``size x size`` crop (padded with ``ignore_index`` where the image is smaller), flips and optional quarter
    turns; then, when ``gain > 1`` / ``gamma > 1``, an intensity change of the crop: ``clip(crop * g, 0, 1) ** y``
    with ``y`` log-uniform in ``[1/gamma, gamma]`` and ``g`` a gain field: log-uniform in ``[1/gain, gain]`` at
    each point of a ``gain_grid x gain_grid`` grid spread over the crop, interpolated bilinearly in log space
    (``gain_grid = 1``: one gain for the whole crop). Brighter or dimmer staining, saturated objects, and with a
    grid, objects much brighter than their neighbours (dividing cells)."""
    if gain < 1.0 or gamma < 1.0:
        raise ValueError(f"intensity augmentation: gain and gamma are factors >= 1 (1 = off), got {gain}, {gamma}")
    if isinstance(gain_grid, bool) or not isinstance(gain_grid, int) or gain_grid < 1:
        raise ValueError(f"intensity augmentation: gain_grid must be an integer >= 1, got {gain_grid!r}")

    def transform(image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator):
        if percentiles is not None:
            image = percentile_normalize(image, *percentiles)
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
        if gain > 1.0 or gamma > 1.0:  # drawn only when enabled, so other recipes keep their random stream
            u = 2 * torch.rand(1 + gain_grid ** 2, generator=generator) - 1  # uniform in [-1, 1]
            log_gain = math.log(gain) * u[1:].reshape(1, 1, gain_grid, gain_grid)
            if gain_grid > 1:  # grid points at the crop's corners and evenly between them
                log_gain = F.interpolate(log_gain, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=True)
            image = (image * log_gain[0].exp()).clamp(0.0, 1.0) ** (gamma ** float(u[0]))
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
