"""SpineNet RetinaNet detectors (spinenet.models): table, sizes, anchors, box coding, losses, official parity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torchvision.ops import clip_boxes_to_image

from spinenet.convert.detection_mapping import mg_retinanet_head_map, mg_retinanet_map
from spinenet.convert.load import apply_tf_weights, load_tf_backbone
from spinenet.convert.tf_checkpoint import TFCheckpoint
from spinenet.models import create_detector, create_detector_from_config, detector_macs, list_detectors
from spinenet.models.anchors import MultilevelAnchors
from spinenet.models.box_coder import BBOX_XFORM_CLIP, BoxCoder
from spinenet.models.detection import select_detections
from spinenet.models.retinanet_loss import retinanet_loss
from spinenet.profile import count_params, on_meta

from conftest import assert_parity

FIXTURE = "mg_retinanet_spinenet49_tiny"
# Tiny widths for everything that runs a forward pass (the graph is the full SpineNet-49 one).
TINY = {"filter_size_scale": 0.125, "endpoints_num_filters": 16, "head_width": 16, "head_convs": 2}


def yx_to_xy(a: np.ndarray) -> np.ndarray:
    """Official (ymin, xmin, ymax, xmax) -> torchvision (x1, y1, x2, y2)."""
    return a[..., [1, 0, 3, 2]]


# ------------------------------------------------------------------------------------------ table and sizes
# Spec 4.4: official trainable totals (backbone + RetinaNet head, 91 classes).
OFFICIAL_PARAMS = {
    "retinanet_spinenet49s": 11_265_942,
    "retinanet_spinenet49": 28_543_383,
    "retinanet_spinenet96": 42_974_871,
    "retinanet_spinenet143": 66_959_511,
    "retinanet_spinenet190": 163_637_351,
    "retinanet_spinenet_mobile49": 2_337_579,
    "retinanet_spinenet_mobile49s": 1_030_653,
    "retinanet_spinenet_mobile49xs": 872_711,
}


def test_table_lists_every_official_detector():
    assert list_detectors("retinanet_*") == list(OFFICIAL_PARAMS)
    assert set(OFFICIAL_PARAMS) < set(list_detectors())  # the table also holds the maskrcnn_* family
    assert list_detectors("*mobile*") == [n for n in OFFICIAL_PARAMS if "mobile" in n]


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_equals_official(name):
    model = on_meta(lambda: create_detector(name))
    assert count_params(model) == OFFICIAL_PARAMS[name]


# Spec 4.5: TF profiler ops of backbone + head / 2. Our convention counts conv multiply-adds only, so we land a
# little below; for the ResNet family the gap is < 1%.
@pytest.mark.parametrize("name,size,official_gmacs", [
    ("retinanet_spinenet49s", 640, 61.93 / 2),
    ("retinanet_spinenet49", 640, 171.13 / 2),
    ("retinanet_spinenet96", 1024, 532.10 / 2),
])
def test_macs_match_official_flops(name, size, official_gmacs):
    model = on_meta(lambda: create_detector(name))
    gmacs = detector_macs(model, size) / 1e9
    assert abs(gmacs / official_gmacs - 1) < 0.01, gmacs


def test_mobile_macs_close_to_official():
    # The profiler also counts BN, (hard-)swish and SE element-wise ops, which are a larger share of MBConv nets:
    # the mobile backbone alone already counts 6.3% below spec 4.5 with the conv-only convention; the head ~2%.
    model = on_meta(lambda: create_detector("retinanet_spinenet_mobile49"))
    gmacs = detector_macs(model) / 1e9  # default size 384
    assert 0.93 < gmacs / (2.075 / 2) < 1.0, gmacs


def test_defaults_and_overrides_land_in_config():
    model = on_meta(lambda: create_detector("retinanet_spinenet143", num_classes=3, score_thresh=0.2,
                                            anchor_size=5, activation="relu", bn_eps=1e-3))
    cfg = model.config
    assert cfg["image_size"] == 1280 and cfg["anchors"]["anchor_size"] == 5.0
    assert cfg["head"] == {"num_convs": 4, "num_filters": 256, "separable": False, "activation": "relu",
                           "bn_eps": 1e-3, "bn_momentum": cfg["backbone"]["bn_momentum"]}
    assert cfg["backbone"]["activation"] == "relu" and model.score_thresh == 0.2
    assert model.transform.min_size == (1280,) and model.transform.max_size == 1280
    assert model.transform.size_divisible == 128 and model.detections_per_img == 100
    json.dumps(cfg)  # JSON-serialisable
    swish = on_meta(lambda: create_detector("retinanet_spinenet190"))
    assert swish.config["anchors"]["anchor_size"] == 4.0 and swish.config["head"]["num_convs"] == 7
    assert isinstance(swish.head.act, torch.nn.SiLU)


def test_config_round_trip_rebuilds_the_same_model():
    model = create_detector("retinanet_spinenet49", num_classes=7, image_size=192, flavor="model_garden", **TINY)
    clone = create_detector_from_config(json.loads(json.dumps(model.config)))
    assert clone.config == model.config
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in clone.state_dict().items()}
    clone.load_state_dict(model.state_dict())


def test_user_errors():
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector("retinanet_spinenet50")
    with pytest.raises(ValueError, match="retinanet_spinenet49.*unknown override.*head_width"):
        create_detector("retinanet_spinenet49", head_widht=3)
    with pytest.raises(ValueError, match="num_classes"):
        create_detector("retinanet_spinenet49", num_classes=1)
    with pytest.raises(FileNotFoundError, match="x.pt"):
        create_detector("retinanet_spinenet49", weights="x.pt")
    with pytest.raises(ValueError, match="format"):
        create_detector_from_config({"name": "retinanet_spinenet49"})


# ------------------------------------------------------------------------------------- anchors, box coding
def test_anchor_layout():
    gen = MultilevelAnchors(anchor_size=3.0)
    a = gen.level_anchors(3, 2, 3)  # [2*3*9, 4]
    assert a.shape == (54, 4)
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    # a = scale * 3 + ratio (ratio = w / h in 0.5, 1, 2); size 3 * 8 * 2^(s/3)
    torch.testing.assert_close(w[:9] * h[:9], torch.tensor([(24 * 2 ** (s / 3)) ** 2 for s in range(3)
                                                            for _ in range(3)]))
    torch.testing.assert_close(w[:3] / h[:3], torch.tensor([0.5, 1.0, 2.0]))
    centres = (a[::9, :2] + a[::9, 2:]) / 2  # cells row-major (y, x)
    torch.testing.assert_close(centres, torch.tensor([[4.0, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]))


def test_box_coder_round_trip_and_clip():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 45.0, 25.0]])
    boxes = torch.tensor([[1.0, 2.0, 11.0, 13.0], [0.0, 10.0, 80.0, 20.0]])
    deltas = coder.encode(boxes, anchors)
    # (dy, dx, dh, dw) of box 0: yc 7.5 vs 10, xc 6 vs 5, h 11 vs 20, w 10 vs 10
    torch.testing.assert_close(deltas[0], torch.tensor([-2.5 / 20, 1 / 10, math.log(11 / 20), 0.0]))
    torch.testing.assert_close(coder.decode(deltas, anchors), boxes)
    huge = coder.decode(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    torch.testing.assert_close(huge, torch.tensor([[-492.0, -492.0, 508.0, 508.0]]))  # capped at 1000 / 16
    assert BBOX_XFORM_CLIP == pytest.approx(4.135166556742356)


# ---------------------------------------------------------------------------------------- matching and loss
def _focal_np(x: np.ndarray, t: np.ndarray, alpha: float = 0.25, gamma: float = 1.5) -> float:
    p = 1 / (1 + np.exp(-x))
    ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    p_t = np.where(t == 1, p, 1 - p)
    return float(np.sum(np.where(t == 1, alpha, 1 - alpha) * (1 - p_t) ** gamma * ce))


def test_loss_by_hand():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 4.0, 4.0]])
    logits = torch.tensor([[[0.2, 1.0, -0.5], [-1.0, 0.3, 2.0], [5.0, 5.0, 5.0]],
                           [[0.0, -2.0, 1.5], [0.7, 0.1, -0.3], [-4.0, 0.0, 3.0]]])
    deltas = torch.tensor([[[0.3, 0.0, 0.5, -0.05], [1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]],
                           torch.ones(3, 4).tolist()])
    targets = [{"boxes": torch.tensor([[1.0, 2.0, 11.0, 13.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    # image 0: anchor 0 positive (gt 0), anchor 1 negative, anchor 2 ignored; image 1: all negative
    matched = [torch.tensor([0, -1, -2]), torch.tensor([-1, -1, -1])]
    out = retinanet_loss(logits, deltas, [anchors, anchors], targets, matched, coder)

    normalizer = 1 + 1  # one positive anchor in the batch, + 1
    t0 = np.array([[0, 0, 1], [0, 0, 0]], dtype=np.float64)
    focal = _focal_np(logits[0, :2].double().numpy(), t0) + _focal_np(logits[1].double().numpy(), np.zeros((3, 3)))
    assert out["classification"].item() == pytest.approx(focal / normalizer, rel=1e-5)
    # box target of anchor 0: (dy, dx, dh, dw) = (2.5/10, 1/10, log(11/10), 0); prediction (0.3, 0, 0.5, -0.05)
    # residuals 0.05, -0.1, 0.5 - log 1.1, -0.05 -> Huber(0.1): 0.00125, 0.005, 0.1 * (0.40469 - 0.05), 0.00125
    r = abs(0.5 - math.log(1.1))
    huber = (0.5 * 0.05 ** 2 + 0.5 * 0.1 ** 2 + 0.1 * (r - 0.05) + 0.5 * 0.05 ** 2) / 4
    assert huber == pytest.approx(0.0107422, rel=1e-4)
    assert out["bbox_regression"].item() == pytest.approx(50 * huber / normalizer, rel=1e-5)


def test_loss_rejects_out_of_range_labels():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ValueError, match="labels must lie in 1..2"):
        retinanet_loss(torch.zeros(1, 1, 3), torch.zeros(1, 1, 4), [anchors],
                       [{"boxes": anchors.clone(), "labels": torch.tensor([3])}], [torch.tensor([0])], BoxCoder())


@pytest.fixture(scope="module")
def tiny_detector():
    torch.manual_seed(0)
    return create_detector("retinanet_spinenet49", num_classes=4, image_size=128, **TINY)


def test_matching_thresholds_and_forced_matches(tiny_detector):
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 24], [0, 0, 10, 40], [95, 95, 115, 115],
                            [200, 200, 210, 210]])
    # gt 0 vs anchors 0/1/2: IoU 0.83, exactly 0.5 (positive: >= 0.5), 0.3; gt 1 best IoU 0.25 (anchor 3, forced)
    boxes = torch.tensor([[0.0, 0, 10, 12], [100, 100, 110, 110]])
    matched = tiny_detector.match_anchors([anchors, anchors], [{"boxes": boxes}, {"boxes": torch.zeros(0, 4)}])
    assert matched[0].tolist() == [0, 0, -1, 1, -1]
    assert matched[1].tolist() == [-1] * 5


def test_train_losses_gradients_and_eval_boxes(tiny_detector):
    model = tiny_detector.train()
    images = [torch.rand(3, 100, 140), torch.rand(3, 120, 90)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [50.0, 50.0, 130.0, 95.0]]),
                "labels": torch.tensor([1, 3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    model.zero_grad()
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad

    model.eval()
    model.score_thresh, model.detections_per_img = 0.0, 30  # untrained: keep every candidate
    with torch.no_grad():
        out = model(images)
    for det, image in zip(out, images):
        h, w = image.shape[-2:]
        assert det["boxes"].shape == (30, 4) and det["scores"].shape == (30,)
        assert det["boxes"][:, 0::2].min() >= 0 and det["boxes"][:, 0::2].max() <= w
        assert det["boxes"][:, 1::2].min() >= 0 and det["boxes"][:, 1::2].max() <= h
        assert det["labels"].min() >= 1 and det["labels"].max() <= 3  # logit 0 never becomes a label
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])
    model.score_thresh, model.detections_per_img = 0.05, 100


def test_fewer_levels_still_pad_to_the_deepest_block():
    # P3-P5 only: the level-6/7 blocks that feed them stay, so a 320 px image is padded to 384 (not to 320, a
    # multiple of 2 ** 5, which gave those blocks 3x3 maps resampled onto 10x10 ones); its anchors cover P3-P5
    model = create_detector("retinanet_spinenet49s", num_classes=2, image_size=320, max_level=5, **TINY).eval()
    assert model.backbone.size_divisibility == 128
    batch, _ = model.transform([torch.rand(3, 320, 320)])
    assert tuple(batch.tensors.shape[-2:]) == (384, 384) and batch.image_sizes == [(320, 320)]
    with torch.no_grad():
        features = model.backbone(batch.tensors)
    assert {k: tuple(v.shape[-2:]) for k, v in features.items()} == {"3": (48, 48), "4": (24, 24), "5": (12, 12)}
    assert (model.anchor_generator.min_level, model.anchor_generator.max_level) == (3, 5)


def test_mobile_detector_runs():
    torch.manual_seed(0)
    model = create_detector("retinanet_spinenet_mobile49xs", num_classes=3, image_size=128)
    assert model.head.classifier.depthwise.groups == 24
    images = [torch.rand(3, 96, 128), torch.rand(3, 128, 64)]
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 50.0, 60.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model.train()(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        out = model.eval()(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}


def test_select_detections_top_k_is_per_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 0, 10, 11]])
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.7, 0.6], [0.85, 0.2]])
    b, s, labels = select_detections(boxes, scores, 0.15, 0.5, topk_candidates=2, detections_per_img=10)
    # class 1: top-2 = anchors 0 and 3, which overlap -> 0 only; class 2: top-2 = anchors 1, 2 (3 has 0.2)
    assert labels.tolist() == [1, 2, 2] and s.tolist() == pytest.approx([0.9, 0.7, 0.6])


# ----------------------------------------------------------------------------------- official parity (MG)
@pytest.fixture(scope="module")
def mg_fixture():
    from conftest import PARITY, require_shared

    folder = require_shared(PARITY / FIXTURE)
    meta = json.loads((folder / "meta.json").read_text())
    args = meta["backbone_constructor_args"]
    head = meta["head_get_config"]
    model = create_detector(
        "retinanet_spinenet49", num_classes=head["num_classes"], image_size=meta["input"]["shape"][1],
        flavor="model_garden", activation=args["activation"], bn_eps=meta["bn"]["epsilon"],
        bn_momentum=1 - meta["bn"]["momentum_tf"], filter_size_scale=args["filter_size_scale"],
        endpoints_num_filters=args["endpoints_num_filters"], resample_alpha=args["resample_alpha"],
        block_repeats=args["block_repeats"], head_convs=head["num_convs"], head_width=head["num_filters"],
        anchor_size=meta["model_config"]["anchor"]["anchor_size"]).eval()
    return folder, meta, model


def _level_arrays(folder, kind: str, per_anchor: int) -> list[np.ndarray]:
    return [np.load(folder / f"{kind}_{level}.npy").reshape(1, -1, per_anchor) for level in range(3, 8)]


def test_official_head_outputs(mg_fixture, parity_dir):
    parity_dir(FIXTURE)  # fail (not skip) under CI=true when ../shared is absent
    folder, meta, model = mg_fixture
    ckpt = TFCheckpoint(folder / "ckpt")
    report = load_tf_backbone(model.backbone, ckpt, source="model_garden", prefix="backbone")
    assert not report.missing and not report.mismatched
    report = apply_tf_weights(model.head, ckpt, mg_retinanet_head_map(model.head))
    assert len(report.mapped) == sum(not k.endswith("num_batches_tracked") for k in model.head.state_dict())
    # the whole-detector map uses every weight of the checkpoint
    full = apply_tf_weights(model, ckpt, mg_retinanet_map(model), strict_unused=True)
    assert not full.unused and len(full.mapped) == meta["checkpoint"]["num_keys_including_object_graph"] - 2
    assert count_params(model) == meta["params"]["trainable"]

    x = torch.from_numpy(np.load(folder / "input.npy")).permute(0, 3, 1, 2)
    with torch.no_grad():
        cls_maps, box_maps = model.head.forward_levels(list(model.backbone(x).values()))
    for level, cls, box in zip(range(3, 8), cls_maps, box_maps):
        for name, out in (("cls", cls), ("box", box)):
            ref = np.load(folder / f"{name}_{level}.npy").transpose(0, 3, 1, 2)
            assert_parity(out.numpy(), ref, f"{name}_{level}")


def test_official_anchors(parity_dir):
    folder = parity_dir(FIXTURE)
    gen = MultilevelAnchors(anchor_size=3.0)
    for level in range(3, 8):
        ref = np.load(folder / f"anchors_{level}.npy")  # [H, W, 36] (ymin, xmin, ymax, xmax)
        ours = gen.level_anchors(level, ref.shape[0], ref.shape[1]).numpy()
        np.testing.assert_allclose(ours, yx_to_xy(ref.reshape(-1, 4)), rtol=0, atol=1e-3)


def test_official_decoding(parity_dir):
    folder = parity_dir(FIXTURE)
    anchors = np.concatenate([yx_to_xy(np.load(folder / f"anchors_{lv}.npy").reshape(-1, 4)) for lv in range(3, 8)])
    deltas = np.concatenate(_level_arrays(folder, "box", 4), axis=1)[0]
    decoded = clip_boxes_to_image(BoxCoder().decode(torch.from_numpy(deltas), torch.from_numpy(anchors)), (256, 256))
    ref = yx_to_xy(np.load(folder / "decoded_boxes.npy")[0, :, 0])
    np.testing.assert_allclose(decoded.numpy(), ref, rtol=0, atol=1e-3)
    logits = np.concatenate(_level_arrays(folder, "cls", 5), axis=1)[0]
    scores = torch.sigmoid(torch.from_numpy(logits[:, 1:])).numpy()
    np.testing.assert_allclose(scores, np.load(folder / "decoded_box_scores.npy")[0], rtol=0, atol=1e-6)


def _assert_same_detections(ours: dict, folder, suffix: str, box_tol: float, score_tol: float) -> None:
    """Same count and class histogram; each official row matched one-to-one by class, box and score."""
    n = int(np.load(folder / f"num_detections{suffix}.npy")[0])
    ref_boxes = yx_to_xy(np.load(folder / f"detection_boxes{suffix}.npy")[0, :n])
    ref_scores = np.load(folder / f"detection_scores{suffix}.npy")[0, :n]
    ref_classes = np.load(folder / f"detection_classes{suffix}.npy")[0, :n]
    boxes, scores, labels = (ours[k].numpy() for k in ("boxes", "scores", "labels"))
    assert len(scores) == n
    assert np.bincount(labels, minlength=8).tolist() == np.bincount(ref_classes, minlength=8).tolist()
    free = np.ones(n, dtype=bool)
    for i in range(n):
        err = np.abs(boxes - ref_boxes[i]).max(axis=1)
        ok = free & (labels == ref_classes[i]) & (np.abs(scores - ref_scores[i]) <= score_tol) & (err <= box_tol)
        assert ok.any(), f"official detection {i} ({ref_classes[i]}, {ref_scores[i]}, {ref_boxes[i]}) not found"
        free[np.flatnonzero(ok)[np.argmin(err[ok])]] = False


@pytest.mark.parametrize("suffix,score_thresh,max_det", [("", 0.05, 100), ("_extra", 0.62, 1000)])
def test_official_postprocess_from_saved_outputs(parity_dir, suffix, score_thresh, max_det):
    """The model's own post-processing path fed with the official raw outputs reproduces official NMS v2."""
    folder = parity_dir(FIXTURE)
    model = on_meta(lambda: create_detector("retinanet_spinenet49", num_classes=5, image_size=256,
                                            score_thresh=score_thresh, detections_per_img=max_det))
    sizes = [np.load(folder / f"anchors_{lv}.npy").shape[:2] for lv in range(3, 8)]
    anchors = [model.anchor_generator.level_anchors(lv, h, w) for lv, (h, w) in zip(range(3, 8), sizes)]
    head_outputs = {"cls_logits": [torch.from_numpy(a) for a in _level_arrays(folder, "cls", 5)],
                    "bbox_regression": [torch.from_numpy(a) for a in _level_arrays(folder, "box", 4)]}
    (det,) = model.postprocess_detections(head_outputs, [anchors], [(256, 256)])
    _assert_same_detections(det, folder, suffix, box_tol=1e-3, score_tol=1e-6)


