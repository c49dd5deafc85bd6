"""`spinenet convert --task maskrcnn`: a TF1-layout Mask R-CNN checkpoint converts into ours with equal head outputs.

The official TF1 fixture is checked in tests/test_convert_tpu.py; this file adds a synthetic checkpoint of other
widths (and a whole-model round trip): a tiny Mask R-CNN written out by this file under the TF1 names
(tensorflow/tpu ``heads.py``) in the TF1 layouts, which are spelled out here independently of the converter's own
index maps: anchors stored in the order (1, 2, 0.5), box deltas (dy, dx, dh, dw), the box head's FC reading an NHWC
(h, w, c) flatten, the transposed conv's [kh, kw, out, in] kernel. The references are computed from those TF1
arrays with TF1 semantics (numpy), so a wrong ordering in the converter fails.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from spinenet.convert.mapping import tpu_backbone_map
from spinenet.models import create_detector

from test_convert import tf_arrays, write_tf_checkpoint

TF_RATIOS = (1.0, 2.0, 0.5)  # TF1 Mask R-CNN anchor order (Mask R-CNN config ``anchor.aspect_ratios``)
TF_DELTAS, OUR_DELTAS = ("dy", "dx", "dh", "dw"), ("dx", "dy", "dw", "dh")
NUM_CLASSES, SIZE, EPS = 4, 128, 1e-3
TINY = dict(num_classes=NUM_CLASSES, image_size=SIZE, filter_size_scale=0.125, endpoints_num_filters=16,
            resample_alpha=0.5, head_width=8, box_fc_dim=16, activation="relu", bn_eps=EPS, flavor="tpu",
            box_decoding="tf1")  # what `spinenet convert --source tpu` saves
TINY_ARGS = ["--num-classes", str(NUM_CLASSES), "--activation", "relu", "--bn-eps", str(EPS),
             "--set", "filter_size_scale=0.125", "--set", "endpoints_num_filters=16", "--set", "resample_alpha=0.5",
             "--set", "head_width=8", "--set", "box_fc_dim=16", "--set", f"image_size={SIZE}"]


def _randomise(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.2 if "weight" in name else 0.1))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)


def _bn_tf(prefix: str, bn: torch.nn.Module) -> dict:
    return {f"{prefix}/gamma": bn.weight, f"{prefix}/beta": bn.bias, f"{prefix}/moving_mean": bn.running_mean,
            f"{prefix}/moving_variance": bn.running_var}


def tf1_arrays(model) -> dict:
    """The model's head tensors under TF1 names and layouts (written from the TF1 semantics, not the converter)."""
    out: dict = {}
    head = model.rpn.head
    ours_ratios = model.rpn.anchor_generator.aspect_ratios
    slot = [TF_RATIOS.index(r) for r in ours_ratios]  # our anchor a is TF1 anchor slot[a]
    A = len(slot)
    hwio = lambda w: w.permute(2, 3, 1, 0)  # noqa: E731 - OIHW -> HWIO
    out["rpn_head/rpn/kernel"], out["rpn_head/rpn/bias"] = hwio(head.convs[0].weight), head.convs[0].bias
    for i, level in enumerate(model.rpn.anchor_generator.levels):
        out.update(_bn_tf(f"rpn_head/rpn-l{level}-bn", head.norms[i][0]))
    cls_w, cls_b = torch.zeros_like(head.cls_logits.weight), torch.zeros_like(head.cls_logits.bias)
    box_w, box_b = torch.zeros_like(head.bbox_pred.weight), torch.zeros_like(head.bbox_pred.bias)
    for a in range(A):
        cls_w[slot[a]], cls_b[slot[a]] = head.cls_logits.weight[a], head.cls_logits.bias[a]
        for j, name in enumerate(OUR_DELTAS):
            t = slot[a] * 4 + TF_DELTAS.index(name)
            box_w[t], box_b[t] = head.bbox_pred.weight[a * 4 + j], head.bbox_pred.bias[a * 4 + j]
    out.update({"rpn_head/rpn-class/kernel": hwio(cls_w), "rpn_head/rpn-class/bias": cls_b,
                "rpn_head/rpn-box/kernel": hwio(box_w), "rpn_head/rpn-box/bias": box_b})
    box_head = model.roi_heads.box_head
    convs = [m for m in box_head if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in box_head if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d))]
    for i, conv in enumerate(convs):
        out[f"fast_rcnn_head/conv_{i}/kernel"], out[f"fast_rcnn_head/conv_{i}/bias"] = hwio(conv.weight), conv.bias
    for i, bn in enumerate(norms):
        out.update(_bn_tf("fast_rcnn_head/batch_normalization" + (f"_{i}" if i else ""), bn))
    fc = [m for m in box_head if isinstance(m, torch.nn.Linear)][0]
    c = convs[-1].out_channels
    # TF1: reshape([R, 7, 7, C]) -> [R, 7*7*C]; kernel [7*7*C, out]
    out["fast_rcnn_head/fc6/kernel"] = fc.weight.reshape(-1, c, 7, 7).permute(2, 3, 1, 0).reshape(49 * c, -1)
    out["fast_rcnn_head/fc6/bias"] = fc.bias
    pred = model.roi_heads.box_predictor
    out["fast_rcnn_head/class-predict/kernel"], out["fast_rcnn_head/class-predict/bias"] = pred.cls_score.weight.T, \
        pred.cls_score.bias
    k_box = pred.bbox_pred.weight.reshape(NUM_CLASSES, 4, -1)[:, [OUR_DELTAS.index(n) for n in TF_DELTAS]]
    b_box = pred.bbox_pred.bias.reshape(NUM_CLASSES, 4)[:, [OUR_DELTAS.index(n) for n in TF_DELTAS]]
    out["fast_rcnn_head/box-predict/kernel"] = k_box.reshape(NUM_CLASSES * 4, -1).T
    out["fast_rcnn_head/box-predict/bias"] = b_box.reshape(-1)
    mask_convs = [m for m in model.roi_heads.mask_head if isinstance(m, torch.nn.Conv2d)]
    mask_norms = [m for m in model.roi_heads.mask_head if isinstance(m, torch.nn.BatchNorm2d)]
    mp = model.roi_heads.mask_predictor
    for i, conv in enumerate(mask_convs):
        out[f"mask_head/mask-conv-l{i}/kernel"], out[f"mask_head/mask-conv-l{i}/bias"] = hwio(conv.weight), conv.bias
    for i, bn in enumerate([*mask_norms, mp.bn]):
        out.update(_bn_tf("mask_head/batch_normalization" + (f"_{i}" if i else ""), bn))
    out["mask_head/conv5-mask/kernel"] = mp.conv5_mask.weight.permute(2, 3, 1, 0)  # [in,out,kh,kw] -> [kh,kw,out,in]
    out["mask_head/conv5-mask/bias"] = mp.conv5_mask.bias
    out["mask_head/mask_fcn_logits/kernel"] = hwio(mp.mask_fcn_logits.weight)
    out["mask_head/mask_fcn_logits/bias"] = mp.mask_fcn_logits.bias
    return {k: np.ascontiguousarray(v.detach().numpy()) for k, v in out.items()}


