"""SpineNet semantic segmentation (spinenet.models.segmentation): head, shapes, loss, config, mean IoU, overlays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spinenet.models.classification import create_classifier
from spinenet.models.segmentation import (SpineNetSegmenter, confusion_matrix, create_segmenter,
                                          create_segmenter_from_config, draw_overlay, iou_from_confusion,
                                          list_segmenters, mean_iou, segmentation_palette)
from spinenet.profile import count_params, on_meta

TINY = {"filter_size_scale": 0.125, "endpoints_num_filters": 16, "head_width": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(num_classes: int = 5, **kwargs) -> SpineNetSegmenter:
    torch.manual_seed(0)
    return create_segmenter("segmenter_spinenet49", num_classes, **{**TINY, **kwargs})


# ------------------------------------------------------------------------------------------------- table
def test_table_and_head_size():
    assert list_segmenters() == [f"segmenter_{b}" for b in ("spinenet49s", "spinenet49", "spinenet96", "spinenet143",
                                                           "spinenet190", "spinenet_mobile49", "spinenet_mobile49s",
                                                           "spinenet_mobile49xs")]
    with pytest.warns(DeprecationWarning, match="'spinenet49' is deprecated; use 'segmenter_spinenet49'"):
        assert on_meta(lambda: create_segmenter("spinenet49", 3)).config["name"] == "segmenter_spinenet49"
    model = on_meta(lambda: create_segmenter("segmenter_spinenet49", 21))
    # Backbone (spec 4.4) + head: 5 lateral 1x1 256->128 + BN, two 3x3 128->128 + BN, 1x1 128->21 with bias.
    head = 5 * (256 * 128 + 2 * 128) + 2 * (128 * 128 * 9 + 2 * 128) + 128 * 21 + 21
    assert count_params(model) == 21_831_488 + head
    for name in list_segmenters():
        assert on_meta(lambda: create_segmenter(name, 3)).config["head"]["num_convs"] == 2


# ----------------------------------------------------------------------------------------------- forward
def test_forward_backward_at_odd_size():
    model = tiny().train()
    images = torch.rand(2, 3, 97, 131)
    masks = torch.randint(0, 5, (2, 97, 131))
    masks[0, :10] = 255
    out = model(images, masks)
    assert set(out) == {"loss"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, 5, 97, 131)  # output size == input size
    assert model.predict(images).shape == (2, 97, 131) and not model.training
    assert model.predict(torch.rand(1, 3, 64, 64)).dtype == torch.int64


def test_mobile_segmenter_keeps_the_input_size():
    model = create_segmenter("segmenter_spinenet_mobile49xs", 3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 97, 131)).shape == (1, 3, 97, 131)


def test_loss_is_cross_entropy_ignoring_255():
    model = tiny(num_classes=3).eval()
    images = torch.rand(1, 3, 40, 56)
    masks = torch.randint(0, 3, (1, 40, 56), dtype=torch.uint8)
    masks[:, ::3] = 255
    with torch.no_grad():
        logits = model(images)
        loss = model(images, masks)["loss"]
        assert float(model(images, torch.full_like(masks, 255))["loss"]) == 0.0  # no labelled pixel: 0, not NaN
        assert torch.isclose(model(images, [masks[0]])["loss"], loss)  # a list of [H, W] masks works too
    torch.testing.assert_close(loss, F.cross_entropy(logits, masks.long(), ignore_index=255))
    with pytest.raises(ValueError, match="neither a class id"):
        model(images, torch.full((1, 40, 56), 3))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        model(images, torch.zeros(1, 20, 28, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model(images, torch.zeros(1, 40, 56))


def test_classifier_backbone_loads_into_segmenter():
    seg = tiny()
    clf = create_classifier("classifier_spinenet49", 10, filter_size_scale=0.125, endpoints_num_filters=16)
    seg.backbone.load_state_dict(clf.backbone.state_dict())  # same defaults: swish, eps 1e-5, momentum 0.1


def test_config_round_trip():
    model = tiny(num_classes=3, class_names=["bg", "tree", "road"], head_convs=3, dropout=0.0)
    config = json.loads(json.dumps(model.config))
    assert config["format"] == "spinenet-segmenter/1" and config["head"]["num_convs"] == 3
    clone = create_segmenter_from_config(config)
    assert clone.config == model.config
    clone.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 33, 47)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match="format"):
        create_segmenter_from_config({**config, "format": "spinenet-classifier/1"})


def test_user_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown segmenter"):
        create_segmenter("deeplab", 3)
    with pytest.raises(ValueError, match="num_classes"):
        create_segmenter("segmenter_spinenet49", 1)
    with pytest.raises(ValueError, match="ignore_index"):
        create_segmenter("segmenter_spinenet49", 3, ignore_index=2)
    with pytest.raises(ValueError, match="head overrides"):
        create_segmenter("segmenter_spinenet49", 3, head_filters=64)


# ------------------------------------------------------------------------------------------------ metrics
def test_mean_iou_on_hand_made_masks():
    target = torch.tensor([[0, 0, 1, 1],
                           [0, 2, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 2, 2, 0]])
    miou, per_class = mean_iou(pred, target, num_classes=4)
    # class 0: TP 2, FN 1 -> 2/3; class 1: TP 2, FP 1, FN 1 -> 1/2; class 2: TP 1, FP 1 -> 1/2; class 3 absent.
    # The pixel under 255 (predicted 0) counts nowhere.
    torch.testing.assert_close(per_class[:3], torch.tensor([2 / 3, 0.5, 0.5], dtype=torch.float64))
    assert math.isnan(per_class[3]) and miou == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)

    logits = F.one_hot(pred.clamp(max=3), 4).permute(2, 0, 1).float()[None]  # [1, C, H, W] logits work too
    assert mean_iou(logits, target[None], 4)[0] == pytest.approx(miou)
    assert mean_iou(target, target, 4)[0] == 1.0


def test_confusion_matrices_accumulate_over_a_dataset():
    torch.manual_seed(1)
    preds = [torch.randint(0, 3, (5, 7)) for _ in range(3)]
    targets = [torch.randint(0, 3, (5, 7)) for _ in range(3)]
    total = sum(confusion_matrix(p, t, 3) for p, t in zip(preds, targets))
    assert int(total.sum()) == 3 * 35
    assert iou_from_confusion(total)[0] == pytest.approx(mean_iou(torch.cat(preds), torch.cat(targets), 3)[0])
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 3)


# ------------------------------------------------------------------------------------------------ overlay
def test_overlay_png(tmp_path):
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (3, 6, 8), dtype=np.uint8))
    mask = torch.zeros(6, 8, dtype=torch.long)
    mask[1:3, 2:5] = 1
    mask[4:, :] = 2
    mask[0, 0] = 255
    overlay = draw_overlay(image, mask, alpha=0.4)
    assert isinstance(overlay, Image.Image) and overlay.size == (8, 6) and overlay.mode == "RGB"
    path = tmp_path / "overlay.png"
    overlay.save(path)
    drawn = np.asarray(Image.open(path))
    hwc = image.permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(drawn[mask.numpy() == 0], hwc[mask.numpy() == 0])  # background untouched
    np.testing.assert_array_equal(drawn[0, 0], hwc[0, 0])  # ignored pixel untouched
    colors = segmentation_palette(3).astype(np.float64)
    expected = np.round(0.6 * hwc[1, 2] + 0.4 * colors[1])
    np.testing.assert_allclose(drawn[1, 2], expected, atol=1)
    assert not np.array_equal(drawn[5, 0], hwc[5, 0])
    assert len({tuple(c) for c in segmentation_palette(21)}) == 21
    painted_all = np.asarray(draw_overlay(hwc, mask.numpy(), alpha=1.0, background=None, num_classes=3))
    np.testing.assert_array_equal(painted_all[3, 0], segmentation_palette(3)[0])
    with pytest.raises(ValueError, match="differ in size"):
        draw_overlay(image, mask[:4])
    with pytest.raises(ValueError, match="alpha"):
        draw_overlay(image, mask, alpha=2.0)


# ---------------------------------------------------------------------------------------------- weights files
def test_weights_file_round_trip_and_fine_tuning(tmp_path):
    """A segmenter saves to a weights file and loads back (same logits); another class count re-initialises the
    1x1 classifier only; a classifier file seeds the backbone; the engine's ``init_weights`` starts from it."""
    import spinenet
    from spinenet.weights import load_pretrained, save_weights

    model = tiny(3, head_width=16).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_weights(model, tmp_path / "seg.safetensors")
    x = torch.rand(1, 3, 64, 64)
    loaded = create_segmenter("segmenter_spinenet49", weights=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.config == model.config
    five = spinenet.create_model("segmenter_spinenet49", weights=str(path), num_classes=5)
    assert sorted(five.weights_report.reinitialised) == ["head.classifier.bias", "head.classifier.weight"]
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("head.classifier.")}
    assert all(torch.equal(five.state_dict()[k], v) for k, v in kept.items())
    with pytest.raises(ValueError, match="head_width=16"):
        create_segmenter("segmenter_spinenet49", weights=str(path), head_width=32)
    clf = create_classifier("classifier_spinenet49", 10, filter_size_scale=0.125, endpoints_num_filters=16)
    clf_path = save_weights(clf, tmp_path / "clf.safetensors")
    seeded = create_segmenter("segmenter_spinenet49", 4, weights=str(clf_path), head_width=16)
    assert all(k.startswith("head.") for k in seeded.weights_report.fresh)
    mine, theirs = seeded.backbone.state_dict(), clf.backbone.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    fresh = tiny(3, head_width=16)
    report = load_pretrained(fresh, path)
    assert not report.reinitialised and len(report.loaded) == len(model.state_dict())