def test_official_detections_end_to_end(mg_fixture, parity_dir):
    """Converted weights on input.npy through backbone, head and post-processing (README: 1e-4 * max|ref|)."""
    parity_dir(FIXTURE)
    folder, _, model = mg_fixture
    apply_tf_weights(model, TFCheckpoint(folder / "ckpt"), mg_retinanet_map(model), strict_unused=True)
    x = torch.from_numpy(np.load(folder / "input.npy")).permute(0, 3, 1, 2)
    with torch.no_grad():
        endpoints = model.backbone(x)
        assert list(endpoints) == ["3", "4", "5", "6", "7"]  # the order RetinaNet.forward's list() relies on
        features = list(endpoints.values())
        head = model.head(features)
        sizes = [f.shape[-2] * f.shape[-1] * 9 for f in features]
        anchors = [list(a.split(sizes)) for a in model.anchor_generator(_Images([(256, 256)]), features)]
        split = {k: list(v.split(sizes, dim=1)) for k, v in head.items()}
        (det,) = model.postprocess_detections(split, anchors, [(256, 256)])
    _assert_same_detections(det, folder, "", box_tol=1e-4 * 256, score_tol=1e-5)


class _Images:
    """The one attribute of torchvision's ImageList that the anchor generator reads."""

    def __init__(self, image_sizes: list[tuple[int, int]]) -> None:
        self.image_sizes = image_sizes


