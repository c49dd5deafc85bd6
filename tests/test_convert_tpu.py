"""`spinenet convert --source tpu` on the official TF1 fixtures (../shared/fixtures/parity, made by tensorflow/tpu
7dc921f with randomised weights): TF1 RetinaNet, SpineNet-MBConv and Mask R-CNN.

Each checkpoint goes through the CLI (the RetinaNet and Mask R-CNN with the released checkpoints' presets plus the
tiny fixtures' widths), the model is rebuilt from the written file alone, and every saved TF1 output is reproduced
to 1e-4 per tensor: endpoints, RetinaNet class/box outputs per level, RPN outputs per level, Fast R-CNN box head and
mask head on the fixture's fixed RoI features. TF1 outputs are in TF1's anchor order (aspect ratios (1, 2, 0.5)) and
delta order (dy, dx, dh, dw); the permutation into ours is derived here from the anchors themselves.

The fixtures save no decoded boxes, so the TF1 post-processing is checked against float64 numpy evaluations of the
TF1 formulas that the fixtures' ``meta.json`` spells out ("+1" decoding, clipping to [0, H - 1] x [0, W - 1],
sigmoid-then-drop-background for RetinaNet, weights (10, 10, 5, 5) and softmax for Fast R-CNN), fed with the
fixture's own TF1 outputs and anchors.
"""

from __future__ import annotations

import json
import math
from contextlib import redirect_stdout
from io import StringIO

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.image_list import ImageList

import spinenet
from spinenet.cli import main
from spinenet.convert.weights import read_weights
from spinenet.models import create_detector

from conftest import PARITY, assert_parity, require_shared

RETINANET, MBCONV, MASKRCNN = "tpu_retinanet_spinenet49_tiny", "tpu_spinenet_mbconv49_backbone", \
    "tpu_maskrcnn_spinenet49_tiny"
TINY = ["--set", "filter_size_scale=0.125", "--set", "endpoints_num_filters=32", "--set", "resample_alpha=0.5"]
# The documented one-line commands (docs/weights.md), plus the tiny widths and class count of the fixtures.
CASES = {
    RETINANET: ["--preset", "spinenet-49", "--num-classes", "5", *TINY, "--set", "head_width=32",
                "--set", "image_size=256"],
    MBCONV: ["--source", "tpu", "--model", "spinenet_mobile49", "--activation", "swish", "--bn-eps", "1e-4"],
    MASKRCNN: ["--preset", "maskrcnn-spinenet-49", "--num-classes", "5", *TINY, "--set", "head_width=32",
               "--set", "box_fc_dim=64", "--set", "image_size=256"],
}
TF1_DELTAS = ("dy", "dx", "dh", "dw")  # meta.json output_layout.box_delta_order
TORCHVISION_DELTAS = ("dx", "dy", "dw", "dh")  # our Mask R-CNN (torchvision's BoxCoder)
XFORM_CLIP = math.log(1000.0 / 16.0)


def meta(name: str) -> dict:
    return json.loads((PARITY / name / "meta.json").read_text())


def load(name: str, file: str) -> np.ndarray:
    return np.load(PARITY / name / file)


def nchw(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, one_thread):
    """Each fixture converted once through the CLI: {fixture: (weights path, printed report)}."""
    require_shared(PARITY)
    out = tmp_path_factory.mktemp("tpu_weights")
    result = {}
    for name, args in CASES.items():
        path = out / f"{name}.safetensors"
        buf = StringIO()
        with redirect_stdout(buf):
            code = main(["convert", str(PARITY / name / "model.ckpt"), *args, "-o", str(path)])
        assert code == 0, buf.getvalue()
        result[name] = (path, buf.getvalue())
    return result


@pytest.fixture(scope="module")
def models(converted):
    """The converted models, rebuilt from their weights files alone, in eval mode."""
    return {RETINANET: create_detector("retinanet_spinenet49", weights=str(converted[RETINANET][0])).eval(),
            MBCONV: spinenet.create_model("spinenet_mobile49", weights=str(converted[MBCONV][0])).eval(),
            MASKRCNN: create_detector("maskrcnn_spinenet49", weights=str(converted[MASKRCNN][0])).eval()}


