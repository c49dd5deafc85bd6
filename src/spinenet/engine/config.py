"""Typed training configuration: a :class:`Recipe` is five sections (``model``, ``data``, ``optim``,
``schedule``, ``eval``) plus its name, task and seed.

Each task declares the fields it reads as frozen dataclasses (:data:`TASK_SECTIONS`): the ``optim`` and
``schedule`` sections are the engine's and the same for every task; ``model``, ``data`` and ``eval`` are the
task's own. An override is ``section.field=value`` (``optim.lr=0.01``, ``model.filter_size_scale=0.75``),
checked against the recipe's task: an unknown field, a field of another task or a value of the wrong type is
refused with the nearest valid name. A bare field name (``steps=3``, ``lr=0.5``) stands for the one field of that
name among the task's sections; the flat names of :data:`FLAT_NAMES` (``eval_image_size``, ``schedule``, ...) keep
their meaning. Nothing here imports a task or a model, so tasks and named recipes can both build on it.

Recipes are saved as ``{"format": "spinenet-recipe/2", "name", "task", "seed", "model": {...}, ...}``;
:meth:`Recipe.from_dict` also reads the flat dictionary (one level of fields plus an ``extra`` dict) of earlier
``recipe.json`` files and checkpoints (:func:`migrate_flat`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
import warnings
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, Literal, Mapping, Union

RECIPE_FORMAT = "spinenet-recipe/2"
SECTIONS = ("model", "data", "optim", "schedule", "eval")
TOP_LEVEL = ("name", "task", "seed")


# --------------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelConfig:
    """``model.*``: how every task's model is built. The fields from ``flavor`` on are the backbone builder's
    overrides (:func:`spinenet.registry.resolve_config`); ``None`` leaves the model's own default."""

    activation: str = "relu"
    stochastic_depth_rate: float = 0.0
    bn_momentum: float | None = None  # PyTorch convention; None = the flavour's default
    zero_init_residual: bool = False  # start every residual branch's last BN gamma at 0 (fresh runs only)
    init_weights: str | None = None  # fine-tuning: a spinenet-weights/1 file loaded before training (docs/weights.md)
    flavor: Literal["tpu", "model_garden"] | None = None
    min_level: int | None = None
    max_level: int | None = None
    filter_size_scale: float | None = None
    endpoints_num_filters: int | None = None
    resample_alpha: float | None = None
    block_repeats: int | None = None
    se_ratio: float | None = None
    expand_ratio: int | None = None
    bn_eps: float | None = None
    block_specs: str | None = None  # a spinenet-arch/1 file

    # read by the engine, not passed to the builder
    TRAINING_ONLY: typing.ClassVar[tuple[str, ...]] = ("zero_init_residual", "init_weights")

    def builder_overrides(self) -> dict[str, Any]:
        """Builder keywords: activation and stochastic depth always, every other builder field that is set."""
        out: dict[str, Any] = {"activation": self.activation, "stochastic_depth_rate": self.stochastic_depth_rate}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in out and f.name not in self.TRAINING_ONLY and value is not None:
                out[f.name] = value
        return out


@dataclass(frozen=True)
class DetectionModel(ModelConfig):
    """RetinaNet and Mask R-CNN builder overrides (:func:`spinenet.models.create_detector`; ``None``: the model's
    default). RetinaNet: head, anchors, post-processing, loss and anchor labelling; Mask R-CNN: head geometry and
    torchvision's RPN / RoI settings. A field the model's family does not have is refused when it is built."""

    head_convs: int | None = None
    head_width: int | None = None
    anchor_size: float | None = None
    score_thresh: float | None = None
    nms_thresh: float | None = None
    detections_per_img: int | None = None
    topk_candidates: int | None = None
    box_decoding: Literal["standard", "tf1"] | None = None  # tf1: TF1-trained weights' "+1" box convention
    focal_alpha: float | None = None
    focal_gamma: float | None = None
    huber_delta: float | None = None
    box_loss_weight: float | None = None
    matcher: Literal["iou", "atss"] | None = None
    atss_topk: int | None = None
    rpn_convs: int | None = None
    rpn_width: int | None = None
    box_convs: int | None = None
    box_width: int | None = None
    box_fcs: int | None = None
    box_fc_dim: int | None = None
    mask_convs: int | None = None
    mask_width: int | None = None
    rpn_pre_nms_top_n_train: int | None = None
    rpn_pre_nms_top_n_test: int | None = None
    rpn_post_nms_top_n_train: int | None = None
    rpn_post_nms_top_n_test: int | None = None
    rpn_nms_thresh: float | None = None
    rpn_fg_iou_thresh: float | None = None
    rpn_bg_iou_thresh: float | None = None
    rpn_batch_size_per_image: int | None = None
    rpn_positive_fraction: float | None = None
    box_batch_size_per_image: int | None = None
    box_positive_fraction: float | None = None
    box_fg_iou_thresh: float | None = None
    box_bg_iou_thresh: float | None = None
    box_score_thresh: float | None = None
    box_nms_thresh: float | None = None
    box_detections_per_img: int | None = None