def _tf_bn_relu(x: np.ndarray, arrays: dict, name: str) -> np.ndarray:
    g, b, m, v = (arrays[f"{name}/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance"))
    return np.maximum((x - m) / np.sqrt(v + EPS) * g + b, 0)


def _tf_decode(deltas: np.ndarray, boxes_yxyx: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    """TF1 ``box_utils.decode_boxes``: (dy, dx, dh, dw) against [ymin, xmin, ymax, xmax] boxes, in the legacy
    "+1" convention (h = ymax - ymin + 1, decoded ymax = ymin + h - 1; likewise x)."""
    dy, dx, dh, dw = (deltas[..., i] / weights[i] for i in range(4))
    clip = math.log(1000.0 / 16)
    dh, dw = np.minimum(dh, clip), np.minimum(dw, clip)
    h, w = boxes_yxyx[..., 2] - boxes_yxyx[..., 0] + 1, boxes_yxyx[..., 3] - boxes_yxyx[..., 1] + 1
    cy, cx = boxes_yxyx[..., 0] + 0.5 * h, boxes_yxyx[..., 1] + 0.5 * w
    cy, cx, h, w = dy * h + cy, dx * w + cx, np.exp(dh) * h, np.exp(dw) * w
    return np.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h - 1, cx + 0.5 * w - 1], axis=-1)


def close(ours, ref, what: str, tol: float = 1e-4) -> None:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    err = np.abs(ours - ref).max()
    scale = np.abs(ref).max()
    assert err <= tol * max(scale, 1e-12), f"{what}: max|out-ref| {err:.3g}, max|ref| {scale:.3g}"


