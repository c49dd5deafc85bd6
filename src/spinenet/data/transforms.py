"""Training augmentation for detection as torchvision ``transforms.v2`` transforms (spec section 7).

The official SpineNet RetinaNet input pipeline (Model Garden / TPU ``resize_and_crop_image``, spec 7.2-7.3)
augments with a horizontal flip and *scale jitter*: draw ``s ~ U[scale_min, scale_max]``, resize the image keeping
its aspect ratio so that it fits inside ``s * output_size``, take a random ``output_size`` crop when the result is
larger, and pad on the bottom/right when it is smaller. The official pipeline pads the *normalised* image with
zeros; here images are still raw, so the padding is the ImageNet mean colour (:data:`PAD_FILL`), which the models'
normalisation turns into those zeros (a black border would be about -2 after normalisation). Boxes follow the
image, are clipped to the valid (non-padded) pixels, and boxes left with no width or height are dropped with
their labels, masks and other per-box fields (same rule as the datasets). The recipes use ``[0.8, 1.2]``
(protocol A), ``[0.5, 2.0]`` (protocol B, the default here) and ``[0.1, 2.0]``.

Every step is a ``v2.Transform`` over ``tv_tensors``: the image is a ``tv_tensors.Image``, ``target["boxes"]`` a
``tv_tensors.BoundingBoxes`` (``XYXY``) and ``target["masks"]`` a ``tv_tensors.Mask``, so v2's own kernels move
boxes and masks with the pixels (flips, crops, pads, resizes) and the steps compose with any other v2 transform.
A dataset sample given as plain tensors (``uint8 [3, H, W]``, target dict) is wrapped on entry and returned as
plain tensors (:func:`to_tv_tensors`, :func:`from_tv_tensors`). Written here is only what v2 lacks: the official
scale-jitter crop (:class:`ScaleJitterCrop`), the transpose, dropping boxes with no area (v2's
``SanitizeBoundingBoxes`` requires at least 1 px, which would drop thin crowns at tile edges), and randomness
from an explicit ``torch.Generator``: v2's random transforms draw from the global RNG, so each step here draws
its parameters from the generator it is given, in a fixed order (a seed gives the same augmentation in every
release).

Images stay ``uint8 [3, H, W]``: normalisation and the final resize happen inside the model, and evaluation uses
no transform at all (:func:`eval_transforms` returns ``None``).

Randomness comes from a ``torch.Generator`` when one is given (bit-reproducible in a single process). Without
one, torch's global RNG is used, which ``DataLoader`` seeds differently in each worker -- prefer that with
``num_workers > 0``, since a generator object would be copied into every worker and repeat the same draws.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..constants import IMAGENET_MEAN

__all__ = [
    "PAD_FILL",
    "ColorJitter",
    "Compose",
    "GeneratorTransform",
    "RandomHorizontalFlip",
    "RandomTranspose",
    "RandomVerticalFlip",
    "ScaleJitterCrop",
    "eval_transforms",
    "filter_boxes",
    "from_tv_tensors",
    "resize_uint8",
    "to_tv_tensors",
    "train_transforms",
]

Target = dict[str, Any]
# Per-box entries that must follow ``boxes`` when boxes are dropped.
PER_BOX_KEYS = ("labels", "difficult", "iscrowd", "area", "masks")


# ---- plain samples <-> tv_tensors ---------------------------------------------------------------------------
def to_tv_tensors(image: torch.Tensor, target: Target) -> tuple[tv_tensors.Image, Target]:
    """Wrap a dataset sample for v2: the image as ``tv_tensors.Image``, ``boxes`` as ``XYXY`` ``BoundingBoxes`` on
    the image's canvas, ``masks`` (``[K, H, W]``) as ``tv_tensors.Mask``. No pixel is copied."""
    canvas = (int(image.shape[-2]), int(image.shape[-1]))
    out = dict(target)
    out["boxes"] = tv_tensors.BoundingBoxes(target["boxes"].reshape(-1, 4), format="XYXY", canvas_size=canvas)
    if isinstance(target.get("masks"), torch.Tensor):
        out["masks"] = tv_tensors.Mask(target["masks"])
    return tv_tensors.Image(image), out


