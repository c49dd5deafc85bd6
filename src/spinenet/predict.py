"""Drawing detections on images: :func:`spinenet.visualize.draw_detections` (torchvision, the package palette).

``draw_detections`` here keeps the signature of the 0.1.0 release (scores before names, a ``PIL.Image`` back) for
one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch

from .visualize import MASK_ALPHA, palette

__all__ = ["MASK_ALPHA", "PALETTE", "draw_detections"]

PALETTE = palette(10)  # the first colours of the package palette (spinenet.visualize.color)


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, names: Sequence[str],
                    colors: dict[str, tuple[int, int, int]] | None = None, masks: torch.Tensor | None = None):
    """Deprecated: :func:`spinenet.visualize.draw_detections` (class ids pick the colours; a tensor comes back).
    Here each distinct name gets a palette colour in order of appearance; the result is a ``PIL.Image``."""
    from PIL import Image

    from .visualize import draw_detections as draw

    warnings.warn("spinenet.predict.draw_detections is deprecated; use spinenet.visualize.draw_detections "
                  "(image, boxes, class_ids, names, scores, masks)", DeprecationWarning, stacklevel=2)
    if colors:
        raise ValueError("draw_detections: colors= is gone; boxes take the package palette by class id "
                         "(spinenet.visualize.draw_detections)")
    order = list(dict.fromkeys(names))
    drawn = draw(image, boxes, [order.index(n) for n in names], names, scores, masks)
    return Image.fromarray(drawn.permute(1, 2, 0).numpy())
