"""Detection datasets: COCO JSON and Pascal VOC XML, validated at construction, one sample contract.

Every dataset here yields ``(image, target)`` as the detectors expect (issue-4 contract, torchvision's detection
convention): ``image`` is a raw ``uint8`` tensor ``[3, H, W]`` in RGB (normalisation and resizing happen inside the
model, as in the official input pipeline, spec section 7.3), ``target`` is a dict with ``boxes`` (``float32
[K, 4]``, ``x1, y1, x2, y2`` in absolute pixels), ``labels`` (``int64 [K]`` in ``1..C``), ``image_id`` (int) and
``orig_size`` (``(H, W)``); VOC-style sets also carry ``difficult`` (``bool [K]``). Images without objects give
``boxes`` of shape ``[0, 4]``.

Design choices, shared by COCO, VOC and the tree sets built on :class:`DetectionDataset`:

* **Fail at construction, not mid-training.** Malformed files, annotations pointing at unknown images or
  categories, and image files that do not exist raise ``ValueError``/``FileNotFoundError`` naming the file and
  the entry. Only a file that exists but cannot be decoded is discovered late (decoding every image up front
  would cost a full pass over the data); such an image is skipped with a warning, counted in
  ``stats["unreadable_images"]``, and the next readable index is returned so a ``DataLoader`` always receives a
  valid sample.
* **Boxes are clipped to the image** and a box whose width or height is ``<= 0`` after clipping is *degenerate*
  and dropped. The threshold is 0, not 1 px: tiny but real objects (distant trees, COCO's smallest boxes) are
  kept, and only boxes with no area at all, which would give infinite regression targets, go. Counts land in
  ``stats["clipped_boxes"]`` and ``stats["dropped_boxes"]``.
* **Labels are contiguous** ``1..C`` (0 is background, torchvision's convention); ``category_ids[label]`` gives
  the dataset's own category id back (COCO's 91-id space has gaps), ``category_to_label`` the other way.
* **VOC coordinates** are read as pixel-edge coordinates, ``xmax - xmin`` wide, with no ``+1`` and no 1-based
  shift -- the convention of the deepforest annotations shipped with the tree data. The error is at most one
  pixel against the VOC devkit's ``+1`` convention.

``stats`` counters that change while loading (``unreadable_images``) are per process: with ``num_workers > 0``
each DataLoader worker counts in its own copy of the dataset, and its warnings are the authoritative record.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .catalog import _slice_text, open_dataset, register_format
from .images import decode_image

__all__ = [
    "BACKGROUND",
    "CocoDetection",
    "DetectionDataset",
    "ImageRecord",
    "VOCDetection",
    "clip_boxes",
    "dataset_from_path",
    "decode_image",
    "parse_voc_xml",
]

BACKGROUND = "__background__"
Transform = Callable[[torch.Tensor, dict[str, Any]], tuple[torch.Tensor, dict[str, Any]]]
# What PIL raises for files that exist but do not decode (truncated, not an image, bomb-sized).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


# ---- small helpers ----------------------------------------------------------------------------------------
def clip_boxes(boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip ``xyxy`` boxes to ``[0, width] x [0, height]``.

    Returns ``(clipped, keep, changed)``: ``keep`` marks non-degenerate boxes (width and height ``> 0`` after
    clipping), ``changed`` marks boxes that clipping moved. Works on ``float`` arrays of shape ``[K, 4]``.
    A size of 0 means "unknown" (no readable header) and leaves that axis unbounded above.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0.0, float(width) if width > 0 else np.inf)
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0.0, float(height) if height > 0 else np.inf)
    keep = (clipped[:, 2] - clipped[:, 0] > 0) & (clipped[:, 3] - clipped[:, 1] > 0)
    changed = np.any(clipped != boxes, axis=1)
    return clipped, keep, changed


def _line_of(text: str, needle: str, occurrence: int) -> int | None:
    """1-based line of the ``occurrence``-th (0-based) ``needle`` in ``text``; used to point at XML entries."""
    pos = -1
    for _ in range(occurrence + 1):
        pos = text.find(needle, pos + 1)
        if pos < 0:
            return None
    return text.count("\n", 0, pos) + 1


def _image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file header only (no decode), or ``None`` if the header is unreadable."""
    try:
        with Image.open(path) as img:
            return int(img.width), int(img.height)
    except _DECODE_ERRORS:
        return None