@pytest.fixture(scope="module")
def features(models):
    """Backbone endpoints of each converted model on its fixture's input."""
    out = {}
    with torch.no_grad():
        for name, model in models.items():
            backbone = model if name == MBCONV else model.backbone
            out[name] = backbone(torch.from_numpy(load(name, "input.npy")).permute(0, 3, 1, 2))
    return out


def anchor_permutation(ours: torch.Tensor, theirs: np.ndarray) -> list[int]:
    """For each of our anchors at one cell (xyxy ``[A, 4]``), the index of the TF1 anchor (yxyx ``[A, 4]``) with
    the same box: the order the TF1 channels must take to be in ours."""
    theirs_xyxy = theirs[:, [1, 0, 3, 2]]
    perm = [int(np.abs(theirs_xyxy - box.numpy()).max(axis=1).argmin()) for box in ours]
    assert sorted(perm) == list(range(len(perm))), perm
    return perm


def check_anchors(model_anchors, name: str, level: int) -> list[int]:
    """Our anchors of ``level`` equal the fixture's ``anchors_<level>`` in our order; returns that order."""
    ref = load(name, f"anchors_{level}.npy")  # [H, W, A * 4] (ymin, xmin, ymax, xmax), TF1 anchor order
    height, width = ref.shape[:2]
    ref = ref.reshape(height, width, -1, 4)
    ours = model_anchors.level_anchors(level, height, width).reshape(height, width, -1, 4)
    perm = anchor_permutation(ours[0, 0], ref[0, 0])
    err = np.abs(ours.numpy() - ref[:, :, perm][..., [1, 0, 3, 2]]).max()
    assert err <= 1e-3, f"{name} anchors P{level}: {err} px"  # README: anchors within 1e-3 px
    return perm


def per_anchor(a: np.ndarray, perm: list[int], channels: list[int] | None = None) -> np.ndarray:
    """NHWC ``[N, H, W, A * C]`` TF1 outputs -> NCHW in our anchor order (and ``channels`` order inside one)."""
    n, h, w, _ = a.shape
    a = a.reshape(n, h, w, len(perm), -1)[:, :, :, perm]
    if channels is not None:
        a = a[..., channels]
    return nchw(a.reshape(n, h, w, -1))


# ---------------------------------------------------------------------------------------------- the conversions
@pytest.mark.parametrize("fixture", sorted(CASES))
def test_every_checkpoint_tensor_maps(fixture, converted):
    """The match report: every weight of the TF1 checkpoint (keys.tsv, all but global_step) lands, none is left."""
    _, printed = converted[fixture]
    keys = [line.split("\t")[0] for line in (PARITY / fixture / "keys.tsv").read_text().splitlines()
            if line and not line.startswith(("global_step", "key\t", "name\t"))]
    assert f"mapped {len(keys)} tensors; 0 checkpoint entries unused; 0 missing; 0 shape mismatches" in printed, \
        printed
    if "--preset" in CASES[fixture]:  # the release's status follows the match report
        from spinenet.convert.presets import get_preset, status

        preset = CASES[fixture][CASES[fixture].index("--preset") + 1]
        assert f"{preset} against the official code in CI: {status(get_preset(preset))}" in printed


def test_presets_carry_the_official_settings():
    """The released checkpoints' presets build what the fixtures' TF1 configs describe (activation, BN epsilon)."""
    from spinenet.convert.presets import get_preset

    for name, preset in ((RETINANET, "spinenet-49"), (MASKRCNN, "maskrcnn-spinenet-49")):
        bn = meta(name)["config"]["batch_norm_activation"]
        p = get_preset(preset)
        assert (p.activation, p.bn_eps, p.bn_momentum) == (bn["activation"], bn["batch_norm_epsilon"],
                                                           pytest.approx(1 - bn["batch_norm_momentum"]))
    assert meta(MBCONV)["bn"]["epsilon"] == 1e-4 and get_preset("spinenetmbconv-49-best").bn_eps == 1e-4


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_endpoints_match_tf1(fixture, features):
    assert sorted(features[fixture]) == ["3", "4", "5", "6", "7"]
    for level, tensor in features[fixture].items():
        assert_parity(tensor.numpy(), nchw(load(fixture, f"endpoint_{level}.npy")), f"{fixture} endpoint {level}")


