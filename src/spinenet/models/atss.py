"""Adaptive training sample selection (ATSS; Zhang et al., CVPR 2020): an optional RetinaNet anchor matcher.

The official SpineNet RetinaNet labels an anchor positive when its IoU with a ground-truth box is >= 0.5 (plus each
box's best anchor). A box much smaller than the smallest anchor then gets a single, poorly overlapping positive.
ATSS instead sets one IoU threshold per box from the anchors around it:

1. per pyramid level, the candidates are the anchors of the ``topk`` cells whose centres lie closest to the box
   centre (``topk * anchors_per_cell`` anchors; with one anchor per cell this is the paper's top-k);
2. the box's threshold is the mean plus the standard deviation of the candidates' IoUs;
3. a candidate is positive when its IoU reaches the threshold and its centre lies inside the box;
4. an anchor positive for several boxes goes to the one it overlaps most; every other anchor is negative.

Selected with ``create_detector(..., matcher="atss")`` (recipe ``model.matcher=atss``); the default stays the
official ``"iou"``.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

DEFAULT_TOPK = 9


def anchor_levels(anchors: torch.Tensor, anchor_size: float) -> torch.Tensor:
    """Pyramid level of each ``[M, 4]`` xyxy anchor from its size (``anchor_size * 2**l * 2**(s / num_scales)``
    with ``s < num_scales``, so ``floor(log2(size / anchor_size)) = l``)."""
    wh = (anchors[:, 2:] - anchors[:, :2]).double()
    size = (wh[:, 0] * wh[:, 1]).sqrt()
    return torch.floor(torch.log2(size / anchor_size) + 1e-6).long()


def atss_match(boxes: torch.Tensor, anchors: torch.Tensor, levels: torch.Tensor, anchors_per_cell: int,
               topk: int = DEFAULT_TOPK) -> torch.Tensor:
    """``[M]`` index of the ground-truth box each anchor is matched to, -1 for negatives.

    ``boxes`` ``[G, 4]`` and ``anchors`` ``[M, 4]`` xyxy; ``levels`` ``[M]`` each anchor's pyramid level, anchors
    of one level contiguous (the order :class:`~spinenet.models.anchors.MultilevelAnchors` produces).
    """
    if topk < 1 or anchors_per_cell < 1:
        raise ValueError(f"ATSS needs topk >= 1 and anchors_per_cell >= 1, got {topk} and {anchors_per_cell}")
    num_anchors = anchors.shape[0]
    if boxes.numel() == 0:
        return torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
    boxes, anchors = boxes.float(), anchors.float()
    ious = box_iou(boxes, anchors)  # [G, M]
    box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    anchor_centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    distances = torch.cdist(box_centres, anchor_centres)  # [G, M]

    candidates = []
    _, counts = torch.unique_consecutive(levels, return_counts=True)
    start = 0
    for count in counts.tolist():
        k = min(topk * anchors_per_cell, count)
        candidates.append(distances[:, start:start + count].topk(k, dim=1, largest=False).indices + start)
        start += count
    candidates = torch.cat(candidates, dim=1)  # [G, C], unique within a row (levels are disjoint ranges)
    candidate_ious = ious.gather(1, candidates)
    threshold = candidate_ious.mean(1, keepdim=True) + candidate_ious.std(1, keepdim=True).nan_to_num(0.0)
    centres = anchor_centres[candidates]  # [G, C, 2]
    inside = ((centres > boxes[:, None, :2]) & (centres < boxes[:, None, 2:])).all(dim=-1)
    positive = (candidate_ious >= threshold) & inside

    # -1 everywhere but at positive candidates (their IoU, > 0 since the centre lies inside the box)
    quality = torch.full_like(ious, -1.0)
    quality.scatter_(1, candidates, torch.where(positive, candidate_ious, torch.full_like(candidate_ious, -1.0)))
    best, best_box = quality.max(dim=0)
    return torch.where(best >= 0, best_box, torch.full_like(best_box, -1))

