"""Backbone endpoints against outputs of the official TensorFlow code (../shared/fixtures/parity)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import spinenet
from spinenet.convert.load import load_tf_backbone

from conftest import assert_parity

TINY = {"filter_size_scale": 0.125, "endpoints_num_filters": 32, "resample_alpha": 0.5}
# fixture -> (model name, checkpoint file, overrides); everything else is read from the fixture's meta.json
CASES = {
    "tpu_spinenet49_tiny_backbone": ("spinenet49", "model.ckpt", {**TINY, "flavor": "tpu"}),
    "mg_spinenet49_tiny_backbone": ("spinenet49", "ckpt", {**TINY, "flavor": "model_garden"}),
    "mg_spinenet49_tiny_swish_repeats": ("spinenet49", "ckpt", {**TINY, "flavor": "model_garden", "block_repeats": 2}),
    "mg_retinanet_spinenet49_tiny": ("spinenet49", "ckpt", {**TINY, "flavor": "model_garden"}),
    "tpu_classifier_spinenet49_tiny_224": ("spinenet49", "model.ckpt", {**TINY, "flavor": "tpu"}),
    "mg_spinenet_mobile49xs_backbone": ("spinenet_mobile49xs", "ckpt", {"flavor": "model_garden"}),
}


def meta_settings(meta: dict) -> dict:
    """Activation and BN epsilon as the official run used them (meta.json), so a wrong default cannot hide."""
    args = meta.get("constructor_args") or meta.get("backbone_constructor_args") or {}
    act = args.get("activation") or meta["config"]["batch_norm_activation"]["activation"]
    return {"activation": act, "bn_eps": meta["bn"]["epsilon"]}


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_backbone_matches_official(fixture, parity_dir):
    folder = parity_dir(fixture)
    name, ckpt, overrides = CASES[fixture]
    meta = json.loads((folder / "meta.json").read_text())
    model = spinenet.create_model(name, **overrides, **meta_settings(meta)).eval()
    report = load_tf_backbone(model, folder / ckpt)
    assert not report.missing and not report.mismatched
    x = torch.from_numpy(np.load(folder / "input.npy")).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = model(x)
    assert sorted(out) == ["3", "4", "5", "6", "7"]
    for level, tensor in out.items():
        ref = np.load(folder / f"endpoint_{level}.npy").transpose(0, 3, 1, 2)
        assert_parity(tensor.numpy(), ref, f"{fixture} endpoint {level}")


def test_wrong_bn_epsilon_is_detected(parity_dir):
    """The tolerance is tight enough to catch a wrong BN epsilon (fixture README: 7x margin)."""
    folder = parity_dir("tpu_spinenet49_tiny_backbone")
    model = spinenet.create_model("spinenet49", **TINY, flavor="tpu", bn_eps=1e-5).eval()
    load_tf_backbone(model, folder / "model.ckpt")
    x = torch.from_numpy(np.load(folder / "input.npy")).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = model(x)["3"].numpy()
    ref = np.load(folder / "endpoint_3.npy").transpose(0, 3, 1, 2)
    with pytest.raises(AssertionError):
        assert_parity(out, ref, "eps 1e-5")


def test_flavours_are_not_interchangeable(parity_dir):
    """Model Garden weights in the TF1 graph (symmetric padding, one 5x5 pool) miss the reference."""
    folder = parity_dir("mg_spinenet49_tiny_backbone")
    model = spinenet.create_model("spinenet49", **TINY, flavor="tpu", bn_eps=1e-3).eval()
    load_tf_backbone(model, folder / "ckpt", source="model_garden")
    x = torch.from_numpy(np.load(folder / "input.npy")).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = model(x)
    errors = []
    for level in "34567":
        ref = np.load(folder / f"endpoint_{level}.npy").transpose(0, 3, 1, 2)
        errors.append(np.abs(out[level].numpy() - ref).max() / np.abs(ref).max())
    assert max(errors) > 1e-2