def test_retinanet_head_matches_tf1_in_our_anchor_order(models, features):
    """cls/box per level: the TF1 channels, put in the order that makes the fixture's anchors equal ours."""
    model = models[RETINANET]
    with torch.no_grad():
        cls, box = model.head.forward_levels(list(features[RETINANET].values()))
    for level, c, b in zip(model.anchor_generator.levels, cls, box):
        perm = check_anchors(model.anchor_generator, RETINANET, level)
        assert_parity(c.numpy(), per_anchor(load(RETINANET, f"cls_{level}.npy"), perm), f"cls {level}")
        assert_parity(b.numpy(), per_anchor(load(RETINANET, f"box_{level}.npy"), perm), f"box {level}")  # (dy, dx, ...)


def test_maskrcnn_keeps_torchvision_structure(models):
    model = models[MASKRCNN]
    assert isinstance(model, MaskRCNN)
    parts = ("rpn.head.", "roi_heads.box_head.", "roi_heads.box_predictor.", "roi_heads.mask_head.",
             "roi_heads.mask_predictor.")
    keys = [k for k in model.state_dict() if not k.startswith("backbone.")]
    assert keys and all(k.startswith(parts) for k in keys)
    assert all(any(k.startswith(p) for k in keys) for p in parts)


def test_maskrcnn_rpn_matches_tf1_in_our_anchor_order(models, features):
    """RPN objectness and deltas per level: TF1 anchors reordered to ours, (dy, dx, dh, dw) to (dx, dy, dw, dh)."""
    model = models[MASKRCNN]
    deltas = [TF1_DELTAS.index(d) for d in TORCHVISION_DELTAS]
    with torch.no_grad():
        logits, boxes = model.rpn.head(list(features[MASKRCNN].values()))
    for level, s, b in zip(model.rpn.anchor_generator.levels, logits, boxes):
        perm = check_anchors(model.rpn.anchor_generator, MASKRCNN, level)
        assert_parity(s.numpy(), per_anchor(load(MASKRCNN, f"rpn_score_{level}.npy"), perm),
                      f"rpn score {level}")
        assert_parity(b.numpy(), per_anchor(load(MASKRCNN, f"rpn_box_{level}.npy"), perm, deltas), f"rpn box {level}")


def roi_input(file: str) -> torch.Tensor:
    """Fixture RoI features ``[N, R, h, w, C]`` -> ``[N * R, C, h, w]``."""
    a = load(MASKRCNN, file)
    return torch.from_numpy(a.reshape(-1, *a.shape[2:])).permute(0, 3, 1, 2)


def box_head_outputs(model) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.roi_heads.box_predictor(model.roi_heads.box_head(roi_input("roi_features_box.npy")))


def test_fast_rcnn_head_matches_tf1_on_the_fixture_rois(models):
    logits, deltas = box_head_outputs(models[MASKRCNN])
    assert_parity(logits.numpy(), load(MASKRCNN, "frcnn_class_logits.npy")[0], "frcnn class logits")
    ref = load(MASKRCNN, "frcnn_box_deltas.npy")[0]  # [R, 4K], class k at 4k..4k+3 as (dy, dx, dh, dw)
    ref = ref.reshape(ref.shape[0], -1, 4)[..., [TF1_DELTAS.index(d) for d in TORCHVISION_DELTAS]]
    assert_parity(deltas.numpy(), ref.reshape(ref.shape[0], -1), "frcnn box deltas")


def test_mask_head_matches_tf1_on_the_fixture_rois(models):
    model = models[MASKRCNN]
    with torch.no_grad():
        logits = model.roi_heads.mask_predictor(model.roi_heads.mask_head(roi_input("roi_features_mask.npy")))
    ref_all = load(MASKRCNN, "mask_logits_all.npy")[0].transpose(0, 3, 1, 2)  # [R, K, 28, 28]
    assert_parity(logits.numpy(), ref_all, "mask logits, all classes")
    classes = load(MASKRCNN, "mask_class_indices.npy")[0]
    assert_parity(logits.numpy()[np.arange(len(classes)), classes], load(MASKRCNN, "mask_logits.npy")[0],
                  "mask logits at the class indices")


