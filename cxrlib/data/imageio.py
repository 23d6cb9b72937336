"""Decode any chest X-ray file the project meets into one thing: a 2-D uint8 gray array.

ChestX-ray14 ships 8-bit gray PNGs, some RGBA PNGs whose three colour channels are equal,
and a few 16-bit PNGs; users of the demo upload JPEGs and DICOMs. Everything downstream
(cache, prediction, heatmaps) assumes ``uint8 [H, W]``, so all the format handling lives here.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

PathOrBytes = Union[str, os.PathLike, bytes, bytearray, memoryview]

# Larger than any radiograph (a 43 x 43 cm detector at 0.1 mm is ~4300^2 = 18.5 MP) but
# small enough that a decompression bomb fails fast instead of eating the machine's memory.
DEFAULT_MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    """A file that cannot be decoded into a gray image; the message names the file."""


def _is_dicom(head: bytes, name: str) -> bool:
    return head[128:132] == b"DICM" or name.lower().endswith((".dcm", ".dicom"))


def read_image(path_or_bytes: PathOrBytes, name: str | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a PNG (8/16-bit, gray, RGB(A), palette), JPEG or DICOM to ``uint8 [H, W]``.

    ``name`` labels the image in error messages when bytes are given. Colour images whose
    channels are equal are read from one channel (exact); other colour images are converted
    with the ITU-R 601 luma weights. Raises :class:`ImageError` naming the file when it is
    missing, empty, truncated, corrupt, not an image, or larger than ``max_pixels``.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        label = name or "<bytes>"
    else:
        path = Path(path_or_bytes)
        label = name or str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{label}: file not found") from None
        except OSError as err:
            raise ImageError(f"{label}: cannot read file ({err})") from None
    if not data:
        raise ImageError(f"{label}: empty file (0 bytes); re-download or remove it")
    if _is_dicom(data[:132], label):
        return _read_dicom(data, label, max_pixels)
    return _read_pil(data, label, max_pixels)


def _read_pil(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"{label}: {w}x{h} pixels exceeds the limit of {max_pixels} (max_pixels)")
            im.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not a readable image (PNG, JPEG or DICOM expected)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{label}: image too large ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # Pillow reports truncated and corrupt data as OSError ("image file is truncated",
        # "broken data stream"), and bad PNG chunks as SyntaxError.
        raise ImageError(f"{label}: corrupt or truncated image ({err}); re-download it") from None
    return _to_gray_u8(im, label)


def _to_gray_u8(im: Image.Image, label: str) -> np.ndarray:
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return _scale_high_bit_depth(np.asarray(im), label)
    if mode == "F":
        return _minmax_u8(np.asarray(im, dtype=np.float64))
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = np.asarray(im.convert("RGB"))
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0].copy()  # the release's RGBA files: R = G = B, exact
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel(0), dtype=np.uint8).copy()
    # palette, 1-bit, ...: let Pillow map them to gray
    try:
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except (ValueError, OSError) as err:
        raise ImageError(f"{label}: unsupported image mode {mode!r} ({err})") from None


def _scale_high_bit_depth(arr: np.ndarray, label: str) -> np.ndarray:
    """16-bit samples to 8-bit by the bit depth the data actually uses.

    A PNG 16-bit sample is a fraction of 65535, but X-ray PNGs often hold 10-14-bit detector
    values without saying so (no sBIT chunk); dividing those by 257 would give a black
    image. Scaling by the smallest bit depth that holds the maximum keeps exposure
    differences between images (unlike a per-image min-max stretch) and maps full-range
    16-bit data exactly as the PNG specification says. Data that fits in 8 bits is kept.
    """
    arr = arr.astype(np.int64)
    if arr.size == 0:
        raise ImageError(f"{label}: image has no pixels")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        return _minmax_u8(arr.astype(np.float64))
    bits = max(8, hi.bit_length())
    top = (1 << bits) - 1
    return ((arr * 255 + top // 2) // top).astype(np.uint8)


def _minmax_u8(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.clip(np.rint((arr - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _read_dicom(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as err:  # pragma: no cover - pydicom is a dependency
        raise ImageError(f"{label}: reading DICOM needs pydicom (pip install pydicom): {err}") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
        if rows * cols > max_pixels:
            raise ImageError(f"{label}: {cols}x{rows} pixels exceeds the limit of {max_pixels} (max_pixels)")
        arr = ds.pixel_array
    except ImageError:
        raise
    except Exception as err:  # pydicom raises many types for broken files
        raise ImageError(f"{label}: corrupt or unsupported DICOM ({type(err).__name__}: {err})") from None
    if arr.ndim == 4 or (arr.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1):
        arr = arr[0]  # multi-frame: the first frame
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour DICOM (a screenshot or a secondary capture)
        return _to_gray_u8(Image.fromarray(np.ascontiguousarray(arr[..., :3]).astype(np.uint8), "RGB"), label)
    out = apply_modality_lut(arr, ds)
    out = apply_voi_lut(out, ds) if "WindowCenter" in ds or "VOILUTSequence" in ds else out
    img = _minmax_u8(out)
    if photometric == "MONOCHROME1":
        img = 255 - img  # MONOCHROME1: high values are dark; the model expects bone bright
    return img


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as err:
        raise ImageError(f"{path}: cannot read the image header ({err})") from None
