"""Export SpineNet backbones, classifiers and RetinaNet detectors to ONNX or a ``torch.export`` program.

The input size is fixed at export time and only the batch is dynamic: the tpu flavour's graph depends on the input
size (symmetric padding, size-based nearest resizes and pools, spec 3.12), and a detector's anchors do too. An input
of another height or width is rejected by the runtime (onnxruntime: "invalid dimensions"; the exported program: a
shape guard naming the expected size), and :func:`check_input` gives the same as a ``ValueError`` in Python.

Outputs:

* backbone -- ``p3 .. p7``: the endpoints ``[N, C, H/2^l, W/2^l]`` (ceil);
* classifier -- ``logits`` ``[N, num_classes]`` (input RGB in [0, 1]; normalisation is inside);
* detector -- ``boxes`` ``[N, D, 4]`` (x1, y1, x2, y2 in input pixels), ``scores`` ``[N, D]``, ``labels``
  ``[N, D]`` (int64), best first, ``D = detections_per_img``; rows after the last detection have score 0, label 0
  and a zero box. Input: RGB in [0, 1] already resized/padded to the export size (the eager model's
  ``GeneralizedRCNNTransform`` resizes; the export does not).

Detector post-processing (:class:`DetectorExport`) is the eager model's (decode, clip, sigmoid without the
background logit, score threshold, class-wise NMS, best ``D``) written with static shapes so that it traces: the
``pre_nms_top_k`` best (anchor, class) pairs of each image enter one ``torchvision.ops.nms`` call in which every
(image, class) group is moved to its own tile of a 2-D grid of offsets, so boxes of different groups never overlap.
It equals the eager selection whenever at least ``D`` detections survive NMS among those ``pre_nms_top_k``
candidates or fewer candidates pass the score threshold (a candidate's fate in greedy NMS only depends on
higher-scoring candidates, which are all inside the top-k); the default 1000 is far above the 100 kept.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import nms

from .models.retinanet_head import RetinaNetHead

FORMATS = ("onnx", "exported-program")
_SUFFIX = {"onnx": ".onnx", "exported-program": ".pt2"}


def check_input(images: torch.Tensor, size: tuple[int, int], what: str = "exported model") -> None:
    """``ValueError`` unless ``images`` is ``[N, 3, H, W]`` at the export size."""
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != tuple(size):
        raise ValueError(f"{what}: expects images of shape [N, 3, {size[0]}, {size[1]}] (the size fixed at export); "
                         f"got {list(images.shape)}. Resize/pad the input, or export again with --size")


class BackboneExport(nn.Module):
    """A backbone returning its endpoints as a tuple in level order (ONNX outputs ``p3 .. p7``)."""

    def __init__(self, backbone: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone, self.size = backbone, size
        self.output_names = [f"p{level}" for level in backbone.graph.levels]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_input(images, self.size)
        return tuple(self.backbone(images).values())


class ClassifierExport(nn.Module):
    """A classifier on a ``[N, 3, H, W]`` tensor, returning logits."""

    output_names = ["logits"]

    def __init__(self, classifier: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.classifier, self.size = classifier, size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_input(images, self.size)
        return self.classifier(images)


class DetectorExport(nn.Module):
    """A :class:`~spinenet.models.SpineNetRetinaNet` as one traceable graph: normalise, backbone, head, decode,
    select (module docstring). Returns ``(boxes, scores, labels)``."""

    output_names = ["boxes", "scores", "labels"]

    def __init__(self, detector: nn.Module, size: tuple[int, int], pre_nms_top_k: int = 1000) -> None:
        super().__init__()
        height, width = size
        self.size = size
        self.backbone, self.head = detector.backbone, detector.head
        t = detector.transform
        self.register_buffer("mean", torch.tensor(t.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(t.image_std).view(1, 3, 1, 1), persistent=False)
        gen = detector.anchor_generator
        anchors = [gen.level_anchors(level, math.ceil(height / 2 ** level), math.ceil(width / 2 ** level))
                   for level in gen.levels]
        self.register_buffer("anchors", torch.cat(anchors), persistent=False)
        self.box_coder = detector.box_coder
        self.num_classes = detector.num_classes
        self.score_thresh, self.nms_thresh = float(detector.score_thresh), float(detector.nms_thresh)
        self.detections_per_img = int(detector.detections_per_img)
        self.pre_nms_top_k = int(pre_nms_top_k)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_input(images, self.size)
        height, width = self.size
        x = (images - self.mean) / self.std
        cls_maps, box_maps = self.head.forward_levels(list(self.backbone(x).values()))
        logits = RetinaNetHead.flatten(cls_maps, self.num_classes).float()  # [N, A, K]
        deltas = RetinaNetHead.flatten(box_maps, 4)
        boxes = self.box_coder.decode(deltas, self.anchors)  # [N, A, 4] xyxy
        boxes = self.box_coder.clip_boxes(boxes, (height, width))  # the detector's decoding (standard or TF1)
        fg = self.num_classes - 1
        scores = torch.sigmoid(logits[..., 1:]).reshape(logits.shape[0], -1)  # index = anchor * fg + class
        k = min(self.pre_nms_top_k, scores.shape[1])
        top_scores, top_index = scores.topk(k, dim=1)
        anchor_index, class_index = top_index // fg, top_index % fg
        cand = torch.gather(boxes, 1, anchor_index.unsqueeze(-1).expand(-1, -1, 4))  # [N, k, 4]
        valid = top_scores > self.score_thresh
        # one NMS call for all images and classes: group g = image * (fg + 1) + class (fg = below threshold) sits
        # at tile (g % cols, g // cols), so no two groups overlap; 2-D tiling keeps offsets (float32 precision) small
        batch = torch.arange(images.shape[0], device=images.device).unsqueeze(1)
        group = batch * (fg + 1) + torch.where(valid, class_index, torch.full_like(class_index, fg))
        cols = 64
        shift = torch.stack([(group % cols) * (width + 1), (group // cols) * (height + 1)], dim=-1).to(cand.dtype)
        shifted = cand + shift.repeat(1, 1, 2)
        keep = nms(shifted.reshape(-1, 4), top_scores.reshape(-1), self.nms_thresh)
        kept = torch.zeros(top_scores.numel(), dtype=torch.bool, device=images.device).index_fill(0, keep, True)
        final = torch.where(kept.view_as(valid) & valid, top_scores, torch.zeros_like(top_scores))
        d = min(self.detections_per_img, k)
        out_scores, order = final.topk(d, dim=1)
        present = out_scores > 0
        out_boxes = torch.gather(cand, 1, order.unsqueeze(-1).expand(-1, -1, 4)) * present.unsqueeze(-1)
        labels = (torch.gather(class_index, 1, order) + 1) * present
        return out_boxes, out_scores, labels


# ------------------------------------------------------------------------------------------------ building
EXPORTABLE = ("backbone", "retinanet", "classification")


def _is_torch_checkpoint(path: Path) -> bool:
    """``torch.save`` files are zip archives; ``spinenet-weights/1`` files are safetensors (a JSON header)."""
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def _from_training_checkpoint(path: Path) -> nn.Module:
    """The model a training checkpoint (``final.pt`` / ``last.pt``) evaluates with: its ``model`` weights (the
    moving average when the run used ``ema_decay``) in the architecture of its ``model_config``."""
    from .engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    if ckpt["task"] == "detection":
        from .models import create_detector_from_config

        net = create_detector_from_config(ckpt["model_config"])
        net.load_state_dict(ckpt["model"])
        return net
    from .tasks.inference import load_task_model

    return load_task_model(ckpt, torch.device("cpu"), str(path))


def load_for_export(model: str, size: tuple[int, int] | None = None) -> tuple[nn.Module, str, tuple[int, int]]:
    """A model from a registered name (fresh weights), a ``spinenet-weights/1`` file or a training checkpoint
    (``spinenet train``'s ``final.pt``); its task and size."""
    path = Path(model)
    if path.suffix in (".safetensors", ".pt", ".pth") or path.is_file():
        from .convert.weights import model_task, read_weights

        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; give a weights file, a training checkpoint or a "
                                    "registered model name (see `spinenet list`)")
        if _is_torch_checkpoint(path):
            net = _from_training_checkpoint(path)
            try:
                task = model_task(net)
            except ValueError:
                task = "segmentation"
        else:
            wf = read_weights(path)
            task, name = wf.task, wf.config["name"]
            if task == "backbone":
                from .registry import create_model

                net = create_model(name, weights=str(path))
            elif task == "retinanet":
                from .models import create_detector

                net = create_detector(name, weights=str(path))
            elif task == "classification":
                from .models import create_classifier

                net = create_classifier(name, weights=str(path))
            else:
                net = None
        if task not in EXPORTABLE:
            raise ValueError(f"{path} holds a {task} model; export supports {', '.join(EXPORTABLE)} models")
    else:
        from .models import create_detector, list_detectors
        from .registry import create_model, list_models

        if model in list_detectors():
            net, task = create_detector(model), "retinanet"
        elif model in list_models():
            net, task = create_model(model), "backbone"
        else:
            raise ValueError(f"{model!r} is neither a weights file nor a registered backbone/detector "
                             "(see `spinenet list`)")
    if size is None:
        if task == "backbone":
            from .registry import get_model_def

            side = get_model_def(net.config["name"]).default_size
        else:
            side = int(net.config["image_size"])
        size = (side, side)
    return net.eval(), task, size


