"""Bad input ends in one line naming the file, entry or field and what to do (exit 2, no traceback); outputs are
never overwritten or merged silently; metrics files are valid JSON. Real images (the packaged tree photos) and
real files throughout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spinenet.cli import main
from spinenet.data.trees import trees_data_dir

TINY = ["model.filter_size_scale=0.125", "model.endpoints_num_filters=32", "model.head_width=32"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("spinenet ") and ": error: " in lines[0], err[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def coco(tmp_path: Path, annotations: list[dict], name: str = "ann.json", images=("OSBS_029.png",)) -> Path:
    """A COCO file over copies of packaged tree photos (400 x 400) in tmp_path/images."""
    (tmp_path / "images").mkdir(exist_ok=True)
    for file_name in images:
        source = trees_data_dir() / file_name
        if source.is_file():
            shutil.copy(source, tmp_path / "images" / file_name)
    data = {"images": [{"id": i + 1, "file_name": f, "width": 400, "height": 400} for i, f in enumerate(images)],
            "annotations": annotations, "categories": [{"id": 1, "name": "Tree"}]}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


BOXES = [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [20 + 60 * k, 30 + 40 * k, 40, 50]}
         for k in range(5)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    assert main(["train", "--model", "retinanet_spinenet49s", "--data", "trees:yell-train[34:35]", "--recipe",
                 "smoke", "--out", str(out), "--device", "cpu", "steps=1", "precise_bn_batches=1", *TINY]) == 0
    return out


# ---- predict: inputs and outputs -------------------------------------------------------------------------------
def test_predict_refuses_a_non_image_before_processing_any(checkpoint, tmp_path, capsys):
    good = shutil.copy(trees_data_dir() / "OSBS_029.png", tmp_path / "good.png")
    bad = tmp_path / "notes.png"
    bad.write_text("field notes, not a photo\n")
    code, _, err = run(capsys, "predict", "--checkpoint", str(checkpoint / "checkpoints" / "final.pt"), str(good),
                       str(bad), "--out", str(tmp_path / "pred"))
    assert code == 2
    one_line_error(err, str(bad), "not a readable image")
    assert not (tmp_path / "pred").exists()  # refused up front: nothing processed, nothing written


def test_predict_keeps_equal_names_apart_and_refuses_to_overwrite(checkpoint, tmp_path, capsys):
    ckpt = str(checkpoint / "checkpoints" / "final.pt")
    for folder, photo in (("site_a", "OSBS_029.png"), ("site_b", "SOAP_061.png")):
        (tmp_path / folder).mkdir()
        shutil.copy(trees_data_dir() / photo, tmp_path / folder / "tile.png")
    inputs = [str(tmp_path / "site_a" / "tile.png"), str(tmp_path / "site_b" / "tile.png")]
    out = tmp_path / "pred"
    code, _, err = run(capsys, "predict", "--checkpoint", ckpt, *inputs, "--out", str(out), "--score-thresh", "0")
    assert code == 0, err
    drawn = sorted(p.name for p in out.glob("*_pred.png"))
    assert drawn == ["site_a__tile_pred.png", "site_b__tile_pred.png"]
    records = json.loads((out / "predictions.json").read_text())
    assert {(r["file_name"], r["drawn"]) for r in records} == {
        (inputs[0], "site_a__tile_pred.png"), (inputs[1], "site_b__tile_pred.png")}
    before = (out / "predictions.json").read_bytes()
    code, _, err = run(capsys, "predict", "--checkpoint", ckpt, inputs[0], "--out", str(out))
    assert code == 2
    one_line_error(err, "predictions.json", "--overwrite")
    assert (out / "predictions.json").read_bytes() == before
    code, _, err = run(capsys, "predict", "--checkpoint", ckpt, inputs[0], "--out", str(out), "--overwrite")
    assert code == 0, err
    assert all(r["file_name"] == inputs[0] for r in json.loads((out / "predictions.json").read_text()))


def test_predict_out_naming_a_file(checkpoint, tmp_path, capsys):
    (tmp_path / "taken").write_text("x\n")
    photo = shutil.copy(trees_data_dir() / "OSBS_029.png", tmp_path / "a.png")
    code, _, err = run(capsys, "predict", "--checkpoint", str(checkpoint / "checkpoints" / "final.pt"), str(photo),
                       "--out", str(tmp_path / "taken"))
    assert code == 2
    one_line_error(err, "is a file")


# ---- train: settings, folders, resume ---------------------------------------------------------------------------
def test_train_errors_are_one_line(checkpoint, tmp_path, capsys):
    base = ["train", "--model", "retinanet_spinenet49s", "--data", "trees:yell-train[34:35]", "--recipe", "smoke",
            "--device", "cpu"]
    code, _, err = run(capsys, *base, "--out", str(tmp_path / "b0"), "steps=1", *TINY, "batch_size=0")
    assert code == 2
    one_line_error(err, "batch_size=0")
    assert not (tmp_path / "b0").exists()
    (tmp_path / "file").write_text("x\n")
    code, _, err = run(capsys, *base, "--out", str(tmp_path / "file"), "steps=1", *TINY)
    assert code == 2
    one_line_error(err, str(tmp_path / "file"), "is a file")
    code, _, err = run(capsys, "train", "--model", "retinanet_spinenet49", "--data", "trees:yell-train[34:35]",
                       "--recipe", "smoke", "--device", "cpu", "--out", str(checkpoint), "--resume", "steps=2", *TINY)
    assert code == 2
    one_line_error(err, "--resume", "retinanet_spinenet49s", "not retinanet_spinenet49;")
    code, _, err = run(capsys, *base, "--out", str(checkpoint), "--resume", "steps=2", *TINY, "model.head_width=16")
    assert code == 2
    one_line_error(err, "--resume", "model.head_width")
    assert len(err) < 1000


def test_training_data_problems_are_found_at_load(tmp_path, capsys):
    base = ["train", "--model", "retinanet_spinenet49s", "--recipe", "smoke", "--device", "cpu"]
    empty = coco(tmp_path, [], "empty.json")
    code, _, err = run(capsys, *base, "--data", str(empty), "--out", str(tmp_path / "e"), "steps=1", *TINY)
    assert code == 2
    one_line_error(err, str(empty), "no boxes to train on")
    # a box of negative width is dropped, a file that is not an image skipped: both said at load
    boxes = [*BOXES, {"id": 9, "image_id": 1, "category_id": 1, "bbox": [100, 100, -30, 20]}]
    ann = coco(tmp_path, boxes, "boxes.json", images=("OSBS_029.png", "broken.png"))
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, out, err = run(capsys, *base, "--data", str(ann), "--out", str(tmp_path / "d"), "steps=1", *TINY)
    assert code == 0, err[-2000:]
    line = next(line for line in out.splitlines() if line.startswith(f"--data {ann}"))
    assert "1 images, 5 boxes" in line and "skipped 1 image file(s)" in line and "broken.png" in line
    assert "dropped 1 box(es) without area" in line


def test_invalid_rle_is_reported_at_load_with_file_and_annotation(tmp_path, capsys):
    annotations = [{**b, "segmentation": [[b["bbox"][0], b["bbox"][1], b["bbox"][0] + 30, b["bbox"][1],
                                           b["bbox"][0] + 30, b["bbox"][1] + 30]]} for b in BOXES]
    annotations[3]["segmentation"] = {"size": [400, 400], "counts": [100, 50]}  # covers 150 of 160,000 pixels
    ann = coco(tmp_path, annotations)
    code, _, err = run(capsys, "train", "--model", "maskrcnn_spinenet49s", "--data", str(ann), "--recipe",
                       "smoke", "--device", "cpu", "--out", str(tmp_path / "m"), "steps=1", *TINY)
    assert code == 2
    one_line_error(err, str(ann), "annotation id 4", "invalid RLE")
    assert not (tmp_path / "m" / "checkpoints").exists()


def test_metrics_files_are_valid_json(tmp_path, capsys):
    """A validation set without annotations has no AP: final_metrics.json says null, not NaN."""
    from spinenet.files import json_safe, write_json

    val = coco(tmp_path, [], "val.json")
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--model", "retinanet_spinenet49s", "--data", "trees:yell-train[34:35]",
                       "--val-data", str(val), "--recipe", "smoke", "--device", "cpu", "--out", str(out), "steps=1",
                       "precise_bn_batches=1", *TINY)
    assert code == 0, err[-2000:]
    text = (out / "final_metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in final_metrics.json"))
    assert metrics["AP50"] is None
    assert json_safe({"a": [float("inf"), 1.5], "b": float("nan")}) == {"a": [None, 1.5], "b": None}
    write_json(tmp_path / "m.json", {"x": float("nan")})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": None}


# ---- architecture files -----------------------------------------------------------------------------------------
def test_architecture_file_errors_name_the_file(tmp_path, capsys):
    from spinenet.specs import default_architecture

    arch = default_architecture("resnet", "tpu").to_dict()
    partial = {**arch, "scaling": {"endpoints_num_filters": 64}}
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    code, _, err = run(capsys, "summary", str(tmp_path / "partial.json"))
    assert code == 2
    one_line_error(err, str(tmp_path / "partial.json"), "scaling", "filter_size_scale")
    assert "positional argument" not in err
    arch["blocks"][3]["input_offsets"] = [2, 40]
    (tmp_path / "graph.json").write_text(json.dumps(arch))
    code, _, err = run(capsys, "summary", str(tmp_path / "graph.json"))
    assert code == 2
    one_line_error(err, str(tmp_path / "graph.json"), "block 3", "input offset 40")


def test_image_folder_files_that_are_not_images_are_skipped_at_load(tmp_path, capsys):
    from spinenet.engine import get_recipe
    from spinenet.tasks import get_task

    for name, photo in (("dead", "SOAP_061.png"), ("alive", "OSBS_029.png")):
        (tmp_path / name).mkdir()
        shutil.copy(trees_data_dir() / photo, tmp_path / name / "a.png")
    (tmp_path / "alive" / "b.png").write_text("not a photo\n")
    task = get_task("classification", model="spinenet49s", data=str(tmp_path))
    train, _ = task.build_datasets(get_recipe("smoke"))
    assert len(train) == 2 and train.stats["skipped_images"] == 1
    assert f"--data {tmp_path}: 2 images; skipped 1 file(s)" in capsys.readouterr().out
    (tmp_path / "dead" / "a.png").write_text("not a photo either\n")
    with pytest.raises(ValueError, match=r"\['dead'\] hold no readable images"):
        task.build_datasets(get_recipe("smoke"))


def test_output_names_keep_inputs_apart(tmp_path):
    from spinenet.tasks.inference import output_stems

    assert output_stems(["a/x.png", "b/x.png", "c/y.png"]) == ["a__x", "b__x", "y"]
    assert output_stems(["a/x.png", "a/x.jpg"]) == ["x_png", "x_jpg"]
    assert output_stems(["a/b/x.png", "c/b/x.png"]) == ["a__b__x", "c__b__x"]
    with pytest.raises(ValueError, match="given twice"):
        output_stems(["a/x.png", "./a/x.png"])
