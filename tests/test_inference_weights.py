"""``spinenet eval`` / ``spinenet predict`` take a ``spinenet-weights/1`` file as well as a training checkpoint:
the same model gives the same metrics and predictions from either; a weights file without a recipe runs at the
model's own size in float32; bad files end in one line naming the file. Classification ``predict`` draws its top
classes on each image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import spinenet
from spinenet.cli import main
from spinenet.data.images import decode_image
from spinenet.data.trees import trees_data_dir
from spinenet.tasks.inference import is_weights_file, load_trained, weights_recipe

TINY = {"filter_size_scale": 0.125, "endpoints_num_filters": 16}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("spinenet ") and ": error: " in lines[0], err[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def weights_of(ckpt: Path, path: Path) -> Path:
    """The model of a training checkpoint, written as a weights file (what ``spinenet.save_weights`` users do)."""
    return spinenet.save_weights(load_trained(ckpt, "cpu").model, path, {"checkpoint": str(ckpt)})


def _folder(root: Path, classes: dict[str, list[int]], size: int = 36) -> Path:
    """Class folders of PNGs: a brightness per image, with a darker left half so that pixels vary."""
    for name, values in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k, v in enumerate(values):
            pixels = np.full((size, size + 4, 3), v, dtype=np.uint8)
            pixels[:, : size // 2] //= 2
            Image.fromarray(pixels).save(root / name / f"{k}.png")
    return root


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory):
    """One training step of a tiny RetinaNet on one packaged tree tile (smoke recipe: fp32, 128 px); a low score
    threshold so that its predictions and AP are not empty."""
    out = tmp_path_factory.mktemp("det") / "run"
    assert main(["train", "--model", "retinanet_spinenet49s", "--data", "trees:yell-train[34:35]", "--recipe",
                 "smoke", "--out", str(out), "--device", "cpu", "steps=1", "precise_bn_batches=1",
                 "model.filter_size_scale=0.125", "model.endpoints_num_filters=32", "model.head_width=32",
                 "model.score_thresh=0.001"]) == 0
    return out / "checkpoints" / "final.pt"


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    """Two training steps of a tiny classifier on two folders of 36 x 40 images (32 px, fp32). Its evaluation
    settings are the ones a weights file gets (the default recipe's eval.crop=1 and eval.hflip=true are not)."""
    root = tmp_path_factory.mktemp("cls")
    data = _folder(root / "train", {"dark": [20, 30, 40, 50], "bright": [200, 210, 220, 230]})
    val = _folder(root / "val", {"dark": [25, 60], "bright": [215, 180]})
    assert main(["train", "--task", "classification", "--model", "classifier_spinenet_mobile49xs", "--data", str(data),
                 "--out", str(root / "run"), "--device", "cpu", "steps=2", "batch_size=4", "image_size=32",
                 "model.min_level=3", "optim.precision=fp32", "eval.crop=0.875", "eval.hflip=false"]) == 0
    return root / "run" / "checkpoints" / "final.pt", val


def test_detector_weights_file_evaluates_and_predicts_as_its_checkpoint(detector_run, tmp_path, capsys):
    weights = weights_of(detector_run, tmp_path / "det.safetensors")
    renamed = shutil.copy(weights, tmp_path / "det.weights")  # recognised by its content, not only its suffix
    assert is_weights_file(renamed) and not is_weights_file(detector_run)

    lines, results = [], []
    for source, name in ((detector_run, "ckpt"), (renamed, "weights")):
        code, out, err = run(capsys, "eval", "--checkpoint", str(source), "--data", "trees:yell-train[34:35]",
                             "--out", str(tmp_path / f"{name}.json"), "--device", "cpu")
        assert code == 0, err[-2000:]
        lines.append(out.splitlines()[0])
        results.append(json.loads((tmp_path / f"{name}.json").read_text()))
    assert lines[0] == lines[1] and results[0] == results[1]
    assert len(results[0]) > 0 and "AP50" in lines[0]

    records = []
    photo = shutil.copy(trees_data_dir() / "OSBS_029.png", tmp_path / "tile.png")
    for source, name in ((detector_run, "ckpt"), (weights, "weights")):
        code, out, err = run(capsys, "predict", "--checkpoint", str(source), str(photo), "--out",
                             str(tmp_path / f"pred_{name}"), "--score-thresh", "0.001", "--device", "cpu")
        assert code == 0, err[-2000:]
        records.append(json.loads((tmp_path / f"pred_{name}" / "predictions.json").read_text()))
    assert len(records[0]) > 0 and len(records[0]) == len(records[1])
    assert records[0] == records[1]  # the file names its classes as the checkpoint does
    assert {r["category"] for r in records[0]} == {"Tree"}
    drawn = [np.asarray(Image.open(tmp_path / f"pred_{n}" / "tile_pred.png")) for n in ("ckpt", "weights")]
    assert drawn[0].shape == drawn[1].shape == (400, 400, 3)


def _train_tiny_detector(out: Path, data: str, *extra: str) -> Path:
    """One training step of a tiny RetinaNet (smoke recipe: fp32, 128 px); a low score threshold so that its
    predictions are not empty."""
    assert main(["train", "--model", "retinanet_spinenet49s", "--data", data, *extra, "--recipe", "smoke", "--out",
                 str(out), "--device", "cpu", "steps=1", "precise_bn_batches=1", "model.filter_size_scale=0.125",
                 "model.endpoints_num_filters=32", "model.head_width=32", "model.score_thresh=0.001"]) == 0
    return out / "checkpoints" / "final.pt"


def _predictions(capsys, sources: dict[str, Path], image: Path, out: Path) -> dict[str, list[dict]]:
    """``predictions.json`` of ``spinenet predict`` on ``image`` from each source."""
    records = {}
    for name, source in sources.items():
        code, _, err = run(capsys, "predict", "--checkpoint", str(source), str(image), "--out", str(out / name),
                           "--score-thresh", "0.001", "--device", "cpu")
        assert code == 0, err[-2000:]
        records[name] = json.loads((out / name / "predictions.json").read_text())
    return records


def test_trained_detector_names_its_classes_in_its_weights_file(tmp_path, capsys):
    """A detector trained on the SOAP tile's Dead and Alive crowns carries the data set's class names in its
    configuration: its weights file predicts and evaluates with them exactly as its checkpoint does, and refuses a
    data set of other classes by their names."""
    from spinenet.data.trees import trees_dataset

    ckpt = _train_tiny_detector(tmp_path / "run", "trees:soap", "--classes", "dead_alive")
    classes = trees_dataset("soap", classes="dead_alive").classes
    assert classes[1:] == ["Dead", "Alive"]
    trained = load_trained(ckpt, "cpu")
    assert trained.ckpt["model_config"]["class_names"] == trained.ckpt["classes"] == classes
    assert trained.ckpt["model_config"]["category_ids"] is None  # label k is category id k on the built-in sets

    weights = weights_of(ckpt, tmp_path / "soap.safetensors")
    from_file = load_trained(weights, "cpu")
    assert from_file.class_names == classes and from_file.category_ids == trained.category_ids == [0, 1, 2]

    photo = shutil.copy(trees_data_dir() / "SOAP_061.png", tmp_path / "soap.png")
    records = _predictions(capsys, {"ckpt": ckpt, "weights": weights}, photo, tmp_path / "pred")
    assert len(records["ckpt"]) > 0 and records["ckpt"] == records["weights"]
    assert {(r["category"], r["category_id"]) for r in records["weights"]} == {("Dead", 1), ("Alive", 2)}

    lines = []
    for source in (ckpt, weights):
        code, out, err = run(capsys, "eval", "--checkpoint", str(source), "--data", "trees:soap", "--classes",
                             "dead_alive", "--device", "cpu")
        assert code == 0, err[-2000:]
        lines.append(out.splitlines()[0])
    assert lines[0] == lines[1] and "AP50" in lines[0]
    code, _, err = run(capsys, "eval", "--checkpoint", str(weights), "--data", "trees:soap", "--device", "cpu")
    assert code == 2
    one_line_error(err, str(weights), "'Tree'", "'Dead'", "'Alive'")


def test_detector_trained_on_category_ids_with_gaps_keeps_them_in_its_weights_file(tmp_path, capsys):
    """A COCO file whose category ids are not the labels (Alive = 4, Dead = 17): the trained configuration maps
    labels to those ids, so predictions from the weights file carry the data set's ids and names, as from the
    checkpoint."""
    from spinenet.data.trees import trees_dataset

    soap = trees_dataset("soap", classes="dead_alive")
    _, target = soap[0]
    ids = {"Dead": 17, "Alive": 4}
    (tmp_path / "images").mkdir()
    shutil.copy(trees_data_dir() / "SOAP_061.png", tmp_path / "images" / "soap.png")
    boxes = target["boxes"].tolist()
    data = {"images": [{"id": 1, "file_name": "soap.png", "width": 400, "height": 400}],
            "categories": [{"id": ids[n], "name": n} for n in soap.classes[1:]],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": ids[soap.classes[label]], "iscrowd": 0,
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}
                            for k, ((x0, y0, x1, y1), label) in enumerate(zip(boxes, target["labels"].tolist()))]}
    (tmp_path / "ann.json").write_text(json.dumps(data))

    ckpt = _train_tiny_detector(tmp_path / "run", str(tmp_path / "ann.json"))
    config = load_trained(ckpt, "cpu").ckpt["model_config"]
    assert config["class_names"] == ["__background__", "Alive", "Dead"] and config["category_ids"] == [0, 4, 17]
    weights = weights_of(ckpt, tmp_path / "coco.safetensors")
    assert load_trained(weights, "cpu").category_ids == [0, 4, 17]
    records = _predictions(capsys, {"ckpt": ckpt, "weights": weights}, tmp_path / "images" / "soap.png",
                           tmp_path / "pred")
    assert len(records["ckpt"]) > 0 and records["ckpt"] == records["weights"]
    assert {(r["category"], r["category_id"]) for r in records["weights"]} == {("Alive", 4), ("Dead", 17)}


