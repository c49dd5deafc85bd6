"""One registry for every model: unique names, one task vocabulary, create_model / list_models, the per-task
names of the previous release, torch.hub entries from the checkout, and `spinenet list` / `spinenet export`
dispatching on the registry and the model contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import spinenet
from spinenet.cli import main
from spinenet.registry import TASKS, get_entry, model_from_config

REPO = Path(__file__).resolve().parents[1]
TINY = {"filter_size_scale": 0.0625, "endpoints_num_filters": 8}


def test_every_name_is_unique_and_has_one_task():
    names = spinenet.list_models()
    assert len(names) == len(set(names))
    by_task = {task: spinenet.list_models(task=task) for task in TASKS}
    assert sum(len(v) for v in by_task.values()) == len(names)
    assert all(get_entry(n).task == task for task, ns in by_task.items() for n in ns)
    assert by_task["maskrcnn"] == ["maskrcnn_spinenet49s", "maskrcnn_spinenet49", "maskrcnn_spinenet96",
                                   "maskrcnn_spinenet143", "maskrcnn_spinenet190"]
    assert "spinenet49" in by_task["backbone"] and "classifier_spinenet49" in by_task["classification"]
    assert "segmenter_spinenet49" in by_task["segmentation"] and "retinanet_spinenet49" in by_task["retinanet"]
    assert spinenet.list_models(task="detection") == by_task["retinanet"] + by_task["maskrcnn"]
    assert spinenet.list_models("*mobile49xs", task="classification") == ["classifier_spinenet_mobile49xs"]
    with pytest.raises(ValueError, match="unknown task 'detector'"):
        spinenet.list_models(task="detector")


def test_create_model_builds_every_task_and_refuses_unknown_names():
    for name, cls in (("spinenet49", "SpineNet"), ("retinanet_spinenet49", "SpineNetRetinaNet"),
                      ("maskrcnn_spinenet49", "SpineNetMaskRCNN"), ("classifier_spinenet49", "SpineNetClassifier"),
                      ("segmenter_spinenet49", "SpineNetSegmenter")):
        kwargs = {"num_classes": 3} if name.startswith("segmenter") else {}
        model = spinenet.create_model(name, **TINY, **kwargs)
        assert type(model).__name__ == cls and model.task == get_entry(name).task
        if model.task != "backbone":
            assert model.config["name"] == name
            assert type(model_from_config(model.to_config())) is type(model)
    with pytest.raises(ValueError, match="unknown model 'retinanet_spinenet50'.*retinanet_spinenet49"):
        spinenet.create_model("retinanet_spinenet50")
    from spinenet.registry import ModelEntry, register_model

    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelEntry("classifier_spinenet49", "classification", "spinenet49", 224, "",
                                  spinenet.create_model, object))


def test_names_of_the_previous_release_build_the_same_models_with_a_warning():
    from spinenet.models import create_classifier, create_segmenter

    with pytest.warns(DeprecationWarning, match="classifier_spinenet49s"):
        old = create_classifier("spinenet49s", 5, **TINY)
    assert old.config == create_classifier("classifier_spinenet49s", 5, **TINY).config
    with pytest.warns(DeprecationWarning, match="segmenter_spinenet49s"):
        old = create_segmenter("spinenet49s", 3, **TINY)
    assert old.config == create_segmenter("segmenter_spinenet49s", 3, **TINY).config
    # a configuration written under the old name rebuilds under the new one
    config = {**old.to_config(), "name": "spinenet49s"}
    assert model_from_config(config).config["name"] == "segmenter_spinenet49s"


def test_torch_hub_loads_every_entry_from_the_checkout(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    # what torch.hub.list reports (it reads GitHub repositories only): the public callables of hubconf.py
    entries = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    assert sorted(entries) == sorted(spinenet.list_models())
    model = torch.hub.load(str(REPO), "classifier_spinenet49", source="local", num_classes=4, **TINY)
    assert type(model).__name__ == "SpineNetClassifier" and model.num_classes == 4
    path = spinenet.save_weights(model, tmp_path / "clf.safetensors")
    loaded = torch.hub.load(str(REPO), "classifier_spinenet49", source="local", weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_cli_list_filters_by_task(capsys):
    assert main(["list", "--task", "maskrcnn"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == spinenet.list_models(task="maskrcnn")
    assert all(line.split()[1] == "maskrcnn" for line in lines)
    assert main(["list", "*49s", "--task", "segmentation"]) == 0
    assert capsys.readouterr().out.split()[0] == "segmenter_spinenet49s"


def test_cli_list_datasets_prints_the_catalog(capsys):
    from spinenet.data.catalog import list_datasets

    assert main(["list", "--datasets", "--task", "retinanet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_datasets("detection")
    assert all(line.split()[1] == "detection" for line in lines)
    assert main(["list", "--datasets", "fashion-mnist:*"]) == 0
    assert [line.split()[:2] for line in capsys.readouterr().out.splitlines()] == [
        ["fashion-mnist:test", "classification"], ["fashion-mnist:train", "classification"]]
    assert main(["list", "--datasets", "--task", "backbone"]) == 2
    assert "--task backbone has no datasets" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- export
def test_export_of_a_maskrcnn_weights_file_exports_the_maskrcnn(tmp_path, capsys, one_thread):
    """A Mask R-CNN weights file exports boxes, scores, labels and masks (not a classifier built from it)."""
    from test_models import SMALL_GRAPH

    model = spinenet.create_model("maskrcnn_spinenet49", num_classes=3, image_size=128, head_width=8, box_fc_dim=16,
                                  rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_detections_per_img=5,
                                  box_score_thresh=0.0, block_specs=SMALL_GRAPH, **TINY)
    path = spinenet.save_weights(model, tmp_path / "mrcnn.safetensors")
    out = tmp_path / "mrcnn.pt2"
    assert main(["export", str(path), "--format", "exported-program", "-o", str(out)]) == 0
    assert "maskrcnn at 128x128" in capsys.readouterr().out
    boxes, scores, labels, masks = torch.export.load(str(out)).module()(torch.rand(1, 3, 128, 128))
    assert boxes.shape == (1, 5, 4) and scores.shape == labels.shape == (1, 5) and masks.shape == (1, 5, 28, 28)
    assert (scores > 0).all() and ((masks >= 0) & (masks <= 1)).all()


def test_export_of_a_maskrcnn_name_builds_the_maskrcnn_wrapper():
    from spinenet.export import MaskRCNNExport, export_module, load_for_export

    net, task, size = load_for_export("maskrcnn_spinenet49s")
    assert task == "maskrcnn" and size == (640, 640)
    wrapper = export_module(net, task, size)
    assert isinstance(wrapper, MaskRCNNExport) and wrapper.output_names == ["boxes", "scores", "labels", "masks"]
    with pytest.raises(ValueError, match="multiples of 128"):
        export_module(net, task, (200, 256))


def test_canonical_names_of_the_previous_release():
    from spinenet.registry import canonical_name

    assert canonical_name("spinenet49s", "classification") == "classifier_spinenet49s"
    assert canonical_name("spinenet49s", "segmentation") == "segmenter_spinenet49s"
    assert canonical_name("classifier_spinenet49s", "classification") == "classifier_spinenet49s"
    assert canonical_name("retinanet_spinenet49s", "detection") == "retinanet_spinenet49s"
    assert canonical_name("spinenet49s", "detection") == "spinenet49s"


def test_a_run_started_under_a_previous_name_resumes_under_the_new_one(tmp_path, capsys, one_thread):
    from test_classification_train import _write_folder

    data = _write_folder(tmp_path / "train", {"dark": [20, 30], "bright": [200, 220]}, size=36)
    args = ["train", "--task", "classification", "--data", str(data), "--out", str(tmp_path / "run"), "--device",
            "cpu"]
    settings = ["batch_size=4", "image_size=32", "num_workers=0", "log_every=1", "model.min_level=3"]
    with pytest.warns(DeprecationWarning):
        assert main([*args, "--model", "spinenet_mobile49xs", *settings, "steps=1"]) == 0
    with pytest.warns(DeprecationWarning):  # the checkpoint holds today's name; the old one still resumes it
        assert main([*args, "--resume", "--model", "spinenet_mobile49xs", *settings, "steps=2"]) == 0, \
            capsys.readouterr().err
    assert main([*args, "--resume", "--model", "classifier_spinenet_mobile49xs", *settings, "steps=3"]) == 0, \
        capsys.readouterr().err
    assert main([*args, "--resume", "--model", "classifier_spinenet_mobile49s", *settings, "steps=4"]) == 2
    assert "was trained with --model classifier_spinenet_mobile49xs" in capsys.readouterr().err
