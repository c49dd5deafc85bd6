"""Nucleus instance segmentation from the stardist image (:mod:`spinenet.data.nuclei`) as a detection dataset.

``nuclei_instances("left")`` is the left half as one sample (what evaluation uses); ``nuclei_instances("left",
tile_size=128)`` cuts it into ``tile_size`` crops at stride ``tile_size // 2`` (the last crop of a row or
column shifted back to end at the edge), which is what training uses. Every connected instance id of the half
is one object of the single class ``nucleus``: its box is the tight box of its pixels (``x2 = last column +
1``) and ``target["masks"]`` holds its ``uint8`` mask. The grey image is replicated to three channels, scaled
to ``uint8`` by the image's own maximum (as :func:`~spinenet.data.nuclei.load_nuclei` normalises it).

A nucleus cut by a tile edge is kept in that tile only when at least half of its pixels in the half lie inside
the tile (the tree tiles' rule, ``stats["dropped_boxes"]`` counts the others); in the whole-half sample every
piece of the half counts, including nuclei cut by the split line (as :mod:`spinenet.data.nuclei` defines).
:meth:`NucleiInstances.to_coco` carries each instance's RLE, so ``COCOeval`` can score masks (``segm``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .catalog import register_dataset
from .detection import BACKGROUND, DetectionDataset, ImageRecord, Transform
from .nuclei import HALVES, nuclei_data_dir, nuclei_half

__all__ = ["NucleiInstances", "nuclei_instances"]


def _starts(length: int, tile: int) -> list[int]:
    if tile >= length:
        return [0]
    stride = max(tile // 2, 1)
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


class NucleiInstances(DetectionDataset):
    """The nuclei of one half (``left``/``right``/``top``/``bottom``), whole or tiled, with instance masks."""

    def __init__(self, half: str, tile_size: int | None = None, transforms: Transform | None = None) -> None:
        if half not in HALVES:
            raise ValueError(f"nuclei:{half}: unknown half; choose one of {', '.join(HALVES)} (e.g. nuclei:left)")
        if tile_size is not None and (not isinstance(tile_size, int) or tile_size < 16):
            raise ValueError(f"nuclei:{half}: tile_size must be an integer >= 16, got {tile_size!r}")
        image, instances = nuclei_half(half)
        self.half = half
        grey = torch.from_numpy(np.round(image * 255.0).astype(np.uint8))
        self._image = grey.unsqueeze(0).expand(3, -1, -1).contiguous()
        self._instances = instances
        height, width = instances.shape
        ids, areas = np.unique(instances, return_counts=True)
        total_area = dict(zip(ids.tolist(), areas.tolist()))
        path = nuclei_data_dir() / "img2d.tif"
        tile_h, tile_w = (height, width) if tile_size is None else (min(tile_size, height), min(tile_size, width))
        records, dropped = [], 0
        for y0 in _starts(height, tile_h):
            for x0 in _starts(width, tile_w):
                window = instances[y0:y0 + tile_h, x0:x0 + tile_w]
                ids, counts = np.unique(window, return_counts=True)
                keep_ids, boxes = [], []
                for obj, count in zip(ids.tolist(), counts.tolist()):
                    if obj == 0:
                        continue
                    if tile_size is not None and count * 2 < total_area[obj]:
                        dropped += 1
                        continue
                    ys, xs = np.nonzero(window == obj)
                    keep_ids.append(obj)
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                records.append(ImageRecord(
                    image_id=len(records) + 1, file_name=f"img2d_{half}_x{x0}_y{y0}.tif", path=path,
                    width=tile_w, height=tile_h, boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                    labels=np.ones(len(boxes), dtype=np.int64), window=(x0, y0, x0 + tile_w, y0 + tile_h),
                    meta={"instance_ids": keep_ids}))
        self.with_masks = True
        super().__init__(records, [BACKGROUND, "nucleus"], [0, 1], transforms, {"dropped_boxes": dropped},
                         name=f"nuclei:{half}" + (f" (tiles of {tile_size})" if tile_size else ""))

    def load_image(self, record: ImageRecord) -> torch.Tensor:
        x0, y0, x1, y1 = record.window  # type: ignore[misc]
        return self._image[:, y0:y1, x0:x1].clone()

    def load_masks(self, record: ImageRecord, height: int, width: int) -> torch.Tensor:
        x0, y0, x1, y1 = record.window  # type: ignore[misc]
        window = self._instances[y0:y1, x0:x1]
        ids = np.asarray(record.meta["instance_ids"], dtype=window.dtype).reshape(-1, 1, 1)
        return torch.from_numpy((window[None] == ids).astype(np.uint8))

    def to_coco(self, difficult_as_crowd: bool = True) -> dict[str, Any]:
        """COCO ground truth with each instance's RLE ``segmentation`` and its pixel ``area``."""
        from .masks import masks_to_rles

        coco = super().to_coco(difficult_as_crowd)
        anns = iter(coco["annotations"])
        for record in self.records:
            masks = self.load_masks(record, record.height, record.width)
            for rle, mask in zip(masks_to_rles(masks), masks):
                ann = next(anns)
                ann["segmentation"], ann["area"] = rle, float(mask.sum())
        return coco


@register_dataset("nuclei", "detection", splits=HALVES, syntax="nuclei:left|right|top|bottom",
                  source="the stardist package's data/images/ folder (pip install --no-deps stardist==0.9.2)")
def _open_nuclei(half: str, split: str | None, **kwargs: Any) -> NucleiInstances:
    return nuclei_instances(half, **kwargs)


def nuclei_instances(half: str, tile_size: int | None = None, transforms: Transform | None = None,
                     **kwargs: Any) -> NucleiInstances:
    """``dataset_from_path("nuclei:<half>")``. ``masks=`` (always on) and ``classes=`` (must be ``["nucleus"]``)
    are accepted so callers can pass what they pass to every dataset."""
    unknown = set(kwargs) - {"masks", "classes"}
    if unknown:
        raise ValueError(f"nuclei:{half}: unknown option(s) {sorted(unknown)}; known: tile_size, transforms")
    if kwargs.get("classes") is not None and list(kwargs["classes"]) != ["nucleus"]:
        raise ValueError(f"nuclei:{half}: the only class is 'nucleus', got classes={list(kwargs['classes'])}")
    return NucleiInstances(half, tile_size, transforms)
