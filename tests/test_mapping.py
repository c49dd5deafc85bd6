"""TF checkpoint name maps: derived from our graph, checked against the official listings and fixtures."""

from __future__ import annotations

import re

import pytest
import torch

import spinenet
from spinenet.convert.load import apply_tf_weights, load_tf_backbone
from spinenet.convert.mapping import mg_backbone_map, mg_layer_order, tpu_backbone_map
from spinenet.profile import on_meta

from conftest import SHARED, require_shared

TINY = {"filter_size_scale": 0.125, "endpoints_num_filters": 32}


def role_key(role: str) -> tuple:
    """Translate a semantic role of ``mg_spinenet49_ckpt_map.tsv`` into our layer key."""
    if role == "stem/conv7x7":
        return ("stem_conv",)
    if role == "stem/bn":
        return ("stem_bn",)
    if m := re.fullmatch(r"stem_block_(\d)/rep(\d+)", role):
        return ("block", int(m[1]) - 1, int(m[2]))
    if m := re.fullmatch(r"endpoint_L(\d)/(conv1x1|bn)", role):
        return ("endpoint", int(m[1]), "conv" if m[2] == "conv1x1" else "bn")
    if m := re.fullmatch(r"spec(\d+)\([^)]*\)/rep(\d+)", role):
        return ("block", int(m[1]) + 2, int(m[2]))
    m = re.fullmatch(r"spec(\d+)\([^)]*\)/parent(\d)=[^/]*/(\w+)", role)
    part = {"conv1x1_alpha": ("reduce", "conv"), "bn_alpha": ("reduce", "bn"), "conv3x3_s2": ("down", "conv"),
            "bn_s2": ("down", "bn"), "conv1x1_target": ("expand", "conv"), "bn_target": ("expand", "bn")}[m[3]]
    return ("resample", int(m[1]) + 2, int(m[2])) + part


def test_model_garden_layer_order_matches_the_official_listing():
    """All 181 ``layer_with_weights-N`` of the official SpineNet-49, derived from our graph."""
    listing = require_shared(SHARED / "reference" / "mg_spinenet49_ckpt_map.tsv")
    rows = [line.split("\t") for line in listing.read_text().splitlines()[1:]]
    expected = [role_key(r[3]) for r in rows]
    model = on_meta(lambda: spinenet.create_model("spinenet49", flavor="model_garden"))
    assert mg_layer_order(model.graph) == expected
    # and the variable shapes under each prefix agree with our tensors
    shapes = {}
    for prefix, _cls, _name, _role, variables in rows:
        for name, shape in re.findall(r"(\S+)\[([^\]]*)\]", variables):
            shapes[f"{prefix}/{name}/.ATTRIBUTES/VARIABLE_VALUE"] = tuple(int(d) for d in shape.split(","))
    state = model.state_dict()
    maps = mg_backbone_map(model)
    assert {m.tf_key for m in maps} == set(shapes)
    for m in maps:
        ours = tuple(state[m.torch_key].shape)
        theirs = shapes[m.tf_key]
        assert ours == (tuple(theirs[i] for i in (3, 2, 0, 1)) if m.transform == "conv" else theirs), m


def test_tpu_names_match_the_official_variable_list():
    listing = require_shared(SHARED / "reference" / "tpu_spinenet49_variables.txt")
    official = {}
    for line in listing.read_text().splitlines():
        name, shape = line.split("\t")
        official[name] = tuple(int(d) for d in shape.strip("[]").split(","))
    model = on_meta(lambda: spinenet.create_model("spinenet49", flavor="tpu"))
    maps = tpu_backbone_map(model)
    assert len(official) == 650 and {m.tf_key for m in maps} == set(official)
    state = model.state_dict()
    for m in maps:
        theirs = official[m.tf_key]
        assert tuple(state[m.torch_key].shape) == (tuple(theirs[i] for i in (3, 2, 0, 1)) if m.transform == "conv"
                                                    else theirs), m


