"""The pure-Python graph resolver: official bookkeeping, pruning, drop rates and validation."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spinenet
from spinenet.graph import resolve
from spinenet.specs import (
    MOBILE_SCALING_MAP,
    RESNET_STEM,
    SCALING_MAP,
    Architecture,
    BlockSpec,
    default_architecture,
)

S49 = SCALING_MAP["49"]


def test_official_graph_facts():
    """Spec 1.2 / 3.6: only the level-5 output (spec 12) absorbs an unused block, net 11."""
    for flavor in ("tpu", "model_garden"):
        g = resolve(default_architecture("resnet", flavor), S49, flavor)
        absorbed = {n.spec_index: n.extras for n in g.nodes if n.extras}
        assert absorbed == {12: (11,)}
        assert g.endpoints == {3: 13, 4: 12, 5: 14, 6: 16, 7: 15}
        # channels: bottleneck 4C, residual C (spec 1.2 bookkeeping for SpineNet-49)
        assert [g.node(i).out_channels for i in range(2, 17)] == [
            256, 256, 512, 1024, 256, 1024, 256, 256, 1024, 1024, 1024, 512, 1024, 1024, 1024]
        # alpha widths: L2 bottleneck parent -> 32, L3 bottleneck -> 64, L4+ -> 128
        assert [e.mid_channels for e in g.node(4).parents] == [32, 128]


def test_model_garden_level2_block_is_pruned_unless_requested():
    g3 = resolve(default_architecture("resnet", "model_garden"), S49, "model_garden", min_level=3)
    assert 17 not in {n.index for n in g3.nodes} and g3.num_specs == 16
    g2 = resolve(default_architecture("resnet", "model_garden"), S49, "model_garden", min_level=2)
    assert g2.endpoints[2] == 17
    with pytest.raises(ValueError, match="no output block at requested level 2"):
        resolve(default_architecture("resnet", "tpu"), S49, "tpu", min_level=2)


def test_drop_rates_use_the_flavours_denominator_and_survive_pruning():
    mg = resolve(default_architecture("resnet", "model_garden"), S49, "model_garden", stochastic_depth_rate=0.2)
    tpu = resolve(default_architecture("resnet", "tpu"), S49, "tpu", stochastic_depth_rate=0.2)
    assert mg.node(16).drop_rate == pytest.approx(0.2 * 15 / 16)  # spec 14, not renumbered by pruning spec 15
    assert tpu.node(16).drop_rate == pytest.approx(0.2 * 15 / 15)
    assert all(n.drop_rate == 0 for n in tpu.nodes if n.is_stem)


def test_parameter_count_with_level2_output():
    """Spec 1.2: building Model Garden's level-2 block adds 203,200 parameters."""
    from spinenet.profile import count_params, on_meta

    base = count_params(on_meta(lambda: spinenet.create_model("spinenet49", flavor="model_garden")))
    p2 = count_params(on_meta(lambda: spinenet.create_model("spinenet49", flavor="model_garden", min_level=2)))
    assert (base, p2) == (21_831_488, 22_034_688)


def _arch(blocks, family="resnet"):
    return Architecture(family, RESNET_STEM, tuple(BlockSpec(*b) for b in blocks))


BASE = list(default_architecture("resnet", "tpu").blocks)


@pytest.mark.parametrize("index, change, message", [
    (3, {"input_offsets": (2, 5)}, "block 3 .*itself"),
    (3, {"input_offsets": (2, 9)}, "block 3 .*forward reference"),
    (0, {"input_offsets": (-1, 1)}, "block 0 .*out of range"),
    (4, {"level": 8}, "block 4 .*level 8 out of range"),
    (4, {"level": 1}, "block 4 .*level 1 out of range"),
    (6, {"block_fn": "dense"}, "block 6 .*unknown block type 'dense'"),
    (6, {"block_fn": "mbconv"}, "block 6 .*unknown block type 'mbconv'"),
    (9, {"is_output": True}, r"block 12 .*second output block at level 5 \(block 9 is one\)"),
    (13, {"is_output": False}, "no output block at requested level 7"),
])
def test_invalid_specs_name_the_block(index, change, message):
    blocks = list(BASE)
    b = blocks[index]
    blocks[index] = BlockSpec(**{**b.__dict__, **change})
    with pytest.raises(ValueError, match=message):
        resolve(Architecture("resnet", RESNET_STEM, tuple(blocks)), S49)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="spinenet-arch/0"), "field 'format'"),
    (lambda d: d.update(family="vit"), "field 'family'"),
    (lambda d: d["blocks"][2].pop("level"), r"blocks\[2\]: missing field 'level'"),
    (lambda d: d["blocks"][2].update(level="4"), r"blocks\[2\]: field 'level' has the wrong type"),
    (lambda d: d["blocks"][1].update(input_offsets=[0, "a"]), r"blocks\[1\]: 'input_offsets' must be integers"),
    (lambda d: d.update(blocks=[]), "field 'blocks' must be a non-empty list"),
    (lambda d: d.update(scaling={"width": 2}), "unknown field"),
    (lambda d: d.update(extra=1), "unknown field"),
])
def test_malformed_architecture_files(tmp_path, mutate, message):
    data = default_architecture("resnet", "tpu").to_dict()
    mutate(data)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        Architecture.load(path)