@dataclass(frozen=True)
class ClassificationModel(ModelConfig):
    """Classifier builder options (:func:`spinenet.models.create_classifier`)."""

    label_smoothing: float = 0.0
    dropout: float | None = None
    normalize: bool | None = None


@dataclass(frozen=True)
class SegmentationModel(ModelConfig):
    """Segmenter head overrides (:func:`spinenet.models.create_segmenter`; ``None``: the model's default)."""

    head_width: int | None = None
    head_convs: int | None = None
    dropout: float | None = None


# ---------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DataConfig:
    """``data.*``: batches and the augmentation every task applies (scale jitter, horizontal flip)."""

    image_size: int = 640  # training crop side
    batch_size: int = 8  # per process
    num_workers: int = 0
    scale_min: float = 0.5  # scale jitter range of the training augmentation
    scale_max: float = 2.0
    hflip: float = 0.5

    def __post_init__(self) -> None:
        _at_least("data", self, "image_size", 1)
        _at_least("data", self, "batch_size", 1)
        _at_least("data", self, "num_workers", 0)
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"data.scale_min={self.scale_min}, data.scale_max={self.scale_max}: need "
                             "0 < scale_min <= scale_max")


@dataclass(frozen=True)
class DetectionData(DataConfig):
    """Detection training windows and augmentation (:mod:`spinenet.data.transforms`)."""

    vflip: float = 0.0  # overhead imagery: with hflip = vflip = transpose = 0.5 all 8 square symmetries
    transpose: float = 0.0
    color_jitter: float = 0.0  # brightness / contrast / saturation factors in [1 - c, 1 + c]
    tile_size: int | None = None  # training tiles of the tiled sets (trees:yell-*, nuclei:*); None: the set's own
    tile_overlap: int = 0  # pixels neighbouring training tiles share
    val_tile_size: int | None = None  # evaluation tiles; None: tile_size, 0: whole images


@dataclass(frozen=True)
class SegmentationData(DataConfig):
    """Segmentation crops and augmentation (:func:`spinenet.data.segmentation.segmentation_train_transform`)."""

    vflip: float = 0.0
    rot90: bool = False  # random quarter turns
    input_scale: float = 1.0  # images resized by this before the model (training, evaluation and predict)
    norm_low: float = 0.0  # per-image percentile normalisation, off unless norm_high is set
    norm_high: float | None = None
    gain: float = 1.0  # intensity gains log-uniform in [1/gain, gain] ...
    gain_grid: int = 1  # ... on a gain_grid x gain_grid grid over the crop
    gamma: float = 1.0  # and a gamma log-uniform in [1/gamma, gamma]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm_high is not None and not 0.0 <= self.norm_low < self.norm_high <= 100.0:
            raise ValueError(f"data.norm_low={self.norm_low}, data.norm_high={self.norm_high}: need "
                             "0 <= norm_low < norm_high <= 100")
        if self.gain < 1 or self.gamma < 1:
            raise ValueError(f"data.gain={self.gain}, data.gamma={self.gamma}: both >= 1 (1 = off)")
        _at_least("data", self, "gain_grid", 1)
        if self.input_scale <= 0:
            raise ValueError(f"data.input_scale={self.input_scale} must be > 0")


# ---------------------------------------------------------------------------------------- optim, schedule
@dataclass(frozen=True)
class OptimConfig:
    """``optim.*``: optimiser, numerics and weight averaging (:func:`spinenet.engine.trainer.build_optimizer`)."""

    optimizer: Literal["sgd", "adamw"] = "sgd"  # SGD with momentum, or AdamW with betas (momentum, 0.999)
    lr: float = 0.08  # at batch_size; the base LR of the protocols is 0.28 at batch 256 (linear scaling rule)
    momentum: float = 0.9
    weight_decay: float = 4e-5  # on conv / linear weights only
    grad_clip: float = 10.0  # global norm; 0 disables
    ema_decay: float = 0.0  # > 0: evaluate and ship an exponential moving average of the weights (engine/ema.py)
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"  # bf16: CPU/CUDA autocast; fp16: CUDA + loss scaling
    channels_last: bool = False  # model weights (and so activations) in NHWC: faster convolutions on CPU and GPU
    compile: bool = False  # torch.compile the backbone and heads (layers.fuse.compile_dense); the first steps compile


