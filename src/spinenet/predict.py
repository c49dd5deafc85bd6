"""Drawing detections on images (PIL)."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image, ImageDraw

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, names: Sequence[str],
                    colors: dict[str, tuple[int, int, int]] | None = None) -> Image.Image:
    """uint8 [3,H,W] image + xyxy pixel boxes -> a PIL image with labelled rectangles."""
    pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    draw = ImageDraw.Draw(pil)
    colors = dict(colors or {})
    for box, score, name in zip(boxes.tolist(), scores.tolist(), names):
        color = colors.setdefault(name, PALETTE[len(colors) % len(PALETTE)])
        draw.rectangle(box, outline=color, width=2)
        draw.text((box[0] + 2, box[1] + 1), f"{name} {score:.2f}", fill=color)
    return pil
