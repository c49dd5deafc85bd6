"""Image files to pixels, in one place: every dataset, ``predict`` and ``eval`` read images through this module.

PIL opens PNG, TIFF and JPEG files in many pixel modes; the models want 8-bit RGB (detection, classification)
or float RGB in [0, 1] (segmentation). The conversion to that range depends on the mode:

==============================================  =====================================================
mode                                            to 8-bit RGB (:func:`decode_rgb`)
==============================================  =====================================================
``RGB``, ``RGBA``, ``L``, ``LA``, ``P``,         PIL's own conversion (alpha is dropped, not composited;
``PA``, ``1``, ``CMYK``, ``YCbCr``, ``LAB``      a palette is looked up; ``1`` gives 0 / 255)
``I;16``, ``I;16B``, ``I;16L``, ``I;16N``        16-bit grey: ``round(v / 257)`` (65535 -> 255), so a
                                                 16-bit copy of an 8-bit image decodes to the original
``I``                                            32-bit integer grey holding 16-bit data (values in
                                                 0..65535, as TIFF readers give them): as ``I;16``
``F``                                            32-bit float grey in [0, 1]: ``round(v * 255)``
==============================================  =====================================================

PIL's own ``convert("RGB")`` clips 16- and 32-bit grey to 255 instead of scaling, which turns a 16-bit photo
almost entirely white; that is why the high-bit-depth modes are converted here. 16-bit colour PNGs are reduced to
8 bits by PIL itself when opened (the high byte, which is the same scaling). A file whose pixels cannot be mapped
(float values outside [0, 1], 32-bit integers outside 0..65535, or a mode PIL cannot convert) raises
:class:`ImageReadError` naming the file and what to do; so does a file that is not an image.

:func:`read_image_float` keeps the convention of fluorescence microscopy (and of the nuclei data the segmenters
train on, :func:`spinenet.data.nuclei.load_nuclei`): single-channel 16/32-bit images are divided by their own
maximum; 8-bit images by 255. EXIF orientation is ignored everywhere: annotations refer to the stored pixel grid.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["HIGH_BIT_DEPTH_MODES", "ImageReadError", "decode_image", "decode_rgb", "read_image_float", "read_pixels"]

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
HIGH_BIT_DEPTH_MODES = (*SIXTEEN_BIT_MODES, "I", "F")  # single-channel modes PIL's convert("RGB") would clip


class ImageReadError(ValueError):
    """A file that exists but does not decode to pixels this library can use (the message names the file)."""


def _load(path: str | os.PathLike[str]) -> Image.Image:
    """The fully decoded image (a truncated file fails here, not later); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for files that are not (whole) images
        raise ImageReadError(f"{path} is not a readable image ({type(err).__name__}: {err}); give a PNG, TIFF or "
                             "JPEG file") from None


def read_pixels(path: str | os.PathLike[str]) -> np.ndarray:
    """The file's pixels exactly as stored (e.g. ``uint16`` for 16-bit grey, the ids of a label image)."""
    return np.asarray(_load(path)).copy()


def _grey16_to_8(array: np.ndarray) -> np.ndarray:
    return np.rint(array.astype(np.float32) / 257.0).astype(np.uint8)


def _to_rgb8(img: Image.Image, path: str | os.PathLike[str]) -> np.ndarray:
    mode = img.mode
    if mode not in HIGH_BIT_DEPTH_MODES:
        try:
            return np.array(img.convert("RGB"))  # a writable copy
        except (ValueError, OSError) as err:
            raise ImageReadError(f"{path}: pixel mode {mode} cannot be converted to RGB ({err}); save the image as "
                                 "8-bit RGB or greyscale") from None
    grey = np.asarray(img)
    if mode in SIXTEEN_BIT_MODES:
        grey8 = _grey16_to_8(grey)
    elif mode == "I":
        low, high = (int(grey.min()), int(grey.max())) if grey.size else (0, 0)
        if low < 0 or high > 65535:
            raise ImageReadError(f"{path}: 32-bit integer pixels range over {low}..{high}, outside the 16-bit range "
                                 "0..65535 this reader maps to 8 bits; save the image as 8- or 16-bit")
        grey8 = _grey16_to_8(grey)
    else:  # "F"
        low, high = (float(grey.min()), float(grey.max())) if grey.size else (0.0, 0.0)
        if not (np.isfinite(low) and np.isfinite(high) and 0.0 <= low and high <= 1.0):
            raise ImageReadError(f"{path}: 32-bit float pixels range over {low:g}..{high:g}; this reader expects "
                                 "floats in [0, 1]: rescale the image to [0, 1] or save it as 8- or 16-bit")
        grey8 = np.rint(grey * 255.0).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey8[..., None], 3, axis=2))


def decode_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """The image as ``uint8 [H, W, 3]`` RGB, each pixel mode mapped to the 8-bit range (module docstring)."""
    return _to_rgb8(_load(path), path)


def decode_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """The image as a ``uint8 [3, H, W]`` RGB tensor (:func:`decode_rgb`): what detectors and classifiers read."""
    return torch.from_numpy(decode_rgb(path)).permute(2, 0, 1).contiguous()


def read_image_float(path: str | os.PathLike[str]) -> torch.Tensor:
    """The image as float ``[3, H, W]``: 8-bit images divided by 255 (in [0, 1]); single-channel 16/32-bit images
    (fluorescence TIFFs) divided by their own maximum, as the nuclei data the segmenters train on."""
    img = _load(path)
    if img.mode in HIGH_BIT_DEPTH_MODES:
        grey = np.asarray(img).astype(np.float32)
        if not np.isfinite(grey).all():
            raise ImageReadError(f"{path}: the image holds NaN or infinite pixels; replace them before predicting")
        grey = grey / max(float(grey.max()), 1e-12)
        return torch.from_numpy(grey).expand(3, -1, -1).contiguous()
    return torch.from_numpy(_to_rgb8(img, path)).permute(2, 0, 1).float().div_(255)