# ---- the record every dataset is made of ------------------------------------------------------------------
@dataclass
class ImageRecord:
    """One sample, fully validated at construction.

    ``boxes`` are ``xyxy`` pixels already clipped to ``width x height`` with degenerate boxes removed;
    ``window`` (``x0, y0, x1, y1``) crops a region out of ``path`` (used by the tiled tree sets).
    ``meta`` holds dataset-specific extras (e.g. which source boxes a tile came from).
    """

    image_id: int
    file_name: str
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # float32 [K, 4]
    labels: np.ndarray  # int64 [K]
    difficult: np.ndarray | None = None  # bool [K] (VOC-style sets only)
    window: tuple[int, int, int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class DetectionDataset(Dataset):
    """Common behaviour: sample assembly, unreadable-image skipping, label maps, ``to_coco`` and ``stats``.

    Subclasses build the list of :class:`ImageRecord` (validating their source format) and may override
    :meth:`load_image` (the tree sets crop from a cached big image) or :meth:`to_coco`.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        category_ids: Sequence[int],
        transforms: Transform | None = None,
        stats: Mapping[str, int] | None = None,
        name: str = "",
    ) -> None:
        if list(classes[:1]) != [BACKGROUND] or list(category_ids[:1]) != [0] or len(classes) != len(category_ids):
            raise ValueError(
                f"classes/category_ids must start with {BACKGROUND!r}/0 and have equal length, got "
                f"{list(classes)[:3]}... ({len(classes)}) and {list(category_ids)[:3]}... ({len(category_ids)})"
            )
        self.records: list[ImageRecord] = list(records)
        self.classes: list[str] = list(classes)
        self.category_ids: list[int] = [int(c) for c in category_ids]
        self.transforms = transforms
        self.name = name
        self.has_difficult = any(r.difficult is not None for r in self.records)
        # Instance masks (Mask R-CNN): subclasses that can provide them set this and implement load_masks.
        self.with_masks: bool = getattr(self, "with_masks", False)
        self.stats: dict[str, int] = {
            "images": len(self.records),
            "boxes": int(sum(len(r.boxes) for r in self.records)),
            "empty_images": int(sum(len(r.boxes) == 0 for r in self.records)),
            "clipped_boxes": 0,
            "dropped_boxes": 0,
            "unreadable_images": 0,
        }
        self.stats.update(stats or {})
        self._unreadable: set[int] = set()  # record indices known not to decode (skipped without re-warning)
        self._size_warned: set[int] = set()

    # -- label maps (contract: index = label, [0] = background / 0) --
    @property
    def num_classes(self) -> int:
        """Logits a detector for this dataset needs: ``C + 1`` (background included, torchvision convention)."""
        return len(self.classes)

    @property
    def label_to_category(self) -> dict[int, int]:
        """Contiguous label ``1..C`` -> the dataset's own category id."""
        return {label: cid for label, cid in enumerate(self.category_ids) if label > 0}

    @property
    def category_to_label(self) -> dict[int, int]:
        """The dataset's own category id -> contiguous label ``1..C``."""
        return {cid: label for label, cid in enumerate(self.category_ids) if label > 0}

    # -- samples --
    def __len__(self) -> int:
        return len(self.records)

    def subset(self, selection: slice) -> "DetectionDataset":
        """The same dataset restricted to ``records[selection]`` (classes and label maps unchanged)."""
        out = copy.copy(self)
        out.records = self.records[selection]
        out.stats = {**self.stats, "images": len(out.records), "boxes": int(sum(len(r.boxes) for r in out.records)),
                     "empty_images": int(sum(len(r.boxes) == 0 for r in out.records))}
        out._unreadable, out._size_warned = set(), set()
        out.name = f"{self.name}[{_slice_text(selection)}]"
        return out

    def drop_unreadable(self) -> list[Path]:
        """Remove the records whose image file does not open as an image (header check, no decode), counting
        them in ``stats["skipped_images"]``; returns their paths. A training run calls this at load, so a file
        that is not an image is reported before the first step rather than skipped silently later."""
        readable: dict[Path, bool] = {}
        for record in self.records:
            if record.path not in readable:
                readable[record.path] = _image_size(record.path) is not None
        bad = [path for path, ok in readable.items() if not ok]
        if bad:
            self.records = [r for r in self.records if readable[r.path]]
            self.stats.update({"images": len(self.records), "boxes": int(sum(len(r.boxes) for r in self.records)),
                               "empty_images": int(sum(len(r.boxes) == 0 for r in self.records))})
        self.stats["skipped_images"] = self.stats.get("skipped_images", 0) + len(bad)
        return bad

    def load_image(self, record: ImageRecord) -> torch.Tensor:
        """Decode the record's pixels (``uint8 [3, H, W]``); may raise PIL's decode errors."""
        image = decode_image(record.path)
        if record.window is not None:
            x0, y0, x1, y1 = record.window
            image = image[:, y0:y1, x0:x1].contiguous()
        return image

    def load_masks(self, record: ImageRecord, height: int, width: int) -> torch.Tensor:
        """``uint8 [K, height, width]`` instance masks of the record's boxes (datasets with ``with_masks``)."""
        raise NotImplementedError(f"{type(self).__name__} has no instance masks")

    def _target(self, index: int, record: ImageRecord, image: torch.Tensor) -> dict[str, Any]:
        boxes, labels, difficult = record.boxes, record.labels, record.difficult
        height, width = int(image.shape[-2]), int(image.shape[-1])
        masks = self.load_masks(record, height, width) if self.with_masks else None
        if (width, height) != (record.width, record.height):
            # The file disagrees with the annotation's declared size: trust the pixels, re-clip, say so once.
            if index not in self._size_warned and record.width > 0:
                self._size_warned.add(index)
                warnings.warn(
                    f"{record.path}: decoded size {width}x{height} differs from the annotated "
                    f"{record.width}x{record.height} (image id {record.image_id}); boxes re-clipped to the pixels",
                    stacklevel=3,
                )
            boxes, keep, _ = clip_boxes(boxes, width, height)
            boxes, labels = boxes[keep], labels[keep]
            difficult = difficult[keep] if difficult is not None else None
            masks = masks[torch.from_numpy(keep)] if masks is not None else None
        target: dict[str, Any] = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            "image_id": int(record.image_id),
            "orig_size": (height, width),
        }
        if self.has_difficult:
            flags = difficult if difficult is not None else np.zeros(len(labels), dtype=bool)
            target["difficult"] = torch.as_tensor(flags, dtype=torch.bool).reshape(-1)
        if masks is not None:
            target["masks"] = masks
        return target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        # Skip unreadable images by walking forward: a DataLoader asked for *a* sample, and returning a
        # different valid one keeps batches full; the warning + counter make the substitution visible.
        for step in range(n):
            j = (index + step) % n
            if j in self._unreadable:
                continue
            record = self.records[j]
            try:
                image = self.load_image(record)
            except _DECODE_ERRORS as exc:
                self._unreadable.add(j)
                self.stats["unreadable_images"] = len(self._unreadable)
                warnings.warn(
                    f"skipping unreadable image {record.path} (image id {record.image_id}): "
                    f"{type(exc).__name__}: {exc}",
                    stacklevel=2,
                )
                continue
            target = self._target(j, record, image)
            if self.transforms is not None:
                image, target = self.transforms(image, target)
            return image, target
        raise RuntimeError(f"{self.name or type(self).__name__}: none of the {n} images could be decoded")

    # -- evaluation --
    def to_coco(self, difficult_as_crowd: bool = True) -> dict[str, Any]:
        """A COCO-format ground-truth dict (``xywh`` boxes) of the training targets, for ``evaluate_coco``.

        ``difficult`` VOC objects are written with ``iscrowd=1`` when ``difficult_as_crowd``: COCOeval then
        ignores detections matched to them and does not count them as misses, which is how the VOC protocol
        treats difficult objects. Category ids are the dataset's own (``category_ids``).
        """
        images, annotations = [], []
        for record in self.records:
            images.append(
                {"id": record.image_id, "file_name": record.file_name, "width": record.width, "height": record.height}
            )
            flags = record.difficult if record.difficult is not None else np.zeros(len(record.labels), dtype=bool)
            for box, label, hard in zip(record.boxes.tolist(), record.labels.tolist(), flags.tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": record.image_id,
                        "category_id": self.category_ids[label],
                        "bbox": [box[0], box[1], w, h],
                        "area": w * h,
                        "iscrowd": int(bool(hard) and difficult_as_crowd),
                        "difficult": int(bool(hard)),
                    }
                )
        categories = [{"id": cid, "name": self.classes[label]} for label, cid in self.label_to_category.items()]
        return {
            "info": {"description": f"{self.name or type(self).__name__} (spinenet-torch export)"},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }

    def summary(self) -> str:
        """One line: name, images, boxes, classes and the bad-data counters."""
        counters = ", ".join(f"{k}={v}" for k, v in self.stats.items())
        return f"{self.name or type(self).__name__}: {len(self.classes) - 1} classes {self.classes[1:]}; {counters}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.summary()})"


