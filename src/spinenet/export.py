"""Export any registered model to ONNX or a ``torch.export`` program, through the wrapper the model provides
(``model.export_module(size)``, :mod:`spinenet.models.base`).

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
  ``GeneralizedRCNNTransform`` resizes; the export does not);
* Mask R-CNN -- the detector's three outputs plus ``masks`` ``[N, D, 28, 28]``: each detection's mask
  probabilities in its box (:class:`~spinenet.models.maskrcnn.MaskRCNNExport`; the eager model pastes them into
  the image);
* segmenter -- ``logits`` ``[N, num_classes, H, W]`` at the input size.

Detector post-processing (:class:`DetectorExport`) is the eager model's (decode, clip, sigmoid without the
background logit, score threshold, class-wise NMS, best ``D``) written with static shapes so that it traces: the
``pre_nms_top_k`` best (anchor, class) pairs of each image enter one ``torchvision.ops.nms`` call in which every
(image, class) group is moved to its own tile of a 2-D grid of offsets, so boxes of different groups never overlap.
It equals the eager selection whenever at least ``D`` detections survive NMS among those ``pre_nms_top_k``
candidates or fewer candidates pass the score threshold (a candidate's fate in greedy NMS only depends on
higher-scoring candidates, which are all inside the top-k); the default 1000 is far above the 100 kept.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import nn

from .backbone import BackboneExport, check_input
from .models.classification import ClassifierExport
from .models.detection import DetectorExport
from .models.maskrcnn import MaskRCNNExport
from .models.segmentation import SegmenterExport

__all__ = ["FORMATS", "BackboneExport", "ClassifierExport", "DetectorExport", "MaskRCNNExport", "SegmenterExport",
           "check_input", "describe", "export", "export_module", "load_for_export"]
FORMATS = ("onnx", "exported-program")
_SUFFIX = {"onnx": ".onnx", "exported-program": ".pt2"}


# ------------------------------------------------------------------------------------------------ building
def _from_training_checkpoint(path: Path) -> nn.Module:
    """The model a training checkpoint (``final.pt`` / ``last.pt``) evaluates with: its ``model`` weights (the
    moving average when the run used ``ema_decay``) in the architecture of its ``model_config``."""
    from .engine.checkpoint import load_checkpoint
    from .registry import model_from_config

    ckpt = load_checkpoint(path)
    net = model_from_config(ckpt["model_config"])
    net.load_state_dict(ckpt["model"])
    return net


def load_for_export(model: str, size: tuple[int, int] | None = None) -> tuple[nn.Module, str, tuple[int, int]]:
    """A model from a registered name (fresh weights), a ``spinenet-weights/1`` file or a training checkpoint
    (``spinenet train``'s ``final.pt``); its task and size.

    The default size is the model's ``image_size`` (task models) or the registry's default input side."""
    from .registry import create_model, get_entry, list_models, load_weights
    from .tasks.inference import is_weights_file

    path = Path(model)
    if path.suffix in (".safetensors", ".pt", ".pth") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; give a weights file, a training checkpoint or a "
                                    "registered model name (see `spinenet list`)")
        net = load_weights(path) if is_weights_file(path) else _from_training_checkpoint(path)
    elif model in list_models():
        net = create_model(model)
    else:
        raise ValueError(f"{model!r} is neither a weights file nor a registered model (see `spinenet list`)")
    task = net.task
    if size is None:
        side = net.config.get("image_size") if task != "backbone" else None
        side = int(side or get_entry(net.config["name"]).default_size)
        size = (side, side)
    return net.eval(), task, size


def export_module(net: nn.Module, task: str | None = None, size: tuple[int, int] = (0, 0),
                  pre_nms_top_k: int = 1000) -> nn.Module:
    """The traceable wrapper the model provides (``net.export_module``); ``task`` is checked against the model's."""
    if min(size) < 1:
        raise ValueError(f"--size {size}: height and width must be positive")
    if not hasattr(net, "export_module"):
        raise ValueError(f"cannot export a {type(net).__name__}: build it with spinenet.create_model")
    if task is not None and task != net.task:
        raise ValueError(f"export: the model is a {net.task} model, not {task}")
    return net.export_module(tuple(size), pre_nms_top_k=pre_nms_top_k).eval()


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
        if size is None:
            raise ValueError("export(module): pass size=")
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
    outputs = {"backbone": "p3..p7 endpoints", "classification": "logits [N,C]",
               "segmentation": "logits [N,C,H,W] at the input size",
               "retinanet": "boxes [N,D,4] xyxy px, scores [N,D], labels [N,D]",
               "maskrcnn": "boxes [N,D,4] xyxy px, scores [N,D], labels [N,D], masks [N,D,M,M] in each box"}[task]
    return f"{task} at {size[0]}x{size[1]} (batch dynamic) -> {outputs}"
