"""Instance masks for Mask R-CNN (paper section 5.4): COCO polygons / RLE in, binary masks, RLE out.

Targets carry ``masks`` as ``uint8 [K, H, W]`` (one 0/1 map per box, torchvision's convention); predictions carry
them as COCO RLE (``{"size": [H, W], "counts": str}``), which is what ``COCOeval(iouType="segm")`` reads and what
keeps a whole validation set of predicted masks small in memory. pycocotools does the encoding.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["check_segmentation", "masks_to_rles", "rle_string_counts", "segmentation_to_mask", "segmentations_to_masks"]


def check_segmentation(seg: Any, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``seg`` is a COCO polygon list or a well-formed RLE dict: a
    size of two positive integers and run lengths (a list, or COCO's compressed string) that are non-negative and
    cover exactly ``height * width`` pixels. Checked when a dataset loads, so a bad mask is reported with its file
    and annotation before training starts, not by the decoder at some training step."""
    if isinstance(seg, list):
        if all(isinstance(p, list) and len(p) % 2 == 0 and all(isinstance(v, (int, float)) for v in p) for p in seg):
            return
    elif isinstance(seg, dict) and isinstance(seg.get("size"), (list, tuple)) and len(seg["size"]) == 2 \
            and isinstance(seg.get("counts"), (str, bytes, list)):
        size, counts = seg["size"], seg["counts"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise ValueError(f"{where}: RLE 'size' must be [height, width] of positive integers, got {size!r}")
        if isinstance(counts, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
                raise ValueError(f"{where}: RLE 'counts' must be integers, got {str(counts)[:60]!r}")
            runs = counts
        else:
            runs = rle_string_counts(counts, where)
        if any(v < 0 for v in runs):
            raise ValueError(f"{where}: invalid RLE: negative run lengths in 'counts'; re-export the mask or drop "
                             "the annotation")
        if sum(runs) != size[0] * size[1]:
            raise ValueError(f"{where}: invalid RLE: its run lengths cover {sum(runs)} pixels, but its size "
                             f"{size[0]}x{size[1]} has {size[0] * size[1]}; re-export the mask or drop the annotation")
        return
    raise ValueError(f"{where}: 'segmentation' must be polygons [[x1, y1, x2, y2, ...], ...] or an RLE "
                     f"{{'size': [h, w], 'counts': ...}}, got {str(seg)[:80]!r}")


def rle_string_counts(text: str | bytes, where: str = "RLE") -> list[int]:
    """The run lengths of a compressed COCO RLE string.

    COCO's format: each run length is written in 5-bit groups, least significant first, one character per group
    (``chr(48 + group)``, with bit 0x20 set on every group but the last, and bit 0x10 of the last group the sign);
    from the third run on, the value stored is the difference to the run two places earlier."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    runs: list[int] = []
    pos = 0
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise ValueError(f"{where}: invalid RLE: the compressed 'counts' string ends inside a run length")
            group = data[pos] - 48
            if not 0 <= group < 64:
                raise ValueError(f"{where}: invalid RLE: character {chr(data[pos])!r} at position {pos} of the "
                                 "compressed 'counts' string is outside COCO's alphabet")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift  # negative: sign-extend
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def segmentation_to_mask(seg: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed RLE or compressed RLE) -> ``uint8 [height, width]``."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        polygons = [p for p in seg if len(p) >= 6]  # fewer than 3 points has no area
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(seg["counts"], list):  # uncompressed RLE (COCO crowd annotations)
        rle = mask_utils.frPyObjects(seg, *seg["size"])
    else:
        rle = {"size": list(seg["size"]), "counts": seg["counts"].encode() if isinstance(seg["counts"], str)
               else seg["counts"]}
    mask = mask_utils.decode(rle)
    if mask.shape != (height, width):  # an RLE of another size: place it at the top-left, crop or zero-pad
        out = np.zeros((height, width), dtype=np.uint8)
        h, w = min(height, mask.shape[0]), min(width, mask.shape[1])
        out[:h, :w] = mask[:h, :w]
        mask = out
    return mask.astype(np.uint8)


def segmentations_to_masks(segs: Sequence[Any], height: int, width: int) -> torch.Tensor:
    """``uint8 [K, height, width]`` from ``K`` COCO segmentations."""
    if not segs:
        return torch.zeros((0, height, width), dtype=torch.uint8)
    return torch.from_numpy(np.stack([segmentation_to_mask(s, height, width) for s in segs]))


def masks_to_rles(masks: torch.Tensor, threshold: float = 0.5) -> list[dict[str, Any]]:
    """``[K, H, W]`` or ``[K, 1, H, W]`` masks (probabilities or 0/1) -> ``K`` JSON-ready compressed RLEs."""
    from pycocotools import mask as mask_utils

    if masks.dim() == 4:
        masks = masks[:, 0]
    binary = (masks > threshold).to(torch.uint8).cpu().numpy()
    if len(binary) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]
