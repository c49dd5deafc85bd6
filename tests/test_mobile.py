"""SpineNet-Mobile specifics (spec 1.4, 2.2, 3.14): both official flavours."""

from __future__ import annotations

import pytest
import torch

import spinenet
from spinenet.graph import round_filters
from spinenet.layers.blocks import MBConv
from spinenet.layers.ops import HardSigmoid


def test_channel_rules_differ_between_flavours():
    mg = spinenet.create_model("spinenet_mobile49s", flavor="model_garden")
    tpu = spinenet.create_model("spinenet_mobile49s", flavor="tpu")
    # MG: int(base * scale); TF1: round_filters (16 * 0.65 -> 16 there, 10 here)
    assert mg.graph.node(0).filters == 10 and tpu.graph.node(0).filters == 16
    assert [round_filters(c) for c in (16 * 0.65, 24 * 0.65, 40 * 0.65, 112 * 0.65)] == [16, 16, 24, 72]
    # at scale 1.0 both rules agree, so the 49 models have the same parameter count
    a = spinenet.create_model("spinenet_mobile49", flavor="model_garden")
    b = spinenet.create_model("spinenet_mobile49", flavor="tpu")
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())


def test_squeeze_excitation_gates_per_flavour():
    mg = spinenet.create_model("spinenet_mobile49xs", flavor="model_garden")
    tpu = spinenet.create_model("spinenet_mobile49xs", flavor="tpu")
    mg_block = next(m for m in mg.modules() if isinstance(m, MBConv))
    tpu_block = next(m for m in tpu.modules() if isinstance(m, MBConv))
    assert isinstance(mg_block.se.gate, HardSigmoid) and isinstance(mg_block.se.inner, torch.nn.ReLU)
    assert isinstance(tpu_block.se.gate, torch.nn.Sigmoid) and isinstance(tpu_block.se.inner, torch.nn.SiLU)
    # SE width uses the unexpanded input channels: stem block 0 of 49 reduces 48 -> 1 (spec 3.14, MEAS)
    first = next(m for m in spinenet.create_model("spinenet_mobile49").modules() if isinstance(m, MBConv))
    assert (first.se.reduce.in_channels, first.se.reduce.out_channels) == (48, 1)


def test_hard_sigmoid_uses_the_literal_constant():
    x = torch.tensor([-4.0, 0.0, 1.0, 4.0])
    assert torch.allclose(HardSigmoid()(x), torch.nn.functional.relu6(x + 3) * 0.16667)
    assert HardSigmoid()(torch.tensor([3.0])).item() == pytest.approx(6 * 0.16667)


@pytest.mark.parametrize("activation", ["swish", "hard_swish", "relu"])
def test_mobile_activations(activation):
    model = spinenet.create_model("spinenet_mobile49xs", activation=activation).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 97, 131))
    assert tuple(out["7"].shape) == (1, 24, 1, 2)