def test_architecture_file_errors_name_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        Architecture.load(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Architecture.load(tmp_path / "missing.json")


@pytest.mark.parametrize("family, flavor", [("resnet", "tpu"), ("resnet", "model_garden"), ("mobile", "model_garden")])
def test_architecture_file_round_trip(tmp_path, family, flavor):
    arch = default_architecture(family, flavor)
    arch = Architecture(arch.family, arch.stem, arch.blocks, MOBILE_SCALING_MAP["49S"] if family == "mobile" else S49)
    path = tmp_path / "a.json"
    arch.save(path)
    back = Architecture.load(path)
    assert back == arch
    assert json.loads(path.read_text())["format"] == "spinenet-arch/1"
    name = "spinenet_mobile49" if family == "mobile" else "spinenet49"
    a = spinenet.create_model(name, block_specs=path, flavor=flavor)
    b = spinenet.create_model("spinenet_mobile49s" if family == "mobile" else "spinenet49", flavor=flavor)
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())


# ---------------------------------------------------------------------------- hypothesis properties
@st.composite
def valid_architectures(draw):
    """Random scale-permuted networks: N blocks, one output per level 3..7, parents among earlier entries."""
    n_inter = draw(st.integers(0, 5))
    levels = draw(st.lists(st.integers(2, 7), min_size=n_inter, max_size=n_inter)) + list(range(3, 8))
    outputs = [False] * n_inter + [True] * 5
    order = draw(st.permutations(range(len(levels))))
    blocks = []
    for k, i in enumerate(order):
        index = k + 2
        offsets = tuple(draw(st.integers(0, index - 1)) for _ in range(2))
        blocks.append((levels[i], draw(st.sampled_from(["bottleneck", "residual"])), offsets, outputs[i]))
    return _arch(blocks)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=valid_architectures(), flavor=st.sampled_from(["tpu", "model_garden"]),
       size=st.tuples(st.integers(33, 150), st.integers(33, 150)))
def test_random_valid_graphs_build_and_run(arch, flavor, size):
    model = spinenet.create_model("spinenet49", block_specs=arch, flavor=flavor, filter_size_scale=0.0625,
                                  endpoints_num_filters=8).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    for level in range(3, 8):
        expect = (1, 8, -(-size[0] // 2 ** level), -(-size[1] // 2 ** level))
        assert tuple(out[str(level)].shape) == expect


@st.composite
def malformed(draw):
    """A valid list with one fault injected, as a raw spinenet-arch/1 mapping."""
    data = draw(valid_architectures()).to_dict()
    blocks = data["blocks"]
    k = draw(st.integers(0, len(blocks) - 1))
    fault = draw(st.sampled_from(["self", "forward", "negative", "level_hi", "level_lo", "type", "dup_output",
                                  "no_output", "missing_key", "bad_type", "not_object", "empty"]))
    index = k + 2
    b = blocks[k]
    if fault == "self":
        b["input_offsets"][0] = index
    elif fault == "forward":
        b["input_offsets"][1] = index + 1 + draw(st.integers(0, 3))
    elif fault == "negative":
        b["input_offsets"][0] = -draw(st.integers(1, 3))
    elif fault == "level_hi":
        b["level"] = draw(st.integers(8, 12))
    elif fault == "level_lo":
        b["level"] = draw(st.integers(-2, 1))
    elif fault == "type":
        b["block_fn"] = draw(st.sampled_from(["mbconv", "conv", "", "Bottleneck"]))
    elif fault == "dup_output":
        outs = [x for x in blocks if x["is_output"]]
        b.update(level=outs[0]["level"], is_output=True) if b is not outs[0] else b.update(level=outs[1]["level"])
    elif fault == "no_output":
        for x in blocks:
            if x["is_output"] and x["level"] == 5:
                x["is_output"] = False
    elif fault == "missing_key":
        b.pop(draw(st.sampled_from(["level", "block_fn", "input_offsets", "is_output"])))
    elif fault == "bad_type":
        b["is_output"] = "yes"
    elif fault == "not_object":
        blocks[k] = [b["level"], b["block_fn"]]
    else:
        data["blocks"] = []
    return data


@settings(max_examples=60, deadline=None)
@given(data=malformed())
def test_malformed_graphs_raise_value_error(data):
    with pytest.raises(ValueError):
        resolve(Architecture.from_dict(data), S49)
