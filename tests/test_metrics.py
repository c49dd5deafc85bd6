"""spinenet.metrics: every task's metric in one module (COCO AP is tested in tests/test_evaluation.py), with the
earlier import paths pointing at the same functions."""

from __future__ import annotations

import math

import pytest
import torch

from spinenet import metrics


def test_classification_metrics_on_hand_made_logits():
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 0, 5, 4, 3, 2], [0, 1, 2, 3, 4, 5], [9, 0, 0, 0, 0, 0]])
    labels = torch.tensor([0, 3, 0, 1])
    out, matrix = metrics.classification_metrics(logits, labels, 6)
    assert out["top1"] == 0.25  # only the first image's top class is right
    assert out["top5"] == 0.5  # image 2 has class 3 in its top 5; images 3 and 4 have their class last / absent
    assert out["images"] == 4
    assert out["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))
    assert matrix.shape == (6, 6) and int(matrix.sum()) == 4
    assert matrix[0, 0] == 1 and matrix[3, 2] == 1 and matrix[0, 5] == 1 and matrix[1, 0] == 1


def test_segmentation_metrics_from_a_confusion_matrix():
    pred = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    target = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 255]])
    matrix = metrics.confusion_matrix(pred, target, 2)
    assert matrix.tolist() == [[3, 1], [0, 3]]  # the ignored pixel is not counted
    baseline = torch.tensor([[4, 0], [3, 0]])  # a reference that finds no foreground
    out = metrics.segmentation_metrics(matrix, baseline)
    assert out["fg_iou"] == pytest.approx(3 / 4) and out["miou"] == pytest.approx((3 / 4 + 3 / 4) / 2)
    assert out["pixel_acc"] == pytest.approx(6 / 7)
    assert out["otsu_fg_iou"] == 0.0 and out["fg_iou_minus_otsu"] == pytest.approx(0.75)
    three = metrics.segmentation_metrics(torch.tensor([[2, 1, 0], [0, 1, 0], [0, 0, 0]]))
    assert three["fg_iou"] == pytest.approx(0.5)  # class 1: 1 / (1 + 1); class 2 absent (NaN) is left out
    assert "otsu_fg_iou" not in three and not math.isnan(three["miou"])


def test_earlier_import_paths_are_the_same_functions():
    import spinenet.data
    import spinenet.data.evaluation
    import spinenet.models
    import spinenet.models.segmentation
    import spinenet.tasks.classification

    assert spinenet.data.evaluate_coco is metrics.evaluate_coco
    assert spinenet.data.predictions_to_coco_results is metrics.predictions_to_coco_results
    assert spinenet.data.save_results_json is metrics.save_results_json
    assert spinenet.data.evaluation.coco_from_dict is metrics.coco_from_dict
    assert spinenet.data.evaluation.METRIC_NAMES is metrics.METRIC_NAMES
    assert spinenet.tasks.classification.classification_metrics is metrics.classification_metrics
    assert spinenet.models.mean_iou is metrics.mean_iou
    assert spinenet.models.segmentation.confusion_matrix is metrics.confusion_matrix
    assert spinenet.models.segmentation.iou_from_confusion is metrics.iou_from_confusion
    assert spinenet.models.segmentation.IGNORE_INDEX == metrics.IGNORE_INDEX == 255
