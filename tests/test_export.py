"""`spinenet export`: ONNX (onnxruntime) and torch.export round trips of a converted backbone and detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spinenet
from spinenet.cli import main
from spinenet.convert.api import convert_checkpoint
from spinenet.export import DetectorExport, check_input
from spinenet.models import create_detector

from conftest import PARITY, assert_parity, require_shared

TINY = {"filter_size_scale": 0.125, "endpoints_num_filters": 32, "resample_alpha": 0.5}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weights(tmp_path_factory, one_thread):
    """The tiny TF1 backbone and the Model Garden RetinaNet fixtures, converted (their official outputs known)."""
    require_shared(PARITY)
    out = tmp_path_factory.mktemp("export")
    backbone = convert_checkpoint(PARITY / "tpu_spinenet49_tiny_backbone" / "model.ckpt", out / "bb.safetensors",
                                  source="tpu", model="spinenet49", activation="relu", overrides=TINY).path
    detector = convert_checkpoint(PARITY / "mg_retinanet_spinenet49_tiny" / "ckpt", out / "det.safetensors",
                                  source="model_garden", model="retinanet_spinenet49", task="retinanet",
                                  num_classes=5, activation="relu",
                                  overrides={**TINY, "head_width": 32, "image_size": 256}).path
    return {"backbone": backbone, "detector": detector, "dir": out}


def fixture_input(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(PARITY / name / "input.npy")).permute(0, 3, 1, 2)


def run_onnx(path, x: torch.Tensor) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    return session.run(None, {"images": x.numpy()})


def test_backbone_round_trips(weights, capsys):
    """The tpu-flavour backbone at its fixed 256x256, batch 3 (dynamic): onnxruntime and the exported program
    match PyTorch to 1e-4 per tensor, and on the fixture input they still match TensorFlow's endpoints."""
    onnx_path, pt2_path = weights["dir"] / "bb.onnx", weights["dir"] / "bb.pt2"
    assert main(["export", str(weights["backbone"]), "--size", "256x256", "-o", str(onnx_path)]) == 0
    assert "backbone at 256x256 (batch dynamic)" in capsys.readouterr().out
    assert main(["export", str(weights["backbone"]), "--format", "exported-program", "--size", "256",
                 "-o", str(pt2_path)]) == 0
    model = spinenet.create_model("spinenet49", weights=str(weights["backbone"])).eval()
    x = torch.cat([fixture_input("tpu_spinenet49_tiny_backbone"), torch.randn(2, 3, 256, 256)])
    with torch.no_grad():
        eager = list(model(x).values())
        program = torch.export.load(str(pt2_path)).module()
        exported = program(x)
    onnx_out = run_onnx(onnx_path, x)
    for level, ref, ort_out, ep_out in zip("34567", eager, onnx_out, exported):
        assert_parity(ort_out, ref.numpy(), f"onnxruntime p{level}")
        assert_parity(ep_out.numpy(), ref.numpy(), f"exported program p{level}")
        official = np.load(PARITY / "tpu_spinenet49_tiny_backbone" / f"endpoint_{level}.npy").transpose(0, 3, 1, 2)
        assert_parity(ort_out[:1], official, f"onnxruntime p{level} vs TensorFlow")
    # another input size is refused: the size is part of the export
    wrong = torch.randn(1, 3, 224, 256)
    with pytest.raises(Exception, match="invalid dimensions|224"):
        run_onnx(onnx_path, wrong)
    with pytest.raises(Exception, match="256"):
        program(wrong)


def _matched(boxes, scores, labels, ref_boxes, ref_scores, ref_labels) -> None:
    """Same detections, matched by label, score and box (rows whose scores tie may swap)."""
    n = int((scores > 0).sum())
    assert n == len(ref_scores)
    box_tol = 1e-4 * float(np.abs(ref_boxes).max())
    for box, score, label in zip(ref_boxes, ref_scores, ref_labels):
        same = (np.abs(scores[:n] - score) <= 1e-4 * float(np.abs(ref_scores).max())) & (labels[:n] == label) & \
            (np.abs(boxes[:n] - box).max(axis=1) <= box_tol)
        assert same.any(), (box, score, label)


