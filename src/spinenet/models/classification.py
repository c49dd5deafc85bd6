"""SpineNet image classifiers with the official TF1 classification head (paper section 4.2, spec 3.13, 4.4, 7.2).

The head is the one the TF1 code (``heads.ClassificationHead``, aggregation ``'all'``) builds for every released
SpineNet ImageNet model: start at P7, nearest-resize the running sum to the next lower level's *actual* size and
add that level, down to P3; divide by the number of levels (5); global average pool; dropout; a dense layer with
``normal(0.01)`` kernel init and a zero bias. The resize is TF1's legacy ``resize_nearest_neighbor``
(``align_corners=False``, ``half_pixel_centers=False``), which is exactly PyTorch ``F.interpolate(mode="nearest")``;
at 224x224 the levels are 28/14/7/4/2 pixels, so 4 -> 7 is a non-integer step and must be a size-based resize.
The optional 1x1 embedding conv of the official head is not built: every official config sets its
``endpoints_num_filters`` to 0, so the pooled feature has the backbone's endpoint width (256, 512 for 190).

Defaults follow the TPU classification configuration (``classification_config.py`` +
``spinenet*_classification.yaml``, spec 3.8 / 7.2): tpu flavour, swish, BN epsilon 1e-5 and TF momentum 0.9
(PyTorch ``momentum=0.1``), drop-connect 0.2 (training only), label smoothing 0.1, dropout 0, 1001 classes
(index 0 = background, 1..1000 = ImageNet in synset order, see :mod:`spinenet.constants`).
With 1001 classes the trainable parameter counts equal the official ones (spec 3.13): 49 22,088,745;
96 36,520,233; 143 60,504,873; 190 127,101,177.

Inputs: a batched float tensor ``[N, 3, H, W]`` with RGB values in ``[0, 1]`` (uint8 is accepted and divided by
255); the model normalises with the ImageNet mean/std itself (spec 7.3, as the detectors do). Cropping and
resizing to 224 belong to the data pipeline. Build with ``normalize=False`` to feed already-normalised tensors
(the parity fixtures feed raw noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence


import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import SpineNet
from ..backbones import BACKBONE_OVERRIDES, Table, backbone_from_json, config_to_json, get_model_def, resolve_config
from ..constants import IMAGENET_MEAN, IMAGENET_STD, imagenet_1001_names, imagenet_class_names
from ..layers import resize_nearest
from .base import LogitsExport, TaskModel, load_weights, set_classes, training_overrides

CLASSIFIER_FORMAT = "spinenet-classifier/1"
# TPU classification config (spec 3.8, 7.2): backbone settings the classifiers default to.
CLASSIFIER_BACKBONE_DEFAULTS: dict[str, Any] = {"activation": "swish", "bn_eps": 1e-5, "bn_momentum": 0.1,
                                                "stochastic_depth_rate": 0.2}
DENSE_INIT_STD = 0.01  # TF1 ClassificationHead: tf.random_normal_initializer(stddev=0.01)


@dataclass(frozen=True)
class ClassifierDef:
    """One registered classifier: its backbone and the input size it is meant for (spec 5.6, 7.2)."""

    name: str
    backbone: str
    image_size: int = 224
    description: str = ""

    task = "classification"  # not a field: the registry's task of these rows


_CLASSIFIERS = Table("classifier")
# Names of the classifiers in the 0.1.0 release (the backbone's name); create_classifier still takes them.
LEGACY_NAMES: dict[str, str] = _CLASSIFIERS.legacy



def register_classifier(defn: ClassifierDef) -> ClassifierDef:
    return _CLASSIFIERS.register(defn)


# The official ImageNet classifiers (49/96/143/190, TPU-zoo), 49S (same head on the 0.65 scaling) and the
# mobile backbones (no official classifier; same head on their 48/40/24-wide endpoints).
for _backbone in ("spinenet49s", "spinenet49", "spinenet96", "spinenet143", "spinenet190", "spinenet_mobile49",
                  "spinenet_mobile49s", "spinenet_mobile49xs"):
    register_classifier(ClassifierDef(f"classifier_{_backbone}", _backbone,
                                      description=f"{get_model_def(_backbone).description} + TF1 classification head"))
    LEGACY_NAMES[_backbone] = f"classifier_{_backbone}"


def list_classifiers(pattern: str | None = None) -> list[str]:
    """Registered classifier names (``classifier_<backbone>``) in table order, optionally filtered by a shell
    pattern."""
    return _CLASSIFIERS.names(pattern)


# ``classifier_name(name)``: ``name``, or today's name for a classifier name of the 0.1.0 release (with a
# ``DeprecationWarning``)
classifier_name = _CLASSIFIERS.current_name


def get_classifier_def(name: str) -> ClassifierDef:
    return _CLASSIFIERS.get(classifier_name(name))


# ------------------------------------------------------------------------------------------------ shared pieces
class InputNormalize(nn.Module):
    """``[0, 1]`` RGB (or uint8) -> ``(x - mean) / std``; identity when built with ``mean=None``.

    The statistics are non-persistent buffers: they come from the config, so state dicts and the TF weight maps
    only hold learned tensors.
    """

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        super().__init__()
        self.enabled = mean is not None
        if self.enabled:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        if not self.enabled:
            return x
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def as_image_batch(images: torch.Tensor | Sequence[torch.Tensor], what: str) -> torch.Tensor:
    """A ``[N, 3, H, W]`` batch from a batched tensor or a list of equally sized ``[3, H, W]`` tensors."""
    if not isinstance(images, torch.Tensor):
        images = list(images)
        if not images:
            raise ValueError(f"{what}: got an empty list of images")
        sizes = {tuple(img.shape) for img in images}
        if len(sizes) != 1:
            raise ValueError(f"{what}: images in one batch must share a size (resize/crop them in the data "
                             f"pipeline); got {sorted(sizes)}")
        images = torch.stack(images)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{what}: expected images as a [N, 3, H, W] tensor (RGB in [0, 1] or uint8), "
                         f"got shape {tuple(images.shape)}")
    return images


def normalize_json(normalize: bool | Mapping[str, Sequence[float]] | None) -> dict[str, list[float]] | None:
    """The ``normalize`` config entry: True -> ImageNet mean/std (spec 7.3), False/None -> none, or explicit."""
    if normalize is True:
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if not normalize:
        return None
    if not isinstance(normalize, Mapping) or set(normalize) != {"mean", "std"} \
            or len(normalize["mean"]) != 3 or len(normalize["std"]) != 3:
        raise ValueError(f"normalize={normalize!r}: expected True, False or {{'mean': [r, g, b], 'std': [r, g, b]}}")
    if any(float(s) <= 0 for s in normalize["std"]):
        raise ValueError(f"normalize: std values must be positive, got {list(normalize['std'])}")
    return {"mean": [float(v) for v in normalize["mean"]], "std": [float(v) for v in normalize["std"]]}


def backbone_config(name: str, what: str, defaults: Mapping[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Resolve a backbone config with task defaults under the user's overrides, naming the caller on errors."""
    try:
        return resolve_config(get_model_def(name).name, **{**defaults, **overrides})
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def aggregate_levels(features: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """TF1 ``ClassificationHead`` aggregation ``'all'`` (spec 3.13): from the top level down, nearest-resize the
    running sum to the next level's size and add it; divide by the number of levels. Output at P_min's size."""
    levels = sorted(features, key=int)
    net = features[levels[-1]]
    for level in reversed(levels[:-1]):
        feat = features[level]
        net = resize_nearest(net, tuple(feat.shape[-2:])) + feat
    return net / len(levels)


# -------------------------------------------------------------------------------------------------- the model
class ClassifierHead(nn.Module):
    """Dropout + dense layer on the pooled feature (``fc`` is ``nn.Identity`` when ``num_classes == 0``)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        self.dropout = nn.Dropout(dropout)
        self.fc: nn.Module = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.fc, nn.Linear):
            nn.init.normal_(self.fc.weight, std=DENSE_INIT_STD)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x))


class SpineNetClassifier(TaskModel, nn.Module):
    """SpineNet backbone + the official TF1 classification head (paper section 4.2, spec 3.13).

    Build with :func:`create_classifier`; ``config`` is the JSON-safe description that
    :func:`create_classifier_from_config` rebuilds the same model from. timm's contract:
    :meth:`forward_features` (pooled ``[N, C]`` vector), :meth:`forward_head`, :meth:`reset_classifier`,
    :meth:`get_classifier`, ``num_features``, ``num_classes``.

    ``forward(images)`` -> logits ``[N, num_classes]``; ``forward(images, labels)`` -> ``{"loss": cross-entropy
    with the configured label smoothing}`` (labels int64 ``[N]`` in ``0..num_classes-1``), in either mode.
    """

    task = "classification"
    config_format = CLASSIFIER_FORMAT
    reinit_on_num_classes = ("head.fc.",)
    legacy_names = LEGACY_NAMES

    def __init__(self, backbone: SpineNet, num_classes: int, dropout: float = 0.0, label_smoothing: float = 0.0,
                 normalize: Mapping[str, Sequence[float]] | None = None,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.normalize = InputNormalize(normalize["mean"] if normalize else None,
                                        normalize["std"] if normalize else None)
        self.backbone = backbone
        self.num_features = backbone.out_channels
        self.head = ClassifierHead(self.num_features, num_classes, dropout)
        self.label_smoothing = label_smoothing
        self.config = dict(config or {})

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def class_names(self) -> list[str] | None:
        return self.config.get("class_names")

    def forward_features(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Normalise, run the backbone, aggregate P3-P7 (spec 3.13) and global-average-pool: ``[N, C]``."""
        x = self.normalize(as_image_batch(images, "SpineNetClassifier"))
        return aggregate_levels(self.backbone(x)).mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Dropout + dense on pooled features (``pre_logits=True`` returns the features after dropout)."""
        return self.head.dropout(features) if pre_logits else self.head(features)

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor],
                labels: torch.Tensor | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
        logits = self.forward_head(self.forward_features(images))
        if labels is None:
            return logits
        if self.num_classes == 0:
            raise ValueError("SpineNetClassifier: this model has no classifier (num_classes=0); "
                             "call reset_classifier(num_classes) before training it")
        labels = torch.as_tensor(labels, device=logits.device).long()
        if labels.shape != logits.shape[:1]:
            raise ValueError(f"SpineNetClassifier: labels must be [N] = [{logits.shape[0]}], got "
                             f"{tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"SpineNetClassifier: labels must lie in 0..{self.num_classes - 1}, got "
                             f"{int(labels.min())}..{int(labels.max())}")
        return {"loss": F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)}

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        """Replace the dense layer by a fresh one (``normal(0.01)`` kernel, zero bias) with ``num_classes``
        outputs; 0 removes it, so the model returns pooled features (timm contract)."""
        num_classes = _num_classes(num_classes, "reset_classifier")
        names = _class_names(class_names, num_classes, "reset_classifier")
        ref = next(self.backbone.parameters())
        with torch.device(ref.device):
            head = ClassifierHead(self.num_features, num_classes, self.head.dropout.p)
        self.head = head.to(ref.dtype)
        self.config.update(num_classes=num_classes, class_names=names)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SpineNetClassifier:
        return create_classifier_from_config(config)

    @classmethod
    def config_for_weights(cls, saved: Mapping[str, Any], *, num_classes: int | None = None,
                           class_names: Sequence[str] | None = None, **overrides: Any
                           ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """A saved classifier with other ``dropout``, ``label_smoothing``, ``normalize``, ``image_size``,
        training-only backbone settings, or another ``num_classes`` (the dense layer is re-initialised)."""
        config = cls.migrate_config(saved)
        head = {k: overrides.pop(k) for k in list(overrides) if k in CLASSIFIER_SETTINGS}
        unknown = set(overrides) - set(BACKBONE_OVERRIDES)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)} for a classifier; known: "
                             f"{sorted(CLASSIFIER_SETTINGS)} and the backbone's")
        training_overrides(config, overrides)
        if "normalize" in head:
            head["normalize"] = normalize_json(head["normalize"])
        config.update(head)
        return config, set_classes(config, num_classes, class_names, cls.reinit_on_num_classes)

    def export_module(self, size: tuple[int, int], **options: Any) -> nn.Module:
        """Logits ``[N, num_classes]`` of a ``[N, 3, H, W]`` RGB batch in [0, 1] at a fixed size."""
        return ClassifierExport(self, size)

    def decode(self, logits: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(class name, probability)`` per image (names from ``config["class_names"]`` or ``"<index>"``)."""
        probs = logits.float().softmax(dim=-1)
        top = probs.topk(min(k, probs.shape[-1]), dim=-1)
        names = self.class_names
        return [[(names[i] if names else str(i), float(p)) for p, i in zip(ps.tolist(), idx.tolist())]
                for ps, idx in zip(top.values, top.indices)]


ClassifierExport = LogitsExport  # the export wrapper of the model contract (models.base)


# ---------------------------------------------------------------------------------------------------- builders
CLASSIFIER_SETTINGS = ("dropout", "label_smoothing", "normalize", "image_size")


def _num_classes(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: num_classes must be a non-negative integer, got {value!r}")
    return value


def _class_names(names: Sequence[str] | None, num_classes: int, what: str) -> list[str] | None:
    """Explicit names, or ImageNet's for 1001 (background + 1000) and 1000 classes, else None."""
    if names is None:
        if num_classes == 1001:
            return imagenet_1001_names()
        if num_classes == 1000:
            return imagenet_class_names()
        return None
    names = [str(n) for n in names]
    if len(names) != num_classes:
        raise ValueError(f"{what}: class_names has {len(names)} entries but num_classes is {num_classes}")
    return names


def _rate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


def create_classifier(name: str, num_classes: int | None = None, *, dropout: float = 0.0,
                      label_smoothing: float = 0.1, class_names: Sequence[str] | None = None,
                      normalize: bool | Mapping[str, Sequence[float]] = True, image_size: int | None = None,
                      weights: str | None = None, **overrides: Any) -> SpineNetClassifier:
    """Build a SpineNet classifier (paper section 4.2; official TF1 head, spec 3.13; names :func:`list_classifiers`).

    ``num_classes`` defaults to the official 1001 (index 0 = background; ImageNet names filled in). ``dropout``
    precedes the dense layer (official 0), ``label_smoothing`` is used by ``forward(images, labels)`` (official
    0.1), ``normalize`` True = ImageNet mean/std inside the model (False: feed normalised tensors),
    ``image_size`` is the intended input side (224; informational, nothing is resized). Other ``overrides`` go
    to :func:`spinenet.create_model` for the backbone over the classification defaults (tpu flavour for the
    ResNet family, swish, ``bn_eps=1e-5``, ``bn_momentum=0.1``, ``stochastic_depth_rate=0.2``), e.g.
    ``activation="relu", stochastic_depth_rate=0`` for the paper's vanilla recipe.

    ``weights``: a ``spinenet-weights/1`` file (``spinenet convert``). A classifier file rebuilds the saved model
    (``num_classes`` defaults to the file's; another count re-initialises the dense layer); a backbone or detector
    file seeds the backbone only. ``dropout``/``label_smoothing``/``normalize``/``image_size`` are taken from the
    file unless given (:mod:`spinenet.weights`).

    ``name`` is ``classifier_<backbone>``; the backbone's own name (the 0.1.0 classifier names) still works, with a
    ``DeprecationWarning``.
    """
    name = classifier_name(name)
    if weights is not None:
        defaults = {"dropout": 0.0, "label_smoothing": 0.1, "normalize": True, "image_size": None}
        given = {k: v for k, v in (("dropout", dropout), ("label_smoothing", label_smoothing),
                                   ("normalize", normalize), ("image_size", image_size)) if v != defaults[k]}
        return load_weights(name, weights, num_classes=num_classes,
                            class_names=list(class_names) if class_names is not None else None, **given, **overrides)
    if num_classes is None:
        num_classes = 1001
    defn = get_classifier_def(name)
    what = f"create_classifier({name!r})"
    num_classes = _num_classes(num_classes, what)
    image_size = defn.image_size if image_size is None else image_size
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"{what}: image_size must be a positive integer, got {image_size!r}")
    cfg = backbone_config(defn.backbone, what, CLASSIFIER_BACKBONE_DEFAULTS, overrides)
    config = {
        "format": CLASSIFIER_FORMAT,
        "name": name,
        "num_classes": num_classes,
        "image_size": image_size,
        "dropout": _rate(dropout, f"{what}: dropout"),
        "label_smoothing": _rate(label_smoothing, f"{what}: label_smoothing"),
        "normalize": normalize_json(normalize),
        "class_names": _class_names(class_names, num_classes, what),
        "backbone": config_to_json(cfg),
    }
    return create_classifier_from_config(config)


def create_classifier_from_config(config: Mapping[str, Any]) -> SpineNetClassifier:
    """Rebuild a classifier from ``model.config`` (e.g. read back from a checkpoint); same modules, fresh weights."""
    SpineNetClassifier.check_format(config, "classifier")
    config = SpineNetClassifier.migrate_config(config)
    missing = {"name", "num_classes", "dropout", "backbone"} - set(config)
    if missing:
        raise ValueError(f"classifier config: missing field(s) {sorted(missing)}")
    num_classes = _num_classes(config["num_classes"], "classifier config")
    names = config.get("class_names")
    if names is not None and len(names) != num_classes:
        raise ValueError(f"classifier config: class_names has {len(names)} entries, num_classes is {num_classes}")
    normalize = normalize_json(config.get("normalize"))
    backbone = backbone_from_json(config["backbone"], "classifier config: backbone")
    full = {"image_size": 224, "label_smoothing": 0.0, "class_names": None, **config, "normalize": normalize}
    return SpineNetClassifier(backbone, num_classes, _rate(config["dropout"], "classifier config: dropout"),
                              _rate(full["label_smoothing"], "classifier config: label_smoothing"), normalize,
                              config=full)
