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
