"""Real aerial tree-crown detection data, read from the files the ``deepforest`` package ships.

The package (installed with ``--no-deps``; never imported here, only its ``data/`` folder is read) carries NEON
RGB orthophoto crops annotated with Pascal VOC boxes:

==============================================  ===========  =====  ==========================================
file                                            size (WxH)   boxes  labels
==============================================  ===========  =====  ==========================================
``2019_YELL_2_528000_4978000_image_crop2.png``  2299 x 2472  574    Tree
``2019_YELL_2_541000_4977000_image_crop.png``   1249 x 1035  279    Tree
``OSBS_029.png``                                400 x 400    61     Tree (its XML names the identical ``.tif``)
``SOAP_061.png``                                400 x 400    37     28 Dead, 9 Alive
==============================================  ===========  =====  ==========================================

Named sets (:func:`trees_dataset`):

* ``yell-val``: the **held-out block** = the bottom-right 1200 x 1200 px of the large YELL image,
  ``x in [1099, 2299), y in [1272, 2472)`` (25.3 % of its area; with 400 px tiles exactly 3 x 3 tiles).
* ``yell-train``: every other pixel of the large YELL image -- the top band ``y < 1272`` (full width) and the
  bottom-left block ``x < 1099, y >= 1272`` -- plus the whole small YELL image (a different site tile).
  No training tile intersects the held-out block: each region is tiled on its own, so windows never cross the
  split line.
* ``osbs`` / ``soap``: the whole 400 x 400 image as one sample (``tile_size`` does not apply).

Tiling: windows of ``tile_size`` with stride ``tile_size - overlap``; when a region is not a multiple of the
stride the last window is shifted back to end at the region's edge (every tile is full-size when the region is
at least ``tile_size``; the shifted tile overlaps its neighbour). Boxes are clipped to the tile, and a box keeping
less than half of its area is dropped from that tile (counted in ``stats["dropped_boxes"]``). A tree crossing the
split line is treated exactly like one crossing a tile edge: it is clipped, and appears on the side(s) holding at
least half of it (``stats["split_line_boxes"]`` counts them). Tiles without trees are kept.

Decoded images are cached in memory per process (the large PNG is 15 MB and takes ~0.2 s to decode).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .catalog import register_dataset
from .detection import BACKGROUND, DetectionDataset, ImageRecord, Transform, clip_boxes, parse_voc_xml
from .images import decode_rgb

__all__ = [
    "TREE_SETS",
    "TreeDataset",
    "VAL_BLOCK",
    "trees_data_dir",
    "trees_dataset",
    "trees_summary",
]

YELL_LARGE = "2019_YELL_2_528000_4978000_image_crop2"
YELL_SMALL = "2019_YELL_2_541000_4977000_image_crop"


@dataclass(frozen=True)
class _Source:
    stem: str
    size: tuple[int, int]  # (width, height), checked against the XML
    boxes: int  # expected annotation count, checked on load


SOURCES = {
    YELL_LARGE: _Source(YELL_LARGE, (2299, 2472), 574),
    YELL_SMALL: _Source(YELL_SMALL, (1249, 1035), 279),
    "OSBS_029": _Source("OSBS_029", (400, 400), 61),
    "SOAP_061": _Source("SOAP_061", (400, 400), 37),
}

# Held-out block of the large YELL image, (x0, y0, x1, y1): its bottom-right 1200 x 1200 pixels.
VAL_BLOCK = (2299 - 1200, 2472 - 1200, 2299, 2472)
_W, _H = SOURCES[YELL_LARGE].size

# name -> list of (source stem, region (x0, y0, x1, y1) or None for "the whole image, untiled")
TREE_SETS: dict[str, list[tuple[str, tuple[int, int, int, int] | None]]] = {
    "yell-train": [
        (YELL_LARGE, (0, 0, _W, VAL_BLOCK[1])),  # top band above the held-out block, full width
        (YELL_LARGE, (0, VAL_BLOCK[1], VAL_BLOCK[0], _H)),  # bottom-left block beside it
        (YELL_SMALL, (0, 0, *SOURCES[YELL_SMALL].size)),
    ],
    "yell-val": [(YELL_LARGE, VAL_BLOCK)],
    "osbs": [("OSBS_029", None)],
    "soap": [("SOAP_061", None)],
}
CLASS_MODES = ("merged", "dead_alive")
MIN_KEPT_FRACTION = 0.5  # a box keeping less of its area inside a tile is dropped from that tile

_IMAGE_CACHE: dict[Path, np.ndarray] = {}  # decoded RGB arrays [H, W, 3], per process


def trees_data_dir() -> Path:
    """The deepforest package's ``data/`` folder, located without importing deepforest."""
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the tree data comes from the deepforest package's data files: install it with "
            "`pip install --no-deps deepforest==2.1.0` (it is read, never imported)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _cached_array(path: Path) -> np.ndarray:
    array = _IMAGE_CACHE.get(path)
    if array is None:
        array = decode_rgb(path)
        _IMAGE_CACHE[path] = array
    return array


