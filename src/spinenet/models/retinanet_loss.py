"""RetinaNet training loss with the official SpineNet settings (spec 7.2-7.3; Model Garden ``tasks/retinanet.py``).

* Classification: sigmoid focal loss (alpha 0.25, gamma 1.5) summed over anchors and classes.
* Box regression: Huber loss (delta 0.1, i.e. ``0.5 x^2`` for ``|x| <= delta`` else ``delta (|x| - delta / 2)``,
  Keras' definition, not divided by delta) on the (dy, dx, dh, dw) deltas, averaged over the 4 coordinates and
  summed over positive anchors, then multiplied by the box loss weight 50.
* Both are divided by (number of positive anchors in the batch + 1). The official trainer all-reduces that count
  over replicas; here it is the count of the local batch.

Class targets: a positive anchor gets a one-hot row at its ground-truth label, every other anchor an all-zero row
(torchvision's convention, with label 0 never used as a target). The official code instead one-hot encodes
"background" into logit 0 for negatives; that only changes what logit 0 learns, and logit 0 is dropped at
inference, so detections are unaffected. Anchors the matcher marks ``BETWEEN_THRESHOLDS`` (-2) are ignored; with
the official 0.5 / 0.5 thresholds there are none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from .box_coder import BoxCoder

IGNORE = -2  # torchvision Matcher.BETWEEN_THRESHOLDS


def retinanet_loss(cls_logits: torch.Tensor, bbox_regression: torch.Tensor, anchors: list[torch.Tensor],
                   targets: list[dict[str, torch.Tensor]], matched_idxs: list[torch.Tensor], box_coder: BoxCoder,
                   focal_alpha: float = 0.25, focal_gamma: float = 1.5, huber_delta: float = 0.1,
                   box_loss_weight: float = 50.0) -> dict[str, torch.Tensor]:
    """Losses of one batch: ``{"classification", "bbox_regression"}`` (already weighted; total = sum).

    ``cls_logits`` ``[N, M, K]``, ``bbox_regression`` ``[N, M, 4]`` (dy, dx, dh, dw); ``anchors[i]`` ``[M, 4]``
    xyxy; ``matched_idxs[i]`` ``[M]``: index of the matched ground-truth box, -1 for negatives, -2 ignored.
    """
    num_classes = cls_logits.shape[-1]
    cls_terms, box_terms = [], []
    num_positive = cls_logits.new_zeros(())
    # losses in float32 even when the head ran under autocast
    for i, (logits, deltas, anchors_i, target, matched) in enumerate(
            zip(cls_logits.float(), bbox_regression.float(), anchors, targets, matched_idxs)):
        labels = target["labels"]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"target {i}: labels must lie in 1..{num_classes - 1} for a detector with "
                             f"num_classes={num_classes}, got {labels.tolist()}")
        positive = torch.where(matched >= 0)[0]
        num_positive = num_positive + positive.numel()
        cls_target = torch.zeros_like(logits)
        cls_target[positive, labels[matched[positive]]] = 1.0
        valid = matched != IGNORE
        cls_terms.append(sigmoid_focal_loss(logits[valid], cls_target[valid], alpha=focal_alpha, gamma=focal_gamma,
                                            reduction="sum"))
        box_target = box_coder.encode(target["boxes"][matched[positive]].float(), anchors_i[positive].float())
        huber = F.huber_loss(deltas[positive], box_target, reduction="none", delta=huber_delta)
        box_terms.append(huber.mean(dim=-1).sum())
    normalizer = num_positive + 1.0
    return {"classification": torch.stack(cls_terms).sum() / normalizer,
            "bbox_regression": box_loss_weight * torch.stack(box_terms).sum() / normalizer}
