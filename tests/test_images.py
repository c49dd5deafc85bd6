"""Image decoding (spinenet.data.images) on real photographs saved in every pixel mode PIL opens.

The source is a packaged aerial photo (deepforest's OSBS_029.png, 400 x 400 RGB) and the packaged 16-bit nucleus
image (stardist's img2d.tif). Each is written in a mode and decoded back; the expected pixels are computed here
from the source array with numpy, not by the reader under test.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spinenet.data.classification import ImageFolder
from spinenet.data.detection import CocoDetection
from spinenet.data.images import ImageReadError, decode_image, decode_rgb, read_image_float, read_pixels
from spinenet.data.nuclei import nuclei_data_dir
from spinenet.data.trees import trees_data_dir


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    with Image.open(trees_data_dir() / "OSBS_029.png") as img:
        return np.asarray(img.convert("RGB")).copy()  # uint8 [400, 400, 3]


@pytest.fixture(scope="module")
def grey(photo) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).convert("L")).copy()  # uint8 [400, 400]


def write_png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA by the channel count) written byte by byte: PIL writes 16-bit
    grey only, and a user's 16-bit colour PNGs come from other tools."""
    a = np.asarray(array, dtype=">u2")
    a = a[..., None] if a.ndim == 2 else a
    h, w, c = a.shape
    rows = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


def _mode_of(path: Path) -> str:
    with Image.open(path) as img:
        return img.mode


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_grey_decodes_to_the_8bit_original(tmp_path, grey, ext):
    """A 16-bit copy (v * 257) of an 8-bit photo decodes to that photo, not to white (PIL's convert clips)."""
    path = tmp_path / f"grey16.{ext}"
    if ext == "png":
        write_png16(path, grey.astype(np.uint16) * 257)
    else:
        Image.frombytes("I;16", (grey.shape[1], grey.shape[0]), (grey.astype("<u2") * 257).tobytes()).save(path)
    assert _mode_of(path).startswith("I;16")
    image = decode_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, *grey.shape)
    assert (image == 255).float().mean() < 0.01  # the photo is mostly dark canopy and ground
    for channel in image:
        assert torch.equal(channel, torch.from_numpy(grey))


def test_16bit_png_with_arbitrary_values_rounds_to_8_bits(tmp_path):
    """16-bit data that are not multiples of 257 (the packaged 16-bit nucleus image, which uses only 0..235 of its
    range, stretched over most of it): v -> round(v / 257)."""
    raw = read_pixels(nuclei_data_dir() / "img2d.tif")
    assert raw.dtype == np.uint16
    raw = raw.astype(np.uint32) * 251 + 100
    path = write_png16(tmp_path / "nuclei16.png", raw)
    expected = np.floor(raw.astype(np.float64) / 257 + 0.5)
    got = decode_rgb(path)
    assert np.abs(got[..., 0].astype(np.float64) - expected).max() <= 1  # float32 rounding at .5 ties
    assert (got[..., 0] == got[..., 2]).all()


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png(tmp_path, photo, channels):
    data = {2: np.stack([photo[..., 0], np.full_like(photo[..., 0], 200)], -1),
            3: photo, 4: np.concatenate([photo, np.full_like(photo[..., :1], 200)], -1)}[channels]
    path = write_png16(tmp_path / f"c{channels}.png", data.astype(np.uint16) * 257)
    expected = np.repeat(photo[..., :1], 3, -1) if channels == 2 else photo
    assert np.array_equal(decode_rgb(path), expected)


@pytest.mark.parametrize("mode,ext,tolerance", [
    ("RGB", "png", 0), ("RGB", "jpg", 10), ("RGBA", "png", 0), ("RGBA", "tif", 0), ("CMYK", "tif", 0),
    ("CMYK", "jpg", 10), ("YCbCr", "tif", 2), ("LAB", "tif", 2),
])
def test_colour_modes_keep_the_photo(tmp_path, photo, mode, ext, tolerance):
    path = tmp_path / f"photo.{ext}"
    Image.fromarray(photo).convert(mode).save(path)
    got = decode_rgb(path).astype(np.int16)
    assert got.shape == photo.shape
    assert np.abs(got - photo).mean() <= tolerance


