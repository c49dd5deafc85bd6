"""Classification through the shared engine: data (image folders, Fashion-MNIST IDX), metrics, a short real
training run with an accuracy threshold, and the CLI round trip."""

from __future__ import annotations

import gzip
import json
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spinenet.data.classification import (FashionMNIST, ImageFolder, center_crop_resize,
                                          classification_dataset_from_path, fashion_mnist_dir, random_resized_crop,
                                          read_idx)
from spinenet.tasks.classification import classification_metrics, save_confusion_matrix

HAS_FASHION = (fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz").is_file()


@pytest.fixture
def fashion():
    """Skip without the Fashion-MNIST files outside CI; under CI=true (``make setup`` installs them) fail."""
    if not HAS_FASHION:
        message = f"Fashion-MNIST is not in {fashion_mnist_dir()} (apt-get install dataset-fashion-mnist)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; under CI=true this is a failure, not a skip")
        pytest.skip(message)


def _write_folder(root: Path, classes: dict[str, list[int]], size: int = 20) -> Path:
    """Class folders of flat grey PNGs whose brightness is the given value."""
    for name, values in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k, v in enumerate(values):
            Image.fromarray(np.full((size, size + 4, 3), v, dtype=np.uint8)).save(root / name / f"{k}.png")
    return root


# ------------------------------------------------------------------------------------------------------ data
def test_image_folder_labels_follow_sorted_folders(tmp_path):
    root = _write_folder(tmp_path / "data", {"dark": [10, 20], "bright": [240]})
    (root / "bright" / "notes.txt").write_text("not an image")  # ignored: not an image extension
    ds = ImageFolder(root)
    assert ds.classes == ["bright", "dark"]
    labels = sorted(label for _, label in (ds[i] for i in range(len(ds))))
    assert labels == [0, 1, 1]
    image, label = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 20, 24) and label == 0


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "absent")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolder(tmp_path / "flat")
    root = _write_folder(tmp_path / "data", {"a": [1], "b": [2]})
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*empty holds no images"):
        ImageFolder(root)
    (root / "empty").rmdir()
    with pytest.raises(FileNotFoundError, match=r"class folder\(s\) \['c'\] missing"):
        ImageFolder(root, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\['b'\] are not among the model's classes"):
        ImageFolder(root, classes=["a"])


def test_unreadable_image_is_skipped_with_a_warning_and_counted(tmp_path):
    root = _write_folder(tmp_path / "data", {"a": [50, 60], "b": [200]})
    (root / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = ImageFolder(root)
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*0\.png"):
        image, label = ds[0]
    assert ds.stats["unreadable_images"] == 1
    assert int(image[0, 0, 0]) == 60 and label == 0  # the next readable image stands in
    assert ds.read(0) is None  # evaluation leaves it out, without warning twice
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[0]
    assert ds.stats["unreadable_images"] == 1


def _idx(path: Path, array: np.ndarray, truncate: int = 0) -> Path:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(data[:len(data) - truncate])
    return path


def test_idx_reader_and_fashion_mnist_errors(tmp_path, monkeypatch):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(_idx(tmp_path / "x.gz", images)), images)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(_idx(tmp_path / "bad.gz", images, truncate=5))
    monkeypatch.setenv("SPINENET_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        classification_dataset_from_path("fashion-mnist:test")
    with pytest.raises(ValueError, match="expected train or test"):
        classification_dataset_from_path("fashion-mnist:val")
    with pytest.raises(ValueError, match="not an integer"):
        classification_dataset_from_path("fashion-mnist:train:many")
    folder = tmp_path / "fm"
    folder.mkdir()
    _idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    _idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 9]))
    ds = FashionMNIST("test", root=folder)
    assert len(ds) == 3 and ds[2][1] == 9 and ds[0][0].shape == (3, 28, 28)


def test_fashion_mnist_files(fashion):
    test = classification_dataset_from_path("fashion-mnist:test")
    assert len(test) == 10_000 and test.classes[0] == "T-shirt/top"
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    sub = classification_dataset_from_path("fashion-mnist:train:5000")
    assert len(sub) == 5000 and torch.bincount(sub.labels, minlength=10).min() > 400


def test_crops_keep_size_and_are_seeded():
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    a = random_resized_crop(image, 32, (0.08, 1.0), torch.Generator().manual_seed(3))
    b = random_resized_crop(image, 32, (0.08, 1.0), torch.Generator().manual_seed(3))
    assert a.shape == (3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)
    # the centre crop of the full short side, at the same size, is the untouched centre square
    assert torch.equal(center_crop_resize(image, 40, 1.0), image[:, :, 10:50])
    batch = center_crop_resize(torch.stack([image, image]), 16, 0.875)
    assert torch.equal(batch[1], center_crop_resize(image, 16, 0.875))


# --------------------------------------------------------------------------------------------------- metrics
def test_metrics_and_confusion_png(tmp_path):
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 5, 4, 0, 0, 0], [0, 4, 5, 0, 0, 0], [0, 1, 2, 3, 4, 5]])
    labels = torch.tensor([0, 2, 2, 0])
    metrics, matrix = classification_metrics(logits, labels, 6)
    assert metrics["top1"] == 0.5  # rows 0 and 2
    assert metrics["top5"] == 0.75  # row 3's label 0 has the lowest logit
    assert matrix[2, 1] == 1 and matrix[2, 2] == 1 and matrix[0, 5] == 1 and matrix.sum() == 4
    path = save_confusion_matrix(matrix, list("abcdef"), tmp_path / "cm.png", title="t")
    with Image.open(path) as img:
        assert img.size[0] > 200