# ---- COCO -------------------------------------------------------------------------------------------------
def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text at byte {exc.start}; is this really a COCO JSON file?") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno} (char {exc.pos}): {exc.msg}"
        ) from None


def _default_image_root(ann_file: Path) -> Path:
    images = ann_file.parent / "images"
    return images if images.is_dir() else ann_file.parent


class CocoDetection(DetectionDataset):
    """COCO-format detection data (the MS-COCO ``instances_*.json`` layout), validated up front.

    ``image_root`` defaults to ``images/`` beside the JSON if that folder exists, else the JSON's folder.
    ``iscrowd`` annotations are excluded from training targets (counted in ``stats["crowd_boxes"]``) but kept in
    :meth:`to_coco` / :attr:`coco`, so COCOeval can ignore detections on crowds as the official protocol does.
    Annotations without an ``id`` get fresh ids above the largest given one (pycocotools requires ids).
    Images with no annotations are kept (they teach the detector what background looks like).

    ``masks=True`` (Mask R-CNN) adds ``target["masks"]`` (``uint8 [K, H, W]``) decoded from each annotation's
    ``segmentation`` -- polygons, RLE or uncompressed RLE; an annotation without one is a ``ValueError``.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike[str],
        image_root: str | os.PathLike[str] | None = None,
        transforms: Transform | None = None,
        masks: bool = False,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.with_masks = bool(masks)
        self.image_root = Path(image_root) if image_root is not None else _default_image_root(self.ann_file)
        data = _load_json(self.ann_file)
        self._dataset = self._validate(data)
        self._coco: Any = None

        categories = sorted(self._dataset["categories"], key=lambda c: c["id"])
        classes = [BACKGROUND] + [str(c.get("name", c["id"])) for c in categories]
        category_ids = [0] + [int(c["id"]) for c in categories]
        cat_to_label = {cid: label for label, cid in enumerate(category_ids) if label > 0}

        per_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in self._dataset["images"]}
        for ann in self._dataset["annotations"]:
            per_image[ann["image_id"]].append(ann)

        stats = {"clipped_boxes": 0, "dropped_boxes": 0, "crowd_boxes": 0}
        records = []
        for img in self._dataset["images"]:
            anns = per_image[img["id"]]
            crowd = [bool(a.get("iscrowd", 0)) for a in anns]
            stats["crowd_boxes"] += sum(crowd)
            anns = [a for a, c in zip(anns, crowd) if not c]
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            labels = np.array([cat_to_label[a["category_id"]] for a in anns], dtype=np.int64)
            boxes, keep, changed = clip_boxes(xyxy, img["width"], img["height"])
            stats["clipped_boxes"] += int((changed & keep).sum())
            stats["dropped_boxes"] += int((~keep).sum())
            records.append(
                ImageRecord(
                    image_id=int(img["id"]),
                    file_name=str(img["file_name"]),
                    path=self.image_root / img["file_name"],
                    width=int(img["width"]),
                    height=int(img["height"]),
                    boxes=boxes[keep],
                    labels=labels[keep],
                    meta={"ann_ids": [a["id"] for a, k in zip(anns, keep) if k],
                          **({"segmentations": [a["segmentation"] for a, k in zip(anns, keep) if k]}
                             if masks else {})},
                )
            )
        super().__init__(records, classes, category_ids, transforms, stats, name=str(self.ann_file))

    def _validate(self, data: Any) -> dict[str, Any]:
        """Check the structure and every cross-reference; return a normalised deep copy."""
        src = self.ann_file
        if not isinstance(data, dict):
            raise ValueError(f"{src}: the top level must be a JSON object with 'images' and 'categories'")
        for key in ("images", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(
                    f"{src}: missing or non-list '{key}' (COCO detection files need images and categories)"
                )
        if not isinstance(data.get("annotations", []), list):
            raise ValueError(f"{src}: 'annotations' must be a list")
        data = copy.deepcopy(data)
        data.setdefault("annotations", [])

        category_ids: set[int] = set()
        for i, cat in enumerate(data["categories"]):
            if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
                raise ValueError(f"{src}: categories[{i}] needs an integer 'id', got {cat!r}")
            if cat["id"] in category_ids:
                raise ValueError(f"{src}: duplicate category id {cat['id']} (categories[{i}])")
            if cat["id"] <= 0:
                raise ValueError(f"{src}: category id {cat['id']} (categories[{i}]) must be > 0; 0 is background")
            category_ids.add(cat["id"])
            cat.setdefault("name", str(cat["id"]))

        images: dict[int, dict[str, Any]] = {}
        missing: list[str] = []
        for i, img in enumerate(data["images"]):
            if not (isinstance(img, dict) and isinstance(img.get("id"), int) and isinstance(img.get("file_name"), str)):
                raise ValueError(f"{src}: images[{i}] needs an integer 'id' and a string 'file_name', got {img!r}")
            if img["id"] in images:
                raise ValueError(f"{src}: duplicate image id {img['id']} (images[{i}], file {img['file_name']!r})")
            images[img["id"]] = img
            path = self.image_root / img["file_name"]
            if not path.is_file():
                missing.append(f"image id {img['id']} -> {path}")
                continue
            w, h = img.get("width"), img.get("height")
            if not (isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0):
                # 0 x 0 = unknown: the header does not even read, so __getitem__ will skip the image anyway
                img["width"], img["height"] = _image_size(path) or (0, 0)
        if missing:
            shown = "; ".join(missing[:5]) + (f"; ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise FileNotFoundError(
                f"{src}: {len(missing)} image file(s) listed in the annotations do not exist under image_root "
                f"{self.image_root}: {shown}. Check image_root or remove the entries."
            )

        given_ids = [a.get("id") for a in data["annotations"] if isinstance(a, dict)]
        next_id = max([i for i in given_ids if isinstance(i, int)], default=0) + 1
        seen_ids: set[int] = set()
        for i, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict):
                raise ValueError(f"{src}: annotations[{i}] must be an object, got {ann!r}")
            if "id" not in ann:
                ann["id"] = next_id
                next_id += 1
            where = f"annotation id {ann['id']} (annotations[{i}])"
            if ann["id"] in seen_ids:
                raise ValueError(f"{src}: duplicate {where}")
            seen_ids.add(ann["id"])
            if ann.get("image_id") not in images:
                raise ValueError(
                    f"{src}: {where} refers to image id {ann.get('image_id')!r}, which is not in 'images'"
                )
            if ann.get("category_id") not in category_ids:
                raise ValueError(
                    f"{src}: {where} has category_id {ann.get('category_id')!r}, not one of the "
                    f"{len(category_ids)} ids in 'categories'"
                )
            bbox = ann.get("bbox")
            if (
                not isinstance(bbox, (list, tuple))
                or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
            ):
                raise ValueError(f"{src}: {where} needs 'bbox' = [x, y, width, height] of finite numbers, got {bbox!r}")
            ann.setdefault("iscrowd", 0)
            ann.setdefault("area", float(bbox[2]) * float(bbox[3]))
            if self.with_masks:
                from .masks import check_segmentation

                if "segmentation" not in ann:
                    raise ValueError(f"{src}: {where} has no 'segmentation'; instance masks (Mask R-CNN) need one "
                                     "per annotation, or train a box-only detector")
                check_segmentation(ann["segmentation"], f"{src}: {where}")
        return data

    def load_masks(self, record: ImageRecord, height: int, width: int) -> torch.Tensor:
        from .masks import segmentations_to_masks

        return segmentations_to_masks(record.meta.get("segmentations", []), height, width)

    def to_coco(self, difficult_as_crowd: bool = True) -> dict[str, Any]:
        """The validated source dict (original, unclipped boxes, crowd annotations included), deep-copied."""
        return copy.deepcopy(self._dataset)

    @property
    def coco(self) -> Any:
        """A pycocotools ``COCO`` index over :meth:`to_coco` (built on first use, quietly)."""
        if self._coco is None:
            from .evaluation import coco_from_dict

            self._coco = coco_from_dict(self._dataset)
        return self._coco


# ---- Pascal VOC -------------------------------------------------------------------------------------------
def parse_voc_xml(xml_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse one Pascal VOC annotation file.

    Returns ``{"filename", "width", "height", "objects": [{"name", "box" (xyxy floats), "difficult"}]}``;
    ``width``/``height`` are ``None`` when ``<size>`` is absent or zero. Raises ``ValueError`` naming the file
    and the line for malformed XML or an object without a usable ``<name>``/``<bndbox>``.
    """
    path = Path(xml_path)
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line, column = exc.position
        raise ValueError(f"{path}: malformed XML at line {line}, column {column}: {exc}") from None
    if root.tag != "annotation":
        raise ValueError(f"{path}: root element is <{root.tag}>, expected a Pascal VOC <annotation>")
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise ValueError(f"{path}: no <filename> element (line {_line_of(text, '<annotation', 0)})")

    def size_of(tag: str) -> int | None:
        value = root.findtext(f"size/{tag}")
        try:
            number = int(float(value)) if value is not None else 0
        except ValueError:
            raise ValueError(f"{path}: <size><{tag}> is {value!r}, not a number") from None
        return number if number > 0 else None

    objects = []
    for k, obj in enumerate(root.iter("object")):
        line = _line_of(text, "<object", k)
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise ValueError(f"{path}: object #{k + 1} (line {line}) has no <name>")
        try:
            box = [float(obj.findtext(f"bndbox/{c}")) for c in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore
        except (TypeError, ValueError):
            raise ValueError(
                f"{path}: object #{k + 1} {name!r} (line {line}) needs numeric <bndbox> xmin/ymin/xmax/ymax"
            ) from None
        if not all(math.isfinite(v) for v in box):
            raise ValueError(f"{path}: object #{k + 1} {name!r} (line {line}) has non-finite coordinates {box}")
        difficult = (obj.findtext("difficult") or "0").strip()
        objects.append({"name": name, "box": box, "difficult": difficult not in ("0", "", "false", "False")})
    return {"filename": filename, "width": size_of("width"), "height": size_of("height"), "objects": objects}


class VOCDetection(DetectionDataset):
    """Pascal VOC XML detection data (one ``.xml`` per image).

    ``root_or_xml_dir`` is either a VOC root (with ``Annotations/``, and ``JPEGImages/`` for the images) or a
    folder of XML files. ``image_dir`` defaults to a sibling ``JPEGImages/`` of the XML folder when it exists,
    else the XML folder itself; ``<filename>`` is resolved relative to it. ``classes`` (names, background
    excluded) defaults to the sorted names found; an object whose name is not in an explicit list is an error.
    ``split`` reads ``ImageSets/Main/<split>.txt`` under a VOC root. Image ids are ``1..N`` in XML-name order;
    category ids equal labels. ``difficult`` objects are kept and flagged in ``target["difficult"]``.
    """

    def __init__(
        self,
        root_or_xml_dir: str | os.PathLike[str],
        image_dir: str | os.PathLike[str] | None = None,
        classes: Sequence[str] | None = None,
        transforms: Transform | None = None,
        *,
        split: str | None = None,
    ) -> None:
        root = Path(root_or_xml_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"VOC folder {root} does not exist (expected a VOC root or a folder of .xml files)")
        xml_dir = root / "Annotations" if (root / "Annotations").is_dir() else root
        if image_dir is None:
            sibling = xml_dir.parent / "JPEGImages"
            image_dir = sibling if sibling.is_dir() else xml_dir
        self.xml_dir, self.image_dir = xml_dir, Path(image_dir)
        if split is not None:
            list_file = xml_dir.parent / "ImageSets" / "Main" / f"{split}.txt"
            if not list_file.is_file():
                raise FileNotFoundError(f"split {split!r}: {list_file} does not exist")
            stems = [s.split()[0] for s in list_file.read_text().splitlines() if s.strip()]
            xml_files = [xml_dir / f"{s}.xml" for s in stems]
            absent = [str(p) for p in xml_files if not p.is_file()]
            if absent:
                raise FileNotFoundError(f"{list_file} lists {len(absent)} ids without an XML file, e.g. {absent[0]}")
        else:
            xml_files = sorted(xml_dir.glob("*.xml"))
        if not xml_files:
            raise ValueError(f"{xml_dir}: no .xml annotation files found")

        parsed = []
        missing = []
        for xml_file in xml_files:
            ann = parse_voc_xml(xml_file)
            image_path = self.image_dir / ann["filename"]
            if not image_path.is_file():
                missing.append(f"{xml_file} -> {image_path}")
            parsed.append((xml_file, image_path, ann))
        if missing:
            shown = "; ".join(missing[:5]) + (f"; ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise FileNotFoundError(
                f"{len(missing)} image(s) named by <filename> do not exist under image_dir {self.image_dir}: {shown}"
            )

        names_found = sorted({o["name"] for _, _, a in parsed for o in a["objects"]})
        if classes is None:
            class_names = names_found
        else:
            class_names = [c for c in classes if c != BACKGROUND]
            if len(set(class_names)) != len(class_names):
                raise ValueError(f"classes contains duplicates: {class_names}")
        name_to_label = {name: i + 1 for i, name in enumerate(class_names)}

        records, stats = [], {"clipped_boxes": 0, "dropped_boxes": 0, "difficult_boxes": 0}
        for image_id, (xml_file, image_path, ann) in enumerate(parsed, start=1):
            for k, obj in enumerate(ann["objects"]):
                if obj["name"] not in name_to_label:
                    raise ValueError(
                        f"{xml_file}: object #{k + 1} has class {obj['name']!r}, not in classes {class_names}; "
                        "pass the full class list (or omit classes to use every name found)"
                    )
            width, height = ann["width"], ann["height"]
            if width is None or height is None:
                width, height = _image_size(image_path) or (0, 0)  # 0 = unknown, see clip_boxes
            record, counts = _voc_record(image_id, ann, image_path, width, height, name_to_label)
            for key, value in counts.items():
                stats[key] += value
            records.append(record)
        super().__init__(
            records, [BACKGROUND, *class_names], list(range(len(class_names) + 1)), transforms, stats, name=str(root)
        )


def _voc_record(
    image_id: int,
    ann: Mapping[str, Any],
    image_path: Path,
    width: int,
    height: int,
    name_to_label: Mapping[str, int],
    file_name: str | None = None,
) -> tuple[ImageRecord, dict[str, int]]:
    """Clip, drop degenerate boxes and build the record of one parsed VOC file (shared with the tree sets)."""
    objects = ann["objects"]
    raw = np.array([o["box"] for o in objects], dtype=np.float32).reshape(-1, 4)
    labels = np.array([name_to_label[o["name"]] for o in objects], dtype=np.int64)
    difficult = np.array([o["difficult"] for o in objects], dtype=bool)
    boxes, keep, changed = clip_boxes(raw, width, height)
    record = ImageRecord(
        image_id=image_id,
        file_name=file_name or ann["filename"],
        path=image_path,
        width=int(width),
        height=int(height),
        boxes=boxes[keep],
        labels=labels[keep],
        difficult=difficult[keep],
    )
    counts = {
        "clipped_boxes": int((changed & keep).sum()),
        "dropped_boxes": int((~keep).sum()),
        "difficult_boxes": int(difficult[keep].sum()),
    }
    return record, counts


# ---- readers of the detection file formats (recognised by spinenet.data.catalog.recognise_format) ----------
@register_format("detection", "coco")
def _open_coco(path: Path, split: str | None, **kwargs: Any) -> CocoDetection:
    return CocoDetection(path, **kwargs)


@register_format("detection", "coco-root")
def _open_coco_root(path: Path, split: str | None, **kwargs: Any) -> CocoDetection:
    kwargs.setdefault("image_root", path / str(split))
    return CocoDetection(path / "annotations" / f"instances_{split}.json", **kwargs)


@register_format("detection", "voc")
def _open_voc(path: Path, split: str | None, **kwargs: Any) -> VOCDetection:
    return VOCDetection(path, split=split, **kwargs)


def dataset_from_path(path: str | os.PathLike[str], split: str | None = None, **kwargs: Any) -> DetectionDataset:
    """Open a detection dataset from a path or a catalog name (:func:`spinenet.data.catalog.open_dataset`).

    * ``"trees:<set>"`` (``yell-train``, ``yell-val``, ``osbs``, ``soap``; ``"trees:yell"`` with
      ``split="train"`` means ``yell-train``) and ``"nuclei:<half>"`` (instance masks; ``left``, ``right``,
      ``top``, ``bottom``; ``tile_size=N`` cuts training tiles): the named sets of the catalog.
    * a ``.json`` file -> :class:`CocoDetection` (``image_root`` default: ``images/`` beside it, else its folder).
    * a folder with ``Annotations/`` or containing ``.xml`` files -> :class:`VOCDetection` (``split`` selects
      ``ImageSets/Main/<split>.txt``).
    * a COCO root with ``annotations/instances_<split>.json`` -> :class:`CocoDetection` with images in
      ``<root>/<split>/`` (the MS-COCO 2017 layout, e.g. ``split="val2017"``).

    A ``[start:stop]`` suffix keeps that slice of the images (in the dataset's order), e.g.
    ``"trees:yell-val[:2]"`` for the first two tiles. Extra keyword arguments go to the dataset constructor
    (``transforms``, ``classes``, ``image_root``, ...).
    """
    return open_dataset(path, "detection", split=split, **kwargs)
