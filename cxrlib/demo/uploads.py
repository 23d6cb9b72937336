"""Uploaded files: checked and decoded to uint8 gray, or refused with a message that says why.

An upload is held in memory several times over (the bytes, the decoded array, the display
copy), so its size is checked before anything is decoded: the byte count first, then the
pixel count declared in the header, so that a decompression bomb is refused from its first
bytes and never expanded. Decoding itself is :func:`cxrlib.data.imageio.read_image`'s
(PNG of every depth, JPEG, DICOM); this module turns any of its failures, and a decoder's
own error on a hostile file, into an :class:`UploadError` the demo can show.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from cxrlib.data.imageio import ImageError, read_image

# 40 Mpx is well above any chest radiograph (the largest detectors are about 4300 x 4300);
# 64 MiB well above any such file, even a 16-bit DICOM.
MAX_UPLOAD_BYTES = 64 * 2**20
MAX_PIXELS = 40_000_000
# What the file chooser offers (extensions and MIME types).
UPLOAD_ACCEPT = ".png,.jpg,.jpeg,.dcm,.dicom,image/png,image/jpeg,application/dicom"


class UploadError(ValueError):
    """An uploaded file the demo cannot show; the message says why and what to do."""


def read_upload(content: bytes | memoryview, name: str = "upload", max_bytes: int = MAX_UPLOAD_BYTES,
                max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded file to uint8 gray ``[H,W]``; UploadError with a clear message if not.

    The checks on size come before decoding: an enormous image is refused from its header,
    so it is never decompressed into memory.
    """
    content = bytes(content)
    if not content:
        raise UploadError(f"'{name}' is empty (0 bytes): upload a PNG, JPEG or DICOM chest X-ray")
    if len(content) > max_bytes:
        raise UploadError(
            f"'{name}' is {len(content) / 2**20:.1f} MiB; the demo accepts files up to "
            f"{max_bytes / 2**20:.0f} MiB: downsize the image first"
        )
    check_header_size(content, name, max_pixels)
    try:
        pixels = read_image(content, name, max_pixels=max_pixels)
    except ImageError as err:
        raise UploadError(str(err)) from None  # read_image's message already names the file
    except MemoryError:
        raise UploadError(f"'{name}' is too large to decode: downsize the image first") from None
    except Exception as err:  # a decoder's own error on a hostile file must not escape the demo
        raise UploadError(f"cannot read '{name}' as an image ({type(err).__name__}: {err}); "
                          "upload a PNG, JPEG or DICOM chest X-ray") from None
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8 or min(pixels.shape) < 1:
        raise UploadError(f"'{name}' decoded to an unexpected array {pixels.dtype} {pixels.shape}")
    if pixels.size > max_pixels:
        raise UploadError(_too_big(name, pixels.shape[1], pixels.shape[0], max_pixels))
    return pixels


def check_header_size(content: bytes, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose header declares more than ``max_pixels``, without decoding it.

    Files Pillow does not recognise (DICOM, text) pass: :func:`read_upload` decides on them.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as im:  # lazy: reads the header only
                width, height = im.size
    except Image.DecompressionBombError:
        raise UploadError(f"'{name}' declares an enormous image (a decompression bomb?); "
                          "the demo refuses it: upload an ordinary chest X-ray") from None
    except Exception:  # not something PIL recognises (DICOM, text, ...): read_image decides
        return
    if width * height > max_pixels:
        raise UploadError(_too_big(name, width, height, max_pixels))


def _too_big(name: str, width: int, height: int, max_pixels: int) -> str:
    return (f"'{name}' is {width} x {height} pixels ({width * height / 1e6:.0f} Mpx); the demo accepts "
            f"up to {max_pixels / 1e6:.0f} Mpx: downsize the image first")
