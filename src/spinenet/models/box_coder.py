"""RetinaNet box coding with the official semantics (Model Garden ``ops/box_ops.py`` encode/decode, spec 7).

Channel order (the one decision every other module relies on): the box predictor emits, for anchor ``a`` of a
cell, the four channels ``a * 4 + j`` with ``j`` over **(dy, dx, dh, dw)** -- the official Model Garden / TF1
order. Keeping it means converted predictor kernels load without any channel permutation, and the raw head
outputs compare one-to-one with the official ones. Everything *outside* the regression deltas (anchors,
ground-truth targets, decoded detections) uses torchvision's ``(x1, y1, x2, y2)`` pixel boxes.

Deltas of a box ``(yc, xc, h, w)`` against an anchor ``(yc_a, xc_a, h_a, w_a)``, unit weights by default
(the official ``box_coder_weights`` is None):
``dy = (yc - yc_a) / h_a``, ``dx = (xc - xc_a) / w_a``, ``dh = log(h / h_a)``, ``dw = log(w / w_a)``.
Decoding caps ``dh`` and ``dw`` at ``log(1000 / 16)`` (official ``BBOX_XFORM_CLIP``) so ``exp`` cannot blow
up, and rebuilds the box as ``ymin = yc - h / 2``, ``ymax = ymin + h`` (same for x), the official arithmetic.
Detectors converted from TF1 checkpoints decode with the TF1 "+1" variant instead (:mod:`.tf1_boxes`).
"""

from __future__ import annotations

import math

import torch

BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)


def _center_size(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(yc, xc, h, w) of xyxy boxes."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    h, w = y2 - y1, x2 - x1
    return y1 + 0.5 * h, x1 + 0.5 * w, h, w


class BoxCoder:
    """Encode xyxy boxes into official (dy, dx, dh, dw) deltas against anchors, and decode them back.

    ``weights`` scale (dy, dx, dh, dw) as the official ``box_coder_weights`` would; the SpineNet RetinaNet
    configs use none (unit weights).
    """

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 clip: float = BBOX_XFORM_CLIP) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.clip = clip

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Regression targets ``[..., 4]`` (dy, dx, dh, dw) of ``boxes`` (xyxy) w.r.t. ``anchors`` (xyxy)."""
        yc, xc, h, w = _center_size(boxes)
        yca, xca, ha, wa = _center_size(anchors)
        wy, wx, wh, ww = self.weights
        return torch.stack([wy * (yc - yca) / ha, wx * (xc - xca) / wa,
                            wh * torch.log(h / ha), ww * torch.log(w / wa)], dim=-1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """xyxy boxes from (dy, dx, dh, dw) ``deltas`` ``[..., 4]`` and xyxy ``anchors`` (broadcastable)."""
        wy, wx, wh, ww = self.weights
        dtype = torch.promote_types(torch.promote_types(deltas.dtype, anchors.dtype), torch.float32)
        deltas, anchors = deltas.to(dtype), anchors.to(dtype)  # pixel maths in >= float32, also under autocast
        dy, dx, dh, dw = deltas.unbind(-1)
        dy, dx = dy / wy, dx / wx
        dh, dw = (dh / wh).clamp(max=self.clip), (dw / ww).clamp(max=self.clip)
        yca, xca, ha, wa = _center_size(anchors)
        yc, xc = dy * ha + yca, dx * wa + xca
        h, w = torch.exp(dh) * ha, torch.exp(dw) * wa
        ymin, xmin = yc - 0.5 * h, xc - 0.5 * w
        return torch.stack([xmin, ymin, xmin + w, ymin + h], dim=-1)

    def clip_boxes(self, boxes: torch.Tensor, image_shape: tuple[int, int]) -> torch.Tensor:
        """Clip xyxy boxes to ``[0, W] x [0, H]`` (``image_shape`` = (H, W)), as Model Garden's ``clip_boxes``."""
        height, width = image_shape
        x1, y1, x2, y2 = boxes.unbind(-1)
        return torch.stack([x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)],
                           dim=-1)
