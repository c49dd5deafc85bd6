"""The optional ATSS anchor matcher (models/atss.py): hand-worked cases, the detector option, old configs."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from spinenet.models import create_detector, create_detector_from_config
from spinenet.models.anchors import MultilevelAnchors
from spinenet.models.atss import anchor_levels, atss_match

TINY = {"filter_size_scale": 0.125, "endpoints_num_filters": 16, "head_width": 16, "head_convs": 2}


def test_threshold_is_mean_plus_std_of_the_nearest_candidates():
    # two levels of three single-anchor cells; topk=2 keeps the two nearest cells of each level
    anchors = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [40, 0, 50, 10],   # level 3
                            [0, 0, 20, 20], [20, 0, 40, 20], [60, 0, 80, 20]])    # level 4
    levels = torch.tensor([3, 3, 3, 4, 4, 4])
    box = torch.tensor([[0.0, 0, 12, 10]])  # centre (6, 5): nearest are anchors 0, 1 and 3, 4
    # IoUs of the candidates by hand: 100/120, 20/200, 120/400, 0
    ious = [100 / 120, 20 / 200, 120 / 400, 0.0]
    threshold = statistics.mean(ious) + statistics.stdev(ious)
    assert ious[0] >= threshold > max(ious[1:])  # 0.833 >= 0.681: anchor 0 alone
    assert atss_match(box, anchors, levels, anchors_per_cell=1, topk=2).tolist() == [0, -1, -1, -1, -1, -1]
    # candidates per level are topk cells x anchors_per_cell anchors: 1 x 3 is the same set as 3 x 1
    assert torch.equal(atss_match(box, anchors, levels, anchors_per_cell=3, topk=1),
                       atss_match(box, anchors, levels, anchors_per_cell=1, topk=3))


def test_candidates_must_centre_inside_the_box():
    # four anchors with IoU exactly 0.5: the threshold is 0.5 (no spread) and all reach it, but the first two have
    # their centre on the box's edge, not inside
    box = torch.tensor([[0.0, 0, 10, 10]])
    anchors = torch.tensor([[0.0, 0, 20, 10], [-10, 0, 10, 10], [-5, 0, 15, 10], [0, -5, 10, 15]])
    levels = torch.full((4,), 3)
    assert atss_match(box, anchors, levels, anchors_per_cell=1, topk=4).tolist() == [-1, -1, 0, 0]


def test_an_anchor_positive_for_two_boxes_goes_to_the_larger_iou():
    # two near anchors and eight far ones (IoU 0, which keep both thresholds low: 0.53 and 0.43)
    anchors = torch.tensor([[0.0, 0, 10, 10], [2, 0, 12, 10]] + [[100.0 + 20 * i, 0, 110 + 20 * i, 10]
                                                                  for i in range(8)])
    levels = torch.full((10,), 3)
    boxes = torch.tensor([[0.0, 0, 10, 10], [3, 0, 13, 10]])
    # anchor 0: IoU 1 with box 0, 0.54 with box 1; anchor 1: 0.67 with box 0, 0.82 with box 1 -- both positive
    # for both boxes, each kept by the box it overlaps most
    for ious in ([1.0, 80 / 120] + [0.0] * 8, [70 / 130, 90 / 110] + [0.0] * 8):
        assert min(ious[:2]) >= statistics.mean(ious) + statistics.stdev(ious)
    matched = atss_match(boxes, anchors, levels, anchors_per_cell=1, topk=10)
    assert matched.tolist() == [0, 1] + [-1] * 8
    assert atss_match(torch.zeros(0, 4), anchors, levels, 1).tolist() == [-1] * 10


def test_small_box_gets_several_level3_positives_where_iou_matching_forces_one():
    anchors = MultilevelAnchors(3, 5, anchor_size=3.0)
    feats = [torch.zeros(1, 1, 256 >> level, 256 >> level) for level in anchors.levels]
    grid = anchors(ImageList(torch.zeros(1, 3, 256, 256), [(256, 256)]), feats)[0]
    levels = anchor_levels(grid, 3.0)
    assert torch.equal(torch.unique(levels, return_counts=True)[1], torch.tensor([32 * 32, 16 * 16, 8 * 8]) * 9)
    box = torch.tensor([[100.0, 100, 116, 116]])  # 16 px: below every anchor's IoU 0.5
    matched = atss_match(box, grid, levels, anchors.num_anchors)
    positives = torch.nonzero(matched == 0).flatten()
    assert len(positives) >= 3 and bool((levels[positives] == 3).all())
    detector = create_detector("retinanet_spinenet49s", num_classes=2, image_size=256, max_level=5, **TINY)
    assert int((detector.match_anchors([grid], [{"boxes": box}])[0] == 0).sum()) == 1  # the forced best anchor


def test_detector_option_trains_and_round_trips():
    torch.manual_seed(0)
    model = create_detector("retinanet_spinenet49", num_classes=3, image_size=128, matcher="atss", atss_topk=5,
                            **TINY)
    assert model.config["matching"] == {"matcher": "atss", "atss_topk": 5}
    clone = create_detector_from_config(json.loads(json.dumps(model.config)))
    assert (clone.matcher, clone.atss_topk) == ("atss", 5)
    model.train()
    images = [torch.rand(3, 100, 128), torch.rand(3, 128, 90)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [50.0, 50.0, 62.0, 61.0]]),
                "labels": torch.tensor([1, 2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model(images, targets)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    # a config written before the matcher was selectable rebuilds with the official IoU rule
    old = {k: v for k, v in model.config.items() if k != "matching"}
    assert create_detector_from_config(old).matcher == "iou"
    assert create_detector("retinanet_spinenet49", **TINY).config["matching"]["matcher"] == "iou"


def test_fine_tuning_a_saved_detector_with_atss(tmp_path):
    from spinenet.convert.weights import save_weights

    model = create_detector("retinanet_spinenet49", num_classes=3, image_size=128, **TINY)
    path = save_weights(model, tmp_path / "det.safetensors")
    tuned = create_detector("retinanet_spinenet49", weights=str(path), matcher="atss", **TINY)
    assert tuned.matcher == "atss" and tuned.config["matching"]["matcher"] == "atss"
    assert create_detector("retinanet_spinenet49", weights=str(path), **TINY).matcher == "iou"
    for key, value in model.state_dict().items():
        assert torch.equal(value, tuned.state_dict()[key]), key


def test_bad_matcher_settings_are_named():
    with pytest.raises(ValueError, match="matcher must be one of"):
        create_detector("retinanet_spinenet49", matcher="atts", **TINY)
    with pytest.raises(ValueError, match="atss_topk"):
        create_detector("retinanet_spinenet49", matcher="atss", atss_topk=0, **TINY)
