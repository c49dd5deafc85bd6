"""`spinenet convert`: every parity fixture through the CLI, weight files that rebuild their model, fine-tuning loads."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest
import torch

import spinenet
from spinenet.cli import main
from spinenet.convert.load import apply_tf_weights
from spinenet.convert.tf_checkpoint import TFCheckpoint
from spinenet.convert.weights import read_weights
from spinenet.models import create_classifier, create_detector

from conftest import assert_parity

TINY = ["--set", "filter_size_scale=0.125", "--set", "endpoints_num_filters=32", "--set", "resample_alpha=0.5"]
# fixture -> (checkpoint file, CLI arguments); activation and BN epsilon are read from the fixture's meta.json
CASES = {
    "tpu_spinenet49_tiny_backbone": ("model.ckpt", ["--source", "tpu", "--model", "spinenet49", *TINY]),
    "mg_spinenet49_tiny_backbone": ("ckpt", ["--source", "model_garden", "--model", "spinenet49", *TINY]),
    "mg_spinenet49_tiny_swish_repeats": ("ckpt", ["--source", "model_garden", "--model", "spinenet49", *TINY,
                                                  "--set", "block_repeats=2"]),
    "mg_spinenet_mobile49xs_backbone": ("ckpt", ["--source", "model_garden", "--model", "spinenet_mobile49xs"]),
    "mg_retinanet_spinenet49_tiny": ("ckpt", ["--source", "model_garden", "--model", "retinanet_spinenet49",
                                              "--task", "retinanet", "--num-classes", "5", *TINY,
                                              "--set", "head_width=32", "--set", "image_size=256"]),
    "tpu_classifier_spinenet49_tiny_224": ("model.ckpt", ["--source", "tpu", "--model", "spinenet49", "--task",
                                                          "classification", "--num-classes", "10", *TINY,
                                                          "--set", "normalize=false"]),
}


def official_settings(meta: dict) -> list[str]:
    """--activation / --bn-eps as the official run used them (meta.json), so a wrong default cannot hide."""
    args = meta.get("constructor_args") or meta.get("backbone_constructor_args") or {}
    act = args.get("activation") or meta["config"]["batch_norm_activation"]["activation"]
    return ["--activation", act, "--bn-eps", str(meta["bn"]["epsilon"])]


def fixture_input(folder) -> torch.Tensor:
    return torch.from_numpy(np.load(folder / "input.npy")).permute(0, 3, 1, 2)


def check_endpoints(features: dict, folder, label: str) -> None:
    assert sorted(features) == ["3", "4", "5", "6", "7"]
    for level, tensor in features.items():
        ref = np.load(folder / f"endpoint_{level}.npy").transpose(0, 3, 1, 2)
        assert_parity(tensor.detach().numpy(), ref, f"{label} endpoint {level}")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, one_thread):
    """Each fixture converted once through the CLI: {fixture: (weights path, printed report)}."""
    from conftest import PARITY, require_shared

    require_shared(PARITY)
    out = tmp_path_factory.mktemp("weights")
    result = {}
    for name in CASES:
        ckpt, args = CASES[name]
        folder = PARITY / name
        meta = json.loads((folder / "meta.json").read_text())
        path = out / f"{name}.safetensors"
        from contextlib import redirect_stdout
        from io import StringIO

        buf = StringIO()
        with redirect_stdout(buf):
            code = main(["convert", str(folder / ckpt), *args, *official_settings(meta), "-o", str(path)])
        assert code == 0, buf.getvalue()
        result[name] = (path, buf.getvalue())
    return result


# ---------------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("fixture", sorted(CASES))
def test_cli_conversion_matches_official(fixture, converted, parity_dir):
    """Convert (CLI), rebuild from the file alone (weights=PATH), run: every output within 1e-4 of TensorFlow's."""
    folder = parity_dir(fixture)
    path, printed = converted[fixture]
    assert "0 missing; 0 shape mismatches" in printed and "0 checkpoint entries unused" in printed
    wf = read_weights(path)
    x = fixture_input(folder)
    with torch.no_grad():
        if wf.task == "backbone":
            model = spinenet.create_model(wf.config["name"], weights=str(path)).eval()
            check_endpoints(model(x), folder, fixture)
        elif wf.task == "retinanet":
            model = create_detector("retinanet_spinenet49", weights=str(path)).eval()
            features = model.backbone(x)
            check_endpoints(features, folder, fixture)
            cls, box = model.head.forward_levels(list(features.values()))
            for level, c, b in zip("34567", cls, box):
                assert_parity(c.numpy(), np.load(folder / f"cls_{level}.npy").transpose(0, 3, 1, 2), f"cls {level}")
                assert_parity(b.numpy(), np.load(folder / f"box_{level}.npy").transpose(0, 3, 1, 2), f"box {level}")
        else:
            model = create_classifier("spinenet49", weights=str(path)).eval()
            check_endpoints(model.backbone(x), folder, fixture)
            assert_parity(model(x).numpy(), np.load(folder / "logits.npy"), "logits")