def export_module(net: nn.Module, task: str, size: tuple[int, int], pre_nms_top_k: int = 1000) -> nn.Module:
    """The traceable wrapper for ``task`` (``backbone``, ``retinanet``, ``classification``)."""
    if min(size) < 1:
        raise ValueError(f"--size {size}: height and width must be positive")
    if task == "retinanet":
        div = net.backbone.size_divisibility
        if size[0] % div or size[1] % div:
            raise ValueError(f"--size {size[0]}x{size[1]}: a detector export needs multiples of {div} (the eager "
                             f"model pads its input to that); e.g. --size {div * math.ceil(size[0] / div)}x"
                             f"{div * math.ceil(size[1] / div)}")
        return DetectorExport(net, size, pre_nms_top_k).eval()
    if task == "classification":
        return ClassifierExport(net, size).eval()
    return BackboneExport(net, size).eval()


ONNX_EMBED_LIMIT = 2**31 - 2**27  # protobuf's 2 GiB per file, less room for the graph itself


def _tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def export(model: str | nn.Module, output: str | os.PathLike, fmt: str = "onnx", size: tuple[int, int] | None = None,
           *, task: str | None = None, pre_nms_top_k: int = 1000, example_batch: int = 2) -> Path:
    """Export ``model`` (a name, a weights file, a training checkpoint, or a built model with ``task``) to
    ``output``, atomically: a failed export leaves nothing behind, a successful one only its output.

    ``fmt``: ``onnx`` (dynamo exporter, dynamic batch) or ``exported-program`` (``torch.export.save``, ``.pt2``;
    load it with ``import torchvision`` first, which registers the ``nms`` operator a detector's graph calls).
    An ONNX file is self-contained: the weights are embedded, unless they exceed :data:`ONNX_EMBED_LIMIT`
    (protobuf cannot hold 2 GiB), in which case they go to ``NAME.onnx.data`` beside ``NAME.onnx``, which refers
    to it by that relative name (move or copy the two together).
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {FORMATS}")
    if isinstance(model, nn.Module):
        if task is None or size is None:
            raise ValueError("export(module): pass task= and size=")
        net = model.eval()
    else:
        net, task, size = load_for_export(model, size)
    wrapper = export_module(net, task, tuple(size), pre_nms_top_k)
    example = torch.rand(example_batch, 3, *size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    out = Path(output)
    if out.is_dir():
        raise ValueError(f"-o {out} is a folder; give the file to write, e.g. {out / ('model' + _SUFFIX[fmt])}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")  # a folder: the exporter may write two files
    try:
        staging.mkdir(exist_ok=True)
        with torch.no_grad():
            if fmt == "onnx":
                program = torch.onnx.export(wrapper, (example,), None, dynamo=True, input_names=["images"],
                                            output_names=list(wrapper.output_names), dynamic_shapes=({0: batch},),
                                            verbose=False)
                external = _tensor_bytes(wrapper) > ONNX_EMBED_LIMIT
                program.save(str(staging / out.name), external_data=external)
            else:
                program = torch.export.export(wrapper, (example,), dynamic_shapes=({0: batch},))
                torch.export.save(program, str(staging / out.name))
        data = staging / f"{out.name}.data"
        if data.exists():
            os.replace(data, out.with_name(data.name))
        os.replace(staging / out.name, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def describe(task: str, size: tuple[int, int]) -> str:
    """One line for the CLI: what was exported and what it returns."""
    outputs = {"backbone": "p3..p7 endpoints", "classification": "logits",
               "retinanet": "boxes [N,D,4] xyxy px, scores [N,D], labels [N,D]"}[task]
    return f"{task} at {size[0]}x{size[1]} (batch dynamic) -> {outputs}"
