"""Drawing detections (boxes, and Mask R-CNN instance masks) on images (PIL)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


MASK_ALPHA = 0.45  # opacity of an instance mask's fill


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, names: Sequence[str],
                    colors: dict[str, tuple[int, int, int]] | None = None,
                    masks: torch.Tensor | None = None) -> Image.Image:
    """uint8 [3,H,W] image + xyxy pixel boxes -> a PIL image with labelled rectangles.

    ``masks`` (``[K, H, W]`` or ``[K, 1, H, W]``, 0/1 or probabilities thresholded at 0.5) are filled in each
    instance's own colour (cycling through :data:`PALETTE`) at :data:`MASK_ALPHA` under the boxes.
    """
    array = image.permute(1, 2, 0).cpu().numpy()
    if masks is not None and len(masks):
        if masks.dim() == 4:
            masks = masks[:, 0]
        canvas = array.astype(np.float32)
        for k, mask in enumerate((masks > 0.5).cpu().numpy()):
            color = np.array(PALETTE[k % len(PALETTE)], dtype=np.float32)
            canvas[mask] = (1 - MASK_ALPHA) * canvas[mask] + MASK_ALPHA * color
        array = canvas.round().clip(0, 255).astype(np.uint8)
    pil = Image.fromarray(array)
    draw = ImageDraw.Draw(pil)
    colors = dict(colors or {})
    for box, score, name in zip(boxes.tolist(), scores.tolist(), names):
        color = colors.setdefault(name, PALETTE[len(colors) % len(PALETTE)])
        draw.rectangle(box, outline=color, width=2)
        draw.text((box[0] + 2, box[1] + 1), f"{name} {score:.2f}", fill=color)
    return pil
