"""Drawing predictions on images, through torchvision's ``draw_bounding_boxes`` / ``draw_segmentation_masks``.

One palette serves every task: class id ``k`` is drawn in :func:`color` ``(k)`` -- a segmentation class, a
detection box of label ``k`` -- and instance ``k`` of a Mask R-CNN image fills its mask with the same sequence, so
neighbouring instances differ. Labels are set in DejaVu Sans (the TrueType font matplotlib ships; torchvision's
default bitmap font has one fixed size) at a size proportional to the image, and box outlines thicken with it, so
a 4000 px orthophoto and a 400 px tile read alike.
"""

from __future__ import annotations

import colorsys
import functools
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["MASK_ALPHA", "color", "draw_class_map", "draw_classification", "draw_detections", "draw_overlay",
           "drawing_scale", "label_font", "label_sizes", "palette", "save_png", "segmentation_palette"]

MASK_ALPHA = 0.45  # opacity of an instance mask's fill under its box
MIN_FONT = 8  # px: the smallest label font (DejaVu Sans stays legible down to about this)
GOLDEN = 0.618033988749895


def color(index: int) -> tuple[int, int, int]:
    """The palette's colour ``index``: hues stepped by the golden ratio with two brightness levels alternating, so
    neighbouring indices never get similar colours and any number of classes stays distinct."""
    hue = (index * GOLDEN) % 1.0
    value = 0.95 if index % 2 == 0 else 0.75
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return round(r * 255), round(g * 255), round(b * 255)


def palette(num_colors: int) -> list[tuple[int, int, int]]:
    """The first ``num_colors`` colours of the palette (:func:`color`)."""
    return [color(i) for i in range(num_colors)]


def segmentation_palette(num_colors: int) -> np.ndarray:
    """The palette as a ``[num_colors, 3]`` uint8 array (row ``k``: class id ``k``)."""
    return np.asarray(palette(num_colors), dtype=np.uint8).reshape(-1, 3)


@functools.lru_cache(maxsize=1)
def label_font() -> str | None:
    """Path of DejaVu Sans (shipped with matplotlib); ``None`` if it cannot be found (torchvision then uses its
    fixed-size bitmap font)."""
    from matplotlib import font_manager

    try:
        return font_manager.findfont("DejaVu Sans", fallback_to_default=False)
    except ValueError:
        return None


def drawing_scale(height: int, width: int) -> tuple[int, int]:
    """``(font_size, line_width)`` in pixels for an image of this size: 1/40 and 1/320 of its long side (at least 8
    and 2), i.e. 10 px labels and 2 px outlines on a 400 px tile, 26 px and 3 px on 1024 px."""
    side = max(height, width)
    return max(MIN_FONT, round(side / 40)), max(2, round(side / 320))


def label_sizes(boxes: torch.Tensor, font_size: int) -> list[int]:
    """Per box the label's font size: ``font_size`` (the image's, :func:`drawing_scale`), smaller for a box less
    than 3x that high (0.35 of its height, at least 8 px), so that dense small objects (nuclei) are not buried under
    their labels."""
    heights = (boxes[:, 3] - boxes[:, 1]).tolist()
    return [min(font_size, max(MIN_FONT, round(0.35 * h))) for h in heights]


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light label backgrounds, white on dark ones (Rec. 601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _check_uint8_chw(image: torch.Tensor, what: str) -> None:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{what}: image must be a uint8 RGB tensor [3, H, W]; got {shape}")


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, class_ids: Sequence[int], names: Sequence[str],
                    scores: Sequence[float] | torch.Tensor | None = None, masks: torch.Tensor | None = None,
                    alpha: float = MASK_ALPHA) -> torch.Tensor:
    """Boxes (and Mask R-CNN instance masks) on an image: a uint8 ``[3, H, W]`` tensor.

    ``image``: uint8 ``[3, H, W]``; ``boxes``: ``[K, 4]`` xyxy pixels; ``class_ids[k]`` picks box ``k``'s colour
    (:func:`color`) and ``names[k]`` its label, followed by ``scores[k]`` when given. ``masks`` (``[K, H, W]`` or
    ``[K, 1, H, W]``, 0/1 or probabilities thresholded at 0.5) are blended first with weight ``alpha``, instance
    ``k`` in ``color(k)``. Labels sit on a filled strip in the box colour, sized by :func:`drawing_scale` and
    :func:`label_sizes`."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    _check_uint8_chw(image, "draw_detections")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).cpu()
    if not len(boxes) == len(class_ids) == len(names):
        raise ValueError(f"draw_detections: {len(boxes)} boxes, {len(class_ids)} class ids and {len(names)} names "
                         "differ")
    image = image.cpu()
    h, w = image.shape[-2:]
    if masks is not None and len(masks):
        masks = masks[:, 0] if masks.dim() == 4 else masks
        image = draw_segmentation_masks(image, masks.cpu() > 0.5, alpha=alpha, colors=palette(len(masks)))
    if not len(boxes):
        return image
    font_size, width = drawing_scale(h, w)
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    colors = [color(int(c)) for c in class_ids]
    labels = [str(n) for n in names] if scores is None else [f"{n} {float(s):.2f}" for n, s in zip(names, scores)]
    font = label_font()
    sizes = label_sizes(boxes, font_size) if font else [None] * len(boxes)
    for size in sorted(set(sizes), key=lambda v: -(v or 0)):  # one torchvision call per font size, large first
        k = [i for i, v in enumerate(sizes) if v == size]
        image = draw_bounding_boxes(image, boxes[k], [labels[i] for i in k], colors=[colors[i] for i in k],
                                    width=width, font=font, font_size=size, fill_labels=True,
                                    label_colors=[_text_color(colors[i]) for i in k])
    return image


def draw_classification(image: torch.Tensor, class_ids: Sequence[int], names: Sequence[str],
                        probabilities: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A classifier's top classes on an image: a uint8 ``[3, H, W]`` tensor.

    ``class_ids``, ``names`` and ``probabilities`` list the classes best first. The image is framed in the colour
    (:func:`color`) of the first class; from its top-left corner down, one label ``<name> <probability>`` per class
    sits on a strip in that class's colour, sized by :func:`drawing_scale`. Labels that would run past the image's
    bottom edge are left out; the first class's is always drawn."""
    from PIL import ImageFont
    from torchvision.utils import draw_bounding_boxes

    _check_uint8_chw(image, "draw_classification")
    if not len(class_ids) == len(names) == len(probabilities) or not len(class_ids):
        raise ValueError(f"draw_classification: {len(class_ids)} class ids, {len(names)} names and "
                         f"{len(probabilities)} probabilities: give the same number, at least one")
    image = image.cpu()
    h, w = image.shape[-2:]
    font_size, width = drawing_scale(h, w)
    font = label_font()
    ascent, descent = (ImageFont.truetype(font, font_size) if font else ImageFont.load_default()).getmetrics()
    pitch = ascent + descent + 2  # a label's strip: the text's height and a 1 px margin above and below
    for i, (k, name, p) in enumerate(zip(class_ids, names, [float(v) for v in probabilities])):
        top = width + i * pitch  # torchvision sets a label 1 px inside its box's outline, filled 1 px around it
        if i and top + pitch > h:
            break
        box = [0.0, 0.0, w - 1.0, h - 1.0] if i == 0 else [float(width), float(top), float(width), float(top)]
        image = draw_bounding_boxes(image, torch.tensor([box]), [f"{name} {p:.2f}"], colors=[color(int(k))],
                                    width=width if i == 0 else 0, font=font, font_size=font_size if font else None,
                                    fill_labels=True, label_colors=[_text_color(color(int(k)))])
    return image