# ------------------------------------------------------------------------------------- TF1 post-processing
def tf1_decode(deltas: np.ndarray, boxes: np.ndarray, size: tuple[int, int], weights=(1.0, 1.0, 1.0, 1.0),
               plus_one: bool = True) -> np.ndarray:
    """meta.json's TF1 rule in float64: (dy, dx, dh, dw) / weights against (ymin, xmin, ymax, xmax) boxes,
    h = ymax - ymin + 1, centre ymin + h / 2, dh, dw <= log(1000 / 16), ymax' = ymin' + h' - 1, clip to
    [0, H - 1] x [0, W - 1]. ``plus_one=False`` is the standard rule (no +1, clip to [0, H] x [0, W]).
    Returns xyxy."""
    d = deltas.astype(np.float64) / np.asarray(weights, np.float64)
    b = boxes.astype(np.float64)
    one = 1.0 if plus_one else 0.0
    h, w = b[..., 2] - b[..., 0] + one, b[..., 3] - b[..., 1] + one
    yc, xc = b[..., 0] + 0.5 * h, b[..., 1] + 0.5 * w
    yc, xc = yc + d[..., 0] * h, xc + d[..., 1] * w
    h, w = h * np.exp(np.minimum(d[..., 2], XFORM_CLIP)), w * np.exp(np.minimum(d[..., 3], XFORM_CLIP))
    ymin, xmin = yc - 0.5 * h, xc - 0.5 * w
    ymax, xmax = ymin + h - one, xmin + w - one
    hmax, wmax = size[0] - one, size[1] - one
    return np.stack([np.clip(xmin, 0, wmax), np.clip(ymin, 0, hmax), np.clip(xmax, 0, wmax),
                     np.clip(ymax, 0, hmax)], axis=-1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def find(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, box: np.ndarray, score: float, label: int,
         box_tol: float, score_tol: float) -> bool:
    """Whether one detection row has this label, score and box (rows of equal scores may come in any order)."""
    hit = (labels == label) & (np.abs(scores - score) <= score_tol) & (np.abs(boxes - box).max(axis=1) <= box_tol)
    return bool(hit.any())


def chosen(boxes: np.ndarray, among: np.ndarray, size: int, count: int = 6) -> np.ndarray:
    """A few of the anchors ``among``: up to ``count`` whose box touches the last pixel (clipping binds, at least
    one) and ``count`` spread over the rest."""
    clipped = among[(boxes[among, 2:] >= size - 1).any(axis=1)]
    assert len(clipped) >= 1
    spread = among[np.linspace(0, len(among) - 1, count).astype(int)]
    return np.unique(np.concatenate([clipped[:count], spread]))


def test_weights_files_select_tf1_decoding(converted, models):
    assert read_weights(converted[RETINANET][0]).config["postprocess"]["box_decoding"] == "tf1"
    assert read_weights(converted[MASKRCNN][0]).config["settings"]["box_decoding"] == "tf1"
    assert models[RETINANET].box_decoding == models[MASKRCNN].box_decoding == "tf1"


def test_retinanet_detections_follow_the_tf1_formulas(models):
    """End to end (normalisation, head, decoding, clipping, scores): with no score threshold and no suppression
    the detector returns the ``top`` best anchors of each foreground class; at a few of them the box is the TF1
    "+1" decode of the fixture's box deltas, clipped to [0, 255], and the score sigmoid(logit of class k), k = 1..4
    (the background logit 0 dropped)."""
    model = models[RETINANET]
    size = meta(RETINANET)["input"]["shape"][1]
    levels = model.anchor_generator.levels
    anchors = np.concatenate([load(RETINANET, f"anchors_{lv}.npy").reshape(-1, 4) for lv in levels])
    deltas = np.concatenate([load(RETINANET, f"box_{lv}.npy").reshape(-1, 4) for lv in levels])
    logits = np.concatenate([load(RETINANET, f"cls_{lv}.npy").reshape(-1, 5) for lv in levels])
    ref_boxes, ref_scores = tf1_decode(deltas, anchors, (size, size)), sigmoid(logits)[:, 1:]
    standard = tf1_decode(deltas, anchors, (size, size), plus_one=False)
    n_fg = ref_scores.shape[1]
    top = 1000
    model.score_thresh, model.nms_thresh = 0.0, 1.0
    model.detections_per_img, model.topk_candidates = top * n_fg, top
    mean = torch.tensor(model.transform.image_mean).view(3, 1, 1)
    std = torch.tensor(model.transform.image_std).view(3, 1, 1)
    image = torch.from_numpy(load(RETINANET, "input.npy")).permute(0, 3, 1, 2)[0] * std + mean
    try:
        with torch.no_grad():
            (det,) = model([image])
    finally:
        for key, value in model.config["postprocess"].items():
            setattr(model, key, value)
    boxes, scores, labels = (det[k].numpy() for k in ("boxes", "scores", "labels"))
    assert len(scores) == top * n_fg and sorted(set(labels.tolist())) == list(range(1, n_fg + 1))
    assert boxes.max() == size - 1  # clipped to the last pixel, not to the border
    box_tol = 1e-4 * size  # the 1e-4 rule on pixel boxes (README: 0.026 px)
    for k in range(n_fg):
        best = np.argsort(-ref_scores[:, k], kind="stable")[:top - 100]  # clear of the top-k boundary
        picks = chosen(ref_boxes, best, size)
        assert np.abs(standard[picks] - ref_boxes[picks]).max() > 0.4  # the check tells the two rules apart
        for n in picks:
            assert find(boxes, scores, labels, ref_boxes[n], ref_scores[n, k], k + 1, box_tol, 1e-4), (n, k)


def test_maskrcnn_proposals_follow_the_tf1_formulas(models, features):
    """The RPN's proposals (eval: top 1000 per level, NMS 0.7, 1000 kept) are TF1 "+1" decodes of the fixture's
    ``rpn_box_<L>`` against ``anchors_<L>`` without weights, clipped to [0, 255]; the first is the anchor with the
    highest TF1 objectness."""
    model = models[MASKRCNN]
    size = meta(MASKRCNN)["input"]["shape"][1]
    levels = model.rpn.anchor_generator.levels
    anchors = np.concatenate([load(MASKRCNN, f"anchors_{lv}.npy").reshape(-1, 4) for lv in levels])
    deltas = np.concatenate([load(MASKRCNN, f"rpn_box_{lv}.npy").reshape(-1, 4) for lv in levels])
    objectness = np.concatenate([load(MASKRCNN, f"rpn_score_{lv}.npy").reshape(-1) for lv in levels])
    ref = tf1_decode(deltas, anchors, (size, size))
    image = torch.from_numpy(load(MASKRCNN, "input.npy")).permute(0, 3, 1, 2)
    with torch.no_grad():
        (proposals,), _ = model.rpn(ImageList(image, [(size, size)]), features[MASKRCNN])
    proposals = proposals.numpy().astype(np.float64)
    assert len(proposals) == model.config["settings"]["rpn_post_nms_top_n_test"]
    err = np.abs(proposals[:, None, :] - ref[None, :, :]).max(axis=2)  # [proposals, anchors]
    assert err.min(axis=1).max() <= 1e-4 * size
    assert np.abs(proposals[0] - ref[objectness.argmax()]).max() <= 1e-4 * size
    assert proposals.max() == size - 1 and (proposals[:, 2:] == size - 1).any()
    standard = tf1_decode(deltas, anchors, (size, size), plus_one=False)
    assert np.abs(standard - ref).max(axis=1)[err.argmin(axis=1)].max() > 0.4  # the rules differ on these


def test_fast_rcnn_detections_follow_the_tf1_formulas(models):
    """Post-processing of the box head's outputs on given RoIs: softmax over all classes with class 0 dropped,
    class-specific (dy, dx, dh, dw) / (10, 10, 5, 5) "+1" decoding against each RoI, clipping to [0, 255]."""
    model = models[MASKRCNN]
    size = meta(MASKRCNN)["input"]["shape"][1]
    logits, deltas = box_head_outputs(model)
    num_rois, num_classes = logits.shape
    # RoIs (x1, y1, x2, y2) in pixels, several reaching the right / bottom border so that clipping binds
    rois = torch.tensor([[10.0, 12.0, 90.0, 70.0], [200.0, 180.0, 255.0, 250.0], [0.0, 0.0, 40.0, 255.0],
                         [130.0, 40.0, 250.0, 255.0], [60.0, 100.0, 124.0, 164.0], [230.0, 5.0, 255.0, 60.0],
                         [5.0, 220.0, 120.0, 255.0], [100.0, 90.0, 180.0, 120.0]])[:num_rois]
    heads = model.roi_heads
    saved = heads.score_thresh, heads.nms_thresh, heads.detections_per_img
    heads.score_thresh, heads.nms_thresh, heads.detections_per_img = 0.0, 1.0, num_rois * num_classes
    try:
        with torch.no_grad():
            (boxes,), (scores,), (labels,) = heads.postprocess_detections(logits, deltas, [rois], [(size, size)])
    finally:
        heads.score_thresh, heads.nms_thresh, heads.detections_per_img = saved
    ref_logits = load(MASKRCNN, "frcnn_class_logits.npy")[0].astype(np.float64)
    ref_scores = np.exp(ref_logits) / np.exp(ref_logits).sum(axis=1, keepdims=True)
    ref_deltas = load(MASKRCNN, "frcnn_box_deltas.npy")[0].reshape(num_rois, num_classes, 4)
    yxyx = rois.numpy()[:, [1, 0, 3, 2]][:, None, :]
    ref_boxes = tf1_decode(ref_deltas, yxyx, (size, size), (10.0, 10.0, 5.0, 5.0))
    standard = tf1_decode(ref_deltas, yxyx, (size, size), (10.0, 10.0, 5.0, 5.0), plus_one=False)
    boxes, scores, labels = boxes.numpy(), scores.numpy(), labels.numpy()
    assert len(scores) == num_rois * (num_classes - 1) and boxes.max() == size - 1
    assert np.abs(standard - ref_boxes)[:, 1:].max() > 0.4
    for r in range(num_rois):
        for k in range(1, num_classes):  # class 0 (background) is never a detection
            assert find(boxes, scores, labels, ref_boxes[r, k], ref_scores[r, k], k, 1e-4 * size, 1e-5), (r, k)


def test_files_without_the_field_keep_standard_decoding(converted, tmp_path):
    """Weights files written before ``box_decoding`` existed load as before: standard (Model Garden /
    torchvision) decoding and clipping; the field written explicitly selects the same."""
    from spinenet.models.box_coder import BoxCoder
    from spinenet.models.tf1_boxes import TF1BoxCoder, TF1RegionProposalNetwork
    from torchvision.models.detection.rpn import RegionProposalNetwork

    for name, section, model_name in ((RETINANET, "postprocess", "retinanet_spinenet49"),
                                      (MASKRCNN, "settings", "maskrcnn_spinenet49")):
        wf = read_weights(converted[name][0])
        config = json.loads(json.dumps(wf.config))
        del config[section]["box_decoding"]
        old = tmp_path / f"{name}-old.safetensors"
        save_file(wf.state, str(old), metadata={"format": "spinenet-weights/1", "task": wf.task,
                                                "config": json.dumps(config), "provenance": "{}"})
        model = create_detector(model_name, weights=str(old)).eval()
        assert model.box_decoding == "standard"
        if name == RETINANET:
            assert type(model.box_coder) is BoxCoder and not isinstance(model.box_coder, TF1BoxCoder)
            anchors = torch.tensor([[10.0, 20.0, 60.0, 90.0], [200.0, 220.0, 300.0, 290.0]])
            deltas = torch.tensor([[0.1, -0.2, 0.3, 0.05], [0.0, 0.4, -0.1, 0.2]])
            got = model.box_coder.clip_boxes(model.box_coder.decode(deltas, anchors), (256, 256)).numpy()
            ref = tf1_decode(deltas.numpy(), anchors.numpy()[:, [1, 0, 3, 2]], (256, 256), plus_one=False)
            np.testing.assert_allclose(got, ref, atol=1e-4)
        else:
            assert type(model.rpn) is RegionProposalNetwork and not isinstance(model.rpn, TF1RegionProposalNetwork)
            assert type(model.roi_heads.box_coder).__name__ == "BoxCoder"
    switched = create_detector("retinanet_spinenet49", weights=str(converted[RETINANET][0]), box_decoding="standard")
    assert switched.box_decoding == "standard" and type(switched.box_coder) is BoxCoder
    with pytest.raises(ValueError, match="box_decoding"):
        create_detector("retinanet_spinenet49", num_classes=3, box_decoding="tpu")


def test_export_graph_decodes_as_the_eager_tf1_detector(models):
    """The export wrapper (spinenet export) runs the converted detector's own decoding and clipping."""
    from spinenet.export import DetectorExport

    model = models[RETINANET]
    size = meta(RETINANET)["input"]["shape"][1]
    mean = torch.tensor(model.transform.image_mean).view(3, 1, 1)
    std = torch.tensor(model.transform.image_std).view(3, 1, 1)
    image = torch.from_numpy(load(RETINANET, "input.npy")).permute(0, 3, 1, 2)[0] * std + mean
    with torch.no_grad():
        (det,) = model([image])
        boxes, scores, labels = DetectorExport(model, (size, size))(image[None])
    assert boxes.max() == size - 1
    np.testing.assert_allclose(scores[0].numpy(), det["scores"].numpy(), atol=1e-5)
    np.testing.assert_allclose(boxes[0].numpy(), det["boxes"].numpy(), atol=1e-3)
    assert labels[0].tolist() == det["labels"].tolist()


# ------------------------------------------------------------------------------ release status (docs/weights.md)
def test_release_status_comes_from_these_tests():
    """Each release's status names checks whose tests exist, and its gaps follow from the model it builds: TF1
    block_repeats > 1, heads deeper than the fixtures' 4 convs, separable heads, SoftNMS for the self-training
    files; every detector has its post-processing checked."""
    import importlib

    from spinenet.convert.presets import CHECKS, PRESETS, REPEATS_GAP, SEPARABLE_GAP, SOFTNMS_GAP
    from spinenet.models.detection import get_detector_def
    from spinenet.registry import resolve_config

    for check in CHECKS.values():
        for test in check.tests:
            file, function = test.split("::")
            assert callable(getattr(importlib.import_module(file.split("/")[-1][:-3]), function, None)), test
    for p in PRESETS.values():
        assert p.checks and all(key in CHECKS for key in p.checks), p.name
        parts = {CHECKS[key].part for key in p.checks}
        if p.task in ("retinanet", "maskrcnn"):
            assert "post-processing" in parts, p.name
        defn = get_detector_def(p.model) if p.task in ("retinanet", "maskrcnn") else None
        backbone = defn.backbone if defn is not None else p.model
        repeats = resolve_config(backbone)["scaling"].block_repeats
        if p.source == "tpu":
            assert (REPEATS_GAP.format(repeats) in p.gaps) == (repeats > 1), p.name
        else:  # the Model Garden fixtures have block_repeats 1 and 2
            assert any("block_repeats" in gap for gap in p.gaps) == (repeats > 2), p.name
        convs = max(getattr(defn, f, 4) for f in ("head_convs", "box_convs", "mask_convs")) if defn else 4
        assert any("7-conv" in gap for gap in p.gaps) == (convs > 4), p.name
        assert (SEPARABLE_GAP in p.gaps) == bool(getattr(defn, "separable", False)), p.name
        assert (SOFTNMS_GAP in p.gaps) == ("SoftNMS" in p.metric), p.name
        assert any(p.activation in gap for gap in p.gaps) == (defn is not None and p.activation != "relu"), p.name
