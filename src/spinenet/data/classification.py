"""Classification data: image folders, Fashion-MNIST from its IDX files, and the augmentation of spec 7.2.

Every dataset here yields ``(uint8 image [3, H, W], int label)`` with labels ``0..C-1`` and exposes ``classes``
(names in label order) and ``stats``; normalisation happens inside the model (spec 7.3), as for detection.

Datasets are addressed by a path spec (:func:`classification_dataset_from_path`):

* ``DIR``: an image folder ``DIR/<class name>/*.jpg|jpeg|png|bmp|gif|tif|tiff|webp``; classes are the
  sub-folders in sorted order (or the given ``classes``, e.g. a checkpoint's, which must all exist).
* ``fashion-mnist:train`` / ``fashion-mnist:test`` (60,000 / 10,000 real 28x28 grey images, 10 classes), read from
  the gzip IDX files of Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``, or the folder
  in ``$SPINENET_FASHION_MNIST``); ``fashion-mnist:train:5000`` keeps the first 5,000 images (the files come
  shuffled, so the classes stay balanced to a few percent).

Like the detection sets, errors surface at construction (missing or empty class folders, truncated IDX files);
an image that exists but does not decode is only found when read: it is skipped with a warning, counted in
``stats["unreadable_images"]``, and the next readable image is returned so a batch stays full (training).
Evaluation reads with :meth:`ImageFolder.read`, which returns ``None`` for such images so none is counted twice.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .catalog import open_dataset, register_dataset, register_format
from .detection import _DECODE_ERRORS
from .images import decode_image
from .transforms import RandomHorizontalFlip, resize_uint8

__all__ = ["FASHION_MNIST_CLASSES", "FashionMNIST", "ImageFolder", "IMAGE_EXTENSIONS",
           "RandomResizedCrop", "classification_dataset_from_path", "classification_train_transform",
           "center_crop_resize", "fashion_mnist_dir", "random_resized_crop"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


# ------------------------------------------------------------------------------------------------- image folders
class ImageFolder(Dataset):
    """``root/<class name>/<image>``: one sub-folder per class, labels in sorted folder order.

    ``classes`` fixes the label order (e.g. from a checkpoint, to evaluate a trained model on another folder);
    every named class must then have a folder. Files with other extensions are ignored; hidden files too.
    """

    def __init__(self, root: str | os.PathLike[str], classes: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist (expected {self.root}/<class name>/"
                                    f"*.jpg|png, or fashion-mnist:train|test)")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            if not found:
                raise ValueError(f"{self.root}: no class folders found; expected one sub-folder per class "
                                 f"({self.root}/<class name>/*.jpg)")
            classes = found
        else:
            classes = [str(c) for c in classes]
            missing = [c for c in classes if c not in found]
            if missing:
                raise FileNotFoundError(
                    f"{self.root}: class folder(s) {missing} missing; the model was trained on {len(classes)} classes "
                    f"{list(classes)} and needs a folder {self.root}/<class name> for each (an empty one is refused)")
            extra = [c for c in found if c not in classes]
            if extra:
                raise ValueError(f"{self.root}: folder(s) {extra} are not among the model's classes {list(classes)}")
        self.classes = list(classes)
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            folder = self.root / name
            files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise ValueError(f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images "
                                 f"or remove the folder")
            self.samples += [(p, label) for p in files]
        self.stats: dict[str, int] = {"images": len(self.samples), "unreadable_images": 0}
        self._unreadable: set[int] = set()
        self.name = str(self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def drop_unreadable(self) -> list[Path]:
        """Remove the files that do not open as images (header check, no decode), counted in
        ``stats["skipped_images"]``; returns their paths. A class left without images is a ``ValueError``."""
        from .detection import _image_size

        bad = [path for path, _ in self.samples if _image_size(path) is None]
        if bad:
            dropped = set(bad)
            self.samples = [(p, label) for p, label in self.samples if p not in dropped]
            emptied = [c for k, c in enumerate(self.classes) if not any(label == k for _, label in self.samples)]
            if emptied:
                raise ValueError(f"{self.root}: class folder(s) {emptied} hold no readable images (e.g. {bad[0]} is "
                                 "not an image); add images or remove the folder")
        self.stats.update({"images": len(self.samples), "skipped_images": len(bad)})
        return bad

    def read(self, index: int) -> tuple[torch.Tensor, int] | None:
        """The sample at ``index``, or ``None`` (with a warning the first time, and counted) if it does not decode."""
        path, label = self.samples[index]
        if index in self._unreadable:
            return None
        try:
            return decode_image(path), label
        except _DECODE_ERRORS as exc:
            self._unreadable.add(index)
            self.stats["unreadable_images"] = len(self._unreadable)
            warnings.warn(f"skipping unreadable image {path}: {type(exc).__name__}: {exc}", stacklevel=2)
            return None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        for step in range(n):  # walk forward past unreadable images (see the module docstring)
            sample = self.read((index + step) % n)
            if sample is not None:
                return sample
        raise RuntimeError(f"{self.root}: none of the {n} images could be decoded")


# ------------------------------------------------------------------------------------------------ Fashion-MNIST
def fashion_mnist_dir() -> Path:
    """Where the Fashion-MNIST IDX files are: ``$SPINENET_FASHION_MNIST`` or Debian's package folder."""
    return Path(os.environ.get("SPINENET_FASHION_MNIST", FASHION_MNIST_DEFAULT_DIR))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one (optionally gzip-compressed) IDX file: big-endian magic ``0 0 type ndim``, ``ndim`` uint32 sizes,
    then the data. Only the unsigned-byte type (0x08) used by (Fashion-)MNIST is accepted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot be read ({exc}); is it a complete gzip IDX file?") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    dtype, ndim = data[2], data[3]
    if dtype != 0x08:
        raise ValueError(f"{path}: IDX data type 0x{dtype:02x} is not unsigned byte (0x08)")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    if len(body) != math.prod(shape):
        raise ValueError(f"{path}: header says {shape} = {math.prod(shape)} bytes, the file holds {len(body)}; the "
                         f"file is truncated or corrupt (reinstall dataset-fashion-mnist)")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


