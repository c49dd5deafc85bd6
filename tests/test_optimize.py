"""spinenet.optimize_for_inference on every registered model, and torch.compile without graph breaks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import spinenet
from spinenet.layers.fuse import compile_dense, fold_batchnorm, remaining_batchnorms
from spinenet.models import create_classifier, create_detector, create_segmenter, list_classifiers, list_detectors, \
    list_segmenters

from conftest import assert_parity

BACKBONE = {"filter_size_scale": 0.125, "endpoints_num_filters": 16, "block_repeats": 1}
HEAD = {"head_width": 16}
HEAD_CONVS = {"retinanet": {"head_convs": 2}, "maskrcnn": {"box_fc_dim": 32, "rpn_convs": 1}}
SIZE = 128


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine weights, so a wrong fold cannot pass as the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return model.eval()


def dense_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every dense output a model computes on ``x``: a detector's backbone + head maps (and a Mask R-CNN's box and
    mask heads on fixed RoI features), a classifier's logits, a segmenter's logits, a backbone's endpoints."""
    dense = model.macs_module() if hasattr(model, "macs_module") else model
    out = dense(x)
    tensors = list(out.values()) if isinstance(out, dict) else [out]
    flat: list[torch.Tensor] = []
    for t in tensors:
        flat.extend(t if isinstance(t, (list, tuple)) else [t])
    for t in tuple(flat):
        if isinstance(t, (list, tuple)):
            flat.remove(t)
            flat.extend(t)
    heads = getattr(model, "roi_heads", None)
    if heads is not None and getattr(heads, "mask_head", None) is not None:
        gen = torch.Generator().manual_seed(1)
        width = model.backbone.out_channels
        flat.append(heads.box_head(torch.randn(3, width, 7, 7, generator=gen)))
        flat.append(heads.mask_predictor(heads.mask_head(torch.randn(2, width, 14, 14, generator=gen))))
    return flat


def build_all() -> list[tuple[str, callable]]:
    """(id, builder) for every name the listing functions give, at tiny widths."""
    cases = [(f"backbone:{n}", lambda n=n: spinenet.create_model(n, **BACKBONE))
             for n in spinenet.list_models(task="backbone")]
    for n in list_detectors():
        extra = HEAD_CONVS["maskrcnn" if n.startswith("maskrcnn") else "retinanet"]
        cases.append((f"detector:{n}", lambda n=n, extra=extra: create_detector(n, num_classes=3, image_size=SIZE,
                                                                               **BACKBONE, **HEAD, **extra)))
    cases += [(f"classifier:{n}", lambda n=n: create_classifier(n, 5, **BACKBONE)) for n in list_classifiers()]
    cases += [(f"segmenter:{n}", lambda n=n: create_segmenter(n, 3, head_width=16, **BACKBONE))
              for n in list_segmenters()]
    return cases


CASES = build_all()


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_optimized_model_matches_eval(case):
    torch.manual_seed(0)
    model = randomize_batchnorm(dict(CASES)[case]())
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = dense_outputs(model, x)
        fast = spinenet.optimize_for_inference(model)
        out = dense_outputs(fast, x)
        again = dense_outputs(model, x)
    assert remaining_batchnorms(fast) == [], f"{case}: BatchNorm left unfolded"
    assert remaining_batchnorms(model), f"{case}: the original model must keep its BatchNorms"
    assert not fast.training
    assert len(out) == len(ref)
    for i, (o, r) in enumerate(zip(out, ref)):
        assert_parity(o.numpy(), r.numpy(), f"{case} output {i}")
    for a, r in zip(again, ref):  # the plain model is untouched (a copy was optimised)
        assert torch.equal(a, r)
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["retinanet_spinenet49s", "maskrcnn_spinenet49s"])
def test_optimized_detector_end_to_end(name):
    """The whole detector (transform, anchors, post-processing) runs after the rewrite and finds the same boxes."""
    torch.manual_seed(0)
    extra = HEAD_CONVS["maskrcnn" if name.startswith("maskrcnn") else "retinanet"]
    model = randomize_batchnorm(create_detector(name, num_classes=3, image_size=SIZE, **BACKBONE, **HEAD, **extra))
    model.score_thresh = 0.0
    images = [torch.rand(3, 100, 120)]
    with torch.no_grad():
        ref = model(images)[0]
        out = spinenet.optimize_for_inference(model)(images)[0]
    assert set(out) == set(ref) and len(ref["scores"]) > 0
    k = min(10, len(ref["scores"]), len(out["scores"]))
    assert_parity(out["scores"][:k].numpy(), ref["scores"][:k].numpy(), f"{name} top scores")


def test_upsampling_connections_project_first():
    """The optimised backbone does fewer multiply-adds (1x1 projections before nearest upsampling), same output."""
    from spinenet.profile import count_macs

    model = randomize_batchnorm(spinenet.create_model("spinenet49", **BACKBONE))
    fast = spinenet.optimize_for_inference(model, channels_last=False)
    assert count_macs(fast, SIZE) < count_macs(model, SIZE)


def test_inplace_and_memory_format_options():
    model = randomize_batchnorm(spinenet.create_model("spinenet49s", **BACKBONE))
    fast = spinenet.optimize_for_inference(model, channels_last=False, inplace=True)
    assert fast is model and remaining_batchnorms(model) == []
    assert all(p.is_contiguous() for p in fast.parameters())


def test_fold_batchnorm_rejects_what_it_cannot_fold():
    with pytest.raises(ValueError, match="expected Conv2d"):
        fold_batchnorm(nn.ReLU(), nn.BatchNorm2d(4).eval())
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))