def test_converted_detector_reproduces_official_detections(converted, parity_dir):
    """End to end through the eager detector (normalisation, decoding, NMS): the official 100 detections."""
    folder = parity_dir("mg_retinanet_spinenet49_tiny")
    model = create_detector("retinanet_spinenet49", weights=str(converted["mg_retinanet_spinenet49_tiny"][0])).eval()
    mean = torch.tensor(model.transform.image_mean).view(3, 1, 1)
    std = torch.tensor(model.transform.image_std).view(3, 1, 1)
    image = fixture_input(folder)[0] * std + mean  # the model normalises; the fixture fed normalised noise
    with torch.no_grad():
        (det,) = model([image])
    ref_boxes = np.load(folder / "detection_boxes.npy")[0][:, [1, 0, 3, 2]]  # yxyx -> xyxy
    ref_scores = np.load(folder / "detection_scores.npy")[0]
    assert_parity(det["scores"].numpy(), ref_scores, "detection scores")
    assert_parity(det["boxes"].numpy(), ref_boxes, "detection boxes")
    assert det["labels"].tolist() == np.load(folder / "detection_classes.npy")[0].tolist()


def test_metadata_holds_the_full_configuration(converted):
    wf = read_weights(converted["mg_retinanet_spinenet49_tiny"][0])
    assert wf.task == "retinanet"
    cfg = wf.config
    assert cfg["num_classes"] == 5 and cfg["image_size"] == 256
    assert cfg["head"] == {"num_convs": 4, "num_filters": 32, "separable": False, "activation": "relu",
                           "bn_eps": 1e-3, "bn_momentum": 0.01}
    assert cfg["backbone"]["flavor"] == "model_garden"
    assert cfg["backbone"]["scaling"]["filter_size_scale"] == 0.125
    assert cfg["backbone"]["architecture"]["blocks"]  # the architecture itself, not a name
    assert wf.provenance["mapped"] == 830 and wf.provenance["source"] == "model_garden"
    # every state tensor but BN counters came from the checkpoint
    assert wf.provenance["mapped"] == sum(1 for k in wf.state if not k.endswith("num_batches_tracked"))
    cls = read_weights(converted["tpu_classifier_spinenet49_tiny_224"][0]).config
    assert cls["num_classes"] == 10 and cls["backbone"]["bn_eps"] == 1e-5 and cls["backbone"]["activation"] == "swish"
    assert cls["normalize"] is None