# ------------------------------------------------------------------------------------------- class names
@pytest.mark.parametrize("name", ["retinanet_spinenet49s", "maskrcnn_spinenet49s"])
def test_class_names_and_category_ids_travel_with_the_weights(name, tmp_path):
    """A detector's configuration names each label (label 0 included) and maps labels to the data set's category
    ids; a weights file gives both back, may rename them, and drops them with another class count (they name
    the old labels). Category ids equal to the labels are stored as none."""
    from spinenet import save_weights

    tiny = {"filter_size_scale": 0.125, "endpoints_num_filters": 16, "head_width": 16}
    names, ids = ["__background__", "cat", "dog"], [0, 17, 4]
    det = create_detector(name, num_classes=3, class_names=names, category_ids=ids, **tiny)
    assert (det.class_names, det.category_ids) == (names, ids)
    path = save_weights(det, tmp_path / "det.safetensors")
    loaded = create_detector(name, weights=str(path))
    assert (loaded.config["class_names"], loaded.config["category_ids"]) == (names, ids)
    renamed = create_detector(name, weights=str(path), class_names=["bg", "a", "b"], category_ids=[0, 1, 2])
    assert (renamed.class_names, renamed.category_ids) == (["bg", "a", "b"], None)
    recounted = create_detector(name, weights=str(path), num_classes=4)
    assert (recounted.class_names, recounted.category_ids) == (None, None)
    plain = create_detector(name, num_classes=3, **tiny)
    assert (plain.class_names, plain.category_ids) == (None, None)
    with pytest.raises(ValueError, match="class_names has 2 entries but num_classes is 3"):
        create_detector(name, num_classes=3, class_names=["a", "b"], **tiny)
    with pytest.raises(ValueError, match="category_ids must hold 3 distinct ids"):
        create_detector(name, num_classes=3, category_ids=[0, 4, 4], **tiny)
    config = det.to_config()
    config["class_names"] = names[:2]
    with pytest.raises(ValueError, match="config: class_names has 2 entries"):
        create_detector_from_config(config)


def test_configurations_without_class_names_still_build():
    """A detector configuration written before detectors carried names (no ``class_names``, no
    ``category_ids``) rebuilds, with neither."""
    config = create_detector("retinanet_spinenet49s", num_classes=4, **TINY).to_config()
    del config["class_names"], config["category_ids"]
    rebuilt = create_detector_from_config(config)
    assert (rebuilt.class_names, rebuilt.category_ids) == (None, None)
    assert rebuilt.to_config()["num_classes"] == 4
