"""SpineNet classifiers (spinenet.models.classification): sizes, MACs, official TF1 parity, timm contract, config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spinenet.convert.classification_mapping import load_tf_classifier, tpu_classifier_map
from spinenet.data.imagenet_classes import (imagenet_1001_names, imagenet_class_names, imagenet_to_label_1001,
                                            label_1001_to_imagenet)
from spinenet.models.classification import (SpineNetClassifier, aggregate_levels, create_classifier,
                                            create_classifier_from_config, list_classifiers)
from spinenet.profile import count_macs, count_params, on_meta

from conftest import assert_parity

FIXTURE = "tpu_classifier_spinenet49_tiny_224"
# The fixture's backbone scaling (README table); the graph is the full SpineNet-49 one.
FIXTURE_SCALING = {"filter_size_scale": 0.125, "endpoints_num_filters": 32, "resample_alpha": 0.5, "block_repeats": 1}
# Tiny widths for every other forward pass.
TINY = {"filter_size_scale": 0.125, "endpoints_num_filters": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(num_classes: int = 10, **kwargs) -> SpineNetClassifier:
    torch.manual_seed(0)
    return create_classifier("classifier_spinenet49", num_classes, **{**TINY, **kwargs})


# ------------------------------------------------------------------------------------------ table and sizes
# Spec 3.13 (MEAS, official TF1 classification models, 1001 classes, trainable parameters).
OFFICIAL_PARAMS = {"spinenet49": 22_088_745, "spinenet96": 36_520_233, "spinenet143": 60_504_873,
                   "spinenet190": 127_101_177}
# Spec 4.5: TF profiler float ops of the frozen inference graph / 2 at 224x224, backbone + head.
OFFICIAL_GMACS = {"spinenet49": 7.03 / 2, "spinenet96": 11.57 / 2, "spinenet143": 18.36 / 2, "spinenet190": 38.58 / 2}


def test_table_lists_every_classifier():
    backbones = ["spinenet49s", "spinenet49", "spinenet96", "spinenet143", "spinenet190", "spinenet_mobile49",
                 "spinenet_mobile49s", "spinenet_mobile49xs"]
    assert list_classifiers() == [f"classifier_{b}" for b in backbones]
    assert list_classifiers("*mobile*") == [f"classifier_{b}" for b in backbones[5:]]


def test_the_backbone_name_of_the_previous_release_still_builds_a_classifier():
    with pytest.warns(DeprecationWarning, match="'spinenet49' is deprecated; use 'classifier_spinenet49'"):
        model = on_meta(lambda: create_classifier("spinenet49", num_classes=10))
    assert model.config["name"] == "classifier_spinenet49" and model.task == "classification"


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_equals_official(name):
    model = on_meta(lambda: create_classifier(f"classifier_{name}", num_classes=1001))
    assert count_params(model) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize("name", sorted(OFFICIAL_GMACS))
def test_macs_match_official_flops(name):
    # Our count: conv + linear multiply-adds of backbone and head (the 1001-way dense included); BN, swish,
    # pooling, resizes and additions are not counted, the profiler counts them. Measured: 1.05% / 1.06% /
    # 1.01% / 0.92% below spec 4.5 for 49 / 96 / 143 / 190 (3.478 / 5.724 / 9.087 / 19.112 G), i.e. on the
    # TPU-zoo's 3.5 / 5.7 / 9.1 / 19.1 B.
    model = on_meta(lambda: create_classifier(f"classifier_{name}", num_classes=1001))
    gmacs = count_macs(model, 224) / 1e9
    assert abs(gmacs / OFFICIAL_GMACS[name] - 1) < 0.02, gmacs
    assert gmacs < OFFICIAL_GMACS[name]  # never above: the profiler counts a superset


def test_every_classifier_builds_with_its_defaults():
    for name in list_classifiers():
        model = on_meta(lambda: create_classifier(name))
        cfg = model.config["backbone"]
        assert (cfg["activation"], cfg["bn_eps"], cfg["bn_momentum"], cfg["stochastic_depth_rate"]) == \
            ("swish", 1e-5, 0.1, 0.2), name
        assert cfg["flavor"] == ("model_garden" if "mobile" in name else "tpu")
        assert model.config["image_size"] == 224 and model.num_classes == 1001
        assert model.num_features == model.backbone.out_channels


# --------------------------------------------------------------------------------------------- official parity
def test_classifier_matches_official_tf1(parity_dir):
    folder = parity_dir(FIXTURE)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["bn"]["epsilon"] == 1e-5 and meta["head"]["num_classes"] == 10
    model = create_classifier("classifier_spinenet49", 10, **FIXTURE_SCALING, activation="swish", bn_eps=1e-5,
                              normalize=False).eval()
    report = load_tf_classifier(model, folder / "model.ckpt")  # strict: every checkpoint weight is used
    assert not report.unused and not report.missing and not report.mismatched
    assert len(report.mapped) == len(tpu_classifier_map(model)) == 652
    x = torch.from_numpy(np.load(folder / "input.npy")).permute(0, 3, 1, 2)  # NHWC -> NCHW, no normalisation
    with torch.no_grad():
        endpoints = model.backbone(x)
        logits = model(x)
    ref = np.load(folder / "logits.npy")
    err = assert_parity(logits.numpy(), ref, "logits")
    print(f"classifier parity: max|out-ref| / max|ref| = {err:.2e} (logits)")  # measured 6.0e-08
    for level, tensor in endpoints.items():
        assert_parity(tensor.numpy(), np.load(folder / f"endpoint_{level}.npy").transpose(0, 3, 1, 2),
                      f"endpoint {level}")
    assert [tuple(t.shape[-2:]) for t in endpoints.values()] == [(28, 28), (14, 14), (7, 7), (4, 4), (2, 2)]

    # The tolerance sees the head's semantics: only P7 (Model Garden's 'top') or a bilinear resize miss.
    top = model.head(endpoints["7"].mean(dim=(2, 3)))
    bilinear = endpoints["7"]
    for level in "6543":
        bilinear = F.interpolate(bilinear, size=endpoints[level].shape[-2:], mode="bilinear") + endpoints[level]
    bilinear = model.head((bilinear / 5).mean(dim=(2, 3)))
    for wrong in (top, bilinear):
        with pytest.raises(AssertionError):
            assert_parity(wrong.detach().numpy(), ref, "wrong head")


def test_checkpoint_for_another_head_is_refused(parity_dir):
    folder = parity_dir(FIXTURE)
    model = create_classifier("classifier_spinenet49", 1001, **FIXTURE_SCALING)
    before = model.head.fc.weight.clone()
    with pytest.raises(ValueError, match="classification_head/dense/kernel"):
        load_tf_classifier(model, folder / "model.ckpt")
    assert torch.equal(model.head.fc.weight, before)  # all or nothing


def test_tf1_loader_refuses_model_garden_flavour():
    model = on_meta(lambda: create_classifier("classifier_spinenet49", 10, flavor="model_garden"))
    with pytest.raises(ValueError, match="flavor='tpu'"):
        load_tf_classifier(model, "unused.ckpt")


# ------------------------------------------------------------------------------------------------ forward
def test_aggregation_is_the_tf1_top_down_sum():
    feats = {"3": torch.ones(1, 1, 7, 7), "4": torch.full((1, 1, 4, 4), 2.0), "5": torch.arange(4.0).view(1, 1, 2, 2)}
    out = aggregate_levels(feats)
    # 5 -> 4: nearest 2x2 -> 4x4 (pixel replication); 4 -> 3: 4x4 -> 7x7 with source floor(dst * 4 / 7).
    p4 = F.interpolate(feats["5"], size=(4, 4), mode="nearest") + 2.0
    src = [int(i * 4 / 7) for i in range(7)]
    expected = (p4[..., src, :][..., :, src] + 1.0) / 3
    torch.testing.assert_close(out, expected)


def test_forward_at_224_and_odd_sizes():
    model = tiny().eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 224, 224))
        odd = model(torch.rand(1, 3, 97, 131))
        pooled = model.forward_features(torch.rand(1, 3, 33, 65))
    assert logits.shape == (2, 10) and odd.shape == (1, 10) and pooled.shape == (1, 16)
    assert torch.isfinite(logits).all() and torch.isfinite(odd).all()


def test_mobile_classifier_runs_at_224():
    model = create_classifier("classifier_spinenet_mobile49xs", 7).eval()  # official 49XS widths, 0.87 M parameters
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 7)


def test_inputs_are_normalised_inside_the_model():
    model = tiny().eval()
    image = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    raw = create_classifier_from_config({**model.config, "normalize": None}).eval()
    raw.load_state_dict(model.state_dict())
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        a = model(image)  # uint8 -> /255 -> ImageNet mean/std
        b = model([image[0].float() / 255])  # list of [3, H, W] floats in [0, 1]
        c = raw((image.float() / 255 - mean) / std)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        model(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="share a size"):
        model([torch.rand(3, 64, 64), torch.rand(3, 32, 32)])


def test_training_loss_reaches_every_parameter():
    model = tiny(num_classes=4, dropout=0.2).train()
    out = model(torch.rand(2, 3, 64, 96), torch.tensor([0, 3]))
    assert set(out) == {"loss"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    with pytest.raises(ValueError, match="0..3"):
        model(torch.rand(2, 3, 64, 64), torch.tensor([0, 4]))


def test_label_smoothing_is_the_configured_one():
    model = tiny(num_classes=5, label_smoothing=0.1).eval()
    x, y = torch.rand(2, 3, 64, 64), torch.tensor([1, 2])
    with torch.no_grad():
        logits = model(x)
        loss = model(x, y)["loss"]
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, label_smoothing=0.1))


def test_reset_classifier_follows_timm():
    model = tiny()
    model.reset_classifier(3, class_names=["a", "b", "c"])
    assert model.num_classes == 3 and model.get_classifier().out_features == 3
    assert model.config["num_classes"] == 3 and model.class_names == ["a", "b", "c"]
    fc = model.get_classifier()
    assert float(fc.bias.detach().abs().max()) == 0.0 and 0.005 < float(fc.weight.detach().std()) < 0.02
    x = torch.rand(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, 3)
        assert model.decode(model(x), k=2)[0][0][0] in {"a", "b", "c"}
        model.reset_classifier(0)
        assert model(x).shape == (1, 16)  # pooled features
    assert not any(m.tf_key.startswith("classification_head") for m in tpu_classifier_map(model))
    with pytest.raises(ValueError, match="reset_classifier"):
        model(x, torch.tensor([0]))
    rebuilt = create_classifier_from_config(json.loads(json.dumps(model.config)))
    assert rebuilt.num_classes == 0 and rebuilt.get_classifier().__class__.__name__ == "Identity"


def test_config_round_trip():
    model = tiny(dropout=0.1, activation="relu", stochastic_depth_rate=0.0, class_names=list("abcdefghij"))
    config = json.loads(json.dumps(model.config))  # JSON-safe
    assert config["format"] == "spinenet-classifier/1" and config["backbone"]["activation"] == "relu"
    clone = create_classifier_from_config(config)
    assert clone.config == model.config
    clone.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match="format"):
        create_classifier_from_config({**config, "format": "spinenet-detector/1"})
    with pytest.raises(ValueError, match="missing"):
        create_classifier_from_config({"format": "spinenet-classifier/1"})


def test_user_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown classifier"):
        create_classifier("resnet50")
    with pytest.raises(ValueError, match="unknown override"):
        create_classifier("classifier_spinenet49", head_width=3)
    with pytest.raises(ValueError, match="class_names"):
        create_classifier("classifier_spinenet49", 3, class_names=["a"])
    with pytest.raises(ValueError, match="dropout"):
        create_classifier("classifier_spinenet49", 3, dropout=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        create_classifier("classifier_spinenet49", -1)


# -------------------------------------------------------------------------------------------- class names
def test_imagenet_1001_convention():
    names = imagenet_1001_names()
    assert len(names) == 1001 and names[0] == "background" and names[1:] == imagenet_class_names()
    assert names[1] == "tench" and names[1000] == "toilet tissue"
    assert label_1001_to_imagenet(1) == 0 and imagenet_to_label_1001(999) == 1000
    with pytest.raises(ValueError, match="background"):
        label_1001_to_imagenet(0)
    model = on_meta(lambda: create_classifier("classifier_spinenet49"))
    assert model.class_names == names
    logits = torch.zeros(1, 1001)
    logits[0, 2] = 10.0
    assert model.decode(logits, k=1)[0][0][0] == "goldfish"
