"""Multilevel RetinaNet anchors with the official semantics (Model Garden ``ops/anchor.py``; paper section 5.1).

For level ``l`` (stride ``2**l``), scale index ``s`` in ``0..num_scales-1`` and aspect ratio ``r`` (= width /
height) from ``aspect_ratios``:

* ``size = anchor_size * 2**l * 2**(s / num_scales)``, ``w = size * sqrt(r)``, ``h = size / sqrt(r)``;
* centre of cell ``(y, x)``: ``((y + 0.5) * 2**l, (x + 0.5) * 2**l)``; no rounding anywhere;
* anchor index ``a = s * len(aspect_ratios) + ratio_index`` (scales outer, ratios inner), the same ``a`` as in
  the head's output channels;
* flattened order: levels ``min_level..max_level``, then cells row-major ``(y, x)``, then ``a``.

Unlike torchvision's ``AnchorGenerator`` (integer sizes per level, rounded base anchors, ratios outer), this
reproduces the official boxes to float precision, which converted checkpoints need. The output follows
torchvision's convention: one ``[sum_l H_l * W_l * A, 4]`` xyxy tensor per image, in padded-input pixels.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList


class MultilevelAnchors(nn.Module):
    """Official RetinaNet anchors for levels ``min_level..max_level`` (default anchor_size 3; 4 for 143/190)."""

    def __init__(self, min_level: int = 3, max_level: int = 7, num_scales: int = 3,
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), anchor_size: float = 3.0) -> None:
        super().__init__()
        if not min_level <= max_level:
            raise ValueError(f"anchors: min_level {min_level} > max_level {max_level}")
        if num_scales < 1 or not aspect_ratios or anchor_size <= 0 or min(aspect_ratios) <= 0:
            raise ValueError("anchors: need num_scales >= 1, positive aspect_ratios and a positive anchor_size, got "
                             f"{num_scales}, {tuple(aspect_ratios)}, {anchor_size}")
        self.min_level, self.max_level = min_level, max_level
        self.num_scales = num_scales
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.anchor_size = float(anchor_size)
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def levels(self) -> list[int]:
        return list(range(self.min_level, self.max_level + 1))

    @property
    def num_anchors(self) -> int:
        return self.num_scales * len(self.aspect_ratios)

    def num_anchors_per_location(self) -> list[int]:
        """torchvision's ``AnchorGenerator`` interface: anchors per cell, per level."""
        return [self.num_anchors] * len(self.levels)

    def cell_offsets(self, level: int) -> list[tuple[float, float, float, float]]:
        """The ``A`` anchors of one cell relative to its centre, (-w/2, -h/2, w/2, h/2), in float64 maths."""
        stride = 2.0 ** level
        out = []
        for s in range(self.num_scales):
            size = self.anchor_size * stride * 2.0 ** (s / self.num_scales)
            for r in self.aspect_ratios:
                half_w, half_h = size * math.sqrt(r) / 2.0, size / math.sqrt(r) / 2.0
                out.append((-half_w, -half_h, half_w, half_h))
        return out

    def level_anchors(self, level: int, height: int, width: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[height * width * A, 4]`` xyxy anchors of one level with a ``height x width`` feature grid."""
        key = (level, height, width, str(device), dtype)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        stride = 2.0 ** level
        # float64 on the CPU (not every accelerator has float64), cast once at the end
        ys = (torch.arange(height, dtype=torch.float64, device="cpu") + 0.5) * stride
        xs = (torch.arange(width, dtype=torch.float64, device="cpu") + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)  # [HW, 1, 4]
        offsets = torch.tensor(self.cell_offsets(level), dtype=torch.float64, device="cpu")  # [A, 4]
        anchors = (centres + offsets).reshape(-1, 4).to(device=device, dtype=dtype)
        if device is None or torch.device(device).type != "meta":
            self._cache[key] = anchors
        return anchors

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Anchors of the padded batch, one (identical) tensor per image, as torchvision's RetinaNet expects."""
        if len(feature_maps) != len(self.levels):
            raise ValueError(f"anchors: got {len(feature_maps)} feature maps for levels {self.levels}")
        ref = feature_maps[0]
        # at least float32 even under autocast: fp16 cannot hold 1280-pixel coordinates to 1 px
        dtype = torch.promote_types(ref.dtype, torch.float32)
        per_level = [self.level_anchors(level, f.shape[-2], f.shape[-1], ref.device, dtype)
                     for level, f in zip(self.levels, feature_maps)]
        anchors = torch.cat(per_level)
        return [anchors for _ in range(len(image_list.image_sizes))]

    def extra_repr(self) -> str:
        return (f"levels={self.min_level}..{self.max_level}, num_scales={self.num_scales}, "
                f"aspect_ratios={self.aspect_ratios}, anchor_size={self.anchor_size}")
