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
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .catalog import open_dataset, register_dataset
from .images import read_image_float
from .nuclei import HALVES, nuclei_half
from .transforms import GeneratorTransform

__all__ = ["IntensityJitter", "NucleiSegmentation", "SegmentationCrop", "otsu_threshold", "percentile_normalize",
           "read_image_float", "rescale", "segmentation_dataset_from_path", "segmentation_train_transform"]


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
def _scaled_size(height: int, width: int, factor: float) -> list[int]:
    return [max(1, round(height * factor)), max(1, round(width * factor))]


def _rescale(inpt: Any, factor: float) -> Any:
    """v2's resize by ``factor`` of an image (bilinear, antialiased when shrinking) or a ``tv_tensors.Mask``
    (nearest with pixel-centre sampling, ``NEAREST_EXACT``, which lines the mask up with the bilinear image;
    plain ``NEAREST`` is shifted)."""
    if factor == 1.0:
        return inpt
    size = _scaled_size(*inpt.shape[-2:], factor)
    if isinstance(inpt, tv_tensors.Mask):
        return TF.resize(inpt, size, interpolation=v2.InterpolationMode.NEAREST_EXACT)
    return TF.resize(inpt, size, antialias=factor < 1)


def rescale(image: torch.Tensor, mask: torch.Tensor | None, factor: float):
    """Resize a float image (bilinear) and its mask (nearest, pixel centres) by ``factor``."""
    image = _rescale(tv_tensors.Image(image), factor).as_subclass(torch.Tensor)
    if mask is not None:
        mask = _rescale(tv_tensors.Mask(mask), factor).as_subclass(torch.Tensor)
    return image, mask


class SegmentationCrop(GeneratorTransform):
    """Rescale by ``input_scale * s`` (``s`` uniform in ``scale``), pad to at least ``size`` (the image with 0, the
    mask with ``ignore_index``), a random ``size x size`` crop, flips and optional quarter turns, applied alike to
    a ``tv_tensors.Image`` and its ``tv_tensors.Mask`` with v2's kernels. The six parameters are drawn at once
    from ``generator`` (scale, crop y, crop x, horizontal flip, vertical flip, quarter turns)."""

    _transformed_types = (tv_tensors.Image, tv_tensors.Mask)

    def __init__(self, size: int, scale: tuple[float, float], hflip: float, vflip: float = 0.0, rot90: bool = False,
                 input_scale: float = 1.0, ignore_index: int = 255,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.size, self.scale, self.hflip, self.vflip, self.rot90 = size, scale, hflip, vflip, rot90
        self.input_scale, self.ignore_index = input_scale, ignore_index

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        r = torch.rand(6, generator=self.generator).tolist()
        factor = self.input_scale * (self.scale[0] + (self.scale[1] - self.scale[0]) * r[0])
        h, w = v2.query_size(flat_inputs)
        if factor != 1.0:
            h, w = _scaled_size(h, w, factor)
        padding = [0, 0, max(self.size - w, 0), max(self.size - h, 0)]
        h, w = h + padding[3], w + padding[2]
        return {"factor": factor, "padding": padding, "top": int(r[1] * (h - self.size + 1)),
                "left": int(r[2] * (w - self.size + 1)), "hflip": r[3] < self.hflip, "vflip": r[4] < self.vflip,
                "turns": int(r[5] * 4) if self.rot90 else 0}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        is_mask = isinstance(inpt, tv_tensors.Mask)
        inpt = _rescale(inpt, params["factor"])
        if any(params["padding"]):
            inpt = TF.pad(inpt, params["padding"], fill=self.ignore_index if is_mask else 0)
        inpt = TF.crop(inpt, params["top"], params["left"], self.size, self.size)
        if params["hflip"]:
            inpt = TF.horizontal_flip(inpt)
        if params["vflip"]:
            inpt = TF.vertical_flip(inpt)
        if params["turns"]:  # v2's rotate resamples through a grid; a quarter turn is exact
            inpt = tv_tensors.wrap(inpt.rot90(params["turns"], (-2, -1)), like=inpt)
        return inpt


class IntensityJitter(GeneratorTransform):
    """``clip(image * g, 0, 1) ** y`` on a float image in [0, 1] (masks untouched): ``y`` log-uniform in
    ``[1/gamma, gamma]``, ``g`` a gain field, log-uniform in ``[1/gain, gain]`` at each point of a
    ``gain_grid x gain_grid`` grid spread over the image (its corners and evenly between), interpolated
    bilinearly in log space (``gain_grid = 1``: one gain). ``1 + gain_grid**2`` uniform draws from ``generator``."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, gain: float, gamma: float, gain_grid: int = 1,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.gain, self.gamma, self.gain_grid = gain, gamma, gain_grid

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"u": 2 * torch.rand(1 + self.gain_grid ** 2, generator=self.generator) - 1}  # uniform in [-1, 1]

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        u, grid = params["u"], self.gain_grid
        log_gain = math.log(self.gain) * u[1:].reshape(1, 1, grid, grid)
        if grid > 1:
            log_gain = F.interpolate(log_gain, size=tuple(inpt.shape[-2:]), mode="bilinear", align_corners=True)
        image = inpt.as_subclass(torch.Tensor)
        return tv_tensors.wrap((image * log_gain[0].exp()).clamp(0.0, 1.0) ** (self.gamma ** float(u[0])), like=inpt)


def segmentation_train_transform(size: int, scale: tuple[float, float], hflip: float, vflip: float = 0.0,
                                 rot90: bool = False, input_scale: float = 1.0, ignore_index: int = 255,
                                 percentiles: tuple[float, float] | None = None, gain: float = 1.0,
                                 gamma: float = 1.0, gain_grid: int = 1):
    """``(image, mask, generator) -> (image, mask)``: optional :func:`percentile_normalize` of the whole image
    (``percentiles = (low, high)``), then :class:`SegmentationCrop` (rescale, pad, ``size x size`` crop, flips,
    quarter turns) and, when ``gain > 1`` / ``gamma > 1``, :class:`IntensityJitter` of the crop: brighter or dimmer
    staining, saturated objects, and with a grid, objects much brighter than their neighbours (dividing cells).
    Both steps draw from ``generator``; the intensity step only joins when enabled, so other recipes keep their
    random stream."""
    if gain < 1.0 or gamma < 1.0:
        raise ValueError(f"intensity augmentation: gain and gamma are factors >= 1 (1 = off), got {gain}, {gamma}")
    if isinstance(gain_grid, bool) or not isinstance(gain_grid, int) or gain_grid < 1:
        raise ValueError(f"intensity augmentation: gain_grid must be an integer >= 1, got {gain_grid!r}")

    def transform(image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator):
        if percentiles is not None:
            image = percentile_normalize(image, *percentiles)
        steps = [SegmentationCrop(size, scale, hflip, vflip, rot90, input_scale, ignore_index, generator)]
        if gain > 1.0 or gamma > 1.0:
            steps.append(IntensityJitter(gain, gamma, gain_grid, generator))
        image, mask = v2.Compose(steps)(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor).contiguous(), mask.as_subclass(torch.Tensor).contiguous()

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
