"""TF1 (tensorflow/tpu) box decoding, clipping and Fast R-CNN target encoding (spinenet.models.tf1_boxes), against
float64 numpy written from the TF1 rules (``utils/box_utils.py``: "+1" sizes, clipping to the last pixel)."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torchvision.models.detection import _utils as det_utils

from spinenet.models import create_detector
from spinenet.models.tf1_boxes import TF1BoxCoder, TF1RCNNBoxCoder, TF1RegionProposalNetwork, TF1RoIHeads

CAP = math.log(1000.0 / 16.0)


def tf1_decode_yxyx(deltas, boxes, weights):
    """(dy, dx, dh, dw) against (ymin, xmin, ymax, xmax), TF1 rule, float64; returns yxyx."""
    d = np.asarray(deltas, np.float64) / np.asarray(weights, np.float64)
    b = np.asarray(boxes, np.float64)
    h, w = b[..., 2] - b[..., 0] + 1, b[..., 3] - b[..., 1] + 1
    yc, xc = b[..., 0] + 0.5 * h + d[..., 0] * h, b[..., 1] + 0.5 * w + d[..., 1] * w
    h, w = h * np.exp(np.minimum(d[..., 2], CAP)), w * np.exp(np.minimum(d[..., 3], CAP))
    return np.stack([yc - 0.5 * h, xc - 0.5 * w, yc - 0.5 * h + h - 1, xc - 0.5 * w + w - 1], -1)


def tf1_encode_yxyx(boxes, anchors, weights):
    g, a = np.asarray(boxes, np.float64), np.asarray(anchors, np.float64)
    gh, gw = g[..., 2] - g[..., 0] + 1, g[..., 3] - g[..., 1] + 1
    ah, aw = a[..., 2] - a[..., 0] + 1, a[..., 3] - a[..., 1] + 1
    dy = ((g[..., 0] + 0.5 * gh) - (a[..., 0] + 0.5 * ah)) / ah
    dx = ((g[..., 1] + 0.5 * gw) - (a[..., 1] + 0.5 * aw)) / aw
    return np.stack([dy, dx, np.log(gh / ah), np.log(gw / aw)], -1) * np.asarray(weights, np.float64)


def random_boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    return torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 120], 1).double()  # xyxy


YX = [1, 0, 3, 2]  # xyxy <-> yxyx


def test_retinanet_coder_decodes_and_clips_as_tf1():
    anchors = random_boxes(50, 0)
    deltas = torch.randn(50, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    deltas[0, 2] = 6.0  # above the log(1000/16) cap
    coder = TF1BoxCoder()
    ours = coder.decode(deltas, anchors).numpy()
    ref = tf1_decode_yxyx(deltas.numpy(), anchors.numpy()[:, YX], (1, 1, 1, 1))[:, YX]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    clipped = coder.clip_boxes(torch.tensor([[-5.0, -1.0, 300.0, 90.0]]), (100, 256)).tolist()
    assert clipped == [[0.0, 0.0, 255.0, 90.0]]  # [0, W - 1] x [0, H - 1]


def test_rcnn_coder_decodes_class_blocks_in_torchvision_order():
    rois = random_boxes(6, 2)
    codes = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)  # (dx, dy, dw, dh)
    coder = TF1RCNNBoxCoder((10.0, 10.0, 5.0, 5.0))
    ours = coder.decode_single(codes.reshape(6, 12), rois).reshape(6, 3, 4).numpy()
    tf1 = codes.numpy()[..., [1, 0, 3, 2]]  # -> (dy, dx, dh, dw)
    ref = tf1_decode_yxyx(tf1, rois.numpy()[:, None, YX], (10, 10, 5, 5))[..., YX]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_fast_rcnn_targets_are_tf1_encode_boxes_and_round_trip():
    gt, rois = random_boxes(20, 4), random_boxes(20, 5)
    coder = TF1RCNNBoxCoder((10.0, 10.0, 5.0, 5.0), plus_one_targets=True)
    ours = coder.encode_single(gt, rois).numpy()
    ref = tf1_encode_yxyx(gt.numpy()[:, YX], rois.numpy()[:, YX], (10, 10, 5, 5))[:, [1, 0, 3, 2]]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(coder.decode_single(coder.encode_single(gt, rois), rois).numpy(), gt.numpy(),
                               atol=1e-9)
    plain = TF1RCNNBoxCoder((1.0, 1.0, 1.0, 1.0))  # RPN targets: torchvision's (TF1 AnchorLabeler: no "+1")
    assert torch.equal(plain.encode_single(gt, rois), det_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(gt, rois))


def test_tf1_maskrcnn_keeps_its_modules_and_copies():
    kwargs = dict(num_classes=3, image_size=128, filter_size_scale=0.125, endpoints_num_filters=16,
                  resample_alpha=0.5, head_width=8, box_fc_dim=16)
    standard = create_detector("maskrcnn_spinenet49", **kwargs)
    tf1 = create_detector("maskrcnn_spinenet49", box_decoding="tf1", **kwargs)
    assert isinstance(tf1.rpn, TF1RegionProposalNetwork) and isinstance(tf1.roi_heads, TF1RoIHeads)
    assert list(tf1.state_dict()) == list(standard.state_dict())
    clone = copy.deepcopy(tf1)
    assert isinstance(clone.roi_heads, TF1RoIHeads) and clone.roi_heads.box_coder.plus_one_targets
    assert tf1.config["settings"]["box_decoding"] == "tf1"