class FashionMNIST(Dataset):
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey images of 10 clothing classes, held in memory as uint8.

    ``split`` is ``train`` (60,000) or ``test`` (10,000); ``limit`` keeps the first N. Samples are the grey image
    repeated to ``[3, 28, 28]`` (the models take RGB).
    """

    classes = list(FASHION_MNIST_CLASSES)

    def __init__(self, split: str = "train", limit: int | None = None, root: str | os.PathLike[str] | None = None):
        if split not in _FASHION_FILES:
            raise ValueError(f"fashion-mnist split {split!r}: expected train or test")
        folder = Path(root) if root is not None else fashion_mnist_dir()
        image_file, label_file = (folder / f for f in _FASHION_FILES[split])
        if not image_file.is_file() or not label_file.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST {split} files are missing in {folder} ({image_file.name}, {label_file.name}); install "
                f"them with `apt-get install dataset-fashion-mnist` (as root; `make setup` does it), or point "
                f"$SPINENET_FASHION_MNIST at a folder holding the four gzip IDX files")
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{folder}: {image_file.name} {images.shape} and {label_file.name} {labels.shape} do not "
                             f"pair up as [N, H, W] images with [N] labels")
        if labels.size and int(labels.max()) >= len(self.classes):
            raise ValueError(f"{label_file}: label {int(labels.max())} outside 0..{len(self.classes) - 1}")
        if limit is not None:
            if limit < 1:
                raise ValueError(f"fashion-mnist:{split}:{limit}: the subset size must be a positive integer")
            images, labels = images[:limit], labels[:limit]
        self.images = torch.from_numpy(images.copy())
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.split = split
        self.name = f"fashion-mnist:{split}" + (f":{limit}" if limit is not None else "")
        self.stats = {"images": len(self.labels), "unreadable_images": 0}

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> tuple[torch.Tensor, int]:
        return self[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].expand(3, -1, -1), int(self.labels[index])


@register_dataset("fashion-mnist", "classification", splits=tuple(_FASHION_FILES),
                  syntax="fashion-mnist:train|test[:N]",
                  source="Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist or $SPINENET_FASHION_MNIST)")
def _open_fashion_mnist(rest: str, split: str | None, classes: Sequence[str] | None = None) -> FashionMNIST:
    """``fashion-mnist:<split>[:N]``; the classes are fixed (callers compare them with ``classes``)."""
    parts = rest.split(":")
    text = f"fashion-mnist:{rest}"
    if len(parts) not in (1, 2):
        raise ValueError(f"{text!r}: expected fashion-mnist:train, fashion-mnist:test or fashion-mnist:train:N")
    limit = None
    if len(parts) == 2:
        try:
            limit = int(parts[1])
        except ValueError:
            raise ValueError(f"{text!r}: the subset size {parts[1]!r} is not an integer") from None
    return FashionMNIST(parts[0], limit)


@register_format("classification", "image-folder")
def _open_image_folder(path: Path, split: str | None, classes: Sequence[str] | None = None) -> ImageFolder:
    return ImageFolder(path, classes)


def classification_dataset_from_path(spec: str | os.PathLike[str], classes: Sequence[str] | None = None) -> Dataset:
    """A dataset from ``fashion-mnist:<train|test>[:N]`` or an image-folder path (module docstring;
    :func:`spinenet.data.catalog.open_dataset`). ``classes`` fixes an image folder's label order (and requires
    its folders); Fashion-MNIST's classes are fixed."""
    return open_dataset(spec, "classification", classes=classes)