def test_fold_batchnorm_linear_and_transposed():
    gen = torch.Generator().manual_seed(0)
    for layer, bn, x in ((nn.Linear(6, 4), nn.BatchNorm1d(4), torch.randn(5, 6, generator=gen)),
                         (nn.ConvTranspose2d(3, 4, 2, stride=2), nn.BatchNorm2d(4), torch.randn(1, 3, 5, 5, generator=gen))):
        randomize_batchnorm(bn)
        with torch.no_grad():
            assert_parity(fold_batchnorm(layer, bn)(x).numpy(), bn(layer(x)).numpy(), type(layer).__name__)


@pytest.mark.parametrize("name", ["retinanet_spinenet49s", "retinanet_spinenet_mobile49xs"])
def test_compile_fullgraph_backbone_and_head(name):
    """No graph break in the backbone nor the head (eager backend: tracing only, CI stays fast)."""
    torch._dynamo.reset()
    model = create_detector(name, num_classes=3, image_size=SIZE, **BACKBONE, **HEAD,
                            **HEAD_CONVS["retinanet"]).eval()
    x = torch.rand(1, 3, SIZE, SIZE)
    dense = model.macs_module()
    with torch.no_grad():
        ref = dense(x)
        backbone = torch.compile(model.backbone, fullgraph=True, backend="eager")
        head = torch.compile(model.head.forward_levels, fullgraph=True, backend="eager")
        out = head(list(backbone(x).values()))
    for o, r in zip(out[0] + out[1], ref[0] + ref[1]):
        assert torch.equal(o, r)


def test_compile_dense_keeps_state_dict_keys():
    torch._dynamo.reset()
    model = create_detector("retinanet_spinenet49s", num_classes=3, image_size=SIZE, **BACKBONE, **HEAD)
    keys = list(model.state_dict())
    compiled = compile_dense(model, backend="eager")
    assert compiled is model and list(model.state_dict()) == keys
    assert model.backbone._compiled_call_impl is not None and model.head._compiled_call_impl is not None


def test_max_pool_same_equals_padded_pool():
    """'SAME' max pooling without the padded copy gives exactly the padded pooling's windows, at any size."""
    from spinenet.layers.ops import max_pool_same, tf_same_pad

    gen = torch.Generator().manual_seed(0)
    for h, w, k, s in [(h, w, k, s) for h in range(1, 14) for w in (1, 2, 7, 10, 13) for k in (3, 5) for s in (1, 2, 3)]:
        x = torch.randn(1, 2, h, w, generator=gen)
        top, bottom = tf_same_pad(h, k, s)
        left, right = tf_same_pad(w, k, s)
        ref = nn.functional.max_pool2d(nn.functional.pad(x, (left, right, top, bottom), value=float("-inf")), k, s)
        assert torch.equal(max_pool_same(x, k, s), ref), (h, w, k, s)


def test_channels_last_where_cpu_bf16_runs():
    from spinenet.layers.fuse import channels_last_for_bf16

    def nhwc(m: nn.Module) -> bool:
        return m.stem[0].conv.weight.is_contiguous(memory_format=torch.channels_last)

    assert nhwc(channels_last_for_bf16(spinenet.create_model("spinenet49s", **BACKBONE), "cpu", "bf16"))
    assert not nhwc(channels_last_for_bf16(spinenet.create_model("spinenet49s", **BACKBONE), "cpu", "fp32"))


def test_compile_recipe_field_and_cli_flags():
    from spinenet.cli import build_parser
    from spinenet.engine.recipes import Recipe, get_recipe, parse_overrides

    assert Recipe().optim.compile is False
    assert parse_overrides(get_recipe("smoke"), ["compile=true"]).optim.compile is True
    parser = build_parser()
    args = parser.parse_args(["predict", "--checkpoint", "c.pt", "a.png", "--out", "o"])
    assert not args.no_optimize and not args.compile
    assert parser.parse_args(["predict", "--checkpoint", "c.pt", "a.png", "--out", "o", "--no-optimize",
                              "--compile"]).no_optimize
    assert parser.parse_args(["eval", "--checkpoint", "c.pt", "--data", "d", "--optimize"]).optimize
    assert not parser.parse_args(["eval", "--checkpoint", "c.pt", "--data", "d"]).optimize
    assert parser.parse_args(["export", "spinenet49", "-o", "x.onnx", "--no-optimize"]).no_optimize
    assert parser.parse_args(["train", "--model", "m", "--data", "d", "--out", "o", "--compile"]).compile


def test_cli_predict_optimised_by_default_matches_plain(tmp_path, capsys):
    """``spinenet predict`` optimises the model unless --no-optimize; both give the same probabilities."""
    import json

    from PIL import Image

    from spinenet.cli import main
    from spinenet.engine.recipes import Recipe

    torch.manual_seed(0)
    model = randomize_batchnorm(create_classifier("classifier_spinenet49s", 2, class_names=["dark", "bright"], **BACKBONE))
    ckpt = {"task": "classification", "model_config": model.config, "model": model.state_dict(),
            "classes": ["dark", "bright"], "recipe": Recipe(task="classification").replace(image_size=64).to_dict()}
    torch.save(ckpt, tmp_path / "c.pt")
    image = tmp_path / "a.png"
    Image.fromarray((torch.rand(40, 50, 3) * 255).to(torch.uint8).numpy()).save(image)
    tops = []
    for flags in ([], ["--no-optimize"]):
        out = tmp_path / f"pred{len(flags)}"
        assert main(["predict", "--checkpoint", str(tmp_path / "c.pt"), str(image), "--out", str(out), *flags]) == 0
        (record,) = json.loads((out / "predictions.json").read_text())
        tops.append({t["class"]: t["probability"] for t in record["top"]})
    assert tops[0].keys() == tops[1].keys() == {"dark", "bright"}
    for name in tops[0]:
        assert abs(tops[0][name] - tops[1][name]) <= 1e-4