def test_classifier_weights_file_evaluates_and_predicts_as_its_checkpoint(classifier_run, tmp_path, capsys):
    ckpt, val = classifier_run
    weights = weights_of(ckpt, tmp_path / "clf.safetensors")
    metrics, records, drawn = [], [], []
    image = val / "dark" / "1.png"
    for source, name in ((ckpt, "ckpt"), (weights, "weights")):
        code, out, err = run(capsys, "eval", "--checkpoint", str(source), "--data", str(val), "--out",
                             str(tmp_path / f"eval_{name}"), "--device", "cpu")
        assert code == 0, err[-2000:]
        found = json.loads((tmp_path / f"eval_{name}" / "metrics.json").read_text())
        assert found.pop("checkpoint") == str(source)
        metrics.append(found)
        code, out, err = run(capsys, "predict", "--checkpoint", str(source), str(image), "--out",
                             str(tmp_path / f"pred_{name}"), "--device", "cpu")
        assert code == 0, err[-2000:]
        records.append(json.loads((tmp_path / f"pred_{name}" / "predictions.json").read_text()))
        drawn.append(decode_image(tmp_path / f"pred_{name}" / "1_pred.png"))
    assert metrics[0] == metrics[1] and metrics[0]["images"] == 4
    assert records[0] == records[1]
    (record,) = records[0]
    assert record["drawn"] == "1_pred.png" and [t["class"] for t in record["top"]] in (["dark", "bright"],
                                                                                      ["bright", "dark"])
    # the drawn image: the input's size, labelled (pixels changed), the same from either source
    original = decode_image(image)
    assert drawn[0].shape == original.shape and torch.equal(drawn[0], drawn[1])
    changed = (drawn[0] != original).any(0)
    assert 0.05 < changed.float().mean() < 0.95