# ------------------------------------------------------------------------------------------------- augmentation
class RandomResizedCrop(v2.RandomResizedCrop):
    """The Inception crop of the official classification parser (spec 7.2) as a v2 transform drawing from
    ``generator``: per attempt, an area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio`` (three
    draws), then the crop origin (one more draw) for the first of ``attempts`` boxes that fits; the centred square
    of the short side when none fits. The crop is resized bilinearly to ``size x size`` (``uint8`` images through
    float, :func:`~spinenet.data.transforms.resize_uint8`)."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(size, scale, ratio, antialias=True)
        self.attempts, self.generator = attempts, generator

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        area = h * w
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(self.attempts):
            r = torch.rand(3, generator=self.generator).tolist()
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * r[0])
            aspect = math.exp(log_lo + (log_hi - log_lo) * r[1])
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                y = int(r[2] * (h - ch + 1))
                x = int(float(torch.rand((), generator=self.generator)) * (w - cw + 1))
                return {"top": y, "left": x, "height": ch, "width": cw}
        side = max(1, min(h, w))
        return {"top": (h - side) // 2, "left": (w - side) // 2, "height": side, "width": side}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        inpt = F.crop(inpt, **params)
        if isinstance(inpt, tv_tensors.Image) and inpt.dtype == torch.uint8:
            return tv_tensors.wrap(resize_uint8(inpt.as_subclass(torch.Tensor), self.size), like=inpt)
        return F.resize(inpt, self.size, antialias=True)


def random_resized_crop(image: torch.Tensor, size: int, scale: tuple[float, float], generator: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10) -> torch.Tensor:
    """:class:`RandomResizedCrop` of one ``uint8 [3, H, W]`` image (plain tensors in and out)."""
    crop = RandomResizedCrop(size, scale, ratio, attempts, generator)
    return crop(tv_tensors.Image(image)).as_subclass(torch.Tensor)


def center_crop_resize(image: torch.Tensor, size: int, fraction: float = 0.875) -> torch.Tensor:
    """Evaluation crop (spec 7.2): the centred square of ``fraction`` x the short side (origin rounded down, where
    ``F.center_crop`` rounds half to even), resized to ``size`` through float (:func:`resize_uint8`). ``image``
    is ``[3, H, W]`` or a batch ``[N, 3, H, W]`` of equally sized images (one resize call)."""
    h, w = image.shape[-2:]
    side = max(1, round(min(h, w) * fraction))
    crop = F.crop(image, (h - side) // 2, (w - side) // 2, side, side)
    return crop if side == size else resize_uint8(crop, [size, size])


def classification_train_transform(size: int, scale: tuple[float, float], hflip: float):
    """``(image, label, generator) -> (image, label)``: :class:`RandomResizedCrop` to ``size``, then a horizontal
    flip with probability ``hflip`` (drawn only when ``hflip > 0``), both drawing from ``generator``."""

    steps = v2.Compose([RandomResizedCrop(size, scale)] + ([RandomHorizontalFlip(hflip)] if hflip else []))

    def transform(image: torch.Tensor, label: Any, generator: torch.Generator):
        for step in steps.transforms:  # built once; each sample brings its own generator
            step.generator = generator
        return steps(tv_tensors.Image(image)).as_subclass(torch.Tensor), label

    return transform
