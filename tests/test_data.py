"""Tests for spinenet.data: COCO/VOC loading and validation, bad data, transforms, collate and the tree sets.

Every dataset here is built in tmp_path from real image files (PIL-drawn JPEG/PNG); the tree tests read the
deepforest package's data files (skipped when absent, a failure under CI=true).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from spinenet.data import (
    CocoDetection,
    VOCDetection,
    collate_detection,
    dataset_from_path,
    decode_image,
    eval_transforms,
    train_transforms,
)
from spinenet.data.transforms import (ColorJitter, RandomHorizontalFlip, RandomTranspose, RandomVerticalFlip,
                                      ScaleJitterCrop)
from spinenet.models.classification import IMAGENET_MEAN, IMAGENET_STD


# ---- helpers ----------------------------------------------------------------------------------------------
def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A real, decodable image with some drawn shapes (format from the suffix)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 80, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width - 2)), int(rng.integers(0, height - 2))
        draw.rectangle([x0, y0, x0 + 10, y0 + 10], fill=tuple(int(v) for v in rng.integers(100, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_coco(root: Path, data: dict[str, Any], name: str = "ann.json") -> Path:
    path = root / name
    path.write_text(json.dumps(data))
    return path


def coco_fixture(root: Path) -> tuple[Path, dict[str, Any]]:
    """Three images (one without objects), categories with gaps (1, 5, 90), one crowd, clipped and bad boxes."""
    write_image(root / "images" / "a.jpg", 100, 80, seed=1)
    write_image(root / "images" / "b.png", 64, 48, seed=2)
    write_image(root / "images" / "empty.jpg", 50, 40, seed=3)
    data = {
        "images": [
            {"id": 10, "file_name": "a.jpg", "width": 100, "height": 80},
            {"id": 20, "file_name": "b.png", "width": 64, "height": 48},
            {"id": 30, "file_name": "empty.jpg", "width": 50, "height": 40},
        ],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 90, "bbox": [80, 60, 40, 40], "iscrowd": 0},  # clipped
            {"id": 3, "image_id": 10, "category_id": 5, "bbox": [5, 5, 0, 10], "iscrowd": 0},  # zero width
            {"id": 4, "image_id": 10, "category_id": 5, "bbox": [0, 0, 50, 50], "iscrowd": 1},  # crowd
            {"id": 5, "image_id": 20, "category_id": 5, "bbox": [70, 10, 10, 10], "iscrowd": 0},  # outside
            {"id": 6, "image_id": 20, "category_id": 90, "bbox": [1.5, 2.5, 20, 10]},  # no iscrowd key
        ],
    }
    return write_coco(root, data), data


VOC_OBJECT = """  <object>
    <name>{name}</name>
    <difficult>{difficult}</difficult>
    <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>
  </object>