def test_image_size_overrides_a_weights_files_default(classifier_run, tmp_path, capsys):
    ckpt, val = classifier_run
    weights = weights_of(ckpt, tmp_path / "clf.safetensors")
    image = str(val / "bright" / "1.png")
    tops = []
    for size in ([], ["--image-size", "32"], ["--image-size", "20"]):
        out = tmp_path / f"pred{len(tops)}"
        code, _, err = run(capsys, "predict", "--checkpoint", str(weights), image, "--out", str(out), "--device",
                           "cpu", "--no-optimize", *size)
        assert code == 0, err[-2000:]
        tops.append(json.loads((out / "predictions.json").read_text())[0]["top"])
    assert tops[0] == tops[1]  # the default is the model's image_size (32)
    assert tops[2] != tops[0]


def test_weights_recipe_follows_the_model_configuration():
    """Without a training recipe: the model's own input size, float32, whole-image segmentation; the task's
    defaults otherwise."""
    clf = spinenet.create_model("classifier_spinenet49s", num_classes=3, image_size=96, **TINY)
    recipe = weights_recipe(clf.task, clf.to_config())
    assert (recipe.task, recipe.data.image_size, recipe.optim.precision, recipe.eval.crop) == (
        "classification", 96, "fp32", 0.875)
    det = spinenet.create_model("retinanet_spinenet49s", num_classes=3, image_size=192, head_width=16, **TINY)
    recipe = weights_recipe(det.task, det.to_config())
    assert (recipe.task, recipe.data.image_size, recipe.eval.image_size) == ("detection", 192, None)
    seg = spinenet.create_model("segmenter_spinenet49s", num_classes=2, **TINY)
    recipe = weights_recipe(seg.task, seg.to_config())
    assert (recipe.task, recipe.eval.window, recipe.data.input_scale, recipe.data.norm_high) == (
        "segmentation", 0, 1.0, None)


