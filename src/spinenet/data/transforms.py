"""Training augmentation for detection: horizontal flip and scale jitter with a random crop (spec section 7).

The official SpineNet RetinaNet input pipeline (Model Garden / TPU ``resize_and_crop_image``, spec 7.2-7.3)
augments with a horizontal flip and *scale jitter*: draw ``s ~ U[scale_min, scale_max]``, resize the image keeping
its aspect ratio so that it fits inside ``s * output_size``, take a random ``output_size`` crop when the result is
larger, and pad on the bottom/right when it is smaller. The official pipeline pads the *normalised* image with
zeros; here images are still raw, so the padding is the ImageNet mean colour (:data:`PAD_FILL`), which the models'
normalisation turns into those zeros (a black border would be about -2 after normalisation). Boxes follow the
image, are clipped to the valid (non-padded) pixels, and boxes left with no width or height are dropped (same rule
as the datasets). The recipes use ``[0.8, 1.2]`` (protocol A), ``[0.5, 2.0]`` (protocol B, the default here) and
``[0.1, 2.0]``.

Images stay ``uint8 [3, H, W]``: normalisation and the final resize happen inside the model, and evaluation uses
no transform at all (:func:`eval_transforms` returns ``None``).

Randomness comes from a ``torch.Generator`` when one is given (bit-reproducible in a single process). Without
one, torch's global RNG is used, which ``DataLoader`` seeds differently in each worker -- prefer that with
``num_workers > 0``, since a generator object would be copied into every worker and repeat the same draws.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torchvision.transforms.v2 import functional as F

from ..constants import IMAGENET_MEAN

__all__ = [
    "PAD_FILL",
    "ColorJitter",
    "Compose",
    "RandomHorizontalFlip",
    "RandomTranspose",
    "RandomVerticalFlip",
    "ScaleJitterCrop",
    "eval_transforms",
    "filter_boxes",
    "train_transforms",
]

Target = dict[str, Any]
# Per-box entries that must follow ``boxes`` when boxes are dropped.
PER_BOX_KEYS = ("labels", "difficult", "iscrowd", "area", "masks")


def filter_boxes(target: Target, keep: torch.Tensor) -> Target:
    """Return ``target`` with boxes and every per-box entry (``labels``, ``difficult``, ...) indexed by ``keep``."""
    out = dict(target)
    out["boxes"] = target["boxes"][keep]
    for key in PER_BOX_KEYS:
        if key in target and isinstance(target[key], torch.Tensor):
            out[key] = target[key][keep]
    return out


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


class Compose:
    """Apply ``(image, target) -> (image, target)`` callables in order."""

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def _with_masks(target: Target, op: Callable[[torch.Tensor], torch.Tensor]) -> Target:
    """Apply the image's geometric ``op`` to instance masks ``[N, H, W]`` too, when the target has them."""
    if isinstance(target.get("masks"), torch.Tensor):
        target["masks"] = op(target["masks"])
    return target