def _windows(length: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` windows covering ``[0, length)``; the last one shifted back to end at ``length``."""
    if length <= tile:
        return [(0, length)]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return [(s, s + tile) for s in starts]


def _crosses(box: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """Boxes that overlap ``rect`` without lying inside it (they straddle its border)."""
    x0, y0, x1, y1 = rect
    overlaps = (box[:, 0] < x1) & (box[:, 2] > x0) & (box[:, 1] < y1) & (box[:, 3] > y0)
    inside = (box[:, 0] >= x0) & (box[:, 2] <= x1) & (box[:, 1] >= y0) & (box[:, 3] <= y1)
    return overlaps & ~inside


class TreeDataset(DetectionDataset):
    """Tiles (or whole images) of the deepforest tree data; same API as :class:`VOCDetection`.

    Each record's ``meta`` holds ``source`` (image stem), ``window`` and ``source_index`` (index of every kept
    box in the source XML), so tiles can be traced back to the original annotations.
    """

    def load_image(self, record: ImageRecord) -> torch.Tensor:
        array = _cached_array(record.path)
        if record.window is not None:
            x0, y0, x1, y1 = record.window
            array = array[y0:y1, x0:x1]
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()

    def summary(self) -> str:
        s = self.stats
        return (
            f"{self.name}: {s['images']} images/tiles ({s['empty_images']} empty), {s['boxes']} boxes "
            f"from {s['covered_source_boxes']} source boxes, classes {self.classes[1:]}; "
            f"clipped {s['clipped_boxes']}, dropped {s['dropped_boxes']} (<{MIN_KEPT_FRACTION:.0%} inside a tile), "
            f"split-line boxes {s.get('split_line_boxes', 0)}"
        )


def trees_dataset(
    name: str,
    tile_size: int = 400,
    overlap: int = 0,
    classes: str = "merged",
    transforms: Transform | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    verbose: bool = False,
) -> TreeDataset:
    """Build a named tree set: ``"yell-train"``, ``"yell-val"``, ``"osbs"`` or ``"soap"`` (see module docstring).

    ``classes="merged"`` gives one class ``"Tree"``; ``"dead_alive"`` keeps SOAP's labels as ``Dead`` (1) and
    ``Alive`` (2) and only applies to ``"soap"``. ``verbose`` prints :meth:`TreeDataset.summary`.
    """
    if name not in TREE_SETS:
        raise ValueError(f"unknown tree set {name!r}; choose one of {sorted(TREE_SETS)}")
    if classes not in CLASS_MODES:
        raise ValueError(f"classes must be one of {CLASS_MODES}, got {classes!r}")
    if classes == "dead_alive" and name != "soap":
        raise ValueError(f"classes='dead_alive' only applies to 'soap' ({name!r} is annotated with 'Tree' only)")
    if not isinstance(tile_size, int) or tile_size < 32:
        raise ValueError(f"tile_size must be an int >= 32, got {tile_size!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be an int in [0, tile_size), got {overlap!r}")
    root = Path(data_dir) if data_dir is not None else trees_data_dir()

    class_names = ["Dead", "Alive"] if classes == "dead_alive" else ["Tree"]
    name_to_label = {n: i + 1 for i, n in enumerate(class_names)}

    records: list[ImageRecord] = []
    stats = {"clipped_boxes": 0, "dropped_boxes": 0, "difficult_boxes": 0, "split_line_boxes": 0}
    covered: set[tuple[str, int]] = set()
    in_regions: set[tuple[str, int]] = set()
    for stem, region in TREE_SETS[name]:
        source = SOURCES[stem]
        xml_path, png_path = root / f"{stem}.xml", root / f"{stem}.png"
        for p in (xml_path, png_path):
            if not p.is_file():
                raise FileNotFoundError(f"tree data file {p} is missing (deepforest==2.1.0 ships it in data/)")
        ann = parse_voc_xml(xml_path)
        if (ann["width"], ann["height"]) != source.size or len(ann["objects"]) != source.boxes:
            raise ValueError(
                f"{xml_path}: expected {source.size[0]}x{source.size[1]} px with {source.boxes} boxes, found "
                f"{ann['width']}x{ann['height']} with {len(ann['objects'])}; the deepforest data changed"
            )
        raw = np.array([o["box"] for o in ann["objects"]], dtype=np.float32).reshape(-1, 4)
        # merged: every name (Tree / Dead / Alive) is one class
        labels = np.array([name_to_label.get(o["name"], 1) for o in ann["objects"]], dtype=np.int64)
        if classes == "dead_alive":
            unknown = sorted({o["name"] for o in ann["objects"]} - set(name_to_label))
            if unknown:
                raise ValueError(f"{xml_path}: labels {unknown} are neither Dead nor Alive")
        difficult = np.array([o["difficult"] for o in ann["objects"]], dtype=bool)
        area = (raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1])
        if stem == YELL_LARGE:
            # counted once per region set: boxes straddling the held-out block's border
            stats["split_line_boxes"] = int(_crosses(raw, VAL_BLOCK).sum())

        if region is None:
            windows = [None]
            rx0 = ry0 = 0
            rx1, ry1 = source.size
        else:
            rx0, ry0, rx1, ry1 = region
            stride = tile_size - overlap
            windows = [
                (rx0 + xs, ry0 + ys, rx0 + xe, ry0 + ye)
                for ys, ye in _windows(ry1 - ry0, tile_size, stride)
                for xs, xe in _windows(rx1 - rx0, tile_size, stride)
            ]
        touching = (raw[:, 0] < rx1) & (raw[:, 2] > rx0) & (raw[:, 1] < ry1) & (raw[:, 3] > ry0)
        in_regions.update((stem, int(i)) for i in np.flatnonzero(touching))

        for window in windows:
            x0, y0, x1, y1 = window if window is not None else (0, 0, *source.size)
            shifted = raw - np.array([x0, y0, x0, y0], dtype=np.float32)
            boxes, nondegenerate, changed = clip_boxes(shifted, x1 - x0, y1 - y0)
            kept_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            with np.errstate(divide="ignore", invalid="ignore"):
                fraction = np.where(area > 0, kept_area / area, 0.0)
            intersects = nondegenerate  # after clipping, a non-degenerate box overlaps the window
            keep = intersects & (fraction >= MIN_KEPT_FRACTION)
            stats["clipped_boxes"] += int((keep & changed).sum())
            stats["dropped_boxes"] += int((intersects & ~keep).sum())
            stats["difficult_boxes"] += int(difficult[keep].sum())
            index = np.flatnonzero(keep)
            covered.update((stem, int(i)) for i in index)
            file_name = f"{stem}.png" if window is None else f"{stem}.png#{x0},{y0},{x1},{y1}"
            records.append(
                ImageRecord(
                    image_id=len(records) + 1,
                    file_name=file_name,
                    path=png_path,
                    width=x1 - x0,
                    height=y1 - y0,
                    boxes=boxes[keep],
                    labels=labels[keep],
                    difficult=difficult[keep],
                    window=window,
                    meta={"source": stem, "window": (x0, y0, x1, y1), "source_index": index},
                )
            )
    stats["source_boxes"] = len(in_regions)  # source boxes touching this set's area
    stats["covered_source_boxes"] = len(covered)  # ... of which at least one tile kept
    stats["tiles"] = len(records)
    dataset = TreeDataset(
        records,
        [BACKGROUND, *class_names],
        list(range(len(class_names) + 1)),
        transforms,
        stats,
        name=f"trees:{name}",
    )
    dataset.tile_size, dataset.overlap = tile_size, overlap  # type: ignore[attr-defined]
    if verbose:
        print(dataset.summary())
    return dataset


@register_dataset("trees", "detection", splits=tuple(TREE_SETS), syntax="trees:yell-train|yell-val|osbs|soap",
                  source="the deepforest package's data/ folder (pip install --no-deps deepforest==2.1.0)")
def _open_trees(name: str, split: str | None, **kwargs: Any) -> TreeDataset:
    """``trees:<name>``; ``trees:yell`` with ``split="val"`` is ``trees:yell-val``."""
    if split is not None and not name.endswith(f"-{split}"):
        name = f"{name}-{split}"
    return trees_dataset(name, **kwargs)


def trees_summary(
    tile_size: int = 400, overlap: int = 0, names: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """``{name: stats}`` for the named sets (all by default); no pixels are decoded."""
    return {n: dict(trees_dataset(n, tile_size, overlap).stats) for n in (names or TREE_SETS)}