@dataclass(frozen=True)
class ScheduleConfig:
    """``schedule.*``: length, learning-rate schedule (:func:`spinenet.engine.trainer.lr_factor`), BN freeze and
    the checkpoint / log cadence."""

    steps: int = 1000
    warmup_steps: int = 100
    warmup_factor: float = 0.0067 / 0.28  # the official warmup starts at 0.0067 for LR 0.28
    decay: Literal["step", "cosine", "linear"] = "step"  # step: x0.1 at each boundary; cosine / linear: to 0
    lr_steps: tuple[float, ...] = (0.94, 0.98)  # step boundaries as fractions of `steps`
    bn_freeze: float = 0.0  # this last fraction of the steps trains with BN in inference mode (statistics frozen)
    checkpoint_every: int = 200
    log_every: int = 10

    def __post_init__(self) -> None:
        _at_least("schedule", self, "steps", 1)
        _at_least("schedule", self, "warmup_steps", 0)
        _at_least("schedule", self, "checkpoint_every", 1)
        _at_least("schedule", self, "log_every", 1)
        if not 0.0 <= self.bn_freeze <= 1.0:
            raise ValueError(f"schedule.bn_freeze={self.bn_freeze}: give the fraction of the steps, at the end, "
                             "that train with BatchNorm frozen, in [0, 1]")


# ---------------------------------------------------------------------------------------------------- eval
@dataclass(frozen=True)
class EvalConfig:
    """``eval.*``: when the engine evaluates on ``--val-data``."""

    every: int = 0  # steps between evaluations; 0 = only at the end
    # BatchNorm statistics recomputed over this many training batches before each evaluation and the final
    # checkpoint ("precise BN", engine/trainer.py: recalibrate_batchnorm); 0 keeps the running averages
    precise_bn_batches: int = 20

    def __post_init__(self) -> None:
        _at_least("eval", self, "every", 0)
        _at_least("eval", self, "precise_bn_batches", 0)


@dataclass(frozen=True)
class DetectionEval(EvalConfig):
    image_size: int | None = None  # long side evaluation and predict resize to; None: the training size


@dataclass(frozen=True)
class ClassificationEval(EvalConfig):
    crop: float = 0.875  # centre crop, as a fraction of the short side (spec 7.2)
    hflip: bool = False  # average the logits of each image and its mirror image

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.crop <= 1:
            raise ValueError(f"eval.crop={self.crop} must be in (0, 1]")


@dataclass(frozen=True)
class SegmentationEval(EvalConfig):
    window: int | None = None  # sliding-window side in model-input pixels; None: data.image_size, 0: whole image
    overlap: float = 0.5  # fraction of the window neighbouring windows share

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window is not None and self.window < 0:
            raise ValueError(f"eval.window={self.window} (eval_window) must be >= 0 (0 = the whole image)")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"eval.overlap={self.overlap} (eval_overlap) must be in [0, 1)")


def _at_least(section: str, values: Any, name: str, low: int) -> None:
    value = getattr(values, name)
    if value < low:
        raise ValueError(f"{section}.{name}={value} must be >= {low}")


# ----------------------------------------------------------------------------------------------- per task
@dataclass(frozen=True)
class TaskSections:
    """The section types one task reads; ``optim`` and ``schedule`` are the engine's, shared by all tasks."""

    model: type[ModelConfig]
    data: type[DataConfig]
    eval: type[EvalConfig]
    optim: type[OptimConfig] = OptimConfig
    schedule: type[ScheduleConfig] = ScheduleConfig


TASK_SECTIONS: dict[str, TaskSections] = {
    "detection": TaskSections(DetectionModel, DetectionData, DetectionEval),
    "classification": TaskSections(ClassificationModel, DataConfig, ClassificationEval),
    "segmentation": TaskSections(SegmentationModel, SegmentationData, SegmentationEval),
}


def task_sections(task: str) -> TaskSections:
    try:
        return TASK_SECTIONS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; recipes exist for {', '.join(TASK_SECTIONS)}") from None


