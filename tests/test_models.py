"""Every registered model, driven by ``spinenet.list_models()``: build, forward, backward, weights round trip,
export wrapper (built and run); every registered name exported (one trace per group of names whose builds differ
only in numbers); and one model of each (block family x task) exported to ONNX and to an exported program,
compared with eager.

Models are built tiny (1/16 or 1/8 of the channels, 8-wide endpoints and heads) at small inputs so that the
whole file stays within the CI budget; the architectures (block specs, repeats, levels) are the registered ones,
except for the ONNX export traces (a five-block graph of the same family).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import spinenet
from conftest import assert_parity
from spinenet.registry import get_entry
from spinenet.weights import save_weights

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = spinenet.list_models()
# Per task: tiny head settings and the input side (detectors pad to multiples of 128: their input is 128).
TASK_SETTINGS = {
    "backbone": ({}, 64),
    "retinanet": ({"num_classes": 3, "image_size": 128, "head_width": 8, "head_convs": 1}, 128),
    "maskrcnn": ({"num_classes": 3, "image_size": 128, "head_width": 8, "box_fc_dim": 16,
                  "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50, "rpn_pre_nms_top_n_train": 100,
                  "rpn_post_nms_top_n_train": 50, "box_batch_size_per_image": 32, "box_detections_per_img": 10}, 128),
    "classification": ({"num_classes": 4}, 64),
    "segmentation": ({"num_classes": 3, "head_width": 8}, 64),
}


def tiny(name: str, **extra) -> tuple[torch.nn.Module, int]:
    entry = get_entry(name)
    settings, side = TASK_SETTINGS[entry.task]
    scale = 0.125 if "mobile" in entry.backbone else 0.0625  # the MBConv rounding needs a few more channels
    torch.manual_seed(0)
    model = spinenet.create_model(name, filter_size_scale=scale, endpoints_num_filters=8, stochastic_depth_rate=0.0,
                                  **settings, **extra)
    return model, side


def perturb(model: torch.nn.Module) -> None:
    """Move every float tensor off its initial value (BN statistics included), so a lost tensor shows."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=gen) * 0.02
                t.copy_(t.abs() + noise.abs() if key.endswith("running_var") else t + noise)


def train_loss(model: torch.nn.Module, side: int) -> torch.Tensor:
    """One training-mode loss of the model's task on two random images with labels of that task."""
    x = torch.rand(2, 3, side, side)
    task = model.task
    if task == "backbone":
        return sum(f.square().mean() for f in model(x).values())
    if task in ("retinanet", "maskrcnn"):
        box = torch.tensor([[10.0, 20.0, 70.0, 90.0], [60.0, 30.0, 120.0, 110.0]])
        targets = []
        for _ in range(2):
            target = {"boxes": box, "labels": torch.tensor([1, 2])}
            if task == "maskrcnn":
                masks = torch.zeros(2, side, side, dtype=torch.uint8)
                for m, (x1, y1, x2, y2) in zip(masks, box.int().tolist()):
                    m[y1:y2, x1:x2] = 1
                target["masks"] = masks
            targets.append(target)
        return sum(model(list(x), targets).values())
    if task == "classification":
        return model(x, torch.tensor([1, 3]))["loss"]
    return model(x, torch.randint(0, 3, (2, side, side)))["loss"]