@pytest.mark.parametrize("mode,ext", [("L", "png"), ("L", "tif"), ("LA", "png"), ("LA", "tif"), ("I", "tif"),
                                      ("F", "tif"), ("I;16B", "tif")])
def test_grey_modes_decode_to_the_grey_photo(tmp_path, grey, mode, ext):
    path = tmp_path / f"grey.{ext}"
    if mode == "L":
        image = Image.fromarray(grey)
    elif mode == "LA":
        image = Image.fromarray(np.stack([grey, np.full_like(grey, 77)], -1), "LA")
    elif mode == "I":
        image = Image.fromarray(grey.astype(np.int32) * 257)
    elif mode == "F":
        image = Image.fromarray(grey.astype(np.float32) / 255)
    else:
        image = Image.frombytes(mode, grey.shape[::-1], (grey.astype(">u2") * 257).tobytes())
    image.save(path)
    assert _mode_of(path) == mode
    got = decode_rgb(path)
    assert np.array_equal(got, np.repeat(grey[..., None], 3, -1))


@pytest.mark.parametrize("mode,ext", [("P", "png"), ("P", "tif"), ("PA", "tif"), ("1", "png"), ("1", "tif")])
def test_palette_and_bilevel(tmp_path, photo, mode, ext):
    image = Image.fromarray(photo).convert("P" if mode == "PA" else mode)
    if mode == "1":
        expected = np.repeat((np.asarray(image).astype(np.uint8) * 255)[..., None], 3, -1)
    else:
        palette = np.asarray(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
        expected = palette[np.asarray(image)]
    path = tmp_path / f"p.{ext}"
    (image.convert("PA") if mode == "PA" else image).save(path)
    assert _mode_of(path) == mode
    assert np.array_equal(decode_rgb(path), expected)


def test_unmappable_pixels_and_non_images_name_the_file(tmp_path, grey):
    floats = tmp_path / "radiance.tif"
    Image.fromarray(grey.astype(np.float32)).save(floats)  # 0..255 floats: not in [0, 1]
    with pytest.raises(ImageReadError, match=r"radiance.tif: 32-bit float pixels range over .*255; .* in \[0, 1\]"):
        decode_image(floats)
    signed = tmp_path / "signed.tif"
    Image.fromarray(grey.astype(np.int32) - 100).save(signed)
    with pytest.raises(ImageReadError, match="signed.tif.*outside the 16-bit range"):
        decode_image(signed)
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    with pytest.raises(ImageReadError, match="notes.png is not a readable image"):
        decode_image(text)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        decode_image(tmp_path / "missing.png")
    assert isinstance(ImageReadError("x"), ValueError)  # the CLI's one-line error handling applies


def test_float_reader_keeps_the_range(tmp_path, photo, grey):
    """Segmentation's reader: 8-bit in [0, 1]; 16-bit grey divided by its own maximum, as the nuclei data."""
    path = tmp_path / "photo.png"
    Image.fromarray(photo).convert("RGBA").save(path)
    got = read_image_float(path)
    assert torch.allclose(got, torch.from_numpy(photo).permute(2, 0, 1).float() / 255)
    path16 = write_png16(tmp_path / "g16.png", grey.astype(np.uint16) * 257)
    got16 = read_image_float(path16)
    assert torch.allclose(got16[0], torch.from_numpy(grey.astype(np.float32)) / float(grey.max()), atol=1e-6)


def test_every_dataset_reads_16bit_images(tmp_path, grey, photo):
    """Detection (COCO) and classification (image folder) datasets go through the same reader."""
    images = tmp_path / "images"
    images.mkdir()
    write_png16(images / "a.png", grey.astype(np.uint16) * 257)
    (tmp_path / "ann.json").write_text(
        '{"images": [{"id": 1, "file_name": "a.png", "width": 400, "height": 400}], '
        '"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50]}], '
        '"categories": [{"id": 1, "name": "tree"}]}')
    image, _ = CocoDetection(tmp_path / "ann.json")[0]
    assert torch.equal(image[1], torch.from_numpy(grey))
    (tmp_path / "folder" / "tree").mkdir(parents=True)
    write_png16(tmp_path / "folder" / "tree" / "a.png", grey.astype(np.uint16) * 257)
    image, label = ImageFolder(tmp_path / "folder")[0]
    assert label == 0 and torch.equal(image[2], torch.from_numpy(grey))