class _RandomSquareSymmetry:
    """Apply one symmetry of the pixel grid (``_pixels`` on the image and masks, ``_boxes`` on ``[N, 4]`` xyxy
    boxes given ``(H, W)``) with probability ``p``. The draw happens even when ``p`` is 0 or 1, so the random
    stream does not depend on ``p``."""

    what = "flip"

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{self.what} probability must be in [0, 1], got {p}")
        self.p, self.generator = p, generator

    @staticmethod
    def _pixels(t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if float(torch.rand((), generator=self.generator)) >= self.p:
            return image, target
        boxes = self._boxes(target["boxes"].reshape(-1, 4), image.shape[-2], image.shape[-1])
        return self._pixels(image), _with_masks({**target, "boxes": boxes.reshape(-1, 4)}, self._pixels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomHorizontalFlip(_RandomSquareSymmetry):
    """Mirror the image left-right with probability ``p``; ``x1' = W - x2``, ``x2' = W - x1``."""

    @staticmethod
    def _pixels(t: torch.Tensor) -> torch.Tensor:
        return t.flip(-1)

    @staticmethod
    def _boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


class RandomVerticalFlip(_RandomSquareSymmetry):
    """Mirror the image top-bottom with probability ``p``; ``y1' = H - y2``, ``y2' = H - y1``.

    Not part of the official (street-photo) COCO pipeline; for overhead imagery (aerial, microscopy) the
    vertical direction carries no meaning, and together with :class:`RandomTranspose` and the horizontal flip
    (each at ``p = 0.5``) every one of the 8 rotations / reflections of the square is equally likely.
    """

    @staticmethod
    def _pixels(t: torch.Tensor) -> torch.Tensor:
        return t.flip(-2)

    @staticmethod
    def _boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return torch.stack([boxes[:, 0], height - boxes[:, 3], boxes[:, 2], height - boxes[:, 1]], dim=1)


class RandomTranspose(_RandomSquareSymmetry):
    """Swap the image axes (``x <-> y``) with probability ``p``; a transpose followed by a flip is a 90 degree
    rotation (see :class:`RandomVerticalFlip` for when to use it)."""

    what = "transpose"

    @staticmethod
    def _pixels(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(-2, -1).contiguous()

    @staticmethod
    def _boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return boxes[:, [1, 0, 3, 2]]


class ColorJitter:
    """Random brightness, contrast and saturation factors, each drawn from ``U[1 - strength, 1 + strength]``.

    Not in the official pipeline; it helps a detector trained on one site transfer to another (different light
    and season). ``strength = 0`` leaves the image unchanged (the draws still happen, so the random stream does
    not depend on it)."""

    def __init__(self, strength: float = 0.2, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"colour jitter strength must be in [0, 1), got {strength}")
        self.strength, self.generator = strength, generator

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        factors = [_uniform(self.generator, 1 - self.strength, 1 + self.strength) for _ in range(3)]
        if self.strength == 0.0:
            return image, target
        image = F.adjust_brightness(image, factors[0])
        image = F.adjust_contrast(image, factors[1])
        image = F.adjust_saturation(image, factors[2])
        return image, target

    def __repr__(self) -> str:
        return f"ColorJitter(strength={self.strength})"


# The mean the models normalise with (in [0, 1]; torchvision's detection transform uses the same), so padding is
# zero once normalised; uint8 images are padded with round(255 * mean).
PAD_FILL = IMAGENET_MEAN


def _pad_value(image: torch.Tensor, fill: Sequence[float]) -> torch.Tensor:
    """``fill`` (in [0, 1]) as a ``[C, 1, 1]`` tensor in ``image``'s dtype and value range."""
    if len(fill) not in (1, image.shape[0]):
        raise ValueError(f"pad fill {tuple(fill)} has {len(fill)} values for a {image.shape[0]}-channel image; "
                         "give one value or one per channel")
    values = torch.tensor(fill, dtype=torch.float64)
    if not image.is_floating_point():
        values = (values * 255).round()
    return values.to(image.dtype).view(-1, 1, 1)


class ScaleJitterCrop:
    """Scale jitter + random crop/pad to ``output_size`` (official ``resize_and_crop_image`` semantics).

    ``output_size`` is an int (square) or ``(height, width)``. The output is always exactly that size; padding
    takes ``fill`` (per channel, in [0, 1]; :data:`PAD_FILL` = the ImageNet mean, i.e. zero once normalised);
    ``target["scale"]`` records the resize factor (``(sy, sx)``) and ``target["crop_offset"]`` the crop origin
    ``(y, x)`` in the resized image, so predictions can be mapped back if needed.
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        scale_range: tuple[float, float] = (0.5, 2.0),
        generator: torch.Generator | None = None,
        fill: Sequence[float] = PAD_FILL,
    ) -> None:
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.fill = tuple(float(v) for v in fill)
        if len(self.output_size) != 2 or min(self.output_size) <= 0:
            raise ValueError(f"output_size must be a positive int or (height, width), got {output_size!r}")
        low, high = (float(v) for v in scale_range)
        if not 0.0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {scale_range!r}")
        self.scale_range, self.generator = (low, high), generator

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        out_h, out_w = self.output_size
        height, width = image.shape[-2:]
        jitter = _uniform(self.generator, *self.scale_range)
        scale = min(jitter * out_h / height, jitter * out_w / width)  # fit inside the jittered output box
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        if (new_h, new_w) != (height, width):
            image = F.resize(image, [new_h, new_w], antialias=True)
        # Integer offsets uniform over every valid crop origin; 0 when the resized image is smaller.
        off_y = int(torch.randint(0, max(new_h - out_h, 0) + 1, (), generator=self.generator))
        off_x = int(torch.randint(0, max(new_w - out_w, 0) + 1, (), generator=self.generator))
        image = image[:, off_y : off_y + out_h, off_x : off_x + out_w]
        valid_h, valid_w = image.shape[-2:]
        if (valid_h, valid_w) != (out_h, out_w):
            canvas = _pad_value(image, self.fill).expand(image.shape[0], out_h, out_w).clone()
            canvas[:, :valid_h, :valid_w] = image
            image = canvas
        if "masks" in target:  # instance masks: nearest resize, same crop and padding as the image
            masks = target["masks"]
            if masks.shape[0] and (new_h, new_w) != (height, width):
                masks = F.resize(masks, [new_h, new_w], interpolation=F.InterpolationMode.NEAREST)
            elif not masks.shape[0]:
                masks = masks.new_zeros((0, new_h, new_w))
            masks = masks[:, off_y : off_y + out_h, off_x : off_x + out_w]
            masks = torch.nn.functional.pad(masks, (0, out_w - valid_w, 0, out_h - valid_h))
            target = {**target, "masks": masks.contiguous()}

        sx, sy = new_w / width, new_h / height  # exact per-axis factors after rounding the size
        boxes = target["boxes"].to(torch.float32) * torch.tensor([sx, sy, sx, sy])
        boxes = boxes - torch.tensor([off_x, off_y, off_x, off_y], dtype=torch.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, valid_w)  # padding is not image: clip to the valid pixels
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, valid_h)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = filter_boxes({**target, "boxes": boxes}, keep)
        if "area" in target:
            b = target["boxes"]
            target["area"] = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        target["scale"] = (sy, sx)
        target["crop_offset"] = (off_y, off_x)
        return image.contiguous(), target

    def __repr__(self) -> str:
        return f"ScaleJitterCrop(output_size={self.output_size}, scale_range={self.scale_range}, fill={self.fill})"


def train_transforms(
    output_size: int | tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip_prob: float = 0.5,
    seed: int | None = None,
) -> Compose:
    """The official detection training augmentation: flip, then scale jitter + crop/pad to ``output_size``.

    ``seed`` makes the sequence of draws reproducible (one ``torch.Generator`` shared by both steps);
    leave it ``None`` with multi-worker DataLoaders (see the module docstring).
    """
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return Compose([RandomHorizontalFlip(hflip_prob, generator), ScaleJitterCrop(output_size, scale_range, generator)])


def eval_transforms() -> None:
    """Evaluation uses the raw image (the model resizes and normalises), so there is no transform."""
    return None
