"""TF1 classification checkpoint names for :class:`spinenet.models.classification.SpineNetClassifier` (spec 4.3).

A TF1 SpineNet classifier (``ClassificationModel`` = ``SpineNet`` + ``heads.ClassificationHead``, the released
``classification/spinenet-*-imagenet`` models) keeps the backbone under the ``spinenet/`` scope, named exactly as
for the detection backbones (:func:`~spinenet.convert.mapping.tpu_backbone_map`), and the head under
``classification_head/``. With ``endpoints_num_filters = 0`` (every official config) the head owns one dense layer:

==========================================  ==============================
checkpoint                                  ours (classifier state dict)
==========================================  ==============================
``spinenet/...``                            ``backbone.<backbone key>``
``classification_head/dense/kernel`` [C,K]  ``head.fc.weight`` [K, C] (transposed)
``classification_head/dense/bias`` [K]      ``head.fc.bias``
==========================================  ==============================

BN settings to build the model with: epsilon 1e-5, TF momentum 0.9 (the classifier defaults, spec 3.8).
"""

from __future__ import annotations

import os

from torch import nn

from .load import MatchReport, apply_tf_weights
from .mapping import TensorMap, tpu_backbone_map
from .tf_checkpoint import TFCheckpoint


def tpu_classifier_map(model: nn.Module, scope: str = "spinenet",
                       head_scope: str = "classification_head") -> list[TensorMap]:
    """Every tensor of a classifier from a TF1 classification checkpoint: the backbone map with our keys
    prefixed ``backbone.``, plus ``<head_scope>/dense/{kernel,bias}`` (no head tensors after
    ``reset_classifier(0)``)."""
    maps = [TensorMap(f"backbone.{m.torch_key}", m.tf_key, m.transform)
            for m in tpu_backbone_map(model.backbone, scope)]
    if isinstance(model.head.fc, nn.Linear):
        maps += [TensorMap("head.fc.weight", f"{head_scope}/dense/kernel", "dense"),
                 TensorMap("head.fc.bias", f"{head_scope}/dense/bias", "copy")]
    return maps


def load_tf_classifier(model: nn.Module, ckpt: TFCheckpoint | str | os.PathLike,
                       strict_unused: bool = True) -> MatchReport:
    """Load a TF1 classification checkpoint into a tpu-flavour ResNet-family classifier, all or nothing.

    ``strict_unused`` (default) also refuses checkpoints holding weights the map does not use (e.g. a head with
    an embedding conv, which no official config has).
    """
    graph = model.backbone.graph
    if graph.flavor != "tpu" or graph.family != "resnet":
        raise ValueError(f"load_tf_classifier: TF1 classification checkpoints need a ResNet-family classifier with "
                         f"flavor='tpu'; this one is {graph.family!r} / {graph.flavor!r}. Rebuild it with "
                         "create_classifier(name, flavor='tpu')")
    return apply_tf_weights(model, ckpt, tpu_classifier_map(model), strict_unused=strict_unused)