def from_tv_tensors(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """The inverse of :func:`to_tv_tensors`: plain tensors again (what the datasets yield and the models take)."""
    plain = {k: (v.as_subclass(torch.Tensor) if isinstance(v, tv_tensors.TVTensor) else v) for k, v in target.items()}
    return image.as_subclass(torch.Tensor), plain


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


def resize_uint8(image: torch.Tensor, size: Sequence[int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of ``uint8`` images (``[..., C, H, W]``) through float: v2's native ``uint8`` kernel rounds
    its fixed-point weights differently (off by one in about a sixth of the pixels), and this float path is the
    one every published result was trained and evaluated with."""
    out = F.resize(image.to(torch.float32), list(size), antialias=antialias)
    return out.round_().clamp_(0, 255).to(torch.uint8)


# ---- the v2 base of every step ------------------------------------------------------------------------------
def _plain_detection_sample(inputs: tuple[Any, ...]) -> bool:
    return len(inputs) == 2 and isinstance(inputs[1], dict) and not isinstance(inputs[0], tv_tensors.TVTensor)


class GeneratorTransform(v2.Transform):
    """A ``v2.Transform`` whose random parameters come from ``generator`` (``None``: torch's global RNG).

    v2's own ``forward`` is kept (parameters drawn once per call in ``make_params``, one ``transform`` per
    tv_tensor, everything else passed through); around it, a plain-tensor detection sample ``(image, target)``
    is wrapped into tv_tensors and unwrapped afterwards, and :meth:`finish` may rework the whole sample once
    the tensors are transformed (drop boxes, record the scale).
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.generator = generator

    def finish(self, sample: Any, params: dict[str, Any]) -> Any:
        """Sample-level work after the per-tensor transforms (default: nothing)."""
        return sample

    def forward(self, *inputs: Any) -> Any:
        plain = _plain_detection_sample(inputs)
        if plain:
            inputs = to_tv_tensors(*inputs)
        # v2.Transform.forward, keeping the parameters for finish()
        flat, spec = tree_flatten(inputs if len(inputs) > 1 else inputs[0])
        needed = self._needs_transform_list(flat)
        params = self.make_params([x for x, n in zip(flat, needed) if n])
        sample = tree_unflatten([self.transform(x, params) if n else x for x, n in zip(flat, needed)], spec)
        sample = self.finish(sample, params)
        return from_tv_tensors(*sample) if plain else sample


class Compose(v2.Compose):
    """``v2.Compose`` of the steps above (or any v2 transform): a plain-tensor detection sample
    ``(image, target)`` is wrapped once into tv_tensors, every step sees tv_tensors, and plain tensors come out."""

    def __init__(self, transforms: Sequence[Callable[..., Any]]) -> None:
        super().__init__(list(transforms))

    def forward(self, *inputs: Any) -> Any:
        if _plain_detection_sample(inputs):
            return from_tv_tensors(*super().forward(*to_tv_tensors(*inputs)))
        return super().forward(*inputs)


# ---- flips and the transpose --------------------------------------------------------------------------------
class _RandomSquareSymmetry(GeneratorTransform):
    """Apply one symmetry of the pixel grid to the image, boxes and masks with probability ``p``. The draw happens
    even when ``p`` is 0 or 1, so the random stream does not depend on ``p``."""

    what = "flip"
    _transformed_types = (tv_tensors.Image, tv_tensors.BoundingBoxes, tv_tensors.Mask)

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{self.what} probability must be in [0, 1], got {p}")
        super().__init__(generator)
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"apply": float(torch.rand((), generator=self.generator)) < self.p}

    def symmetry(self, inpt: Any) -> Any:
        raise NotImplementedError

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self.symmetry(inpt) if params["apply"] else inpt

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomHorizontalFlip(_RandomSquareSymmetry):
    """Mirror left-right with probability ``p`` (``F.horizontal_flip``: ``x1' = W - x2``, ``x2' = W - x1``)."""

    def symmetry(self, inpt: Any) -> Any:
        return F.horizontal_flip(inpt)


class RandomVerticalFlip(_RandomSquareSymmetry):
    """Mirror top-bottom with probability ``p`` (``F.vertical_flip``: ``y1' = H - y2``, ``y2' = H - y1``).

    Not part of the official (street-photo) COCO pipeline; for overhead imagery (aerial, microscopy) the
    vertical direction carries no meaning, and together with :class:`RandomTranspose` and the horizontal flip
    (each at ``p = 0.5``) every one of the 8 rotations / reflections of the square is equally likely.
    """

    def symmetry(self, inpt: Any) -> Any:
        return F.vertical_flip(inpt)


class RandomTranspose(_RandomSquareSymmetry):
    """Swap the image axes (``x <-> y``) with probability ``p``; a transpose followed by a flip is a 90 degree
    rotation (see :class:`RandomVerticalFlip` for when to use it). v2 has no transpose (its ``rotate`` resamples
    through a grid), so the three kernels are here."""

    what = "transpose"

    def symmetry(self, inpt: Any) -> Any:
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            height, width = inpt.canvas_size
            return tv_tensors.wrap(inpt[:, [1, 0, 3, 2]], like=inpt, canvas_size=(width, height))
        return tv_tensors.wrap(inpt.transpose(-2, -1).contiguous(), like=inpt)


# ---- colour -------------------------------------------------------------------------------------------------
class ColorJitter(GeneratorTransform):
    """Random brightness, contrast and saturation factors, each drawn from ``U[1 - strength, 1 + strength]`` and
    applied in that order with v2's ``adjust_*`` kernels (``v2.ColorJitter`` draws from the global RNG in a random
    order). Not in the official pipeline; it helps a detector trained on one site transfer to another (different
    light and season). ``strength = 0`` leaves the image unchanged (the draws still happen, so the random stream
    does not depend on it)."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, strength: float = 0.2, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"colour jitter strength must be in [0, 1), got {strength}")
        super().__init__(generator)
        self.strength = strength

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"factors": [_uniform(self.generator, 1 - self.strength, 1 + self.strength) for _ in range(3)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if self.strength == 0.0:
            return inpt
        brightness, contrast, saturation = params["factors"]
        inpt = F.adjust_brightness(inpt, brightness)
        inpt = F.adjust_contrast(inpt, contrast)
        return F.adjust_saturation(inpt, saturation)

    def __repr__(self) -> str:
        return f"ColorJitter(strength={self.strength})"


# ---- the official scale jitter ------------------------------------------------------------------------------
# The mean the models normalise with (in [0, 1]; torchvision's detection transform uses the same), so padding is
# zero once normalised; uint8 images are padded with round(255 * mean).
PAD_FILL = IMAGENET_MEAN


def _pad_fill(image: torch.Tensor, fill: Sequence[float]) -> list[float]:
    """``fill`` (in [0, 1]) in ``image``'s value range: rounded to integers for ``uint8`` images."""
    if len(fill) not in (1, image.shape[0]):
        raise ValueError(f"pad fill {tuple(fill)} has {len(fill)} values for a {image.shape[0]}-channel image; "
                         "give one value or one per channel")
    if image.is_floating_point():
        return [float(v) for v in fill]
    return [float(round(v * 255)) for v in fill]


class ScaleJitterCrop(GeneratorTransform):
    """Scale jitter + random crop/pad to ``output_size`` (official ``resize_and_crop_image`` semantics).

    ``output_size`` is an int (square) or ``(height, width)``. The output is always exactly that size; padding
    takes ``fill`` (per channel, in [0, 1]; :data:`PAD_FILL` = the ImageNet mean, i.e. zero once normalised);
    ``target["scale"]`` records the resize factor (``(sy, sx)``) and ``target["crop_offset"]`` the crop origin
    ``(y, x)`` in the resized image, so predictions can be mapped back if needed. The image is resized bilinearly
    with antialiasing, masks with nearest neighbours; then v2's ``crop`` (which clips boxes to the crop) and
    ``pad`` apply to all of them.
    """

    _transformed_types = (tv_tensors.Image, tv_tensors.BoundingBoxes, tv_tensors.Mask)

    def __init__(
        self,
        output_size: int | tuple[int, int],
        scale_range: tuple[float, float] = (0.5, 2.0),
        generator: torch.Generator | None = None,
        fill: Sequence[float] = PAD_FILL,
    ) -> None:
        super().__init__(generator)
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.fill = tuple(float(v) for v in fill)
        if len(self.output_size) != 2 or min(self.output_size) <= 0:
            raise ValueError(f"output_size must be a positive int or (height, width), got {output_size!r}")
        low, high = (float(v) for v in scale_range)
        if not 0.0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {scale_range!r}")
        self.scale_range = (low, high)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        out_h, out_w = self.output_size
        height, width = v2.query_size(flat_inputs)
        jitter = _uniform(self.generator, *self.scale_range)
        scale = min(jitter * out_h / height, jitter * out_w / width)  # fit inside the jittered output box
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        # Integer offsets uniform over every valid crop origin; 0 when the resized image is smaller.
        off_y = int(torch.randint(0, max(new_h - out_h, 0) + 1, (), generator=self.generator))
        off_x = int(torch.randint(0, max(new_w - out_w, 0) + 1, (), generator=self.generator))
        valid_h, valid_w = min(out_h, new_h - off_y), min(out_w, new_w - off_x)
        return {"size": [new_h, new_w], "scale": (new_h / height, new_w / width), "crop": (off_y, off_x, valid_h,
                valid_w), "padding": [0, 0, out_w - valid_w, out_h - valid_h]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Image):
            inpt = F.resize(inpt, params["size"], antialias=True)
            fill = _pad_fill(inpt, self.fill)
        elif isinstance(inpt, tv_tensors.Mask):
            inpt = F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST)
            fill = 0
        else:  # BoundingBoxes
            inpt = F.resize(inpt.to(torch.float32), params["size"])
            fill = 0
        inpt = F.crop(inpt, *params["crop"])  # boxes are clipped to the valid (cropped, unpadded) pixels here
        return F.pad(inpt, params["padding"], fill=fill) if any(params["padding"]) else inpt

    def finish(self, sample: Any, params: dict[str, Any]) -> tuple[Any, Target]:
        image, target = sample
        boxes = target["boxes"]
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = filter_boxes(target, keep)
        if "area" in target:
            b = target["boxes"]
            target["area"] = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        target["scale"] = params["scale"]
        target["crop_offset"] = params["crop"][:2]
        return image, target

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