"""


def voc_xml(filename: str, width: int | None, height: int | None, objects: list[tuple]) -> str:
    size = "" if width is None else f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>\n"
    body = "".join(
        VOC_OBJECT.format(name=n, x0=b[0], y0=b[1], x1=b[2], y1=b[3], difficult=int(d)) for n, b, d in objects
    )
    return f"<annotation>\n  <folder>x</folder>\n  <filename>{filename}</filename>\n{size}{body}</annotation>\n"


def voc_root(root: Path) -> Path:
    """A VOC root: Annotations/ + JPEGImages/ + ImageSets/Main/{train,val}.txt."""
    (root / "Annotations").mkdir(parents=True)
    write_image(root / "JPEGImages" / "001.jpg", 120, 90, seed=4)
    write_image(root / "JPEGImages" / "002.jpg", 60, 60, seed=5)
    write_image(root / "JPEGImages" / "003.png", 40, 30, seed=6)
    (root / "Annotations" / "001.xml").write_text(
        voc_xml(
            "001.jpg",
            120,
            90,
            [("dog", (10, 20, 50, 60), False), ("cat", (100, 70, 130, 95), False), ("dog", (5, 5, 40, 30), True)],
        )
    )
    (root / "Annotations" / "002.xml").write_text(
        voc_xml("002.jpg", 60, 60, [("bird", (20, 20, 20, 40), False), ("cat", (-5, 0, 10, 10), False)])
    )
    (root / "Annotations" / "003.xml").write_text(voc_xml("003.png", None, None, []))  # no <size>, no objects
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("001\n003\n")
    return root


# ---- COCO ---------------------------------------------------------------------------------------------
def test_coco_targets_boxes_and_stats(tmp_path: Path) -> None:
    ann, _ = coco_fixture(tmp_path)
    ds = CocoDetection(ann)  # image_root defaults to images/ beside the JSON
    assert len(ds) == 3
    assert ds.classes == ["__background__", "person", "airplane", "toothbrush"]
    assert ds.category_ids == [0, 1, 5, 90]
    assert ds.num_classes == 4
    image, target = ds[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 80, 100)
    assert target["image_id"] == 10 and target["orig_size"] == (80, 100)
    # xywh -> xyxy; the second box [80, 60, 40, 40] is clipped to the 100x80 image; zero-width and crowd gone
    torch.testing.assert_close(target["boxes"], torch.tensor([[10.0, 20, 40, 60], [80, 60, 100, 80]]))
    assert target["labels"].tolist() == [1, 3]
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    _, target_b = ds[1]  # the box at x=70 lies outside the 64 px wide image: degenerate after clipping
    torch.testing.assert_close(target_b["boxes"], torch.tensor([[1.5, 2.5, 21.5, 12.5]]))
    assert target_b["labels"].tolist() == [3]
    assert ds.stats["clipped_boxes"] == 1  # box 2; box 5 is counted as dropped, not as clipped
    assert ds.stats["dropped_boxes"] == 2 and ds.stats["crowd_boxes"] == 1
    assert ds.stats["boxes"] == 3 and ds.stats["empty_images"] == 1 and ds.stats["unreadable_images"] == 0


def test_coco_empty_image_is_fine(tmp_path: Path) -> None:
    ds = CocoDetection(coco_fixture(tmp_path)[0])
    image, target = ds[2]
    assert tuple(image.shape) == (3, 40, 50)
    assert tuple(target["boxes"].shape) == (0, 4) and tuple(target["labels"].shape) == (0,)


def test_coco_category_gaps_both_ways(tmp_path: Path) -> None:
    ds = CocoDetection(coco_fixture(tmp_path)[0])
    assert ds.label_to_category == {1: 1, 2: 5, 3: 90}
    assert ds.category_to_label == {1: 1, 5: 2, 90: 3}
    for label, cid in ds.label_to_category.items():
        assert ds.category_to_label[cid] == label and ds.category_ids[label] == cid


def test_coco_to_coco_keeps_crowd_and_original_boxes(tmp_path: Path) -> None:
    ann, data = coco_fixture(tmp_path)
    gt = CocoDetection(ann).to_coco()
    assert [a["id"] for a in gt["annotations"]] == [a["id"] for a in data["annotations"]]
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert [a["id"] for a in crowd] == [4]
    assert gt["annotations"][1]["bbox"] == [80, 60, 40, 40]  # unclipped, as in the source
    assert all("area" in a and "iscrowd" in a for a in gt["annotations"])


def test_coco_missing_size_read_from_header_and_ids_assigned(tmp_path: Path) -> None:
    write_image(tmp_path / "x.png", 30, 20)
    data = {
        "images": [{"id": 1, "file_name": "x.png"}],
        "categories": [{"id": 7, "name": "thing"}],
        "annotations": [{"image_id": 1, "category_id": 7, "bbox": [20, 10, 30, 30]}],  # no "id"
    }
    ds = CocoDetection(write_coco(tmp_path, data))  # no images/ folder: image_root is the JSON's folder
    _, target = ds[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[20.0, 10, 30, 20]]))
    assert ds.to_coco()["annotations"][0]["id"] == 1


def test_coco_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{\n  "images": [],\n  "categories": [,]\n}\n')
    with pytest.raises(ValueError, match=r"broken\.json: malformed JSON at line 3, column"):
        CocoDetection(bad)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda d: d["annotations"].append({"id": 77, "image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1]}),
         r"annotation id 77 .*image id 99"),
        (lambda d: d["annotations"].append({"id": 78, "image_id": 10, "category_id": 2, "bbox": [0, 0, 1, 1]}),
         r"annotation id 78 .*category_id 2"),
        (lambda d: d["annotations"].append({"id": 79, "image_id": 10, "category_id": 1, "bbox": [0, 0, 1]}),
         r"annotation id 79 .*bbox"),
        (lambda d: d["annotations"].append({"id": 1, "image_id": 10, "category_id": 1, "bbox": [0, 0, 1, 1]}),
         r"duplicate annotation id 1"),
        (lambda d: d.pop("categories"), r"categories"),
        (lambda d: d["images"].append({"id": 10, "file_name": "a.jpg"}), r"duplicate image id 10"),
    ],
)
def test_coco_bad_references_fail_at_construction(tmp_path: Path, mutate: Any, pattern: str) -> None:
    _, data = coco_fixture(tmp_path)
    mutate(data)
    path = write_coco(tmp_path, data, "bad.json")
    with pytest.raises(ValueError, match=pattern) as info:
        CocoDetection(path)
    assert "bad.json" in str(info.value)


def test_coco_missing_image_file_fails_at_construction(tmp_path: Path) -> None:
    _, data = coco_fixture(tmp_path)
    data["images"].append({"id": 40, "file_name": "gone/missing.jpg", "width": 10, "height": 10})
    path = write_coco(tmp_path, data, "ann.json")
    with pytest.raises(FileNotFoundError, match=r"ann\.json.*image id 40 -> .*gone/missing\.jpg"):
        CocoDetection(path)


def test_coco_unreadable_image_is_skipped_warned_and_counted(tmp_path: Path) -> None:
    ann, _ = coco_fixture(tmp_path)
    jpeg = (tmp_path / "images" / "a.jpg").read_bytes()
    (tmp_path / "images" / "a.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # truncated: header fine, data cut
    ds = CocoDetection(ann)  # construction does not decode, so this still loads
    with pytest.warns(UserWarning, match=r"unreadable image .*a\.jpg \(image id 10\)"):
        image, target = ds[0]
    assert target["image_id"] == 20 and tuple(image.shape) == (3, 48, 64)  # the next readable sample
    assert ds.stats["unreadable_images"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known-bad file is skipped silently the second time
        assert ds[0][1]["image_id"] == 20
    assert ds.stats["unreadable_images"] == 1
    # a DataLoader still gets a full, valid batch
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert len(images) == 3 and [t["image_id"] for t in targets] == [20, 20, 30]


def test_all_images_unreadable_raises(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    data = {"images": [{"id": 1, "file_name": "junk.jpg", "width": 5, "height": 5}], "categories": [{"id": 1}]}
    ds = CocoDetection(write_coco(tmp_path, data))
    with pytest.warns(UserWarning, match="junk.jpg"), pytest.raises(RuntimeError, match="none of the 1 images"):
        ds[0]


def test_decoded_size_mismatch_reclips_with_warning(tmp_path: Path) -> None:
    write_image(tmp_path / "small.png", 20, 10)
    data = {
        "images": [{"id": 1, "file_name": "small.png", "width": 40, "height": 40}],  # wrong declared size
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 30, 30]}],
    }
    ds = CocoDetection(write_coco(tmp_path, data))
    with pytest.warns(UserWarning, match=r"small\.png: decoded size 20x10 differs"):
        _, target = ds[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[5.0, 5, 20, 10]]))


# ---- VOC ----------------------------------------------------------------------------------------------
def test_voc_root_targets_difficult_and_stats(tmp_path: Path) -> None:
    ds = VOCDetection(voc_root(tmp_path / "voc"))
    assert ds.classes == ["__background__", "bird", "cat", "dog"]  # sorted names found
    assert ds.category_ids == [0, 1, 2, 3]
    image, target = ds[0]
    assert tuple(image.shape) == (3, 90, 120) and target["image_id"] == 1
    # pixel-edge coordinates, no +1; the cat box is clipped to 120x90
    torch.testing.assert_close(target["boxes"], torch.tensor([[10.0, 20, 50, 60], [100, 70, 120, 90], [5, 5, 40, 30]]))
    assert target["labels"].tolist() == [3, 2, 3]
    assert target["difficult"].tolist() == [False, False, True]
    _, target2 = ds[1]  # zero-width bird dropped; cat clipped at x=0
    torch.testing.assert_close(target2["boxes"], torch.tensor([[0.0, 0, 10, 10]]))
    image3, target3 = ds[2]  # no <size>: read from the PNG header; no objects
    assert tuple(image3.shape) == (3, 30, 40) and tuple(target3["boxes"].shape) == (0, 4)
    assert target3["difficult"].shape == (0,)
    assert ds.stats["clipped_boxes"] == 2 and ds.stats["dropped_boxes"] == 1
    assert ds.stats["difficult_boxes"] == 1 and ds.stats["empty_images"] == 1


def test_voc_to_coco(tmp_path: Path) -> None:
    gt = VOCDetection(voc_root(tmp_path / "voc")).to_coco()
    assert [c["name"] for c in gt["categories"]] == ["bird", "cat", "dog"]
    first = [a for a in gt["annotations"] if a["image_id"] == 1]
    assert first[0]["bbox"] == [10.0, 20.0, 40.0, 40.0] and first[0]["area"] == 1600.0
    assert [a["iscrowd"] for a in first] == [0, 0, 1]  # difficult -> ignored by COCOeval
    assert {i["id"]: (i["width"], i["height"]) for i in gt["images"]} == {1: (120, 90), 2: (60, 60), 3: (40, 30)}


def test_voc_flat_folder_and_explicit_classes(tmp_path: Path) -> None:
    folder = tmp_path / "flat"
    write_image(folder / "img.jpg", 50, 50)
    (folder / "img.xml").write_text(voc_xml("img.jpg", 50, 50, [("b", (1, 1, 9, 9), False)]))
    ds = VOCDetection(folder, classes=["z", "b"])  # images next to the XML; explicit order kept
    assert ds.classes == ["__background__", "z", "b"] and ds[0][1]["labels"].tolist() == [2]
    with pytest.raises(ValueError, match=r"img\.xml: object #1 has class 'b', not in classes \['z'\]"):
        VOCDetection(folder, classes=["z"])


def test_voc_split_file(tmp_path: Path) -> None:
    ds = dataset_from_path(voc_root(tmp_path / "voc"), split="train")
    assert isinstance(ds, VOCDetection) and len(ds) == 2
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/test\.txt"):
        VOCDetection(tmp_path / "voc", split="test")


def test_voc_malformed_xml_names_file_and_line(tmp_path: Path) -> None:
    root = voc_root(tmp_path / "voc")
    broken = "<annotation>\n  <filename>002.jpg</filename>\n  <size>\n</annotation>\n"  # <size> never closed
    (root / "Annotations" / "002.xml").write_text(broken)
    with pytest.raises(ValueError, match=r"002\.xml: malformed XML at line 4"):
        VOCDetection(root)


def test_voc_bad_bndbox_names_file_object_and_line(tmp_path: Path) -> None:
    root = voc_root(tmp_path / "voc")
    text = voc_xml("002.jpg", 60, 60, [("cat", (1, 1, 5, 5), False), ("cat", ("abc", 1, 5, 5), False)])
    (root / "Annotations" / "002.xml").write_text(text)
    with pytest.raises(ValueError, match=r"002\.xml: object #2 'cat' \(line 10\) needs numeric <bndbox>"):
        VOCDetection(root)


def test_voc_missing_image_names_xml_and_image(tmp_path: Path) -> None:
    root = voc_root(tmp_path / "voc")
    (root / "JPEGImages" / "002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"Annotations/002\.xml -> .*JPEGImages/002\.jpg"):
        VOCDetection(root)


def test_voc_unreadable_image_skipped(tmp_path: Path) -> None:
    root = voc_root(tmp_path / "voc")
    (root / "JPEGImages" / "002.jpg").write_bytes(b"\xff\xd8garbage")
    ds = VOCDetection(root)  # <size> present, so construction does not touch the pixels
    with pytest.warns(UserWarning, match=r"002\.jpg"):
        assert ds[1][1]["image_id"] == 3
    assert ds.stats["unreadable_images"] == 1


# ---- dataset_from_path ------------------------------------------------------------------------------------
def test_dataset_from_path_dispatch(tmp_path: Path) -> None:
    ann, _ = coco_fixture(tmp_path / "coco")
    assert isinstance(dataset_from_path(ann), CocoDetection)
    assert isinstance(dataset_from_path(voc_root(tmp_path / "voc")), VOCDetection)
    # the MS-COCO 2017 layout: annotations/instances_<split>.json + <split>/
    layout = tmp_path / "coco17"
    write_image(layout / "val2017" / "1.jpg", 20, 20)
    (layout / "annotations").mkdir()
    write_coco(layout / "annotations", {"images": [{"id": 1, "file_name": "1.jpg"}], "categories": [{"id": 3}]},
               "instances_val2017.json")
    ds = dataset_from_path(layout, split="val2017")
    assert isinstance(ds, CocoDetection) and tuple(ds[0][0].shape) == (3, 20, 20)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a recognised dataset folder"):
        dataset_from_path(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_from_path(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_from_path(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported dataset file"):
        dataset_from_path(tmp_path / "file.txt")
    with pytest.raises(ValueError, match="unknown tree set"):
        dataset_from_path("trees:nope")


def test_dataset_slice_suffix(tmp_path: Path) -> None:
    root = voc_root(tmp_path / "voc")
    full = dataset_from_path(root)
    part = dataset_from_path(f"{root}[1:3]")
    assert len(part) == 2 and part.classes == full.classes
    assert [t["image_id"] for _, t in (part[0], part[1])] == [full[1][1]["image_id"], full[2][1]["image_id"]]
    assert part.stats["images"] == 2 and part.stats["boxes"] == sum(len(r.boxes) for r in full.records[1:3])
    assert len(dataset_from_path(f"{root}[:-1]")) == len(full) - 1
    assert [img["id"] for img in part.to_coco()["images"]] == [r.image_id for r in full.records[1:3]]
    with pytest.raises(ValueError, match=r"\[5:\] selects no images"):
        dataset_from_path(f"{root}[5:]")


def test_collate_and_dataloader(tmp_path: Path) -> None:
    ds = VOCDetection(voc_root(tmp_path / "voc"))
    images, targets = collate_detection([ds[0], ds[2]])
    assert [tuple(i.shape) for i in images] == [(3, 90, 120), (3, 30, 40)]
    assert [t["image_id"] for t in targets] == [1, 3]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=False, collate_fn=collate_detection)
    assert [len(b[0]) for b in loader] == [2, 1]


def test_decode_image_converts_grey_and_alpha(tmp_path: Path) -> None:
    Image.new("L", (7, 5), 100).save(tmp_path / "g.png")
    Image.new("RGBA", (7, 5), (1, 2, 3, 0)).save(tmp_path / "a.png")
    assert decode_image(tmp_path / "g.png").shape == (3, 5, 7)
    assert decode_image(tmp_path / "a.png")[:, 0, 0].tolist() == [1, 2, 3]


# ---- transforms -------------------------------------------------------------------------------------------
def _target(boxes: list[list[float]], **extra: Any) -> dict[str, Any]:
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
         "labels": torch.arange(1, len(boxes) + 1), "image_id": 1}
    t.update(extra)
    return t


def _painted(height: int, width: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = 255
    return image


def _bright_extent(image: torch.Tensor) -> list[int]:
    ys, xs = torch.nonzero(image[0] > 127, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_flip_hand_checked() -> None:
    image = _painted(100, 200, (20, 10, 60, 30))
    out, target = RandomHorizontalFlip(p=1.0)(image, _target([[20, 10, 60, 30]]))
    torch.testing.assert_close(target["boxes"], torch.tensor([[140.0, 10, 180, 30]]))
    assert _bright_extent(out) == [140, 10, 180, 30]
    same, kept = RandomHorizontalFlip(p=0.0)(image, _target([[20, 10, 60, 30]]))
    assert torch.equal(same, image) and same.data_ptr() == image.data_ptr()  # untouched, not even copied
    assert kept["boxes"].tolist() == [[20, 10, 60, 30]]


def test_vertical_flip_and_transpose_hand_checked() -> None:
    image = _painted(100, 200, (20, 10, 60, 30))
    masks = (image[:1] > 0).to(torch.uint8)
    out, target = RandomVerticalFlip(p=1.0)(image, _target([[20, 10, 60, 30]], masks=masks))
    torch.testing.assert_close(target["boxes"], torch.tensor([[20.0, 70, 60, 90]]))
    assert _bright_extent(out) == [20, 70, 60, 90]
    assert _bright_extent(target["masks"].expand(3, -1, -1) * 255) == [20, 70, 60, 90]
    out, target = RandomTranspose(p=1.0)(image, _target([[20, 10, 60, 30]], masks=masks))
    assert tuple(out.shape) == (3, 200, 100) and tuple(target["masks"].shape) == (1, 200, 100)
    torch.testing.assert_close(target["boxes"], torch.tensor([[10.0, 20, 30, 60]]))
    assert _bright_extent(out) == [10, 20, 30, 60]
    # transpose then vertical flip = a 90 degree rotation: matches torch.rot90 pixel for pixel
    rotated, target = RandomVerticalFlip(p=1.0)(*RandomTranspose(p=1.0)(image, _target([[20, 10, 60, 30]])))
    assert torch.equal(rotated, torch.rot90(image, 1, dims=(-2, -1)))
    assert _bright_extent(rotated) == [int(v) for v in target["boxes"][0].tolist()]


def test_color_jitter_keeps_boxes_and_range() -> None:
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    out, target = ColorJitter(0.4, gen)(image, _target([[1, 2, 3, 4]]))
    assert out.dtype == torch.uint8 and out.shape == image.shape and not torch.equal(out, image)
    assert target["boxes"].tolist() == [[1, 2, 3, 4]]
    same, _ = ColorJitter(0.0, gen)(image, _target([[1, 2, 3, 4]]))
    assert torch.equal(same, image) and same.data_ptr() == image.data_ptr()
    with pytest.raises(ValueError, match="colour jitter"):
        ColorJitter(1.5)


def test_scale_jitter_resize_only_hand_checked() -> None:
    # scale fixed at 1: a 100x200 image fits a (50, 100) output at factor 0.5; nothing to crop or pad
    image = _painted(100, 200, (20, 10, 60, 30))
    out, target = ScaleJitterCrop((50, 100), scale_range=(1.0, 1.0))(image, _target([[20, 10, 60, 30]]))
    assert tuple(out.shape) == (3, 50, 100) and out.dtype == torch.uint8
    torch.testing.assert_close(target["boxes"], torch.tensor([[10.0, 5, 30, 15]]))
    assert target["scale"] == (0.5, 0.5) and target["crop_offset"] == (0, 0)
    assert _bright_extent(out) == [10, 5, 30, 15]


def test_scale_jitter_crop_follows_pixels() -> None:
    # scale 2 on a (100, 200) output: resized to 200x400, then a random 100x200 crop; the painted square
    # must stay under its box wherever the crop lands
    gen = torch.Generator().manual_seed(3)
    t = ScaleJitterCrop((100, 200), scale_range=(2.0, 2.0), generator=gen)
    seen_offsets = set()
    for _ in range(8):
        image = _painted(100, 200, (80, 40, 120, 60))
        out, target = t(image, _target([[80, 40, 120, 60], [0, 0, 10, 10]]))
        assert tuple(out.shape) == (3, 100, 200)
        off_y, off_x = target["crop_offset"]
        seen_offsets.add((off_y, off_x))
        assert 0 <= off_y <= 100 and 0 <= off_x <= 200
        expected = torch.tensor([160.0 - off_x, 80 - off_y, 240 - off_x, 120 - off_y])
        expected[0::2] = expected[0::2].clamp(0, 200)
        expected[1::2] = expected[1::2].clamp(0, 100)
        if expected[2] > expected[0] and expected[3] > expected[1]:
            torch.testing.assert_close(target["boxes"][0], expected)
            got = _bright_extent(out)
            assert max(abs(a - b) for a, b in zip(got, expected.tolist())) <= 1
        # the [0,0,10,10] box becomes [0,0,20,20] - offset: dropped as soon as the crop starts past it
        corner_kept = off_x < 20 and off_y < 20
        assert (1 if corner_kept else 0) + (1 if expected[2] > expected[0] and expected[3] > expected[1] else 0) == len(
            target["boxes"]
        )
        assert len(target["labels"]) == len(target["boxes"])
    assert len(seen_offsets) > 1


def test_scale_jitter_pads_and_drops_with_per_box_fields() -> None:
    # scale 0.5: a 100x100 image goes to 50x50 and is padded to 100x100 with the ImageNet mean colour (zero after
    # the models' normalisation, as the official pipeline pads the normalised image); boxes clip to the valid 50x50
    image = torch.full((3, 100, 100), 200, dtype=torch.uint8)
    target = _target([[10, 10, 30, 30], [90, 90, 120, 120]], difficult=torch.tensor([True, False]))
    out, t = ScaleJitterCrop(100, scale_range=(0.5, 0.5))(image, target)
    assert tuple(out.shape) == (3, 100, 100) and out.dtype == torch.uint8
    assert int(out[:, :50, :50].min()) == 200 == int(out[:, :50, :50].max())
    mean_rgb = [124, 116, 104]  # round(255 * (0.485, 0.456, 0.406))
    for c in range(3):
        assert set(out[c, 50:, :].unique().tolist()) == set(out[c, :, 50:].unique().tolist()) == {mean_rgb[c]}
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert float(((out.float() / 255 - mean) / std)[:, 50:, :].abs().max()) < 0.01
    floats, _ = ScaleJitterCrop(100, scale_range=(0.5, 0.5), fill=(0.0,))(image.float() / 255, _target([]))
    assert float(floats[:, 50:, :].abs().max()) == 0.0 and abs(float(floats[0, 0, 0]) - 200 / 255) < 1e-6
    with pytest.raises(ValueError, match="2 values for a 3-channel image"):
        ScaleJitterCrop(100, scale_range=(0.5, 0.5), fill=(0.1, 0.2))(image, _target([]))
    torch.testing.assert_close(t["boxes"], torch.tensor([[5.0, 5, 15, 15], [45, 45, 50, 50]]))
    assert t["difficult"].tolist() == [True, False] and t["labels"].tolist() == [1, 2]
    # scale 1 on a 40x100 image with a (40, 50) output: no resize, a random 50 px wide window; a box the
    # window misses is degenerate after clipping and goes together with its per-box fields
    gen = torch.Generator().manual_seed(0)
    crop = ScaleJitterCrop((40, 50), scale_range=(2.0, 2.0), generator=gen)  # 2 x (40, 50) fits 40x100 at 1.0
    for _ in range(5):
        t2 = crop(torch.zeros(3, 40, 100, dtype=torch.uint8),
                  _target([[0, 0, 4, 10], [96, 0, 100, 10]], difficult=torch.tensor([False, True])))[1]
        assert t2["scale"] == (1.0, 1.0)
        off_x = t2["crop_offset"][1]
        expected = ([[0.0, 0.0, 4.0 - off_x, 10.0]] if off_x < 4 else []) + (
            [[96.0 - off_x, 0.0, 50.0, 10.0]] if off_x > 46 else []
        )
        assert t2["boxes"].tolist() == expected
        assert t2["difficult"].tolist() == ([False] if off_x < 4 else []) + ([True] if off_x > 46 else [])


def test_empty_target_through_train_transforms() -> None:
    out, t = train_transforms(64, seed=0)(torch.zeros(3, 30, 50, dtype=torch.uint8), _target([]))
    assert tuple(out.shape) == (3, 64, 64) and tuple(t["boxes"].shape) == (0, 4)


def test_train_transforms_deterministic_with_seed() -> None:
    image = torch.randint(0, 255, (3, 60, 80), dtype=torch.uint8)

    def run(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        tf = train_transforms((48, 64), scale_range=(0.5, 2.0), seed=seed)
        return [(o, t["boxes"]) for o, t in (tf(image, _target([[10, 10, 40, 50]])) for _ in range(5))]

    a, b, c = run(7), run(7), run(8)
    for (ia, ba), (ib, bb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ba, bb)
    assert any(not torch.equal(ia, ic) for (ia, _), (ic, _) in zip(a, c))
    assert eval_transforms() is None


def test_transforms_plug_into_dataset(tmp_path: Path) -> None:
    ds = VOCDetection(voc_root(tmp_path / "voc"), transforms=train_transforms(64, seed=1))
    image, target = ds[0]
    assert tuple(image.shape) == (3, 64, 64)
    b = target["boxes"]
    assert len(b) == len(target["labels"]) == len(target["difficult"])
    assert bool(((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]) & (b >= 0).all(1) & (b <= 64).all(1)).all())


# ---- the deepforest tree sets -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trees() -> Any:
    from spinenet.data import trees as trees_module

    try:
        data_dir = trees_module.trees_data_dir()
    except FileNotFoundError as exc:
        data_dir = None
        reason = str(exc)
    if data_dir is None or not (data_dir / "SOAP_061.xml").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail("deepforest's data files are required under CI=true")
        pytest.skip(reason if data_dir is None else f"{data_dir} lacks the tree data")
    return trees_module


def _intersects(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_trees_split_is_spatially_disjoint(trees: Any) -> None:
    for tile, overlap in ((400, 0), (256, 64)):
        train = trees.trees_dataset("yell-train", tile_size=tile, overlap=overlap)
        val = trees.trees_dataset("yell-val", tile_size=tile, overlap=overlap)
        for r in train.records:
            if r.meta["source"] == trees.YELL_LARGE:
                assert not _intersects(r.meta["window"], trees.VAL_BLOCK), r.meta["window"]
        vx0, vy0, vx1, vy1 = trees.VAL_BLOCK
        for r in val.records:
            x0, y0, x1, y1 = r.meta["window"]
            assert r.meta["source"] == trees.YELL_LARGE and vx0 <= x0 < x1 <= vx1 and vy0 <= y0 < y1 <= vy1
        # together the windows cover the whole large image
        mask = np.zeros((2472, 2299), dtype=bool)
        for r in train.records + val.records:
            if r.meta["source"] == trees.YELL_LARGE:
                x0, y0, x1, y1 = r.meta["window"]
                mask[y0:y1, x0:x1] = True
        assert mask.all()


def test_detection_task_tiles_training_windows_from_the_recipe(trees: Any) -> None:
    from spinenet.engine import Recipe
    from spinenet.tasks import get_task

    task = get_task("detection", model="retinanet_spinenet49s", data="trees:yell-train", val_data="trees:yell-val")
    train, val = task.build_datasets(Recipe().replace(tile_size=320, tile_overlap=160, val_tile_size=400))
    # stride 160: 14 x 7 windows of the top band, 6 x 7 of the bottom-left block, 7 x 6 of the small image
    assert (train.tile_size, train.overlap, len(train)) == (320, 160, 14 * 7 + 6 * 7 + 7 * 6)
    assert (val.tile_size, val.overlap, len(val)) == (400, 0, 9)  # the held-out tiles never overlap
    plain, _ = task.build_datasets(Recipe().replace(tile_size=320))
    assert (plain.overlap, len(plain)) == (0, 8 * 4 + 4 * 4 + 4 * 4)


def test_trees_box_counts_add_up(trees: Any) -> None:
    train, val = trees.trees_dataset("yell-train"), trees.trees_dataset("yell-val")
    assert (len(train), len(val)) == (45, 9)  # 24 + 9 tiles of the large image + 12 of the small one; 3 x 3
    straddling = train.stats["split_line_boxes"]
    assert straddling == val.stats["split_line_boxes"] > 0
    # every source box touches the training area, the held-out block, or (if it straddles) both
    assert train.stats["source_boxes"] + val.stats["source_boxes"] - straddling == 574 + 279
    covered = {s: set() for s in ("train", "val")}
    for split, ds in (("train", train), ("val", val)):
        for r in ds.records:
            covered[split].update((r.meta["source"], int(i)) for i in r.meta["source_index"])
            assert len(r.boxes) == len(r.meta["source_index"])
            b = r.boxes
            assert ((b[:, 0] >= 0) & (b[:, 2] <= r.width) & (b[:, 1] >= 0) & (b[:, 3] <= r.height)).all()
            assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
        assert len(covered[split]) == ds.stats["covered_source_boxes"]
        assert ds.stats["boxes"] >= ds.stats["covered_source_boxes"]
    assert len(covered["train"] & covered["val"]) <= straddling  # only split-line trees can be on both sides
    lost = 574 + 279 - len(covered["train"] | covered["val"])
    assert 0 <= lost <= 10  # boxes split across tile corners with < 50% in every tile
    assert val.stats["boxes"] == val.stats["covered_source_boxes"]  # the 3 x 3 val tiles do not overlap


def test_trees_tile_pixels_match_the_source(trees: Any) -> None:
    val = trees.trees_dataset("yell-val")
    image, target = val[4]  # the centre tile of the held-out block
    x0, y0, x1, y1 = val.records[4].meta["window"]
    with Image.open(trees.trees_data_dir() / f"{trees.YELL_LARGE}.png") as img:
        crop = np.asarray(img.convert("RGB"))[y0:y1, x0:x1]
    assert tuple(image.shape) == (3, 400, 400) and np.array_equal(image.permute(1, 2, 0).numpy(), crop)
    assert target["labels"].eq(1).all() and target["difficult"].sum() == 0


def test_trees_soap_classes_and_osbs(trees: Any) -> None:
    merged = trees.trees_dataset("soap")
    assert merged.classes == ["__background__", "Tree"] and len(merged) == 1
    image, target = merged[0]
    assert tuple(image.shape) == (3, 400, 400) and target["labels"].tolist() == [1] * 37
    dead_alive = trees.trees_dataset("soap", classes="dead_alive")
    assert dead_alive.classes == ["__background__", "Dead", "Alive"]
    labels = dead_alive[0][1]["labels"]
    assert (int((labels == 1).sum()), int((labels == 2).sum())) == (28, 9)
    assert [c["name"] for c in dead_alive.to_coco()["categories"]] == ["Dead", "Alive"]
    osbs = dataset_from_path("trees:osbs")
    assert len(osbs) == 1 and osbs.stats["boxes"] == 61 and tuple(osbs[0][0].shape) == (3, 400, 400)
    assert len(dataset_from_path("trees:yell", split="val")) == 9
    with pytest.raises(ValueError, match="only applies to 'soap'"):
        trees.trees_dataset("osbs", classes="dead_alive")
    with pytest.raises(ValueError, match="overlap"):
        trees.trees_dataset("yell-val", tile_size=400, overlap=400)


def test_trees_summary_and_to_coco(trees: Any) -> None:
    summary = trees.trees_summary(names=["yell-val", "osbs"])
    assert summary["yell-val"]["tiles"] == 9 and summary["osbs"]["boxes"] == 61
    val = trees.trees_dataset("yell-val")
    gt = val.to_coco()
    assert len(gt["images"]) == 9 and len(gt["annotations"]) == val.stats["boxes"]
    assert "yell-val" in val.summary() and "9 images/tiles" in val.summary()
