"""A detector evaluated on a data set with other classes than its own: Google's 91-label COCO detectors on a COCO
annotation file with a few of COCO's categories. The data set's categories are matched to the model's labels by
category id (COCO's id space) or by name; predictions of labels the data set lacks are dropped; a category the
model cannot predict, or an id that names another class, is a one-line error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import spinenet
from spinenet.cli import main
from spinenet.constants import coco_class_names
from spinenet.data.trees import trees_data_dir, trees_dataset
from spinenet.tasks.detection import _keep_labels, match_categories

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"filter_size_scale": 0.125, "endpoints_num_filters": 16, "head_width": 16}
# The data set's categories, by their real COCO ids and names (Google's labels 1, 3 and 13).
CATEGORIES = {1: "person", 3: "car", 13: "stop sign"}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------- the mapping
def test_categories_with_coco_ids_match_the_labels_of_those_ids():
    names = coco_class_names()
    match = match_categories([(13, "Stop Sign"), (1, "person"), (3, "car")], names, list(range(91)))
    assert match.by == "category id"
    assert match.label_to_category == {13: 13, 1: 1, 3: 3}


def test_categories_with_other_ids_match_by_name():
    names = coco_class_names()
    # ids the model does not have: by name, case-insensitive, each label to the file's own id
    match = match_categories([(101, "Person"), (113, "stop  sign")], names, list(range(91)))
    assert match.by == "name" and match.label_to_category == {1: 101, 13: 113}
    # a model whose labels are numbered 1..C (no ids to compare): by name even where the ids coincide
    match = match_categories([(1, "alive")], ["__background__", "Dead", "Alive"], None)
    assert match.by == "name" and match.label_to_category == {2: 1}
    # ids of the COCO file a model was trained on (Alive = 4, Dead = 17) match as ids
    match = match_categories([(17, "Dead")], ["__background__", "Alive", "Dead"], [0, 4, 17])
    assert match.by == "category id" and match.label_to_category == {2: 17}


def test_another_name_at_the_same_category_id_is_an_error_naming_both():
    with pytest.raises(ValueError) as err:
        match_categories([(1, "person"), (3, "truck")], coco_class_names(), list(range(91)), data="val.json",
                         source="coco.safetensors")
    message = str(err.value)
    assert "id 3 is 'truck' in val.json but 'car' in coco.safetensors" in message and "\n" not in message
    assert "person" not in message


def test_a_category_no_label_matches_is_an_error_naming_it():
    with pytest.raises(ValueError) as err:
        match_categories([(1, "person"), (95, "unicorn"), (96, "Griffin")], coco_class_names(), list(range(91)),
                         data="val.json", source="coco.safetensors")
    message = str(err.value)
    assert "val.json" in message and "coco.safetensors" in message and "\n" not in message
    assert "'unicorn' (id 95)" in message and "'Griffin' (id 96)" in message and "'person'" in message
    assert "train a model" in message
    with pytest.raises(ValueError, match="'tree' \\(id 1\\)"):
        match_categories([(1, "tree")], ["__background__", "Dead", "Alive"], None)
    # a name that several labels share, and two categories of one name, cannot be told apart
    with pytest.raises(ValueError, match="names 10 labels"):
        match_categories([(100, "N/A")], coco_class_names(), list(range(91)))
    with pytest.raises(ValueError, match="both match the model's class 'car'"):
        match_categories([(100, "car"), (101, "Car")], coco_class_names(), list(range(91)))


def test_keep_labels_drops_the_detections_of_other_labels_with_their_masks():
    predictions = {7: {"boxes": torch.arange(16.0).reshape(4, 4), "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]),
                       "labels": torch.tensor([1.0, 2.0, 13.0, 50.0]), "segmentation": ["a", "b", "c", "d"]},
                   8: {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}}
    kept, dropped = _keep_labels(predictions, {1: 1, 13: 13})
    assert dropped == 2 and set(kept) == {7, 8}
    assert kept[7]["labels"].tolist() == [1.0, 13.0] and kept[7]["scores"].tolist() == pytest.approx([0.9, 0.7])
    assert kept[7]["boxes"].tolist() == [[0.0, 1.0, 2.0, 3.0], [8.0, 9.0, 10.0, 11.0]]
    assert kept[7]["segmentation"] == ["a", "c"] and len(kept[8]["boxes"]) == 0


# ------------------------------------------------------------------------------------------ spinenet eval
def _coco_file(root, ids: dict[int, str], name: str) -> str:
    """A COCO annotation file of the packaged SOAP tile, its tree crowns labelled with ``ids``' categories in
    turn (only the file format matters here, not what the boxes show); each crown's mask is its box."""
    soap = trees_dataset("soap")
    _, target = soap[0]
    images = root / "images"
    images.mkdir(exist_ok=True)
    shutil.copy(trees_data_dir() / "SOAP_061.png", images / "soap.png")
    cats = list(ids)
    data = {"images": [{"id": 1, "file_name": "soap.png", "width": 400, "height": 400}],
            "categories": [{"id": cid, "name": n, "supercategory": "thing"} for cid, n in ids.items()],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": cats[k % len(cats)], "iscrowd": 0,
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                             "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}
                            for k, (x0, y0, x1, y1) in enumerate(target["boxes"].tolist())]}
    path = root / name
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="module")
def coco_detector(tmp_path_factory):
    """A tiny 91-label RetinaNet as `spinenet convert` writes Google's (COCO's names, label = COCO id), whose
    classifier favours labels 1 (person), 13 (stop sign) and 50 (spoon), so that it detects classes the data set
    has and one it lacks (a fresh head scores every class alike; no cap on detections)."""
    torch.manual_seed(0)
    model = spinenet.create_model("retinanet_spinenet49s", image_size=128, detections_per_img=5000, **TINY)
    assert model.config["num_classes"] == 91 and model.class_names == coco_class_names()
    with torch.no_grad():
        bias = model.head.classifier.bias.view(-1, 91)  # [anchors, labels]
        bias[:, [1, 13, 50]] = torch.tensor([0.0, 0.1, 0.2])
    return spinenet.save_weights(model, tmp_path_factory.mktemp("coco") / "retinanet_coco.safetensors")


