"""Box decoding and clipping of the TF1 detection code (tensorflow/tpu), for detectors converted from its checkpoints.

The TF1 code (``models/official/detection/utils/box_utils.py``, ``ops/postprocess_ops.py``, ``ops/roi_ops.py``)
decodes with the legacy "+1" pixel convention, where a box's last row/column is inclusive. For (dy, dx, dh, dw)
deltas against a box ``[ymin, xmin, ymax, xmax]`` (likewise for x):

* ``h_a = ymax - ymin + 1``, centre ``yc_a = ymin + h_a / 2``;
* ``dh`` (and ``dw``) capped at ``log(1000 / 16)``, after dividing the deltas by the coder weights;
* ``yc = yc_a + dy * h_a``, ``h = h_a * exp(dh)``, ``ymin' = yc - h / 2``, ``ymax' = ymin' + h - 1``;
* boxes clipped to ``[0, H - 1] x [0, W - 1]``.

Model Garden and torchvision use ``h_a = ymax - ymin``, ``ymax' = ymin' + h`` and clip to ``[0, H] x [0, W]``
(:class:`~spinenet.models.box_coder.BoxCoder`, "standard"): on the same network outputs the two give boxes up to
about one pixel apart. Which one a detector uses is its configuration's ``box_decoding`` (``"standard"`` or
``"tf1"``), saved in the weights file; ``spinenet convert --source tpu`` writes ``"tf1"`` for detectors, and files
without the field decode the standard way.

Where TF1 applies it:

* RetinaNet (``MultilevelDetectionGenerator``): every anchor's class-agnostic (dy, dx, dh, dw), no weights, then
  clipping; scores = sigmoid of every logit with the background logit 0 dropped (the RetinaNet's own scoring).
* Mask R-CNN RPN (``multilevel_propose_rois``): per anchor, no weights, then clipping; objectness sigmoid.
* Fast R-CNN (``GenericDetectionGenerator``): class-specific deltas against each RoI with weights (10, 10, 5, 5),
  then clipping; scores = softmax over all classes, background 0 dropped (torchvision's ``RoIHeads`` scoring).

Training targets follow TF1 too: its RetinaNet and RPN targets are encoded without "+1" (``AnchorLabeler`` uses the
object-detection ``FasterRcnnBoxCoder``), so those keep the standard encoding, while its Fast R-CNN targets use
``box_utils.encode_boxes``, "+1" (:class:`TF1RCNNBoxCoder` with ``plus_one_targets``).
"""

from __future__ import annotations

import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from .box_coder import BBOX_XFORM_CLIP, BoxCoder

BOX_DECODINGS = ("standard", "tf1")
#: Fast R-CNN regression weights of (dy, dx, dh, dw) in TF1's ``GenericDetectionGenerator`` (and torchvision's).
FAST_RCNN_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def check_box_decoding(value: str, what: str) -> str:
    """``value`` if it names a decoding, else a ``ValueError`` naming the field and the choices."""
    if value not in BOX_DECODINGS:
        raise ValueError(f"{what}: box_decoding must be one of {BOX_DECODINGS}, got {value!r}")
    return value


def decode_plus_one(dx: torch.Tensor, dy: torch.Tensor, dw: torch.Tensor, dh: torch.Tensor,
                    boxes: torch.Tensor, clip: float = BBOX_XFORM_CLIP) -> torch.Tensor:
    """xyxy boxes from weight-divided deltas against xyxy ``boxes`` ``[..., 4]`` (broadcastable), TF1 "+1" rule."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    w, h = x2 - x1 + 1.0, y2 - y1 + 1.0
    xc, yc = x1 + 0.5 * w, y1 + 0.5 * h
    xc, yc = dx * w + xc, dy * h + yc
    w, h = torch.exp(dw.clamp(max=clip)) * w, torch.exp(dh.clamp(max=clip)) * h
    xmin, ymin = xc - 0.5 * w, yc - 0.5 * h
    return torch.stack([xmin, ymin, xmin + w - 1.0, ymin + h - 1.0], dim=-1)


def clip_plus_one(boxes: torch.Tensor, image_shape: tuple[int, int]) -> torch.Tensor:
    """Clip xyxy boxes to ``[0, W - 1] x [0, H - 1]`` (TF1 ``box_utils.clip_boxes``); ``image_shape`` is (H, W)."""
    height, width = image_shape
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1.clamp(0, width - 1), y1.clamp(0, height - 1), x2.clamp(0, width - 1),
                        y2.clamp(0, height - 1)], dim=-1)


def last_pixel(image_shapes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(H - 1, W - 1) per image: torchvision's clip to (H, W) then equals TF1's clip to the last pixel."""
    return [(int(h) - 1, int(w) - 1) for h, w in image_shapes]