# ------------------------------------------------------------------------------------------ failures, inputs
def test_missing_tensors_or_shape_mismatch_write_nothing(tmp_path, parity_dir, capsys):
    folder = parity_dir("tpu_spinenet49_tiny_backbone")
    base = ["convert", str(folder / "model.ckpt"), "--source", "tpu", "--model", "spinenet49", *TINY]
    out = tmp_path / "x.safetensors"
    assert main([*base, "--set", "block_repeats=2", "-o", str(out)]) == 2  # the model needs tensors the file lacks
    err = capsys.readouterr().err
    assert "missing" in err and "sub_policy" in err and not out.exists()
    assert main(["convert", str(folder / "model.ckpt"), "--source", "tpu", "--model", "spinenet49",
                 "--set", "filter_size_scale=0.125", "--set", "resample_alpha=0.5", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 shape mismatches" not in err and "mismatch: spinenet/" in err and not out.exists()
    assert main([*base, "--source", "model_garden", "-o", str(out)]) == 2  # wrong source: no such keys
    assert "missing" in capsys.readouterr().err and not out.exists()
    assert main(["convert", str(tmp_path / "nope.ckpt"), "--source", "tpu", "--model", "spinenet49",
                 "-o", str(out)]) == 2
    assert "nope.ckpt" in capsys.readouterr().err


def test_failed_load_leaves_the_model_untouched(parity_dir):
    """All or nothing at the API level too: a gap raises before any tensor is copied."""
    folder = parity_dir("tpu_spinenet49_tiny_backbone")
    model = spinenet.create_model("spinenet49", filter_size_scale=0.125, endpoints_num_filters=32, resample_alpha=0.5,
                                  block_repeats=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from spinenet.convert.mapping import tpu_backbone_map

    with pytest.raises(ValueError, match="missing"):
        apply_tf_weights(model, folder / "model.ckpt", tpu_backbone_map(model))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_tar_gz_input_gives_the_same_weights(tmp_path, converted, parity_dir, capsys):
    folder = parity_dir("tpu_spinenet49_tiny_backbone")
    archive = tmp_path / "spinenet-tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
            tar.add(folder / f, arcname=f"spinenet-tiny/{f}")
    out = tmp_path / "from_tar.safetensors"
    _, args = CASES["tpu_spinenet49_tiny_backbone"]
    assert main(["convert", str(archive), *args, "--activation", "relu", "-o", str(out)]) == 0
    assert "spinenet-tiny.tar.gz" in capsys.readouterr().out
    a, b = read_weights(out).state, read_weights(converted["tpu_spinenet49_tiny_backbone"][0]).state
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar")
    assert main(["convert", str(bad), *args, "-o", str(tmp_path / "y.safetensors")]) == 2
    assert "bad.tar.gz" in capsys.readouterr().err


def test_backbone_from_a_detector_checkpoint_reports_the_head_unused(tmp_path, parity_dir, capsys):
    folder = parity_dir("mg_retinanet_spinenet49_tiny")
    out = tmp_path / "bb.safetensors"
    assert main(["convert", str(folder / "ckpt"), "--source", "model_garden", "--model", "spinenet49", *TINY,
                 "--activation", "relu", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    num_head = sum(1 for line in (folder / "keys.tsv").read_text().splitlines() if line.startswith("head/"))
    assert f"{num_head} checkpoint entries unused" in printed and "unused: head/" in printed
    model = spinenet.create_model("spinenet49", weights=str(out)).eval()
    with torch.no_grad():
        check_endpoints(model(fixture_input(folder)), folder, "backbone of the RetinaNet checkpoint")


# --------------------------------------------------------------------------------- weights=PATH and fine-tuning
def test_backbone_extraction_from_detector_and_classifier_files(converted, parity_dir):
    for fixture in ("mg_retinanet_spinenet49_tiny", "tpu_classifier_spinenet49_tiny_224"):
        folder = parity_dir(fixture)
        model = spinenet.create_model("spinenet49", weights=str(converted[fixture][0])).eval()
        assert any(k.startswith("head.") for k in model.weights_report.unused)
        with torch.no_grad():
            check_endpoints(model(fixture_input(folder)), folder, f"backbone of {fixture}")


def test_fine_tune_load_into_another_class_count(converted):
    path = converted["mg_retinanet_spinenet49_tiny"][0]
    saved = read_weights(path).state
    det = create_detector("retinanet_spinenet49", weights=str(path), num_classes=3)
    report = det.weights_report
    assert sorted(report.reinitialised) == ["head.classifier.bias", "head.classifier.weight"]
    assert det.config["num_classes"] == 3 and det.head.classifier.weight.shape[0] == 9 * 3
    state = det.state_dict()
    kept = [k for k in state if not k.startswith("head.classifier.")]
    assert all(torch.equal(state[k], saved[k]) for k in kept)  # backbone, towers, BN, box predictor
    assert torch.allclose(det.head.classifier.bias, torch.full_like(det.head.classifier.bias, -4.59512), atol=1e-4)

    cls_path = converted["tpu_classifier_spinenet49_tiny_224"][0]
    clf = create_classifier("spinenet49", weights=str(cls_path), num_classes=4, class_names=["a", "b", "c", "d"])
    assert sorted(clf.weights_report.reinitialised) == ["head.fc.bias", "head.fc.weight"]
    assert clf.class_names == ["a", "b", "c", "d"] and clf.config["normalize"] is None
    # a classifier's backbone seeding a detector, head fresh and reported
    seeded = create_detector("retinanet_spinenet49", weights=str(cls_path), num_classes=2, image_size=224)
    assert seeded.weights_report.fresh and all(k.startswith("head.") for k in seeded.weights_report.fresh)
    assert seeded.config["backbone"]["bn_eps"] == 1e-5


def test_mismatched_requests_are_refused(converted, tmp_path):
    path = str(converted["tpu_spinenet49_tiny_backbone"][0])
    with pytest.raises(ValueError, match="activation='relu'.*activation='swish'"):
        spinenet.create_model("spinenet49", weights=path, activation="swish")
    with pytest.raises(ValueError, match="filter_size_scale"):
        spinenet.create_model("spinenet49", weights=path, filter_size_scale=0.25)
    with pytest.raises(ValueError, match="'spinenet49' backbone, not 'spinenet96'"):
        spinenet.create_model("spinenet96", weights=path)
    # training-only settings may differ
    model = spinenet.create_model("spinenet49", weights=path, stochastic_depth_rate=0.1, bn_momentum=0.1)
    assert model.config["stochastic_depth_rate"] == 0.1
    det_path = str(converted["mg_retinanet_spinenet49_tiny"][0])
    with pytest.raises(ValueError, match="head_width=32"):
        create_detector("retinanet_spinenet49", weights=det_path, head_width=64)
    with pytest.raises(ValueError, match="spinenet49"):
        create_detector("retinanet_spinenet96", weights=det_path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        spinenet.create_model("spinenet49", weights=str(tmp_path / "missing.safetensors"))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="format"):
        spinenet.create_model("spinenet49", weights=str(tmp_path / "plain.safetensors"))


def test_presets_fill_every_setting(tmp_path):
    from spinenet.convert.api import convert_checkpoint
    from spinenet.convert.presets import PRESETS, SEPARABLE_GAP, get_preset

    assert len(PRESETS) >= 27
    p = get_preset("spinenet-49-best")
    assert (p.activation, p.bn_eps, p.bn_momentum, p.num_classes, p.source) == ("swish", 1e-4, 0.003, 91, "tpu")
    assert get_preset("spinenet-49").activation == "relu"
    assert get_preset("spinenet-49-imagenet").bn_eps == 1e-5
    assert get_preset("maskrcnn-spinenet-190").activation == "swish"
    assert get_preset("mg-spinenet49mobile").activation == "hard_swish"
    mbconv = get_preset("spinenetmbconv-49-best")  # TF1 mobile: backbone checked, its separable head not
    assert mbconv.supported and "tpu-mbconv-backbone" in mbconv.checks and SEPARABLE_GAP in mbconv.gaps
    with pytest.raises(ValueError, match="unknown preset"):
        convert_checkpoint(tmp_path / "x", tmp_path / "y.safetensors", preset="spinenet-50")


def test_coco_detectors_name_the_91_official_labels():
    """Google's COCO detectors predict 91 labels, label = COCO category id (0 the background, 1 person, ..., 90
    toothbrush; the ids COCO leaves unused are "N/A"): a converted detector of 91 labels, and the registry's
    default one, names them so; another class count names none."""
    from spinenet.convert.api import build_model

    tiny = {"filter_size_scale": 0.125, "endpoints_num_filters": 16, "head_width": 16}
    for task, name in (("retinanet", "retinanet_spinenet49s"), ("maskrcnn", "maskrcnn_spinenet49s")):
        config = build_model(task, name, "tpu", {"num_classes": 91, **tiny}).to_config()
        names = config["class_names"]
        assert len(names) == 91 and config["category_ids"] is None
        assert (names[0], names[1], names[3], names[11], names[13], names[27], names[90]) == (
            "__background__", "person", "car", "fire hydrant", "stop sign", "backpack", "toothbrush")
        assert [i for i, n in enumerate(names) if n == "N/A"] == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
        assert spinenet.create_model(name, **tiny).class_names == names
        assert build_model(task, name, "tpu", {"num_classes": 3, **tiny}).to_config()["class_names"] is None
        given = build_model(task, name, "tpu", {"num_classes": 3, "class_names": ["bg", "a", "b"], **tiny})
        assert given.to_config()["class_names"] == ["bg", "a", "b"]


# ----------------------------------------------------------------------------------- TF1 RetinaNet anchor order
class DictCheckpoint(TFCheckpoint):
    """An in-memory stand-in for a TF1 checkpoint (name -> numpy array)."""

    def __init__(self, arrays: dict) -> None:  # noqa: D107 - no files to open
        self.arrays = arrays

    @property
    def prefix(self) -> str:
        return "<memory>"

    def keys(self) -> list[str]:
        return sorted(self.arrays)

    def __contains__(self, key: object) -> bool:
        return key in self.arrays

    def read(self, key: str, *, verify: bool | None = None):
        return self.arrays[key]


#: TF layout of each of our tensors, the inverse of ``spinenet.convert.load.TRANSFORMS``.
TO_TF = {"conv": lambda a: a.transpose(2, 3, 1, 0), "depthwise": lambda a: a.transpose(2, 3, 0, 1),
         "copy": lambda a: a}


def tf_arrays(model: torch.nn.Module, maps: list) -> dict:
    """``{checkpoint key: array in TF layout}`` for a model written out under the names of ``maps``."""
    state = model.state_dict()
    return {m.tf_key: np.ascontiguousarray(TO_TF[m.transform](state[m.torch_key].numpy())) for m in maps}


def write_tf_checkpoint(prefix, arrays: dict):
    """A one-shard TF "V2" checkpoint on disk (the test-only bundle writer of test_tf_checkpoint.py)."""
    from test_tf_checkpoint import _numeric_entry, write_bundle

    prefix.parent.mkdir(parents=True, exist_ok=True)
    return write_bundle(prefix, {k: _numeric_entry(np.asarray(v)) for k, v in arrays.items()})


def test_tpu_retinanet_anchor_order_is_permuted_to_ours():
    """A detector whose anchors use the TF1 order (1, 2, 0.5), written under TF1 names, converts into ours
    (0.5, 1, 2) with identical detections: the predictor channels move with their anchors, box order kept."""
    from spinenet.convert.detection_mapping import tpu_retinanet_map
    from spinenet.models import create_detector_from_config

    torch.manual_seed(0)
    kwargs = dict(num_classes=4, image_size=128, filter_size_scale=0.125, endpoints_num_filters=16,
                  resample_alpha=0.5, head_width=16, activation="relu")
    ours = create_detector("retinanet_spinenet49", **kwargs).eval()
    config = json.loads(json.dumps(ours.config))
    config["anchors"]["aspect_ratios"] = [1.0, 2.0, 0.5]
    theirs = create_detector_from_config(config).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.1)
        theirs.head.box_regressor.weight.mul_(0.3)
    maps = tpu_retinanet_map(theirs)  # TF1 order on both sides: identity permutation
    assert all(m.channel_order is None or list(m.channel_order) == sorted(m.channel_order) for m in maps)
    arrays = tf_arrays(theirs, maps)
    assert "retinanet/class_net/class-0-3/gamma" in arrays and "retinanet/box_net/box-predict/kernel" in arrays
    report = apply_tf_weights(ours, DictCheckpoint(arrays), tpu_retinanet_map(ours))
    assert not report.missing and len(report.mapped) == len(maps)
    image = torch.rand(3, 128, 128)
    ours.score_thresh = theirs.score_thresh = 0.3
    with torch.no_grad():
        (a,), (b,) = ours([image]), theirs([image])
    assert len(a["scores"]) > 5 and len(a["scores"]) == len(b["scores"])
    for box, score, label in zip(a["boxes"], a["scores"], a["labels"]):  # same detection set (rows may tie)
        same = ((b["scores"] - score).abs() < 1e-6) & (b["labels"] == label) & \
            ((b["boxes"] - box).abs().amax(dim=1) < 1e-3)
        assert same.any(), (box, score, label)


# ------------------------------------------------------------------------------ TF1 SpineNet-Mobile (spinenet_mbconv)
def test_tpu_mobile_names_carry_the_official_mobile_weights(tmp_path, parity_dir, capsys, one_thread):
    """The official Model Garden 49XS weights, stored under our TF1 ``spinenet_mbconv/`` names (each array as the
    official checkpoint holds it, so every TF1 layout is the official one), convert through the CLI with
    ``--source tpu`` and reproduce the official endpoints. Checks the TF1 map's bijection and layouts on real
    weights of another scaling (49XS) than the TF1 fixture's (tests/test_convert_tpu.py)."""
    from spinenet.convert.mapping import mg_backbone_map, tpu_backbone_map
    from spinenet.profile import on_meta

    folder = parity_dir("mg_spinenet_mobile49xs_backbone")
    meta = json.loads((folder / "meta.json").read_text())
    skeleton = on_meta(lambda: spinenet.create_model("spinenet_mobile49xs", flavor="model_garden"))
    official = TFCheckpoint(folder / "ckpt")
    mg = {m.torch_key: m.tf_key for m in mg_backbone_map(skeleton)}
    arrays = {m.tf_key: official.read(mg[m.torch_key]) for m in tpu_backbone_map(skeleton)}
    assert len(arrays) == len(mg) and all(k.startswith("spinenet_mbconv/") for k in arrays)
    prefix = write_tf_checkpoint(tmp_path / "tf1" / "model.ckpt", {**arrays, "global_step": np.array(7, np.int64)})
    out = tmp_path / "mobile.safetensors"
    assert main(["convert", str(prefix), "--source", "tpu", "--model", "spinenet_mobile49xs", "--set",
                 "flavor=model_garden", *official_settings(meta), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"mapped {len(arrays)} tensors; 0 checkpoint entries unused; 0 missing; 0 shape mismatches" in printed
    model = spinenet.create_model("spinenet_mobile49xs", weights=str(out)).eval()
    with torch.no_grad():
        check_endpoints(model(fixture_input(folder)), folder, "49XS through the TF1 mobile names")


def test_tpu_mobile_preset_converts_a_tf1_layout_retinanet(tmp_path, capsys, one_thread):
    """``--preset spinenetmbconv-49-best`` on a TF1-layout SpineNet-Mobile-49 RetinaNet (backbone under
    ``spinenet_mbconv/``, separable head under ``retinanet/`` with the TF1 anchor order (1, 2, 0.5), optimizer
    slots): every tensor lands, backbone and towers are copied exactly and the detections equal the source's."""
    from spinenet.convert.detection_mapping import tpu_retinanet_map
    from spinenet.convert.presets import get_preset
    from spinenet.models import create_detector_from_config

    preset = get_preset("spinenetmbconv-49-best")
    torch.manual_seed(0)
    ours_like = create_detector(preset.model, num_classes=preset.num_classes, activation=preset.activation,
                                bn_eps=preset.bn_eps, flavor="tpu")
    config = json.loads(json.dumps(ours_like.config))
    config["anchors"]["aspect_ratios"] = [1.0, 2.0, 0.5]
    config["postprocess"]["box_decoding"] = "tf1"  # the TF1 decoding the converted file selects
    theirs = create_detector_from_config(config).eval()
    with torch.no_grad():  # BN statistics and affine terms away from their initial values, so each one matters
        for name, t in theirs.state_dict().items():
            if name.endswith(("running_var", "bn.weight")) or "_norms." in name and name.endswith("weight"):
                t.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", "bn.bias")) or "_norms." in name and name.endswith("bias"):
                t.normal_(0.0, 0.1)
        # predictors: a distinct prior per (anchor, class) channel, so a misplaced channel changes the detections
        theirs.head.classifier.pointwise.weight.normal_(0.0, 0.3)
        theirs.head.classifier.pointwise.bias.normal_(-4.0, 1.0)
        theirs.head.box_regressor.pointwise.weight.normal_(0.0, 0.02)
        theirs.head.box_regressor.pointwise.bias.normal_(0.0, 0.1)
    maps = tpu_retinanet_map(theirs)
    arrays = tf_arrays(theirs, maps)
    assert sum(k.startswith("spinenet_mbconv/") for k in arrays) == 667  # the backbone (test_mapping derives 667)
    assert "retinanet/class_net/class-predict/depthwise_kernel" in arrays  # separable predictor
    slots = {f"{k}/Momentum": v for k, v in list(arrays.items())[:3]}
    prefix = write_tf_checkpoint(tmp_path / "spinenetmbconv-49-best" / "model.ckpt-277800",
                                 {**arrays, **slots, "global_step": np.array(277800, np.int64)})
    out = tmp_path / "mobile-retinanet.safetensors"
    assert main(["convert", str(prefix.parent), "--preset", "spinenetmbconv-49-best", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"mapped {len(maps)} tensors; 3 checkpoint entries unused" in printed and "3 optimizer" in printed
    wf = read_weights(out)
    assert wf.config["backbone"]["flavor"] == "tpu" and wf.config["head"]["separable"]
    assert wf.config["backbone"]["activation"] == "swish" and wf.config["backbone"]["bn_eps"] == 1e-4
    assert wf.provenance["preset"] == "spinenetmbconv-49-best"
    assert wf.config["postprocess"]["box_decoding"] == "tf1"
    assert len(wf.config["class_names"]) == 91 and wf.config["class_names"][1] == "person"  # COCO's label names
    source = theirs.state_dict()
    unpermuted = [k for k in source if not k.startswith(("head.classifier.", "head.box_regressor."))
                  and not k.endswith("num_batches_tracked")]  # all but the two predictors (3 tensors each)
    assert len(unpermuted) == len(maps) - 6 and all(torch.equal(wf.state[k], source[k]) for k in unpermuted)
    converted = create_detector(preset.model, weights=str(out)).eval()
    assert list(converted.anchor_generator.aspect_ratios) == [0.5, 1.0, 2.0]
    converted.score_thresh = theirs.score_thresh = 0.2
    converted.detections_per_img = theirs.detections_per_img = 50
    image = torch.rand(3, 384, 384)
    with torch.no_grad():
        (a,), (b,) = converted([image]), theirs([image])
    # the winners share one class (the towers vary little over a random image), but their boxes come from the
    # anchor and box channels the permutation placed: a misplaced channel moves them
    assert len(a["scores"]) == len(b["scores"]) == 50
    for box, score, label in zip(a["boxes"], a["scores"], a["labels"]):
        same = ((b["scores"] - score).abs() < 1e-5) & (b["labels"] == label) & \
            ((b["boxes"] - box).abs().amax(dim=1) < 1e-3)
        assert same.any(), (box, score, label)


# ------------------------------------------------------------------------------------- engine: init_weights=PATH
def test_train_starts_from_converted_weights(converted, tmp_path, capsys):
    path = converted["mg_retinanet_spinenet49_tiny"][0]
    args = ["train", "--model", "retinanet_spinenet49", "--data", "trees:soap", "--device", "cpu", "--recipe", "smoke",
            "steps=1", "batch_size=2", "image_size=128", "log_every=1", f"init_weights={path}",
            "model.filter_size_scale=0.125", "model.endpoints_num_filters=32", "model.resample_alpha=0.5",
            "model.head_width=32"]
    assert main([*args, "model.flavor=model_garden", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "init_weights: loaded" in out and "re-initialised 2" in out and "head.classifier.weight" in out
    # a model that does not match the file is refused with the field to fix
    assert main([*args, "--out", str(tmp_path / "run2")]) == 2  # default tpu flavour
    assert "flavor='model_garden'" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_docs_list_every_preset():
    """docs/weights.md stays true to the code: each preset has a row with its status (what CI checks, what not)."""
    from pathlib import Path

    from spinenet.convert.presets import CHECKS, PRESETS, status

    text = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    for key, check in CHECKS.items():
        assert f"| `{key}` | {check.part} | {check.what} |" in text, key
    for p in PRESETS.values():
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{p.name}` |")]
        assert row.split("|")[-2].strip() == status(p) and p.url in row, row