def test_detector_round_trips(weights, capsys):
    """Backbone + head + decoding + NMS in one graph: onnxruntime and the exported program give the eager
    detector's boxes, scores and labels (batch 2, dynamic), and the official detections on the fixture input."""
    onnx_path, pt2_path = weights["dir"] / "det.onnx", weights["dir"] / "det.pt2"
    assert main(["export", str(weights["detector"]), "-o", str(onnx_path)]) == 0  # size from the file: 256
    assert "retinanet at 256x256" in capsys.readouterr().out
    assert main(["export", str(weights["detector"]), "--format", "exported-program", "-o", str(pt2_path)]) == 0
    model = create_detector("retinanet_spinenet49", weights=str(weights["detector"])).eval()
    mean = torch.tensor(model.transform.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.transform.image_std).view(1, 3, 1, 1)
    noise = fixture_input("mg_retinanet_spinenet49_tiny") * std + mean  # what the fixture fed, before normalising
    x = torch.cat([noise, noise.flip(-1)])
    with torch.no_grad():
        eager = model(list(x))
        exported = [t.numpy() for t in torch.export.load(str(pt2_path)).module()(x)]
    onnx_out = run_onnx(onnx_path, x)
    assert onnx_out[2].dtype == np.int64 and onnx_out[0].shape == (2, 100, 4)
    for outputs in (onnx_out, exported):
        for i in range(2):
            _matched(outputs[0][i], outputs[1][i], outputs[2][i], eager[i]["boxes"].numpy(),
                     eager[i]["scores"].numpy(), eager[i]["labels"].numpy())
    folder = PARITY / "mg_retinanet_spinenet49_tiny"
    _matched(onnx_out[0][0], onnx_out[1][0], onnx_out[2][0],
             np.load(folder / "detection_boxes.npy")[0][:, [1, 0, 3, 2]], np.load(folder / "detection_scores.npy")[0],
             np.load(folder / "detection_classes.npy")[0])


def test_selection_matches_eager_with_a_binding_threshold(weights):
    """The static-shape selection (top-k candidates, one NMS over offset groups) against the eager model's and the
    official "extra" set (threshold 0.62, up to 1000 detections: 294 found), so padding rows appear (score 0,
    label 0, zero box)."""
    model = create_detector("retinanet_spinenet49", weights=str(weights["detector"]), score_thresh=0.62,
                            detections_per_img=1000).eval()
    wrapper = DetectorExport(model, (256, 256), pre_nms_top_k=5000)
    mean = torch.tensor(model.transform.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.transform.image_std).view(1, 3, 1, 1)
    x = fixture_input("mg_retinanet_spinenet49_tiny") * std + mean
    x = torch.cat([x, torch.rand(1, 3, 256, 256)])
    with torch.no_grad():
        boxes, scores, labels = wrapper(x)
        eager = model(list(x))
    for i in range(2):
        n = len(eager[i]["scores"])
        assert n < 1000 and (scores[i, n:] == 0).all() and (labels[i, n:] == 0).all() and (boxes[i, n:] == 0).all()
        _matched(boxes[i].numpy(), scores[i].numpy(), labels[i].numpy(), eager[i]["boxes"].numpy(),
                 eager[i]["scores"].numpy(), eager[i]["labels"].numpy())
    folder = PARITY / "mg_retinanet_spinenet49_tiny"
    _matched(boxes[0].numpy(), scores[0].numpy(), labels[0].numpy(),
             np.load(folder / "detection_boxes_extra.npy")[0, :294][:, [1, 0, 3, 2]],
             np.load(folder / "detection_scores_extra.npy")[0, :294], np.load(folder / "detection_classes_extra.npy")[0, :294])
    assert int(np.load(folder / "num_detections_extra.npy")[0]) == 294
    with pytest.raises(ValueError, match=r"\[N, 3, 256, 256\].*--size"):
        check_input(torch.rand(1, 3, 128, 256), (256, 256))


def test_export_user_errors(weights, tmp_path, capsys):
    assert main(["export", str(weights["detector"]), "--size", "200x256", "-o", str(tmp_path / "d.onnx")]) == 2
    assert "multiples of 128" in capsys.readouterr().err
    assert main(["export", "spinenet_nope", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "spinenet_nope" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