@pytest.fixture(scope="module")
def converted(tmp_path_factory, one_thread):
    """(source model, TF1 arrays, converted model loaded back from the .safetensors, CLI output)."""
    import subprocess

    source = create_detector("maskrcnn_spinenet49", **TINY).eval()
    _randomise(source)
    arrays = {**tf_arrays(source.backbone, tpu_backbone_map(source.backbone)), **tf1_arrays(source),
              "global_step": np.array(5, np.int64)}
    tmp = tmp_path_factory.mktemp("tf1_maskrcnn")
    prefix = write_tf_checkpoint(tmp / "model.ckpt-100", arrays)
    out = tmp / "maskrcnn.safetensors"
    proc = subprocess.run([sys.executable, "-m", "spinenet", "convert", str(prefix), "--source", "tpu", "--model",
                           "maskrcnn_spinenet49", "--task", "maskrcnn", *TINY_ARGS, "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    model = create_detector("maskrcnn_spinenet49", weights=str(out)).eval()
    return source, arrays, model, proc.stdout


def test_every_tensor_maps_and_the_report_says_so(converted):
    source, arrays, model, stdout = converted
    assert "0 missing; 0 shape mismatches" in stdout and "0 checkpoint entries unused" in stdout, stdout
    assert model.config["heads"] == source.config["heads"] and model.num_classes == NUM_CLASSES


def test_rpn_matches_tf1_scores_and_decoded_proposals(converted):
    """Per location and anchor: objectness and decoded proposal equal TF1's (anchors (1, 2, 0.5), deltas
    (dy, dx, dh, dw), weights 1) computed from the TF1 arrays."""
    source, arrays, model, _ = converted
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        feats = list(model.backbone(x).values())
        logits, deltas = model.rpn.head(feats)
        for i, level in enumerate(model.rpn.anchor_generator.levels):
            # TF1 head on the same backbone features (NHWC)
            conv = torch.nn.functional.conv2d(feats[i], source.rpn.head.convs[0].weight,
                                              source.rpn.head.convs[0].bias, padding=1)[0].permute(1, 2, 0).numpy()
            h = _tf_bn_relu(conv, arrays, f"rpn_head/rpn-l{level}-bn")
            scores = h @ arrays["rpn_head/rpn-class/kernel"][0, 0] + arrays["rpn_head/rpn-class/bias"]  # [H, W, A]
            boxes = h @ arrays["rpn_head/rpn-box/kernel"][0, 0] + arrays["rpn_head/rpn-box/bias"]  # [H, W, 4A]
            H, W = feats[i].shape[-2:]
            stride, size = 2.0 ** level, model.config["anchors"]["anchor_size"] * 2.0 ** level
            for ta, ratio in enumerate(TF_RATIOS):
                a = model.rpn.anchor_generator.aspect_ratios.index(ratio)
                close(logits[i][0, a].numpy(), scores[..., ta], f"P{level} objectness, TF1 anchor {ta}")
                ys, xs = np.meshgrid((np.arange(H) + 0.5) * stride, (np.arange(W) + 0.5) * stride, indexing="ij")
                ah, aw = size / math.sqrt(ratio), size * math.sqrt(ratio)  # TF1 aspect ratio = w / h
                anchor = np.stack([ys - ah / 2, xs - aw / 2, ys + ah / 2, xs + aw / 2], -1)
                ref = _tf_decode(boxes[..., ta * 4:ta * 4 + 4], anchor, (1.0, 1.0, 1.0, 1.0))[..., [1, 0, 3, 2]]
                ours_anchor = model.rpn.anchor_generator.level_anchors(level, H, W).reshape(H, W, -1, 4)[:, :, a]
                d = deltas[i][0, a * 4:a * 4 + 4].permute(1, 2, 0).reshape(-1, 4)
                dec = model.rpn.box_coder.decode_single(d, ours_anchor.reshape(-1, 4)).reshape(H, W, 4)
                close(dec.numpy(), ref, f"P{level} decoded proposals, TF1 anchor {ta}")


def test_box_head_matches_tf1_logits_and_decoded_boxes(converted):
    """Class logits and class-specific decoded boxes (weights 10, 10, 5, 5) for given proposals equal TF1's."""
    source, arrays, model, _ = converted
    x = torch.rand(1, 3, SIZE, SIZE)
    torch.manual_seed(1)
    xy = torch.rand(6, 2) * 80
    proposals = torch.cat([xy, xy + 8 + torch.rand(6, 2) * 40], 1)
    with torch.no_grad():
        feats = model.backbone(x)
        pooled = model.roi_heads.box_roi_pool(feats, [proposals], [(SIZE, SIZE)])
        logits, regression = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
        decoded = model.roi_heads.box_coder.decode(regression, [proposals]).reshape(6, NUM_CLASSES, 4)
        n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.roi_heads.box_head)
        net = torch.nn.Sequential(*list(source.roi_heads.box_head)[:3 * n_convs])(pooled)  # convs: no reordering
    net = net.permute(0, 2, 3, 1).reshape(6, -1).numpy()  # TF1's NHWC flatten
    net = net @ arrays["fast_rcnn_head/fc6/kernel"] + arrays["fast_rcnn_head/fc6/bias"]
    net = _tf_bn_relu(net, arrays, f"fast_rcnn_head/batch_normalization_{n_convs}")
    cls = net @ arrays["fast_rcnn_head/class-predict/kernel"] + arrays["fast_rcnn_head/class-predict/bias"]
    box = (net @ arrays["fast_rcnn_head/box-predict/kernel"] + arrays["fast_rcnn_head/box-predict/bias"])
    box = box.reshape(6, NUM_CLASSES, 4)
    yxyx = proposals.numpy()[:, [1, 0, 3, 2]][:, None].repeat(NUM_CLASSES, 1)
    ref = _tf_decode(box, yxyx, (10.0, 10.0, 5.0, 5.0))[..., [1, 0, 3, 2]]
    close(logits.numpy(), cls, "class logits")
    close(decoded.numpy(), ref, "decoded class boxes")


def test_mask_head_matches_tf1_mask_logits(converted):
    """Mask logits [R, K, 28, 28] equal TF1's conv2d_transpose (stride 2, VALID) + BN + 1x1 conv on the same
    mask-conv features."""
    source, arrays, model, _ = converted
    torch.manual_seed(2)
    pooled = torch.randn(3, model.backbone.out_channels, 14, 14)
    with torch.no_grad():
        ours = model.roi_heads.mask_predictor(model.roi_heads.mask_head(pooled)).numpy()
        body = source.roi_heads.mask_head(pooled).permute(0, 2, 3, 1).numpy()  # [R, 14, 14, C]
    k, b = arrays["mask_head/conv5-mask/kernel"], arrays["mask_head/conv5-mask/bias"]  # [2, 2, out, in]
    up = np.einsum("rijc,pqoc->ripjqo", body, k).reshape(3, 28, 28, -1) + b  # out[2i+p, 2j+q] = x[i, j] . K[p, q]
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.roi_heads.mask_head)
    up = _tf_bn_relu(up, arrays, f"mask_head/batch_normalization_{n_convs}")
    ref = up @ arrays["mask_head/mask_fcn_logits/kernel"][0, 0] + arrays["mask_head/mask_fcn_logits/bias"]
    close(ours, ref.transpose(0, 3, 1, 2), "mask logits")