def test_eval_hflip_averages_an_image_and_its_mirror():
    from spinenet.engine import get_recipe, parse_overrides
    from spinenet.tasks.classification import classify, eval_hflip

    class LeftMinusRight(torch.nn.Module):  # logit 0 = left half - right half; logit 1 = total
        def forward(self, x):
            half = x.shape[-1] // 2
            return torch.stack([x[..., :half].sum((1, 2, 3)) - x[..., half:].sum((1, 2, 3)), x.sum((1, 2, 3))], 1)

    images = torch.zeros(2, 3, 4, 4)
    images[0, :, :, 0] = 1  # a bright left column
    plain, both = classify(LeftMinusRight(), images), classify(LeftMinusRight(), images, hflip=True)
    assert plain[0, 0] == 12 and both[0, 0] == 0 and torch.equal(both[:, 1], plain[:, 1])
    base = get_recipe("fashion-mnist-cpu")
    assert eval_hflip(parse_overrides(base, ["eval_hflip=true"])) is True
    assert eval_hflip(parse_overrides(base, ["eval_hflip=0"])) is False
    with pytest.raises(ValueError, match="eval_hflip='sometimes': expected true or false"):
        eval_hflip(parse_overrides(base, ["eval_hflip=sometimes"]))


# ---------------------------------------------------------------------------------------------- real training
@pytest.mark.slow
def test_fashion_mnist_subset_reaches_75_percent(tmp_path, fashion, all_threads):
    """SpineNet-49S at 32 px from scratch on the first 5,000 training images, a fixed budget of 300 steps of 32
    images (1.9 epochs, bf16 and NHWC, no crop jitter or label smoothing, residual branches zero-initialised and
    linear LR decay, as the recipe); evaluated on the first 2,000 test images. Measured on 2 threads: 80.80% /
    79.30% (seeds 0 / 1; fp32 NCHW: 79.40%, seed 0, about 1.2x the time)."""
    from spinenet.engine import Trainer, get_recipe, parse_overrides
    from spinenet.tasks import get_task

    recipe = parse_overrides(get_recipe("fashion-mnist-cpu"), [  # the budget as measured, pinned
        "steps=300", "batch_size=32", "schedule=linear", "warmup_steps=50", "eval_every=0", "num_workers=0",
        "log_every=50", "image_size=32", "channels_last=true", "precision=bf16", "lr=0.2", "eval_hflip=false",
        "model.min_level=3", "model.flavor=tpu", "warmup_factor=0.1", "weight_decay=5e-5", "zero_init_residual=true"])
    task = get_task("classification", model="spinenet49s", data="fashion-mnist:train:5000",
                    val_data="fashion-mnist:test:2000", report_dir=tmp_path / "run")
    metrics = Trainer(task, recipe, tmp_path / "run", device="cpu", progress=False).fit()
    assert metrics["top1"] >= 0.75, metrics
    assert metrics["top5"] >= metrics["top1"]
    assert (tmp_path / "run" / "confusion_matrix.png").is_file()


# ------------------------------------------------------------------------------------------------------- CLI
def _spinenet(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process (``main(argv) -> int``): exit code, stdout, stderr."""
    from spinenet.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_train_eval_predict_round_trip(tmp_path, capsys, one_thread):
    data = _write_folder(tmp_path / "train", {"dark": [20, 30, 40, 50], "bright": [200, 210, 220, 230]}, size=36)
    val = _write_folder(tmp_path / "val", {"dark": [25], "bright": [215]}, size=36)
    run = tmp_path / "run"
    code, out, err = _spinenet(capsys, "train", "--task", "classification", "--model", "spinenet_mobile49xs",
                               "--data", str(data), "--val-data", str(val), "--out", str(run), "--device", "cpu",
                               "steps=2", "batch_size=4", "image_size=32", "num_workers=0", "log_every=1",
                               "model.min_level=3")  # the default recipe reads level 2, which mobile lacks
    assert code == 0, err[-2000:]
    assert "top1=" in out
    ckpt = run / "checkpoints" / "final.pt"
    assert (run / "confusion_matrix.png").is_file() and ckpt.is_file()

    code, out, err = _spinenet(capsys, "eval", "--checkpoint", str(ckpt), "--data", str(val),
                               "--out", str(tmp_path / "ev"))
    assert code == 0, err[-2000:]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["images"] == 2 and 0 <= metrics["top1"] <= 1 and metrics["top5"] == 1.0  # 2 classes
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()

    code, out, err = _spinenet(capsys, "predict", "--checkpoint", str(ckpt), "--out", str(tmp_path / "pred"),
                               str(val / "dark" / "0.png"))
    assert code == 0, err[-2000:]
    (record,) = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert {t["class"] for t in record["top"]} == {"dark", "bright"}
    assert sum(t["probability"] for t in record["top"]) == pytest.approx(1.0, abs=1e-4)

    # a checkpoint trained on 2 classes refuses data with other classes, naming them
    other = _write_folder(tmp_path / "three", {"dark": [1], "bright": [2], "grey": [128]})
    code, out, err = _spinenet(capsys, "eval", "--checkpoint", str(ckpt), "--data", str(other))
    assert code == 2 and "['grey'] are not among the model's classes" in err
    if HAS_FASHION:
        code, out, err = _spinenet(capsys, "eval", "--checkpoint", str(ckpt), "--data", "fashion-mnist:test:10")
        assert code == 2
        assert "has 10 classes" in err and "trained on 2 classes" in err, err