def test_bad_weights_files_are_one_line_errors(tmp_path, capsys):
    from safetensors.torch import save_file

    model = spinenet.create_model("classifier_spinenet49s", num_classes=2, class_names=["a", "b"], **TINY)
    good = spinenet.save_weights(model, tmp_path / "good.safetensors")
    image = tmp_path / "x.png"
    Image.fromarray(np.full((24, 24, 3), 100, dtype=np.uint8)).save(image)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    unknown = tmp_path / "unknown.safetensors"
    config = model.to_config()
    config["name"] = "classifier_nosuchnet"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(unknown),
              metadata={"format": "spinenet-weights/1", "task": "classification", "config": json.dumps(config)})
    backbone = spinenet.save_weights(spinenet.create_model("spinenet49s", **TINY), tmp_path / "backbone.safetensors")
    cases = [(foreign, "spinenet-weights/1"), (truncated, "not a readable safetensors file"),
             (unknown, "unknown model 'classifier_nosuchnet'"), (backbone, "holds a backbone model"),
             (tmp_path / "absent.safetensors", "does not exist")]
    for path, needle in cases:
        code, _, err = run(capsys, "eval", "--checkpoint", str(path), "--data", str(tmp_path), "--device", "cpu")
        assert code == 2
        line = one_line_error(err, str(path), needle)
        if path.exists():
            assert "take a training checkpoint (checkpoints/final.pt) or a spinenet-weights/1 file" in line
        code, _, err = run(capsys, "predict", "--checkpoint", str(path), str(image), "--out",
                           str(tmp_path / "pred"), "--device", "cpu")
        assert code == 2
        one_line_error(err, str(path), needle)
    assert not (tmp_path / "pred").exists()


def test_segmenter_weights_file_predicts_as_a_checkpoint_with_whole_image_windows(tmp_path, capsys):
    """A segmenter's file runs on the whole image in float32: the same masks as a checkpoint whose recipe says so
    (``eval.window=0``), and other masks than one with small sliding windows."""
    from spinenet.engine.config import Recipe

    torch.manual_seed(0)
    model = spinenet.create_model("segmenter_spinenet49s", num_classes=2, class_names=["bg", "nucleus"], **TINY)
    image = tmp_path / "cells.png"
    pixels = np.zeros((48, 64, 3), dtype=np.uint8)
    pixels[8:30, 10:40] = 220
    Image.fromarray(pixels).save(image)
    with torch.no_grad():  # a classifier that splits this image between the two classes (fresh logits are ~0)
        model.head.classifier.weight.normal_()
        model.head.classifier.bias.zero_()
        logits = model.eval()(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)[0]
        model.head.classifier.bias[1] = -(logits[1] - logits[0]).median()
    weights = spinenet.save_weights(model, tmp_path / "seg.safetensors")
    masks = {}
    for window in (0, 32):
        recipe = Recipe(task="segmentation").with_values({"eval.window": window, "optim.precision": "fp32"})
        ckpt = tmp_path / f"w{window}.pt"
        torch.save({"task": "segmentation", "model_config": model.to_config(), "model": model.state_dict(),
                    "classes": ["bg", "nucleus"], "recipe": recipe.to_dict()}, ckpt)
        for source, name in ((ckpt, f"ckpt{window}"), (weights, "weights")):
            if name in masks:
                continue
            code, _, err = run(capsys, "predict", "--checkpoint", str(source), str(image), "--out",
                               str(tmp_path / name), "--device", "cpu", "--no-optimize")
            assert code == 0, err[-2000:]
            masks[name] = decode_image(tmp_path / name / "cells_mask.png")
    assert 0.1 < masks["weights"].float().mean() < 0.9  # both classes predicted
    assert torch.equal(masks["weights"], masks["ckpt0"])
    assert not torch.equal(masks["ckpt0"], masks["ckpt32"])
