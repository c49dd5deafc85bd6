"""Tasks plugged into the shared engine (``get_task(name, **kwargs)``), and what a trained model does afterwards:
``evaluate_checkpoint`` / ``predict_checkpoint`` read a training checkpoint or a weights file, rebuild its model
through the registry and hand it to its task (:class:`~spinenet.tasks.inference.InferenceTask`: evaluate, predict,
visualize)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from .inference import EvalResult, InferenceTask, Prepare, PredictResult, TrainedModel, load_trained

__all__ = ["EvalResult", "InferenceTask", "PredictResult", "TrainedModel", "evaluate_checkpoint", "get_task",
           "inference_task", "load_trained", "predict_checkpoint"]


def _task_classes() -> list[type]:
    from .classification import ClassificationTask
    from .detection import DetectionTask
    from .segmentation import SegmentationTask

    return [DetectionTask, ClassificationTask, SegmentationTask]


def get_task(name: str, **kwargs: Any):
    if name == "detection":
        from .detection import DetectionTask

        return DetectionTask(**kwargs)
    if name == "classification":
        from .classification import ClassificationTask

        return ClassificationTask(**kwargs)
    if name == "segmentation":
        from .segmentation import SegmentationTask

        return SegmentationTask(**kwargs)
    raise ValueError(f"unknown task {name!r}; available: detection, classification, segmentation")


def inference_task(task: str) -> type[InferenceTask]:
    """The task that evaluates, predicts and draws models of the registry task ``task`` (``retinanet``,
    ``maskrcnn``, ``classification``, ``segmentation``; a model's ``task`` attribute)."""
    for cls in _task_classes():
        if task in cls.model_tasks:
            return cls
    known = [t for cls in _task_classes() for t in cls.model_tasks]
    raise ValueError(f"a {task!r} model has no evaluation or prediction; expected a model of {known}")


def evaluate_checkpoint(path: str | os.PathLike[str], data: str, *, device: str | None = None,
                        out: str | None = None, image_size: int | None = None, classes: str | None = None,
                        prepare: Prepare | None = None) -> EvalResult:
    """Metrics of the model in ``path`` (a training checkpoint or a ``spinenet-weights/1`` file,
    :func:`~spinenet.tasks.inference.load_trained`) on the data set ``data`` (``spinenet eval``):
    COCO AP for detectors, top-1 / top-5 for classifiers, IoU for segmenters. ``out``: a detector's COCO results
    JSON, or a folder for ``metrics.json`` and the task's report images; ``image_size``: the long side to run at
    (detection, classification); ``classes``: a class mode of the built-in detection sets; ``prepare``: a
    transform of the loaded model (e.g. :func:`spinenet.optimize_for_inference`)."""
    trained = load_trained(path, device, prepare)
    return inference_task(trained.task).evaluate_checkpoint(trained, data, out=out, image_size=image_size,
                                                            classes=classes)


def predict_checkpoint(path: str | os.PathLike[str], images: Sequence[str], *, out: str,
                       device: str | None = None, image_size: int | None = None, score_thresh: float = 0.3,
                       overwrite: bool = False, prepare: Prepare | None = None) -> PredictResult:
    """Predictions of the model in ``path`` (a training checkpoint or a ``spinenet-weights/1`` file) on image files
    (``spinenet predict``): ``out/predictions.json`` and the task's images (drawn detections, top classes,
    segmentation masks and overlays). Nothing is written unless every image reads and no output exists (or
    ``overwrite``). ``score_thresh``: the detections kept."""
    trained = load_trained(path, device, prepare)
    return inference_task(trained.task).predict_images(trained, images, out=out, image_size=image_size,
                                                       score_thresh=score_thresh, overwrite=overwrite)