class TF1BoxCoder(BoxCoder):
    """RetinaNet coder with TF1 decoding (module docstring): the predictor's (dy, dx, dh, dw) order, no weights by
    default, "+1" arithmetic and clipping to the last pixel. Encoding (training targets) stays standard."""

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """xyxy boxes from (dy, dx, dh, dw) ``deltas`` ``[..., 4]`` and xyxy ``anchors`` (broadcastable)."""
        wy, wx, wh, ww = self.weights
        dtype = torch.promote_types(torch.promote_types(deltas.dtype, anchors.dtype), torch.float32)
        dy, dx, dh, dw = deltas.to(dtype).unbind(-1)
        return decode_plus_one(dx / wx, dy / wy, dw / ww, dh / wh, anchors.to(dtype), self.clip)

    def clip_boxes(self, boxes: torch.Tensor, image_shape: tuple[int, int]) -> torch.Tensor:
        return clip_plus_one(boxes, image_shape)


class TF1RCNNBoxCoder(det_utils.BoxCoder):
    """torchvision's ``BoxCoder`` interface (deltas (dx, dy, dw, dh), per-class blocks of 4) with TF1 decoding; the
    converter has already put TF1's (dy, dx, dh, dw) channels in this order. Encoding is torchvision's, or with
    ``plus_one_targets`` TF1's "+1" ``encode_boxes`` (its Fast R-CNN targets)."""

    def __init__(self, weights: tuple[float, float, float, float], bbox_xform_clip: float = BBOX_XFORM_CLIP,
                 plus_one_targets: bool = False) -> None:
        super().__init__(weights, bbox_xform_clip)
        self.plus_one_targets = plus_one_targets

    def encode_single(self, reference_boxes: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """(dx, dy, dw, dh) targets of xyxy ``reference_boxes`` against xyxy ``proposals``, ``[N, 4]``."""
        if not self.plus_one_targets:
            return super().encode_single(reference_boxes, proposals)
        wx, wy, ww, wh = self.weights
        gx1, gy1, gx2, gy2 = reference_boxes.to(proposals.dtype).unbind(-1)
        px1, py1, px2, py2 = proposals.unbind(-1)
        gw, gh, pw, ph = gx2 - gx1 + 1.0, gy2 - gy1 + 1.0, px2 - px1 + 1.0, py2 - py1 + 1.0
        dx = wx * ((gx1 + 0.5 * gw) - (px1 + 0.5 * pw)) / pw
        dy = wy * ((gy1 + 0.5 * gh) - (py1 + 0.5 * ph)) / ph
        return torch.stack([dx, dy, ww * torch.log(gw / pw), wh * torch.log(gh / ph)], dim=-1)

    def decode_single(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``[N, 4K]`` boxes (xyxy per class) from ``[N, 4K]`` codes against ``[N, 4]`` xyxy ``boxes``."""
        boxes = boxes.to(rel_codes.dtype)
        wx, wy, ww, wh = self.weights
        codes = rel_codes.reshape(rel_codes.shape[0], -1, 4)
        dx, dy, dw, dh = codes.unbind(-1)
        decoded = decode_plus_one(dx / wx, dy / wy, dw / ww, dh / wh, boxes[:, None, :], self.bbox_xform_clip)
        return decoded.reshape(rel_codes.shape[0], -1)


class TF1RegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN, clipping proposals to the last pixel as TF1's ``multilevel_propose_rois`` does."""

    def filter_proposals(self, proposals: torch.Tensor, objectness: torch.Tensor,
                         image_shapes: list[tuple[int, int]],
                         num_anchors_per_level: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # the image shapes serve only the clipping in torchvision's filter_proposals
        return super().filter_proposals(proposals, objectness, last_pixel(image_shapes), num_anchors_per_level)


class TF1RoIHeads(RoIHeads):
    """torchvision's RoI heads, clipping detections to the last pixel as TF1's ``GenericDetectionGenerator``."""

    def postprocess_detections(self, class_logits: torch.Tensor, box_regression: torch.Tensor,
                               proposals: list[torch.Tensor], image_shapes: list[tuple[int, int]]):
        # the image shapes serve only the clipping in torchvision's postprocess_detections
        return super().postprocess_detections(class_logits, box_regression, proposals, last_pixel(image_shapes))


def use_tf1_decoding(rpn: RegionProposalNetwork, roi_heads: RoIHeads) -> None:
    """Switch a torchvision Mask/Faster R-CNN's RPN and RoI heads to TF1 decoding and clipping in place.

    torchvision builds both inside ``FasterRCNN.__init__`` and takes no class for them, so the instances are
    re-classed to the subclasses above, which add no state (parameters, buffers and module paths are unchanged).
    """
    rpn.box_coder = TF1RCNNBoxCoder((1.0, 1.0, 1.0, 1.0))
    wy, wx, wh, ww = FAST_RCNN_WEIGHTS
    roi_heads.box_coder = TF1RCNNBoxCoder((wx, wy, ww, wh), plus_one_targets=True)
    rpn.__class__ = TF1RegionProposalNetwork
    roi_heads.__class__ = TF1RoIHeads