@pytest.mark.parametrize("fixture, name, ckpt, overrides", [
    ("tpu_spinenet49_tiny_backbone", "spinenet49", "model.ckpt", {**TINY, "flavor": "tpu"}),
    ("mg_spinenet49_tiny_backbone", "spinenet49", "ckpt", {**TINY, "flavor": "model_garden"}),
    ("mg_spinenet49_tiny_swish_repeats", "spinenet49", "ckpt", {**TINY, "flavor": "model_garden", "block_repeats": 2}),
    ("mg_spinenet_mobile49xs_backbone", "spinenet_mobile49xs", "ckpt", {"flavor": "model_garden"}),
])
def test_backbone_checkpoints_are_consumed_exactly(parity_dir, fixture, name, ckpt, overrides):
    model = spinenet.create_model(name, **overrides)
    report = load_tf_backbone(model, parity_dir(fixture) / ckpt, strict_unused=True)
    assert report.unused == [] and report.missing == [] and report.mismatched == []
    assert len(report.mapped) == len([k for k in model.state_dict() if not k.endswith("num_batches_tracked")])


def test_missing_tensor_fails_loudly_and_changes_nothing(parity_dir, tmp_path):
    folder = parity_dir("tpu_spinenet49_tiny_backbone")
    model = spinenet.create_model("spinenet49", **TINY, flavor="tpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = tpu_backbone_map(model)
    broken = maps[:-1] + [type(maps[-1])(maps[-1].torch_key, "spinenet/no_such_layer/gamma", "copy")]
    with pytest.raises(ValueError, match="missing: spinenet/no_such_layer/gamma"):
        apply_tf_weights(model, folder / "model.ckpt", broken)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_shape_mismatch_fails_loudly(parity_dir):
    folder = parity_dir("tpu_spinenet49_tiny_backbone")
    wider = spinenet.create_model("spinenet49", filter_size_scale=0.25, endpoints_num_filters=32, flavor="tpu")
    with pytest.raises(ValueError, match="shape mismatch|mismatch: spinenet/conv2d_1/kernel"):
        load_tf_backbone(wider, folder / "model.ckpt")


def test_wrong_source_layout_is_refused(parity_dir):
    folder = parity_dir("tpu_spinenet49_tiny_backbone")
    model = spinenet.create_model("spinenet49", **TINY, flavor="model_garden")
    with pytest.raises(ValueError, match="missing"):
        load_tf_backbone(model, folder / "model.ckpt")


def test_model_garden_order_for_repeats_and_mobile_follows_keys_tsv(parity_dir):
    """keys.tsv names every key's Keras creation-order variable; our map must agree on each layer's kind."""
    for fixture, name, overrides in [
        ("mg_spinenet49_tiny_swish_repeats", "spinenet49", {**TINY, "block_repeats": 2}),
        ("mg_spinenet_mobile49xs_backbone", "spinenet_mobile49xs", {}),
    ]:
        rows = [r.split("\t") for r in (parity_dir(fixture) / "keys.tsv").read_text().splitlines()[1:]]
        kind = {r[0]: r[3].split("/")[0].rstrip("_0123456789") for r in rows if r[3]}
        model = on_meta(lambda: spinenet.create_model(name, flavor="model_garden", **overrides))
        for m in mg_backbone_map(model):
            keras = kind[m.tf_key]
            if ".block." in m.torch_key:
                assert keras in ("bottleneck_block", "residual_block", "inverted_bottleneck_block"), m
            elif m.transform == "depthwise":
                assert keras == "depthwise_conv2d", m
            else:
                assert keras in ("conv2d", "batch_normalization"), m


# ------------------------------------------------------------------------------ TF1 SpineNet-Mobile (spinenet_mbconv)
# Names derived by hand from tensorflow/tpu `spinenet_mbconv.py`, `nn_blocks.mbconv_block` and `nn_ops` (tf.layers
# numbering per variable scope and per layer kind; SE convs are tf.layers.Conv2D with bias and share the conv2d
# counter). No TF1 mobile checkpoint exists here, so these tests pin the derivation, not a real file.
def _mbconv_names(scope: str, conv: int, bn: int, dw: int) -> list[str]:
    """The 19 variables of one TF1 MBConv block whose first conv2d/BN/depthwise are numbered conv/bn/dw."""
    def n(kind: str, k: int) -> str:
        return f"{scope}/{kind}" + ("" if k == 0 else f"_{k}")

    bn_vars = ("gamma", "beta", "moving_mean", "moving_variance")
    return ([f"{n('conv2d', conv)}/kernel"] + [f"{n('batch_normalization', bn)}/{v}" for v in bn_vars]
            + [f"{n('depthwise_conv2d', dw)}/depthwise_kernel"]
            + [f"{n('batch_normalization', bn + 1)}/{v}" for v in bn_vars]
            + [f"{n('conv2d', conv + 1)}/kernel", f"{n('conv2d', conv + 1)}/bias", f"{n('conv2d', conv + 2)}/kernel",
               f"{n('conv2d', conv + 2)}/bias", f"{n('conv2d', conv + 3)}/kernel"]
            + [f"{n('batch_normalization', bn + 2)}/{v}" for v in bn_vars])


def test_tpu_mobile_names_follow_the_tf1_builder():
    from spinenet.convert.mapping import tpu_mobile_backbone_map

    model = on_meta(lambda: spinenet.create_model("spinenet_mobile49", flavor="tpu"))
    maps = tpu_backbone_map(model)  # dispatches on the family
    assert [m.tf_key for m in maps] == [m.tf_key for m in tpu_mobile_backbone_map(model)]
    names = [m.tf_key for m in maps]
    top = "spinenet_mbconv"
    bn_vars = ["gamma", "beta", "moving_mean", "moving_variance"]
    # stem conv + BN, then the two stem blocks number on in the top scope
    assert names[:43] == ([f"{top}/conv2d/kernel"] + [f"{top}/batch_normalization/{v}" for v in bn_vars]
                          + _mbconv_names(top, 1, 1, 0) + _mbconv_names(top, 5, 4, 1))
    # spec 2 (level 4) takes parents at level 2: two depthwise/BN steps each, then the 1x1 conv and its BN
    sub = f"{top}/sub_policy2"
    for k in (0, 1):
        r = f"{sub}/resample_with_sepconv_resample_2_{k}"
        expected = ([f"{r}/depthwise_conv2d/depthwise_kernel"] + [f"{r}/batch_normalization/{v}" for v in bn_vars]
                    + [f"{r}/depthwise_conv2d_1/depthwise_kernel"]
                    + [f"{r}/batch_normalization_1/{v}" for v in bn_vars]
                    + [f"{r}/conv2d/kernel"] + [f"{r}/batch_normalization_2/{v}" for v in bn_vars])
        assert [n for n in names if n.startswith(r + "/")] == expected
    assert [n for n in names if n.startswith(f"{sub}/scale_permuted_block_4/")] == \
        _mbconv_names(f"{sub}/scale_permuted_block_4", 0, 0, 0)
    # spec 3 (level 3) from L2 (one step down) and L4 (upsampled: no depthwise)
    assert f"{top}/sub_policy3/resample_with_sepconv_resample_3_0/depthwise_conv2d/depthwise_kernel" in names
    assert not any(n.startswith(f"{top}/sub_policy3/resample_with_sepconv_resample_3_1/depthwise") for n in names)
    # endpoints: the next five conv/BN pairs of the top scope, levels 3..7
    endpoints = [[f"{top}/conv2d_{9 + j}/kernel"] + [f"{top}/batch_normalization_{7 + j}/{v}" for v in bn_vars]
                 for j in range(5)]
    assert names[-25:] == [x for pair in endpoints for x in pair]


def test_tpu_mobile_map_covers_every_tensor_once_in_tf_layouts():
    """Count from the spec list alone (19 tensors per MBConv, 5 per depthwise step and per 1x1 conv/BN, 5 for the
    stem conv/BN and each endpoint), trainable total = spec 4.4's 2,268,708 (+ 45,184 BN statistics), and every
    tensor in its TF layout: depthwise [3, 3, C, 1], 1x1 kernels [1, 1, Cin, Cout], BN width = the layer before."""
    from spinenet.specs import default_architecture

    model = on_meta(lambda: spinenet.create_model("spinenet_mobile49", flavor="tpu"))
    maps = tpu_backbone_map(model)
    arch = default_architecture("mobile", "tpu")
    levels = [b.level for b in arch.stem] + [b.level for b in arch.blocks]
    count = 5 + 19 * len(arch.stem) + 5 * 5
    for spec in arch.blocks:
        count += 19 + sum(5 * max(spec.level - levels[p], 0) + 5 for p in spec.input_offsets)
    state = model.state_dict()
    assert len(maps) == count == len({m.tf_key for m in maps}) == len({m.torch_key for m in maps})
    assert {m.torch_key for m in maps} == {k for k in state if not k.endswith("num_batches_tracked")}
    stats = ("moving_mean", "moving_variance")
    assert sum(state[m.torch_key].numel() for m in maps if not m.tf_key.endswith(stats)) == 2_268_708
    assert sum(state[m.torch_key].numel() for m in maps if m.tf_key.endswith(stats)) == 45_184
    to_tf = {"conv": (2, 3, 1, 0), "depthwise": (2, 3, 0, 1)}
    width = None
    for m in maps:
        shape = tuple(state[m.torch_key].shape)
        tf_shape = tuple(shape[i] for i in to_tf[m.transform]) if m.transform in to_tf else shape
        leaf = m.tf_key.rsplit("/", 1)[1]
        if leaf == "depthwise_kernel":
            assert m.transform == "depthwise" and tf_shape[:2] == (3, 3) and tf_shape[3] == 1, m
            width = tf_shape[2]
        elif leaf == "kernel":
            assert m.transform == "conv" and tf_shape[:2] == ((3, 3) if m.torch_key == "stem.0.conv.weight"
                                                              else (1, 1)), m
            width = tf_shape[3]
        elif leaf == "bias":  # squeeze-excitation convs only
            assert ".se." in m.torch_key and tf_shape == (width,), m
        else:
            assert leaf in ("gamma", "beta", *stats) and tf_shape == (width,), m


def test_tpu_and_model_garden_mobile_maps_place_every_tensor_alike():
    """Against the fixture-verified Model Garden mobile map: the same tensors, each with the same layout transform
    and the same kind of TF variable (kernel / depthwise_kernel / bias / BN statistic)."""
    model = on_meta(lambda: spinenet.create_model("spinenet_mobile49xs", flavor="model_garden"))
    mg = {m.torch_key: m for m in mg_backbone_map(model)}
    tpu = {m.torch_key: m for m in tpu_backbone_map(model)}
    assert set(mg) == set(tpu) and len(tpu) == len(tpu_backbone_map(model))

    def leaf(key: str) -> str:
        return key.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE").rsplit("/", 1)[1]

    for key, m in tpu.items():
        assert (m.transform, leaf(m.tf_key)) == (mg[key].transform, leaf(mg[key].tf_key)), (m, mg[key])
    # one MBConv block seen from both sides, e.g. the squeeze-excitation pair: Keras _se_reduce/_se_expand
    # are the 2nd and 3rd conv2d of the TF1 block scope
    block = "blocks.5.block.0"
    assert "_se_reduce/kernel" in mg[f"{block}.se.reduce.weight"].tf_key
    assert tpu[f"{block}.se.reduce.weight"].tf_key.endswith("scale_permuted_block_5/conv2d_1/kernel")
    assert tpu[f"{block}.se.expand.bias"].tf_key.endswith("scale_permuted_block_5/conv2d_2/bias")


def test_tpu_mobile_map_refuses_what_it_cannot_name():
    resnet = on_meta(lambda: spinenet.create_model("spinenet49", flavor="tpu"))
    from spinenet.convert.mapping import tpu_mobile_backbone_map, tpu_resnet_backbone_map

    with pytest.raises(ValueError, match="mobile family"):
        tpu_mobile_backbone_map(resnet)
    mobile = on_meta(lambda: spinenet.create_model("spinenet_mobile49", flavor="tpu"))
    with pytest.raises(ValueError, match="ResNet-block family"):
        tpu_resnet_backbone_map(mobile)
    repeated = on_meta(lambda: spinenet.create_model("spinenet_mobile49", flavor="tpu", block_repeats=2))
    with pytest.raises(ValueError, match="block_repeats=1"):
        tpu_backbone_map(repeated)
