"""Tasks own their inference: every registry task with a trained model has one task that evaluates, predicts and
draws it, chosen from the model's declared task; the CLI holds no task's code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from spinenet.registry import TASKS, model_from_config
from spinenet.tasks import inference_task
from spinenet.tasks.inference import InferenceTask, load_task_model
from spinenet.visualize import color

CLI = Path(__file__).resolve().parents[1] / "src" / "spinenet" / "cli.py"


@pytest.mark.parametrize("task", [t for t in TASKS if t != "backbone"])
def test_every_task_model_has_one_inference_task(task):
    cls = inference_task(task)
    assert task in cls.model_tasks
    for method in ("evaluate_checkpoint", "predict_images", "visualize"):
        assert callable(getattr(cls, method)), (cls, method)
    assert isinstance(cls, type) and all(hasattr(cls, m) for m in InferenceTask.__dict__ if not m.startswith("_")
                                         and m not in ("model_tasks",))


def test_a_backbone_has_no_inference_task():
    with pytest.raises(ValueError, match="'backbone' model"):
        inference_task("backbone")


def test_checkpoint_models_are_rebuilt_by_the_registry():
    from spinenet.models import create_classifier

    model = create_classifier("classifier_spinenet49s", 3, filter_size_scale=0.125, endpoints_num_filters=16)
    ckpt = {"task": "classification", "model_config": model.to_config(), "model": model.state_dict()}
    rebuilt = load_task_model(ckpt, torch.device("cpu"))
    assert type(rebuilt) is type(model_from_config(model.to_config())) and not rebuilt.training
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))
    with pytest.raises(ValueError, match="model_config"):
        load_task_model({"task": "classification", "model": {}}, torch.device("cpu"), "x.pt")


def test_each_task_draws_its_prediction():
    image = torch.full((3, 64, 96), 90, dtype=torch.uint8)
    det = {"boxes": torch.tensor([[10.0, 10, 60, 50]]), "labels": torch.tensor([2]), "scores": torch.tensor([0.8])}
    drawn = inference_task("retinanet").visualize(image, det, ["__background__", "a", "b"])
    assert (drawn[:, 50, 30] == torch.tensor(color(2))).all()  # the bottom edge in class 2's colour
    mask = torch.zeros(64, 96, dtype=torch.long)
    mask[40:, 50:] = 1
    drawn = inference_task("segmentation").visualize(image.float() / 255, mask, ["bg", "fg"])
    assert (drawn[:, :40] == 90).all() and not (drawn[:, 45, 60] == 90).all()
    drawn = inference_task("classification").visualize(image, torch.tensor([0.1, 3.0, 0.2]), ["x", "y", "z"])
    assert (drawn[:, 63, 40] == torch.tensor(color(1))).all()  # framed in the top class's colour


def test_the_cli_holds_no_task_code():
    """cmd_eval / cmd_predict only dispatch: no task module, data reader, drawing or metric is imported by cli.py."""
    imported = {node.module for node in ast.walk(ast.parse(CLI.read_text())) if isinstance(node, ast.ImportFrom)}
    forbidden = {"tasks.detection", "tasks.classification", "tasks.segmentation", "tasks.inference", "predict",
                 "visualize", "metrics", "data", "data.images", "data.masks", "data.evaluation"}
    assert not imported & forbidden, imported & forbidden
    assert "tasks" in imported


def test_options_of_another_task_are_refused(tmp_path):
    from spinenet.models import create_classifier, create_segmenter
    from spinenet.tasks import evaluate_checkpoint, predict_checkpoint

    tiny = {"filter_size_scale": 0.125, "endpoints_num_filters": 16}
    for name, build, task in (("classifier_spinenet49s", create_classifier, "classification"),
                              ("segmenter_spinenet49s", create_segmenter, "segmentation")):
        model = build(name, 2, **tiny)
        path = tmp_path / f"{task}.pt"
        torch.save({"task": task, "model_config": model.to_config(), "model": model.state_dict(),
                    "classes": ["a", "b"]}, path)
        with pytest.raises(ValueError, match="class mode of the built-in detection sets"):
            evaluate_checkpoint(path, "unused", device="cpu", classes="dead_alive")
    with pytest.raises(ValueError, match="--image-size applies to classification and detection"):
        predict_checkpoint(path, ["unused.png"], out=str(tmp_path / "out"), device="cpu", image_size=64)
    assert not (tmp_path / "out").exists()