def test_whole_model_detections_equal_the_source(converted):
    """End to end: the converted model predicts the source model's boxes, labels, scores and masks."""
    source, _, model, _ = converted
    image = torch.rand(3, SIZE, SIZE)
    model.score_thresh = source.score_thresh = 0.0
    with torch.no_grad():
        (a,), (b,) = model([image]), source([image])
    assert len(a["scores"]) > 0
    for key in ("boxes", "scores", "labels", "masks"):
        assert torch.equal(a[key], b[key]) if key == "labels" else torch.allclose(a[key], b[key], atol=1e-5), key


def test_wrong_requests_fail_cleanly(converted, tmp_path):
    from spinenet.convert.api import convert_checkpoint
    from spinenet.convert.presets import get_preset

    with pytest.raises(ValueError, match="not a maskrcnn detector"):
        convert_checkpoint(tmp_path / "x", tmp_path / "o.safetensors", source="tpu", model="retinanet_spinenet49",
                           task="maskrcnn")
    with pytest.raises(ValueError, match="only TF1"):
        convert_checkpoint(tmp_path / "x", tmp_path / "o.safetensors", source="model_garden",
                           model="maskrcnn_spinenet49", task="maskrcnn")
    p = get_preset("maskrcnn-spinenet-190")
    assert (p.task, p.model, p.activation, p.bn_eps, p.num_classes) == \
        ("maskrcnn", "maskrcnn_spinenet190", "swish", 1e-3, 91)
    assert any("7-conv" in gap for gap in p.gaps)  # the 190's heads have no fixture