def _image_chw(image: Any) -> torch.Tensor:
    """uint8 ``[3, H, W]`` tensor from a tensor / array in CHW or HWC layout or a PIL image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"))
    else:
        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)  # CHW (torch) -> HWC
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"draw_overlay: image must be uint8 RGB, [3, H, W] or [H, W, 3]; got {array.dtype} "
                         f"{list(array.shape)}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def draw_class_map(image: Any, mask: Any, alpha: float = 0.5, *, num_classes: int | None = None,
                   background: int | None = 0, ignore_index: int = 255) -> torch.Tensor:
    """A class mask blended over an image: uint8 ``[3, H, W]`` tensor of the image's size.

    ``image``: uint8 ``[3, H, W]`` tensor, ``[H, W, 3]`` array or a PIL image. ``mask``: ``[H, W]`` class ids
    (tensor or array). Class ``k`` is painted in :func:`color` ``(k)`` with weight ``alpha``; pixels of
    ``background`` (None: paint every class) and of ``ignore_index`` keep the image. ``num_classes`` (default
    ``max id + 1``) bounds the ids."""
    from torchvision.utils import draw_segmentation_masks

    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"draw_overlay: alpha must be in [0, 1], got {alpha}")
    chw = _image_chw(image)
    labels = torch.as_tensor(np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)).long()
    if labels.dim() == 3 and labels.shape[0] == 1:
        labels = labels[0]
    if tuple(labels.shape) != tuple(chw.shape[-2:]):
        raise ValueError(f"draw_overlay: mask {list(labels.shape)} and image {list(chw.shape[-2:])} differ in size")
    paint = (labels != ignore_index) & (labels >= 0)
    if background is not None:
        paint &= labels != background
    if not bool(paint.any()):
        return chw
    count = num_classes if num_classes is not None else int(labels[paint].max()) + 1
    if int(labels[paint].max()) >= count:
        raise ValueError(f"draw_overlay: mask has class id {int(labels[paint].max())} >= num_classes={count}")
    ids = [int(c) for c in labels[paint].unique()]
    masks = torch.stack([paint & (labels == c) for c in ids])
    return draw_segmentation_masks(chw, masks, alpha=float(alpha), colors=[color(c) for c in ids])


def draw_overlay(image_uint8: Any, mask: Any, alpha: float = 0.5, *, num_classes: int | None = None,
                 background: int | None = 0, ignore_index: int = 255):
    """:func:`draw_class_map` as an RGB ``PIL.Image``."""
    from PIL import Image

    drawn = draw_class_map(image_uint8, mask, alpha, num_classes=num_classes, background=background,
                           ignore_index=ignore_index)
    return Image.fromarray(drawn.permute(1, 2, 0).numpy())


def save_png(image: Any, path: str | os.PathLike[str]) -> Path:
    """Write a uint8 ``[3, H, W]`` / ``[H, W]`` tensor or a PIL image as a PNG, atomically (a temporary file beside
    it, then a rename); creates the folder."""
    from PIL import Image

    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        image = Image.fromarray(array.transpose(1, 2, 0) if array.ndim == 3 else array)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
