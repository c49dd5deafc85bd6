"""Tests for spinenet.data.evaluation: COCO bbox AP through pycocotools, result records, atomic saving."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from spinenet.data import CocoDetection, VOCDetection, evaluate_coco, predictions_to_coco_results, save_results_json
from spinenet.data.evaluation import METRIC_NAMES, coco_from_dict

# Two images, categories with gaps (COCO-style ids 3, 17, 90), small / medium / large boxes.
GT: dict[str, Any] = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 300, "height": 200},
               {"id": 2, "file_name": "b.jpg", "width": 300, "height": 200}],
    "categories": [{"id": 3, "name": "car"}, {"id": 17, "name": "cat"}, {"id": 90, "name": "toothbrush"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20]},  # small (400 px^2)
        {"id": 2, "image_id": 1, "category_id": 17, "bbox": [50, 40, 60, 50]},  # medium (3000)
        {"id": 3, "image_id": 2, "category_id": 90, "bbox": [20, 20, 150, 120]},  # large (18000)
        {"id": 4, "image_id": 2, "category_id": 3, "bbox": [200, 100, 40, 30]},  # medium (1200)
    ],
}
CATEGORY_IDS = [0, 3, 17, 90]  # label -> category id, as a dataset's category_ids


def perfect_predictions(shift: float = 0.0) -> dict[int, dict[str, torch.Tensor]]:
    """One prediction per GT box (labels contiguous, boxes xyxy), optionally shifted right by ``shift`` px."""
    to_label = {cid: label for label, cid in enumerate(CATEGORY_IDS) if label}
    preds: dict[int, dict[str, list]] = {1: {"boxes": [], "scores": [], "labels": []},
                                         2: {"boxes": [], "scores": [], "labels": []}}
    for ann in GT["annotations"]:
        x, y, w, h = ann["bbox"]
        p = preds[ann["image_id"]]
        p["boxes"].append([x + shift, y, x + w + shift, y + h])
        p["scores"].append(0.9)
        p["labels"].append(to_label[ann["category_id"]])
    return {
        i: {"boxes": torch.tensor(p["boxes"]), "scores": torch.tensor(p["scores"]), "labels": torch.tensor(p["labels"])}
        for i, p in preds.items()
    }


def test_perfect_predictions_score_one(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = evaluate_coco(perfect_predictions(), GT, CATEGORY_IDS)
    assert set(METRIC_NAMES) <= set(metrics)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert metrics[key] == pytest.approx(1.0), key
    assert capsys.readouterr().out == ""  # pycocotools' prints are captured by default


def test_verbose_prints_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    evaluate_coco(perfect_predictions(), GT, CATEGORY_IDS, verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_shifted_boxes_score_lower() -> None:
    perfect = evaluate_coco(perfect_predictions(), GT, CATEGORY_IDS)["AP"]
    slightly = evaluate_coco(perfect_predictions(shift=4.0), GT, CATEGORY_IDS)
    far = evaluate_coco(perfect_predictions(shift=500.0), GT, CATEGORY_IDS)
    assert 0.0 < slightly["AP"] < perfect
    assert slightly["AP75"] < slightly["AP50"] <= 1.0
    assert far["AP"] == 0.0 and far["AP50"] == 0.0


@pytest.mark.parametrize("empty", [{}, [], {1: {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                                                 "labels": torch.zeros(0, dtype=torch.int64)}}])
def test_no_predictions_score_zero(empty: Any) -> None:
    metrics = evaluate_coco(empty, GT, CATEGORY_IDS)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert metrics[key] == 0.0, key


def test_undefined_ranges_are_nan() -> None:
    gt = {**GT, "annotations": [a for a in GT["annotations"] if a["id"] == 3]}  # one large box only
    preds = {2: perfect_predictions()[2]}
    metrics = evaluate_coco(preds, gt, CATEGORY_IDS)
    assert metrics["AP"] < 1.0  # the extra medium prediction is a false positive ...
    assert metrics["APl"] == pytest.approx(1.0)  # ... that does not touch the large range
    assert math.isnan(metrics["APs"]) and math.isnan(metrics["APm"])
    empty = evaluate_coco([], gt, CATEGORY_IDS)
    assert empty["AP"] == 0.0 and math.isnan(empty["APs"]) and empty["APl"] == 0.0


def test_category_gaps_round_trip() -> None:
    results = predictions_to_coco_results(list(perfect_predictions().values()), [1, 2], {1: 3, 2: 17, 3: 90})
    assert sorted({r["category_id"] for r in results}) == [3, 17, 90]
    gt_pairs = sorted((a["image_id"], a["category_id"], tuple(a["bbox"])) for a in GT["annotations"])
    res_pairs = sorted((r["image_id"], r["category_id"], tuple(r["bbox"])) for r in results)
    assert res_pairs == gt_pairs  # xyxy -> xywh and label -> category id give back the ground truth exactly
    # the same predictions evaluated with a wrong (identity) label map find nothing
    wrong = evaluate_coco(perfect_predictions(), {**GT, "categories": GT["categories"] + [{"id": 1}, {"id": 2}]},
                          [0, 1, 2, 3])
    assert wrong["AP"] < 0.5
    # ready COCO result records are accepted as they are
    assert evaluate_coco(results, GT, CATEGORY_IDS)["AP"] == pytest.approx(1.0)


def test_prediction_formats_and_errors() -> None:
    preds = perfect_predictions()
    as_list = [dict(preds[1], image_id=1), dict(preds[2], image_id=2)]
    assert evaluate_coco(as_list, GT, CATEGORY_IDS)["AP"] == pytest.approx(1.0)
    assert evaluate_coco([preds[1], preds[2]], GT, CATEGORY_IDS, image_ids=[1, 2])["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="need image ids"):
        evaluate_coco([preds[1]], GT, CATEGORY_IDS)
    with pytest.raises(ValueError, match="image ids \\[7\\]"):
        evaluate_coco({7: preds[1]}, GT, CATEGORY_IDS)
    bad = {"boxes": torch.tensor([[0.0, 0, 1, 1]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([0])}
    with pytest.raises(ValueError, match="label 0 has no category"):
        predictions_to_coco_results([bad], [1], CATEGORY_IDS)
    with pytest.raises(ValueError, match="must pair up"):
        predictions_to_coco_results([bad], [1, 2], CATEGORY_IDS)


def test_result_records_by_hand() -> None:
    pred = {"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0]]), "scores": torch.tensor([0.25]),
            "labels": torch.tensor([2])}
    assert predictions_to_coco_results([pred], [5], CATEGORY_IDS) == [
        {"image_id": 5, "category_id": 17, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.25}
    ]


def test_missing_images_count_as_misses_unless_restricted() -> None:
    only_first = {1: perfect_predictions()[1]}
    assert evaluate_coco(only_first, GT, CATEGORY_IDS)["AR100"] < 1.0
    assert evaluate_coco(only_first, GT, CATEGORY_IDS, eval_image_ids=[1])["AP"] == pytest.approx(1.0)


def test_save_results_json_is_atomic(tmp_path: Path) -> None:
    results = predictions_to_coco_results(list(perfect_predictions().values()), [1, 2], CATEGORY_IDS)
    out = save_results_json(tmp_path / "sub" / "results.json", results)
    assert json.loads(out.read_text()) == results
    assert [p.name for p in out.parent.iterdir()] == ["results.json"]  # no temp file left behind
    save_results_json(out, [])  # replaced whole
    assert json.loads(out.read_text()) == []


def test_coco_object_accepted_and_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    coco = coco_from_dict(GT)
    assert evaluate_coco(perfect_predictions(), coco, CATEGORY_IDS)["AP"] == pytest.approx(1.0)
    assert capsys.readouterr().out == ""


def _image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (30, 90, 10)).save(path)


def test_with_a_coco_dataset_and_crowd(tmp_path: Path) -> None:
    _image(tmp_path / "1.jpg", 100, 100)
    data = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 100}],
        "categories": [{"id": 44, "name": "bottle"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 44, "bbox": [10, 10, 30, 30]},
                        {"id": 2, "image_id": 1, "category_id": 44, "bbox": [50, 50, 40, 40], "iscrowd": 1}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(data))
    ds = CocoDetection(tmp_path / "gt.json")
    _, target = ds[0]
    assert target["labels"].tolist() == [1]  # the crowd box is not a training target ...
    pred = {"boxes": torch.tensor([[10.0, 10, 40, 40], [55, 55, 85, 85]]), "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([1, 1])}
    # ... but COCOeval sees it: the detection inside the crowd region is ignored, not a false positive
    metrics = evaluate_coco({1: pred}, ds.coco, ds.label_to_category)
    assert metrics["AP"] == pytest.approx(1.0)
    assert evaluate_coco({1: pred}, ds.to_coco(), ds.category_ids)["AP"] == pytest.approx(1.0)


def test_voc_difficult_is_ignored(tmp_path: Path) -> None:
    _image(tmp_path / "JPEGImages" / "x.jpg", 100, 100)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><size><width>100</width><height>100</height></size>"
        "<object><name>tree</name><difficult>0</difficult>"
        "<bndbox><xmin>10</xmin><ymin>10</ymin><xmax>40</xmax><ymax>40</ymax></bndbox></object>"
        "<object><name>tree</name><difficult>1</difficult>"
        "<bndbox><xmin>60</xmin><ymin>60</ymin><xmax>90</xmax><ymax>90</ymax></bndbox></object></annotation>"
    )
    ds = VOCDetection(tmp_path)
    gt = ds.to_coco()
    hit = {"boxes": torch.tensor([[10.0, 10, 40, 40]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    both = {"boxes": torch.tensor([[10.0, 10, 40, 40], [60, 60, 90, 90]]), "scores": torch.tensor([0.9, 0.95]),
            "labels": torch.tensor([1, 1])}
    assert evaluate_coco({1: hit}, gt, ds.category_ids)["AP"] == pytest.approx(1.0)  # missing it is no miss
    assert evaluate_coco({1: both}, gt, ds.category_ids)["AP"] == pytest.approx(1.0)  # finding it is no error
    strict = ds.to_coco(difficult_as_crowd=False)
    assert evaluate_coco({1: hit}, strict, ds.category_ids)["AR100"] == pytest.approx(0.5)


def test_tree_set_round_trip() -> None:
    """A real tree set: ground-truth boxes fed back as predictions score AP 1 through to_coco()."""
    from spinenet.data import trees

    try:
        ds = trees.trees_dataset("yell-val")
    except FileNotFoundError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(exc))
    predictions = {}
    for record in ds.records:
        n = len(record.boxes)
        predictions[record.image_id] = {"boxes": torch.as_tensor(record.boxes), "scores": torch.linspace(1, 0.5, n),
                                        "labels": torch.as_tensor(record.labels)}
    metrics = evaluate_coco(predictions, ds.to_coco(), ds.category_ids)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