def test_eval_of_a_91_label_detector_on_coco_categories_scores_the_matched_labels(coco_detector, tmp_path, capsys):
    by_id = _coco_file(tmp_path, CATEGORIES, "instances_val.json")
    code, out, err = run(capsys, "eval", "--checkpoint", str(coco_detector), "--data", by_id, "--image-size", "128",
                         "--out", str(tmp_path / "by_id.json"), "--device", "cpu")
    assert code == 0, err[-2000:]
    lines = out.splitlines()
    assert lines[0].startswith("evaluating 3 of the model's 90 classes matched by category id; dropped ")
    dropped = int(lines[0].split("dropped ")[1].split()[0])
    assert dropped > 0 and "of its other 87 classes" in lines[0]
    assert lines[1].startswith("AP ") and "AP50" in lines[1]
    results = json.loads((tmp_path / "by_id.json").read_text())
    assert {r["category_id"] for r in results} == {1, 13}  # the spoons (label 50) are dropped

    # the same categories under ids of the file's own: matched by name, the same detections under those ids
    renumbered = {100 + cid: name.upper() for cid, name in CATEGORIES.items()}
    by_name = _coco_file(tmp_path, renumbered, "renumbered.json")
    code, out, err = run(capsys, "eval", "--checkpoint", str(coco_detector), "--data", by_name, "--image-size", "128",
                         "--out", str(tmp_path / "by_name.json"), "--device", "cpu")
    assert code == 0, err[-2000:]
    assert out.splitlines()[0] == lines[0].replace("category id", "name")
    assert out.splitlines()[1] == lines[1]
    renamed = json.loads((tmp_path / "by_name.json").read_text())
    assert [{**r, "category_id": r["category_id"] - 100} for r in renamed] == results


def test_eval_refuses_categories_the_detector_cannot_predict(coco_detector, tmp_path, capsys):
    for ids, needles in (({1: "person", 95: "unicorn"}, ("'unicorn' (id 95)", "no class of the model")),
                         ({1: "person", 3: "truck"}, ("id 3 is 'truck'", "but 'car' in"))):
        data = _coco_file(tmp_path, ids, f"bad{len(needles[0])}.json")
        code, out, err = run(capsys, "eval", "--checkpoint", str(coco_detector), "--data", data, "--device", "cpu")
        assert code == 2 and out == ""
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and ": error: " in lines[0] and data in lines[0], err[-2000:]
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])


def test_mask_rcnn_eval_scores_boxes_and_masks_of_the_matched_labels_only(tmp_path, capsys):
    """A tiny 91-label Mask R-CNN whose box classifier favours labels 13 (stop sign) and 50 (spoon): box and mask
    AP on a COCO file of person and stop sign, the spoons' detections and masks dropped."""
    torch.manual_seed(0)
    model = spinenet.create_model("maskrcnn_spinenet49s", image_size=128, **TINY)
    with torch.no_grad():
        predictor = model.roi_heads.box_predictor.cls_score
        predictor.bias[[1, 13, 50]] = torch.tensor([4.0, 4.0, 4.3])
        predictor.weight[[1, 13, 50]] = torch.randn(3, predictor.weight.shape[1])
    weights = spinenet.save_weights(model, tmp_path / "maskrcnn_coco.safetensors")
    data = _coco_file(tmp_path, {1: "person", 13: "stop sign"}, "instances_val.json")
    code, out, err = run(capsys, "eval", "--checkpoint", str(weights), "--data", data, "--out",
                         str(tmp_path / "results.json"), "--device", "cpu")
    assert code == 0, err[-2000:]
    lines = out.splitlines()
    assert lines[0].startswith("evaluating 2 of the model's 90 classes matched by category id; dropped ")
    assert int(lines[0].split("dropped ")[1].split()[0]) > 0
    assert lines[1].startswith("AP ") and lines[2].startswith("mask_AP ")
    results = json.loads((tmp_path / "results.json").read_text())
    found = {r["category_id"] for r in results}
    assert 13 in found and found <= {1, 13}
    assert all("counts" in r["segmentation"] for r in results)