@pytest.mark.parametrize("name", NAMES)
def test_build_forward_backward_and_weights_round_trip(name, tmp_path):
    model, side = tiny(name)
    assert model.task == get_entry(name).task and model.to_config()["name"] == name
    # train mode: every parameter receives a finite gradient (a ReLU squeeze of one channel may be dead at these
    # widths, so zeros are allowed per tensor), and it reaches the first convolution
    model.train()
    train_loss(model, side).backward()
    params = dict(model.named_parameters())
    missing = [k for k, p in params.items() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:5]}"
    bad = [k for k, p in params.items() if not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradient for {bad[:5]}"
    first = next(p for k, p in params.items() if "stem" in k)
    assert first.grad.abs().sum() > 0, f"{name}: no gradient reaches the stem"
    assert sum(bool(p.grad.abs().sum() > 0) for p in params.values()) >= 0.9 * len(params)
    # eval: the export wrapper's outputs survive a weights file round trip exactly
    perturb(model)
    model.eval()
    x = torch.rand(2, 3, side, side)
    path = save_weights(model, tmp_path / f"{name}.safetensors")
    loaded = spinenet.create_model(name, weights=str(path)).eval()
    assert loaded.to_config() == model.to_config()
    assert not loaded.weights_report.reinitialised and not loaded.weights_report.unused
    with torch.no_grad():
        ref = model.export_module((side, side))(x)
        out = loaded.export_module((side, side))(x)
    ref, out = (ref,) if torch.is_tensor(ref) else ref, (out,) if torch.is_tensor(out) else out
    assert len(ref) == len(out) == len(model.export_module((side, side)).output_names)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the same config rebuilds the same model through the one entry point
    assert spinenet.model_from_config(model.to_config()).to_config() == model.to_config()


# --------------------------------------------------------------------------------------------------- export
def eager_outputs(model: torch.nn.Module, x: torch.Tensor, detections: int) -> list[torch.Tensor]:
    """The eager model's outputs in the export's layout (detections padded to ``detections`` rows; a Mask R-CNN's
    masks are each detection's mask probabilities in its box, from the eager heads)."""
    task = model.task
    with torch.no_grad():
        if task == "backbone":
            return list(model(x).values())
        if task in ("classification", "segmentation"):
            return [model(x)]
        out: list[list[torch.Tensor]] = [[], [], [], []]
        for image, r in zip(x, model(list(x))):
            n, pad = len(r["scores"]), detections - len(r["scores"])
            out[0].append(torch.cat([r["boxes"], torch.zeros(pad, 4)]))
            out[1].append(torch.cat([r["scores"], torch.zeros(pad)]))
            out[2].append(torch.cat([r["labels"], torch.zeros(pad, dtype=torch.int64)]))
            if task == "maskrcnn":
                heads, t = model.roi_heads, model.transform
                mean, std = torch.tensor(t.image_mean).view(3, 1, 1), torch.tensor(t.image_std).view(3, 1, 1)
                features = model.backbone(((image - mean) / std)[None])
                pooled = heads.mask_roi_pool(features, [r["boxes"]], [tuple(image.shape[-2:])])
                masks = heads.mask_predictor(heads.mask_head(pooled))[torch.arange(n), r["labels"]].sigmoid()
                out[3].append(torch.cat([masks, torch.zeros(pad, *masks.shape[-2:])]))
        return [torch.stack(o) for o in out if o]


# One model of each (block family x task). test_export.py exports the ResNet-family backbone and RetinaNet the
# same way (converted official weights, ONNX and exported program against eager), so they are not repeated here.
REPRESENTATIVES = ["spinenet_mobile49xs", "retinanet_spinenet_mobile49xs", "maskrcnn_spinenet49",
                   "classifier_spinenet49", "classifier_spinenet_mobile49xs", "segmenter_spinenet49",
                   "segmenter_spinenet_mobile49xs"]
IN_TEST_EXPORT = ["spinenet49", "retinanet_spinenet49"]
# Settings that let random tiny detectors output detections, so that the comparison covers real rows.
EXPORT_SETTINGS = {"maskrcnn": {"box_score_thresh": 0.0}}
# A five-block scale-permuted graph of each family (one output block per level 3..7): the export code paths of the
# family (block types, resampling, endpoints) at a fifth of the trace time of the registered 14-block graphs.
SMALL_GRAPH = [(3, "bottleneck", (0, 1), True), (4, "residual", (1, 2), True), (5, "bottleneck", (2, 3), True),
               (6, "residual", (3, 4), True), (7, "bottleneck", (4, 5), True)]
SMALL_MOBILE_GRAPH = [(level, "mbconv", offsets, True) for level, _, offsets, _ in SMALL_GRAPH]


def unambiguous_threshold(model: torch.nn.Module, x: torch.Tensor) -> float:
    """A RetinaNet score threshold in the widest gap between the 20th and 80th best (anchor, foreground class)
    scores of ``x``: fewer candidates than ``detections_per_img`` pass, none of them near the threshold."""
    t = model.transform
    mean, std = torch.tensor(t.image_mean).view(1, 3, 1, 1), torch.tensor(t.image_std).view(1, 3, 1, 1)
    with torch.no_grad():
        cls_maps, _ = model.macs_module()((x - mean) / std)
    from spinenet.models.retinanet_head import RetinaNetHead

    logits = RetinaNetHead.flatten(cls_maps, model.num_classes)[..., 1:]  # label 0 is never a detection
    scores = logits.sigmoid().flatten().sort(descending=True).values
    gaps = scores[20:80] - scores[21:81]
    i = 20 + int(gaps.argmax())
    return float((scores[i] + scores[i + 1]) / 2)


def assert_same_detections(name: str, out: list[np.ndarray], ref: list[torch.Tensor]) -> None:
    """Export rows against eager rows, matched by label, score and box (rows whose scores tie may swap); masks of
    matched rows to 1e-4; padding rows are zero."""
    boxes, scores, labels = (np.asarray(a) for a in out[:3])
    for i in range(len(ref[0])):
        n = int((ref[1][i] > 0).sum())
        assert int((scores[i] > 0).sum()) == n, f"{name}: {int((scores[i] > 0).sum())} detections, eager {n}"
        assert not scores[i, n:].any() and not labels[i, n:].any() and not boxes[i, n:].any()
        box_tol, score_tol = 1e-4 * float(ref[0][i].abs().max()), 1e-4 * float(ref[1][i].abs().max())
        for j in range(n):
            same = (np.abs(scores[i, :n] - float(ref[1][i, j])) <= score_tol) & (labels[i, :n] == int(ref[2][i, j])) \
                & (np.abs(boxes[i, :n] - ref[0][i, j].numpy()).max(axis=1) <= box_tol)
            assert same.any(), f"{name}: eager detection {j} of image {i} not exported"
            if len(out) == 4:
                assert_parity(np.asarray(out[3])[i, int(same.argmax())], ref[3][i, j].numpy(), f"{name} mask {j}")


def test_representatives_cover_every_family_and_task():
    covered = {(get_entry(n).task, "mobile" in n) for n in REPRESENTATIVES + IN_TEST_EXPORT}
    wanted = {(get_entry(n).task, "mobile" in n) for n in NAMES}
    assert covered == wanted


def prepared_for_export(name: str, **extra) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """The tiny model of ``name`` in eval mode with perturbed tensors, its export wrapper at the task's side and a
    batch of 3 images. A RetinaNet gets well separated class scores and a threshold in a wide gap between them
    (:func:`unambiguous_threshold`), so that which rows are selected is unambiguous."""
    entry = get_entry(name)
    model, side = tiny(name, **EXPORT_SETTINGS.get(entry.task, {}), **extra)
    perturb(model)
    model.eval()
    x = torch.rand(3, 3, side, side)
    if model.task == "retinanet":
        classifier = getattr(model.head.classifier, "pointwise", model.head.classifier)  # separable on mobile
        with torch.no_grad():  # a distinct prior per (anchor, class) channel: well separated scores
            classifier.weight.normal_(0.0, 0.3)
            classifier.bias.normal_(-4.0, 1.0)
        model.score_thresh = unambiguous_threshold(model, x)
    return model, model.export_module((side, side)), x


def assert_equal_eager(name: str, wrapper: torch.nn.Module, ref: list[torch.Tensor], out: list[np.ndarray]) -> None:
    """Exported outputs against the eager ones: detections matched row by row (:func:`assert_same_detections`),
    other tensors to 1e-4 per tensor (integers exactly)."""
    assert len(ref) == len(out) == len(wrapper.output_names), name
    if getattr(wrapper, "detections_per_img", 0):
        assert int((ref[1] > 0).sum()) > 0  # the comparison covers real detections, not only padding
        assert_same_detections(name, out, ref)
        return
    for key, r, o in zip(wrapper.output_names, ref, out):
        if r.dtype == torch.int64:
            assert np.array_equal(o, r.numpy()), f"{name} {key}"
        else:
            assert_parity(o, r.numpy(), f"{name} {key}")


@pytest.mark.slow
@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_onnx_and_exported_program_equal_eager(name, tmp_path):
    """One trace (``torch.export``, batch dynamic), saved and loaded as a ``.pt2`` and converted to ONNX (run by
    onnxruntime): both equal the eager model to 1e-4 per tensor on a batch of 3 (traced at 2). The registered
    model is built on a five-block graph of its family (:data:`SMALL_GRAPH`) to keep the traces short."""
    import onnxruntime as ort

    graph = SMALL_MOBILE_GRAPH if "mobile" in get_entry(name).backbone else SMALL_GRAPH
    model, wrapper, x = prepared_for_export(name, block_specs=graph)
    ref = eager_outputs(model, x, getattr(wrapper, "detections_per_img", 0))
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(wrapper, (torch.rand(2, *x.shape[1:]),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(tmp_path / "m.pt2"))
        program_out = torch.export.load(str(tmp_path / "m.pt2")).module()(x)
        torch.onnx.export(program, (x[:2],), str(tmp_path / "m.onnx"), dynamo=True, input_names=["images"],
                          output_names=list(wrapper.output_names), optimize=False, verbose=False)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(wrapper.output_names)
    program_out = [program_out] if torch.is_tensor(program_out) else list(program_out)
    assert_equal_eager(f"{name} onnx", wrapper, ref, session.run(None, {"images": x.numpy()}))
    assert_equal_eager(f"{name} exported program", wrapper, ref, [t.numpy() for t in program_out])


def code_shape(value):
    """A model configuration with every number replaced by ``"number"`` (names dropped): what is left (block types
    and graph, activations, flavours, switches, which sections exist) decides which code a build and its export
    run; block repeats, widths, resampling ratios and sizes only repeat or resize the same operations."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return [code_shape(v) for v in value]
    return {k: code_shape(v) for k, v in value.items() if k not in ("name", "class_names")}


def export_groups(task: str) -> list[list[str]]:
    """The registered names of ``task`` grouped by the :func:`code_shape` of their tiny build (built on the meta
    device: no weights)."""
    from spinenet.profile import on_meta

    groups: dict[str, list[str]] = {}
    for name in NAMES:
        if get_entry(name).task == task:
            shape = json.dumps(code_shape(on_meta(lambda: tiny(name)[0]).to_config()), sort_keys=True)
            groups.setdefault(shape, []).append(name)
    return list(groups.values())


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted({get_entry(n).task for n in NAMES}))
def test_every_registered_name_exports(task):
    """Every registered name exports (``torch.export``) on its registered graph at tiny widths, and the exported
    program computes what the export wrapper computes eagerly, to 1e-4 per tensor: the first name of each group
    whose tiny builds differ only in numbers (:func:`code_shape`: SpineNet-49S to -190, for example, differ in
    block repeats and resampling ratio) is traced; the others run the same code. (That the wrapper returns the
    eager model's own output is :func:`test_onnx_and_exported_program_equal_eager`'s part.)"""
    groups = export_groups(task)
    for names in groups:  # the grouping tells the block families apart
        assert len({"mobile" in n for n in names}) == 1, names
    for names in groups:
        _, wrapper, x = prepared_for_export(names[0])
        with torch.no_grad():
            ref = wrapper(x)
            out = torch.export.export(wrapper, (x,)).module()(x)
        ref, out = ([ref], [out]) if torch.is_tensor(ref) else (list(ref), list(out))
        assert_equal_eager(f"{names[0]} (for {names})", wrapper, ref, [t.numpy() for t in out])


@pytest.mark.parametrize("name", ["retinanet_spinenet49", "maskrcnn_spinenet49"])
def test_export_wrapper_follows_tf1_box_decoding(name):
    """A detector converted from TF1 (``box_decoding="tf1"``: "+1" decoding, clipping to the last pixel) exports
    what it computes eagerly (the wrapper run in Python; the traces are the same operations)."""
    task = get_entry(name).task
    settings = {"maskrcnn": {"box_score_thresh": 0.0}, "retinanet": {}}[task]
    model, side = tiny(name, block_specs=SMALL_GRAPH, box_decoding="tf1", **settings)
    perturb(model)
    model.eval()
    x = torch.rand(2, 3, side, side)
    if task == "retinanet":
        with torch.no_grad():
            model.head.classifier.weight.normal_(0.0, 0.3)
            model.head.classifier.bias.normal_(-4.0, 1.0)
        model.score_thresh = unambiguous_threshold(model, x)
    wrapper = model.export_module((side, side))
    ref = eager_outputs(model, x, wrapper.detections_per_img)
    assert int((ref[1] > 0).sum()) > 0
    with torch.no_grad():
        out = [t.numpy() for t in wrapper(x)]
    assert_same_detections(f"{name} tf1", out, ref)
