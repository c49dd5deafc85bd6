"""The files `spinenet export` and the weights writer leave on disk: a self-contained `.onnx` (or a visibly named
`NAME.onnx.data` beside it above the embedding limit), nothing else on success or failure, training checkpoints
accepted, an exported program that loads in a fresh process, and weights files with the umask's mode."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import spinenet.export as export_module
from spinenet.cli import main
from spinenet.convert.weights import save_weights
from spinenet.export import export

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


class TinyClassifier(nn.Module):
    """Stands in for a classifier: the file layout does not depend on the network, and this one exports in ~1 s."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.fc = nn.Linear(8, 4)

    task = "classification"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))

    def export_module(self, size: tuple[int, int], **options) -> nn.Module:
        """The model contract's export wrapper: the classifier's, on this network."""
        from spinenet.models.classification import ClassifierExport

        return ClassifierExport(self, size)


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


def test_onnx_is_one_self_contained_file(tmp_path, one_thread):
    """Below the embedding limit the weights are inside the .onnx: copied alone elsewhere it still runs."""
    torch.manual_seed(0)
    model = TinyClassifier().eval()
    out = export(model, tmp_path / "out" / "tiny.onnx", "onnx", (32, 32), task="classification")
    assert sorted(os.listdir(tmp_path / "out")) == ["tiny.onnx"]
    moved = tmp_path / "elsewhere" / "copy.onnx"
    moved.parent.mkdir()
    shutil.copy(out, moved)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(run_onnx(moved, x) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_weights_above_the_limit_go_to_a_visible_data_file(tmp_path, monkeypatch, one_thread):
    """Above the limit: NAME.onnx + NAME.onnx.data, no hidden names; the pair loads once moved together."""
    monkeypatch.setattr(export_module, "ONNX_EMBED_LIMIT", 0)
    torch.manual_seed(0)
    model = TinyClassifier().eval()
    export(model, tmp_path / "out" / "big.onnx", "onnx", (32, 32), task="classification")
    assert sorted(os.listdir(tmp_path / "out")) == ["big.onnx", "big.onnx.data"]
    assert (tmp_path / "out" / "big.onnx.data").stat().st_size >= model.conv.weight.numel() * 4  # tiny ones stay inline
    shutil.move(tmp_path / "out", tmp_path / "moved")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(run_onnx(tmp_path / "moved" / "big.onnx", x) - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("fmt,saver", [("onnx", "onnx"), ("exported-program", "export")])
def test_a_failed_export_leaves_no_file(tmp_path, monkeypatch, fmt, saver, one_thread):
    """The writer fails half-way (disk full): the error propagates and the folder holds what it held before."""

    def fail_after_writing(*args, **kwargs):
        path = Path(kwargs.get("destination") or kwargs.get("f") or args[-1])
        path.write_bytes(b"partial")
        Path(f"{path}.data").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    if saver == "onnx":
        monkeypatch.setattr(torch.onnx.ONNXProgram, "save", lambda self, destination, **kw: fail_after_writing(
            destination))
    else:
        monkeypatch.setattr(torch.export, "save", lambda program, f, **kw: fail_after_writing(f))
    (tmp_path / "keep.txt").write_text("the user's file\n")
    with pytest.raises(OSError, match="No space left"):
        export(TinyClassifier().eval(), tmp_path / "m.out", fmt, (32, 32), task="classification")
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_export_refuses_a_folder_as_output(tmp_path, capsys):
    assert main(["export", "spinenet49s", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"-o {tmp_path} is a folder" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real training run of a small RetinaNet, one step on one packaged tree tile: its final.pt."""
    out = tmp_path_factory.mktemp("run") / "run"
    code = main(["train", "--model", "retinanet_spinenet49s", "--data", "trees:yell-train[34:35]", "--recipe",
                 "smoke", "--out", str(out), "--device", "cpu", "steps=1", "model.filter_size_scale=0.125",
                 "model.endpoints_num_filters=32", "model.head_width=32"])
    assert code == 0
    return out / "checkpoints" / "final.pt"


def test_training_checkpoint_exports_and_loads_in_a_fresh_process(trained, tmp_path, one_thread):
    """`spinenet export final.pt` (a torch.save file, not safetensors) to an exported program; a new Python
    process loads it with the documented imports and gives the eager detector's boxes and scores."""
    from spinenet.engine.checkpoint import load_checkpoint
    from spinenet.export import DetectorExport
    from spinenet.models import create_detector_from_config

    pt2 = tmp_path / "det.pt2"
    assert main(["export", str(trained), "--format", "exported-program", "-o", str(pt2)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["det.pt2"]
    torch.manual_seed(1)
    x = torch.rand(2, 3, 128, 128)
    torch.save(x, tmp_path / "x.pt")
    script = ("import sys, torch, torchvision\n"  # the import docs/weights.md gives for exported detectors
              "program = torch.export.load(sys.argv[1]).module()\n"
              "torch.save(program(torch.load(sys.argv[2])), sys.argv[3])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of spinenet on the path
    run = subprocess.run([sys.executable, "-c", script, str(pt2), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    boxes, scores, labels = torch.load(tmp_path / "y.pt")
    ckpt = load_checkpoint(trained)
    detector = create_detector_from_config(ckpt["model_config"])
    detector.load_state_dict(ckpt["model"])
    with torch.no_grad():
        ref_boxes, ref_scores, ref_labels = DetectorExport(detector.eval(), (128, 128))(x)
    assert torch.equal(labels, ref_labels)
    assert (scores - ref_scores).abs().max() <= 1e-4 * ref_scores.abs().max()
    assert (boxes - ref_boxes).abs().max() <= 1e-4 * max(float(ref_boxes.abs().max()), 1.0)


def test_weights_file_mode_follows_the_umask(tmp_path):
    model = TinyClassifierWeights()
    old = os.umask(0o027)
    try:
        path = save_weights(model, tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o640  # 0666 minus the umask; safetensors alone writes 0600
    assert os.listdir(tmp_path) == ["w.safetensors"]


def TinyClassifierWeights() -> nn.Module:
    from spinenet.models import create_classifier

    return create_classifier("spinenet49s", num_classes=3, filter_size_scale=0.125, endpoints_num_filters=32)
