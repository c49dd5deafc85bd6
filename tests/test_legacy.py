"""Weights files and checkpoints written by the 0.1.0 release keep loading, with the same outputs.

``tests/data/legacy`` was written by ``tests/data/legacy/make_legacy.py`` with the 0.1.0 code: tiny SpineNet-49
models whose every tensor was perturbed, their files, one input and the outputs that code computed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_parity
from safetensors.torch import load_file

LEGACY = Path(__file__).parent / "data" / "legacy"
INPUT = load_file(str(LEGACY / "input.safetensors"))["input"]


def reference(stem: str) -> dict[str, torch.Tensor]:
    return load_file(str(LEGACY / f"{stem}.outputs.safetensors"))


def dense(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    cls_maps, box_maps = model.macs_module()(x)
    return {**{f"cls{i}": t for i, t in enumerate(cls_maps)}, **{f"box{i}": t for i, t in enumerate(box_maps)}}


def outputs(stem: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        if stem == "backbone":
            return {f"p{k}": v for k, v in model(INPUT).items()}
        if stem in ("retinanet", "maskrcnn"):
            return dense(model, INPUT)
        return {"logits": model(INPUT)}


def check(stem: str, model: torch.nn.Module) -> None:
    ref, out = reference(stem), outputs(stem, model)
    assert sorted(out) == sorted(ref)
    for key in ref:
        assert_parity(out[key].numpy(), ref[key].numpy(), f"{stem}:{key}", tol=1e-6)


@pytest.mark.parametrize("stem", ["backbone", "retinanet", "maskrcnn", "classification"])
def test_legacy_weights_file_loads_by_its_own_name(stem):
    from spinenet import load_weights

    check(stem, load_weights(LEGACY / f"{stem}.safetensors"))


@pytest.mark.parametrize("stem,legacy_name,name", [
    ("backbone", "spinenet49", "spinenet49"),
    ("retinanet", "retinanet_spinenet49", "retinanet_spinenet49"),
    ("maskrcnn", "maskrcnn_spinenet49", "maskrcnn_spinenet49"),
    ("classification", "spinenet49", "classifier_spinenet49"),
])
def test_legacy_weights_file_loads_through_create_model(stem, legacy_name, name):
    import spinenet

    check(stem, spinenet.create_model(name, weights=str(LEGACY / f"{stem}.safetensors")))


def test_legacy_files_through_the_per_task_builders():
    from spinenet.models import create_classifier, create_detector

    check("retinanet", create_detector("retinanet_spinenet49", weights=str(LEGACY / "retinanet.safetensors")))
    check("maskrcnn", create_detector("maskrcnn_spinenet49", weights=str(LEGACY / "maskrcnn.safetensors")))
    with pytest.warns(DeprecationWarning):
        check("classification", create_classifier("spinenet49", weights=str(LEGACY / "classification.safetensors")))


@pytest.mark.parametrize("stem", ["segmentation"])
def test_legacy_checkpoint_rebuilds_from_its_config(stem):
    from spinenet.registry import model_from_config

    ckpt = torch.load(LEGACY / f"{stem}.ckpt.pt", map_location="cpu", weights_only=False)
    model = model_from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    assert model.task == ckpt["task"]
    check(stem, model)


def test_legacy_configs_rebuild_through_model_from_config():
    """Every legacy config (the JSON in the weights files) rebuilds the same model through the one entry point."""
    from spinenet.registry import model_from_config
    from spinenet.weights import read_weights

    for stem in ("backbone", "retinanet", "maskrcnn", "classification"):
        wf = read_weights(LEGACY / f"{stem}.safetensors")
        model = model_from_config(wf.config)
        model.load_state_dict(wf.state)
        check(stem, model)


@pytest.mark.parametrize("stem", ["retinanet", "maskrcnn"])
def test_legacy_detector_files_name_their_labels_by_id(stem):
    """Detector files of 0.1.0 have no ``class_names`` or ``category_ids``: they load without them, and eval and
    predict name each label by its id and take it as its category id; names given at load time are kept."""
    import spinenet
    from spinenet.tasks.inference import load_trained

    trained = load_trained(LEGACY / f"{stem}.safetensors", "cpu")
    count = trained.model.num_classes
    assert (trained.model.class_names, trained.model.category_ids, trained.class_names) == (None, None, None)
    assert trained.classes == [str(i) for i in range(count)] and trained.category_ids == list(range(count))
    names = [f"c{i}" for i in range(count)]
    named = spinenet.load_weights(LEGACY / f"{stem}.safetensors", class_names=names)
    assert named.class_names == names
    check(stem, named)
