"""The dataset catalog: every named dataset registered once with its task(s), file formats recognised in one place."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from spinenet.data import catalog, dataset_from_path, list_datasets, open_dataset
from spinenet.data.classification import ImageFolder, classification_dataset_from_path, fashion_mnist_dir
from spinenet.data.detection import CocoDetection, VOCDetection
from spinenet.data.segmentation import NucleiSegmentation, segmentation_dataset_from_path
from test_data import coco_fixture, voc_root, write_coco, write_image

# The specs the recipes, docs and tests use; each must stay in the catalog under the task it serves.
SPECS = {
    "detection": ["trees:yell-train", "trees:yell-val", "trees:osbs", "trees:soap", "nuclei:left", "nuclei:right",
                  "nuclei:top", "nuclei:bottom"],
    "classification": ["fashion-mnist:train", "fashion-mnist:test"],
    "segmentation": ["nuclei:left", "nuclei:right", "nuclei:top", "nuclei:bottom"],
}
PACKAGE_OF = {"trees": "deepforest", "nuclei": "stardist"}


def _require(family: str) -> None:
    """Skip when a named dataset's files are not installed outside CI; under CI=true (``make setup``) fail."""
    present = (fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz").is_file() if family == "fashion-mnist" else \
        importlib.util.find_spec(PACKAGE_OF[family]) is not None
    if not present:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the {family} data files are required under CI=true")
        pytest.skip(f"the {family} data files are not installed")


def test_every_named_spec_is_listed_under_its_tasks():
    for task, specs in SPECS.items():
        listed = list_datasets(task)
        assert set(specs) <= set(listed), f"{task}: {sorted(set(specs) - set(listed))} missing from the catalog"
        assert listed == sorted(listed)
    everything = list_datasets()
    assert everything == sorted(set(everything))  # nuclei:left serves two tasks and is listed once
    assert set(everything) == {s for specs in SPECS.values() for s in specs}
    assert {e for e in list_datasets("segmentation")}.isdisjoint(list_datasets("classification"))
    with pytest.raises(ValueError, match="unknown dataset task 'tracking'"):
        list_datasets("tracking")


def test_registration_is_once_per_family_and_task(monkeypatch):
    monkeypatch.setattr(catalog, "_NAMED", dict(catalog._NAMED))
    monkeypatch.setattr(catalog, "_FORMATS", dict(catalog._FORMATS))
    with pytest.raises(ValueError, match="already registered for detection"):
        catalog.register_dataset("trees", "detection", splits=["x"], syntax="trees:x", source="-")(lambda *a: None)
    with pytest.raises(ValueError, match="already registered for classification"):
        catalog.register_format("classification", "image-folder")(lambda *a: None)
    with pytest.raises(ValueError, match="lower-case"):
        catalog.register_dataset("Trees", "detection", splits=["x"], syntax="Trees:x", source="-")
    # a new family is opened through every public entry point, with the rest of the spec and the split
    seen = []
    catalog.register_dataset("toy", "detection", splits=["a"], syntax="toy:a", source="-")(
        lambda rest, split, **kw: seen.append((rest, split, kw)) or ["sample"])
    assert open_dataset("toy:a", "detection", split="s", tile_size=3) == ["sample"]
    assert dataset_from_path("toy:a") == ["sample"]
    assert seen == [("a", "s", {"tile_size": 3}), ("a", None, {})]
    assert "toy:a" in list_datasets("detection") and "toy:a" not in list_datasets("segmentation")


def test_a_name_of_another_task_is_refused_with_its_task():
    with pytest.raises(ValueError, match=r"fashion-mnist:\.\.\. is a classification dataset, not detection data"):
        dataset_from_path("fashion-mnist:train")
    with pytest.raises(ValueError, match=r"trees:\.\.\. is a detection dataset, not segmentation data; give "
                                         r"nuclei:left\|right\|top\|bottom$"):
        segmentation_dataset_from_path("trees:osbs")
    with pytest.raises(ValueError, match=r"nuclei:\.\.\. is a detection and segmentation dataset"):
        classification_dataset_from_path("nuclei:left")
    with pytest.raises(ValueError, match=r"unsupported segmentation data; give nuclei:left\|right\|top\|bottom"):
        segmentation_dataset_from_path("/some/folder")


def test_file_formats_are_recognised_in_one_place(tmp_path: Path):
    ann, _ = coco_fixture(tmp_path / "coco")
    voc = voc_root(tmp_path / "voc")
    xml_only = tmp_path / "xml"
    xml_only.mkdir()
    (xml_only / "1.xml").write_text((voc / "Annotations" / "001.xml").read_text())
    write_image(xml_only / "001.jpg", 120, 90)
    layout = tmp_path / "coco17"
    write_image(layout / "val2017" / "1.jpg", 20, 20)
    (layout / "annotations").mkdir()
    write_coco(layout / "annotations", {"images": [{"id": 1, "file_name": "1.jpg"}], "categories": [{"id": 3}]},
               "instances_val2017.json")
    folder = tmp_path / "folder"
    write_image(folder / "cat" / "1.png", 8, 8)
    assert catalog.recognise_format(ann, "detection") == "coco"
    assert catalog.recognise_format(voc, "detection") == "voc"
    assert catalog.recognise_format(xml_only, "detection") == "voc"
    assert catalog.recognise_format(layout, "detection", split="val2017") == "coco-root"
    assert catalog.recognise_format(folder, "classification") == "image-folder"
    with pytest.raises(ValueError, match="not a recognised dataset folder"):
        catalog.recognise_format(layout, "detection")  # a COCO root needs its split
    with pytest.raises(ValueError, match="not a recognised dataset folder"):
        catalog.recognise_format(folder, "detection")
    # each format opens as its dataset class through the task's entry point
    assert isinstance(open_dataset(ann, "detection"), CocoDetection)
    assert isinstance(open_dataset(xml_only, "detection"), VOCDetection)
    assert isinstance(open_dataset(layout, "detection", split="val2017"), CocoDetection)
    images = classification_dataset_from_path(folder)
    assert isinstance(images, ImageFolder) and images.classes == ["cat"]


def test_slices_apply_to_detection_specs_only(tmp_path: Path):
    voc = voc_root(tmp_path / "voc")
    assert len(open_dataset(f"{voc}[1:]", "detection")) == 2
    folder = tmp_path / "folder"
    write_image(folder / "cat" / "1.png", 8, 8)
    with pytest.raises(FileNotFoundError, match=r"folder\[0:1\] does not exist"):
        classification_dataset_from_path(f"{folder}[0:1]")  # a folder name, not a slice, for classification


def test_named_trees_with_split_and_slice():
    _require("trees")
    full = dataset_from_path("trees:yell-train", tile_size=320, overlap=160)
    part = dataset_from_path("trees:yell-train[34:36]", tile_size=320, overlap=160)
    assert part.name == "trees:yell-train[34:36]"
    assert [r.file_name for r in part.records] == [r.file_name for r in full.records[34:36]]
    assert [r.file_name for r in dataset_from_path("trees:yell", split="val").records] == \
        [r.file_name for r in dataset_from_path("trees:yell-val").records]
    with pytest.raises(ValueError, match="unknown tree set 'nope'"):
        dataset_from_path("trees:nope")


@pytest.mark.parametrize("task", sorted(SPECS))
def test_every_named_dataset_opens_for_its_task(task):
    for spec in list_datasets(task):
        _require(spec.split(":")[0])
        dataset = open_dataset(spec, task)
        assert len(dataset) > 0, spec
        if task == "segmentation":
            assert isinstance(dataset, NucleiSegmentation) and dataset.name == spec
        elif task == "classification":
            assert dataset.name == spec and len(dataset.classes) == 10
        else:
            assert dataset.name.startswith(spec) and dataset.stats["boxes"] > 0