# The flat names of the one-level recipe, where the field name alone does not say the section.
FLAT_NAMES: dict[str, str] = {
    "image_size": "data.image_size", "hflip": "data.hflip", "schedule": "schedule.decay",
    "eval_every": "eval.every", "eval_image_size": "eval.image_size", "eval_crop": "eval.crop",
    "eval_hflip": "eval.hflip", "eval_window": "eval.window", "eval_overlap": "eval.overlap",
}


@dataclass(frozen=True)
class Recipe:
    """A complete training configuration (module docstring). Sections left out are the task's defaults."""

    name: str = "custom"
    task: str = "detection"
    model: ModelConfig = None  # type: ignore[assignment]  # None: the task's defaults
    data: DataConfig = None  # type: ignore[assignment]
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = None  # type: ignore[assignment]
    seed: int = 0

    def __post_init__(self) -> None:
        sections = task_sections(self.task)
        for name in SECTIONS:
            expected = getattr(sections, name)
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, expected())
            elif type(value) is not expected:
                raise ValueError(f"recipe {self.name!r}: a {self.task} recipe takes {expected.__name__} as its "
                                 f"{name} section, not {type(value).__name__}")

    # ------------------------------------------------------------------------------------------ access
    def __getattr__(self, name: str) -> Any:
        """Flat names (``recipe.lr``) still read their field, with a ``DeprecationWarning``: read
        ``recipe.optim.lr``."""
        if name.startswith("_") or name in TOP_LEVEL or name in SECTIONS:
            raise AttributeError(name)
        try:
            path = resolve_key(self.task, name)
        except ValueError:
            raise AttributeError(f"'Recipe' object has no attribute {name!r}") from None
        warnings.warn(f"Recipe.{name} is deprecated; read recipe.{path}", DeprecationWarning, stacklevel=2)
        return self.get(path)

    def get(self, path: str) -> Any:
        """The value at a dotted path (``"optim.lr"``) or a top-level field (``"seed"``)."""
        if "." not in path:
            return getattr(self, path)
        section, name = path.split(".", 1)
        return getattr(getattr(self, section), name)

    def model_overrides(self) -> dict[str, Any]:
        """Builder keywords every task passes to its model (:meth:`ModelConfig.builder_overrides`)."""
        return self.model.builder_overrides()

    def settings(self) -> dict[str, Any]:
        """Every field as ``{dotted path: value}`` (top-level fields by their own name)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in TOP_LEVEL}
        for name in SECTIONS:
            section = getattr(self, name)
            out.update({f"{name}.{f.name}": getattr(section, f.name) for f in fields(section)})
        return out

    def diff(self, other: "Recipe") -> list[tuple[str, Any, Any]]:
        """``[(path, self's value, other's value)]`` for every field that differs."""
        mine, theirs = self.settings(), other.settings()
        return [(k, mine.get(k), theirs.get(k)) for k in dict.fromkeys([*mine, *theirs])
                if mine.get(k) != theirs.get(k)]

    # ------------------------------------------------------------------------------------------ change
    def replace(self, **changes: Any) -> "Recipe":
        """A copy with fields changed by name (a bare field name as in :func:`parse_overrides`, or a whole
        section); values are checked against the field's type."""
        direct = {k: changes.pop(k) for k in list(changes)
                  if k == "name" or (k in SECTIONS and not isinstance(changes[k], str))}
        base = dataclasses.replace(self, **direct) if direct else self
        return base.with_values(changes)

    def with_values(self, values: Mapping[str, Any]) -> "Recipe":
        """A copy with ``{key: value}`` applied: keys are dotted paths or bare names, values Python values or
        strings (``"0.5"``, ``"true"``, ``"none"``), checked and converted to the field's type."""
        top: dict[str, Any] = {}
        per_section: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            path = resolve_key(self.task, key)
            converted = convert_value(key, value, field_type(self.task, path))
            if "." in path:
                section, name = path.split(".", 1)
                per_section.setdefault(section, {})[name] = converted
            else:
                top[path] = converted
        changes = {name: dataclasses.replace(getattr(self, name), **v) for name, v in per_section.items()}
        return dataclasses.replace(self, **top, **changes)

    def for_task(self, task: str) -> "Recipe":
        """This recipe for another task: the fields both tasks have keep their values. Refused when a field only
        this task has is set away from its default (e.g. ``trees-cpu``'s tiles for a segmentation run); a recipe
        of shared fields only (``smoke``) serves every task."""
        if task == self.task:
            return self
        own = task_sections(self.task)
        values, lost = {}, []
        for path, value in self.settings().items():
            if path in TOP_LEVEL:
                continue
            if path in _paths(task):
                values[path] = value
                continue
            section, name = path.split(".", 1)
            if value != getattr(getattr(own, section)(), name):
                lost.append(f"{path}={value!r}")
        if lost:
            raise ValueError(f"recipe {self.name!r} is a {self.task} recipe; a {task} recipe has no "
                             f"{', '.join(lost)}: choose a {task} recipe")
        return Recipe(self.name, task, seed=self.seed).with_values(values)

    # ------------------------------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": RECIPE_FORMAT, "name": self.name, "task": self.task, "seed": self.seed}
        for name in SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "recipe") -> "Recipe":
        """Read :meth:`to_dict`'s form, or migrate the flat form of earlier files (:func:`migrate_flat`)."""
        if "format" not in data:
            data = migrate_flat(data, source)
        elif data["format"] != RECIPE_FORMAT:
            raise ValueError(f"{source}: recipe format {data['format']!r} is not {RECIPE_FORMAT!r}")
        task = str(data.get("task", "detection"))
        unknown = set(data) - {"format", *TOP_LEVEL, *SECTIONS}
        if unknown:
            raise ValueError(f"{source}: unknown recipe entries {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name in SECTIONS:
            section = data.get(name) or {}
            if not isinstance(section, Mapping):
                raise ValueError(f"{source}: recipe section {name!r} is not a mapping")
            values.update({f"{name}.{k}": v for k, v in section.items()})
        if "seed" in data:
            values["seed"] = data["seed"]
        try:
            return cls(name=str(data.get("name", "custom")), task=task).with_values(values)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None


# ------------------------------------------------------------------------------------------------ overrides
def parse_overrides(base: Recipe, items: list[str]) -> Recipe:
    """Apply ``key=value`` strings (``optim.lr=0.01``, ``steps=200``) to ``base``: each key must name a field the
    recipe's task reads, each value must fit its type; otherwise a ``ValueError`` names the nearest valid key."""
    values: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        values[key.strip()] = value.strip()
    return base.with_values(values)


@cache
def _paths(task: str) -> dict[str, Any]:
    """``{dotted path: type}`` of every field the task's recipes have (top-level fields by their name)."""
    sections = task_sections(task)
    out: dict[str, Any] = {"name": str, "seed": int}
    for name in SECTIONS:
        cls = getattr(sections, name)
        hints = typing.get_type_hints(cls)
        out.update({f"{name}.{f.name}": hints[f.name] for f in fields(cls)})
    return out


@cache
def _bare_names(task: str) -> dict[str, list[str]]:
    """``{field name: [dotted paths]}`` of the task's fields, plus the :data:`FLAT_NAMES` it has."""
    out: dict[str, list[str]] = {}
    for path in _paths(task):
        out.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    for flat, path in FLAT_NAMES.items():
        if path in _paths(task):
            out[flat] = [path]
    return out


def field_type(task: str, path: str) -> Any:
    return _paths(task)[path]


def resolve_key(task: str, key: str) -> str:
    """The dotted path a user's key names for ``task``'s recipes, or a ``ValueError`` saying why not and
    suggesting the nearest key."""
    key = key.strip().replace("-", "_")
    paths, bare = _paths(task), _bare_names(task)
    if key in ("task", "format", "name"):
        raise ValueError(f"override {key!r} cannot be set (the task is --task; the name is the recipe's)")
    if key in paths:
        return key
    if "." not in key and key in bare:
        if len(bare[key]) > 1:
            raise ValueError(f"{key!r} is ambiguous in a {task} recipe: write {' or '.join(bare[key])}")
        return bare[key][0]
    owners = [other for other in TASK_SECTIONS if other != task
              and (key in _paths(other) or ("." not in key and key in _bare_names(other)))]
    if owners:
        near = _suggest(key, task)
        raise ValueError(f"{key!r} is a setting of {' and '.join(owners)} recipes; a {task} recipe does not read it"
                         + (f" (the nearest {task} setting: {near})" if near else ""))
    near = _suggest(key, task)
    raise ValueError(f"unknown setting {key!r} for a {task} recipe; "
                     + (f"did you mean {near}?" if near else f"settings are {', '.join(s + '.*' for s in SECTIONS)} "
                        "or seed (docs/training.md)"))


def _suggest(key: str, task: str) -> str:
    """The valid key nearest to ``key`` (quoted), or an empty string."""
    names = [*_paths(task), *(k for k, v in _bare_names(task).items() if len(v) == 1)]
    names = [n for n in names if n not in ("name",)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if not close and "." in key:  # a misspelt field of a known section: compare the field names alone
        section, name = key.split(".", 1)
        inside = [p.split(".", 1)[1] for p in _paths(task) if p.startswith(section + ".")]
        close = [f"{section}.{m}" for m in difflib.get_close_matches(name, inside, n=1, cutoff=0.6)]
    return repr(close[0]) if close else ""


# ------------------------------------------------------------------------------------------------- values
def convert_value(key: str, value: Any, typ: Any) -> Any:
    """``value`` (a string from the command line, or a Python / JSON value) as type ``typ``, or a
    ``ValueError`` naming ``key`` and the expected type."""
    try:
        return _convert(value, typ)
    except (ValueError, TypeError):
        raise ValueError(f"{key}={value!r}: expected {_describe(typ)}") from None


def _convert(value: Any, typ: Any) -> Any:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        (inner,) = options
        return _convert(value, inner)
    if origin is Literal:
        if value not in args:
            raise ValueError(value)
        return value
    if origin is tuple:
        items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
        return tuple(_convert(v, args[0]) for v in items)
    if typ is bool:
        if isinstance(value, str):
            text = value.strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return text in ("true", "1", "yes")
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
        raise ValueError(value)
    if typ is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError(value)
    if typ is float:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise ValueError(value)
    if typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if hasattr(value, "__fspath__"):
            return str(value.__fspath__())
        raise ValueError(value)
    raise TypeError(f"no conversion to {typ}")


def _describe(typ: Any) -> str:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return f"{_describe(inner)}, or none"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is tuple:
        return f"comma-separated {_describe(args[0])}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a text"}.get(typ, str(typ))


# ------------------------------------------------------------------------------------------ the flat form
# Fields of the flat recipe stored under another name in the sections (the rest keep their name).
_FLAT_RENAMES = {"schedule": "schedule.decay", "eval_every": "eval.every"}
_FLAT_EXTRAS = {"eval_image_size": "eval.image_size", "eval_crop": "eval.crop", "eval_hflip": "eval.hflip",
                "eval_window": "eval.window", "eval_overlap": "eval.overlap", "init_weights": "model.init_weights"}


def migrate_flat(data: Mapping[str, Any], source: str = "recipe") -> dict[str, Any]:
    """The sectioned form of a flat recipe dictionary (one level of fields and an ``extra`` dict), as earlier
    ``recipe.json`` files and training checkpoints store it. Each value goes where the task read it: for
    segmentation, ``vflip`` is the one in ``extra`` (the task read that one); settings the task never read are
    left out, with a warning when they were not at their default."""
    task = str(data.get("task", "detection"))
    paths, bare = _paths(task), _bare_names(task)
    flat = {k: v for k, v in data.items() if k != "extra"}
    extra = dict(data.get("extra") or {})
    values: dict[str, Any] = {}
    dropped: list[str] = []
    # segmentation read extra["vflip"] and left the field unused; detection read the field
    unread = flat.pop("vflip", None) if task == "segmentation" else extra.pop("vflip", None)
    if unread not in (None, 0, 0.0):
        dropped.append(f"vflip={unread!r}")
    for key, value in [*flat.items(), *extra.items()]:
        if key in ("name", "task", "seed"):
            continue
        path = _FLAT_RENAMES.get(key) or _FLAT_EXTRAS.get(key) or (key if key in paths else None)
        if path is None and "." not in key and len(bare.get(key, ())) == 1:
            path = bare[key][0]
        if path is None or path not in paths:
            if value not in (None, 0, 0.0, False, ""):
                dropped.append(f"{key}={value!r}")
            continue
        values[path] = value
    if dropped:
        warnings.warn(f"{source}: settings a {task} run did not read are left out: {', '.join(dropped)}",
                      stacklevel=3)
    # runs saved in the flat form trained and were evaluated with the running BatchNorm averages
    values.setdefault("eval.precise_bn_batches", 0)
    out: dict[str, Any] = {"format": RECIPE_FORMAT, "name": data.get("name", "custom"), "task": task,
                           "seed": data.get("seed", 0)}
    for path, value in values.items():
        section, name = path.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out
