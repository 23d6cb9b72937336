"""Decode any chest X-ray file the project meets into one thing: a 2-D uint8 gray array.

ChestX-ray14 ships 8-bit gray PNGs, some RGBA PNGs whose three colour channels are equal,
and a few 16-bit PNGs; users of the demo upload JPEGs and DICOMs. Everything downstream
(cache, prediction, heatmaps) assumes ``uint8 [H, W]``, so all the format handling lives here.

The format is recognised by the file's content (PNG and JPEG signatures, DICOM's ``DICM``
at byte 128 or a bare DICOM data set without preamble); the extension is only a hint, used
when the content is not recognised (a ``.dcm`` file is then given to pydicom to try). A PNG
named ``.dcm`` reads as a PNG.

More than 8 bits per sample
---------------------------
Exposure must not depend on one pixel, so deep images are scaled by a *declared* range
wherever the file declares one, and otherwise by a rule that no single pixel can move:

* **DICOM** (gray): the modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence)
  turns stored values into modality units; then the VOI LUT (a VOI LUT Sequence, else
  Window Center/Width with its VOI LUT Function) maps them onto the display range, as
  PS3.3 C.11.2 says. Without a VOI LUT the display range is the *declared* one: every value
  Bits Stored can hold (with Pixel Representation's sign), passed through the modality LUT.
  MONOCHROME1 is inverted last (high values are dark). Colour DICOMs of any bit depth are
  scaled by Bits Stored (or a palette's declared entry depth), then made gray as colour PNGs.
* **16-bit PNG with an sBIT chunk** (significant bits ``b``): values that fit in ``b`` bits
  are raw ``b``-bit samples, scaled by ``2**b - 1``; values beyond it mean the writer
  scaled the samples to the full 16-bit range as the PNG specification asks, so they are
  scaled by 65535. Neither reading depends on the image's content for a file that keeps
  its own declaration.
* **16-bit PNG without sBIT** (most X-ray PNGs hold 10-14-bit detector values without
  saying so): ``gray = clip(value * 255 / p, 0, 255)`` with ``p`` the 99.9th percentile of
  the image's values (``HIGH_PERCENTILE``). The file's zero stays black and the exposure
  within the image stays linear; only the gain comes from the data, from a percentile that
  one pixel (a marker, a hot pixel) cannot move by more than one rank. The brightest 0.1%
  of pixels saturate.

Rounding is half up (``floor(x + 0.5)``) everywhere.
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

# The gain of a deep image that declares no bit depth comes from this percentile of its
# values (see the module docstring).
HIGH_PERCENTILE = 99.9

ACCEPTED = "PNG, JPEG or DICOM"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_DICOM_EXTENSIONS = (".dcm", ".dicom")


class ImageError(ValueError):
    """A file that cannot be decoded into a gray image; the message names the file."""


# ----------------------------------------------------------------------------- formats


def _bare_dicom(head: bytes) -> bool:
    """A DICOM data set written without the 128-byte preamble and ``DICM`` (older files).

    It starts with a data element of group 0x0002 (file meta) or 0x0008 (identification),
    little endian, either with an explicit two-letter VR or with an implicit 4-byte length.
    """
    if len(head) < 8:
        return False
    group = int.from_bytes(head[0:2], "little")
    element = int.from_bytes(head[2:4], "little")
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    explicit_vr = head[4:6].isalpha() and head[4:6].isupper()
    return explicit_vr or int.from_bytes(head[4:8], "little") < 0x10000


def sniff_format(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"dicom"`` from the first bytes of a file, or None."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(_JPEG_SIGNATURE):
        return "jpeg"
    if data[128:132] == b"DICM" or _bare_dicom(data[:8]):
        return "dicom"
    return None


def read_image(path_or_bytes: PathOrBytes, name: str | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a PNG (8/16-bit, gray, RGB(A), palette), JPEG or DICOM to ``uint8 [H, W]``.

    The format comes from the content (see the module docstring for the format and
    bit-depth rules). ``name`` labels the image in error messages when bytes are given.
    Colour images whose channels are equal are read from one channel (exact); other colour
    images are converted with the ITU-R 601 luma weights. Raises :class:`ImageError` naming
    the file when it is missing, empty, truncated, corrupt, of another format, or larger
    than ``max_pixels``.
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
    kind = sniff_format(data)
    if kind is None and label.lower().endswith(_DICOM_EXTENSIONS):
        kind = "dicom"  # the extension as a hint: pydicom may still read an odd DICOM
    if kind == "dicom":
        return _read_dicom(data, label, max_pixels)
    if kind in ("png", "jpeg"):
        return _read_pil(data, label, max_pixels)
    raise ImageError(
        f"{label}: not a readable image: the content is not {ACCEPTED} "
        f"(it starts with {data[:8]!r}); convert it to PNG"
    )


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as err:
        raise ImageError(f"{path}: cannot read the image header ({err})") from None
    if sniff_format(head) == "dicom" or (sniff_format(head) is None and str(path).lower().endswith(_DICOM_EXTENSIONS)):
        try:
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            return int(ds.Columns), int(ds.Rows)
        except Exception as err:  # pydicom raises many types for broken files
            raise ImageError(f"{path}: cannot read the DICOM header ({type(err).__name__}: {err})") from None
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as err:
        raise ImageError(f"{path}: cannot read the image header ({err})") from None


# ----------------------------------------------------------------------------- PNG, JPEG


def _png_significant_bits(data: bytes) -> int | None:
    """The gray sample's significant bits from a PNG's sBIT chunk (None when absent).

    Chunks before the first IDAT are walked by hand: Pillow does not expose sBIT.
    """
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"sBIT" and length >= 1:
            return int(data[pos + 8])  # gray (colour type 0) and gray+alpha: the first byte
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


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
        raise ImageError(f"{label}: not a readable image ({ACCEPTED} expected)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{label}: image too large ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # Pillow reports truncated and corrupt data as OSError ("image file is truncated",
        # "broken data stream"), and bad PNG chunks as SyntaxError.
        raise ImageError(f"{label}: corrupt or truncated image ({err}); re-download it") from None
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return _scale_deep(np.asarray(im), label, _png_significant_bits(data) if data.startswith(_PNG_SIGNATURE) else None)
    return _to_gray_u8(im, label)


def _to_gray_u8(im: Image.Image, label: str) -> np.ndarray:
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode == "F":
        return _percentile_gain(np.asarray(im, dtype=np.float64))
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


def _round_u8(unit: np.ndarray) -> np.ndarray:
    """Values in display units [0, 1] (clipped) to uint8, rounding half up."""
    return np.floor(np.clip(unit, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _scale_deep(arr: np.ndarray, label: str, significant_bits: int | None) -> np.ndarray:
    """A deep gray PNG to 8 bits by its declared depth, else by the percentile gain."""
    arr = arr.astype(np.int64)
    if arr.size == 0:
        raise ImageError(f"{label}: image has no pixels")
    if significant_bits is not None and 1 <= significant_bits <= 16 and int(arr.min()) >= 0:
        top = (1 << significant_bits) - 1
        # Raw b-bit samples stay below 2**b; samples scaled to 16 bits as the PNG
        # specification asks go above it (see the module docstring).
        full = int(arr.max()) > top
        return _round_u8(arr / (65535.0 if full else float(top)))
    return _percentile_gain(arr)


def _percentile_gain(arr: np.ndarray) -> np.ndarray:
    """``clip(v * 255 / p99.9, 0, 255)``; negative data gets the window [p0.1, p99.9]."""
    arr = np.nan_to_num(np.asarray(arr, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low = float(np.percentile(arr, 100.0 - HIGH_PERCENTILE))
    high = float(np.percentile(arr, HIGH_PERCENTILE))
    lo = min(low, 0.0)  # the file's zero is black unless the data go below it
    if not high > lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return _round_u8((arr - lo) / (high - lo))


# ----------------------------------------------------------------------------- DICOM


def _read_dicom(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    try:
        import pydicom
    except ImportError as err:  # pragma: no cover - pydicom is a dependency
        raise ImageError(f"{label}: reading DICOM needs pydicom (pip install pydicom): {err}") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        _set_transfer_syntax(ds)
        rows, cols = int(ds.Rows), int(ds.Columns)
        if rows * cols > max_pixels:
            raise ImageError(f"{label}: {cols}x{rows} pixels exceeds the limit of {max_pixels} (max_pixels)")
        arr = ds.pixel_array
    except ImageError:
        raise
    except Exception as err:  # pydicom raises many types for broken files
        raise ImageError(
            f"{label}: corrupt or unsupported DICOM ({type(err).__name__}: {err}); "
            f"{ACCEPTED} expected"
        ) from None
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    if arr.ndim == 4 or (arr.ndim == 3 and samples == 1):
        arr = arr[0]  # multi-frame: the first frame
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        if photometric == "PALETTE COLOR":
            return _dicom_palette(arr, ds, label)
        if arr.ndim == 3:  # colour (a screenshot or a secondary capture); pydicom gives RGB
            return _dicom_colour(arr, _bits_stored(ds, arr), label)
        unit = _dicom_display(arr, ds)
    except ImageError:
        raise
    except Exception as err:  # a malformed LUT or window element
        raise ImageError(f"{label}: cannot apply the DICOM's LUTs ({type(err).__name__}: {err})") from None
    img = _round_u8(unit)
    if photometric == "MONOCHROME1":
        img = 255 - img  # MONOCHROME1: high values are dark; the model expects bone bright
    return img


def _set_transfer_syntax(ds) -> None:
    """A bare data set (no file meta) has no Transfer Syntax UID, which pydicom needs to
    decode the pixels: take the encoding pydicom detected while reading it."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit
                              else ExplicitVRLittleEndian if little in (True, None) else ExplicitVRBigEndian)


def _bits_stored(ds, arr: np.ndarray) -> int:
    bits = getattr(ds, "BitsStored", None)
    if bits is None:
        bits = getattr(ds, "BitsAllocated", None) or 8 * arr.dtype.itemsize
    return int(bits)


def _dicom_colour(arr: np.ndarray, bits: int, label: str) -> np.ndarray:
    top = float((1 << bits) - 1)
    rgb8 = _round_u8(np.asarray(arr[..., :3], dtype=np.float64) / top)
    return _to_gray_u8(Image.fromarray(np.ascontiguousarray(rgb8), "RGB"), label)


def _dicom_palette(arr: np.ndarray, ds, label: str) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(arr, ds)
    descriptor = getattr(ds, "RedPaletteColorLookupTableDescriptor", None)
    bits = int(descriptor[2]) if descriptor is not None else 8 * rgb.dtype.itemsize
    return _dicom_colour(rgb, bits, label)


def _dicom_display(arr: np.ndarray, ds) -> np.ndarray:
    """Modality LUT, then VOI LUT (or the declared range): gray in display units [0, 1]."""
    from pydicom.pixels import apply_modality_lut, apply_voi

    values = apply_modality_lut(arr, ds)
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        out = apply_voi(np.rint(values).astype(np.int64), ds)
        return out / float((1 << int(item.LUTDescriptor[2])) - 1)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        return window(values, _first(ds.WindowCenter), _first(ds.WindowWidth),
                      str(ds.get("VOILUTFunction", "LINEAR")))
    lo, hi = _declared_range(ds, arr)
    if not hi > lo:
        return np.zeros(arr.shape)
    return (values - lo) / (hi - lo)


def _first(value) -> float:
    """A DICOM multi-valued number (several windows): the first one."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _declared_range(ds, arr: np.ndarray) -> tuple[float, float]:
    """The modality-LUT image of every value Bits Stored can hold: the declared range."""
    from pydicom.pixels import apply_modality_lut

    bits = _bits_stored(ds, arr)
    if int(getattr(ds, "PixelRepresentation", 0)) == 1:
        stored = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    else:
        stored = (0, (1 << bits) - 1)
    # Every stored value through the LUT (a Modality LUT Sequence need not be monotonic);
    # beyond 16 bits the two ends stand for the rest (a linear rescale is monotonic).
    probe = np.arange(stored[0], stored[1] + 1) if bits <= 16 else np.array(stored)
    mapped = np.asarray(apply_modality_lut(probe, ds), dtype=np.float64)
    return float(mapped.min()), float(mapped.max())


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2-3) onto display units [0, 1].

    LINEAR: 0 at or below ``c - 0.5 - (w - 1) / 2``, 1 above ``c - 0.5 + (w - 1) / 2``,
    ``(x - (c - 0.5)) / (w - 1) + 0.5`` between. LINEAR_EXACT: the same with ``c`` and ``w``
    as given. SIGMOID: ``1 / (1 + exp(-4 (x - c) / w))``.
    """
    x = np.asarray(values, dtype=np.float64)
    function = function.strip().upper() or "LINEAR"
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"Window Width {width} must be > 0 for a SIGMOID VOI LUT function")
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"Window Width {width} must be >= 1 for a LINEAR VOI LUT function")
        center, width = center - 0.5, width - 1.0
        if width == 0:  # a window of width 1 is a step at the centre
            return (x > center).astype(np.float64)
    elif function != "LINEAR_EXACT":
        raise ValueError(f"unsupported VOI LUT Function {function!r} (LINEAR, LINEAR_EXACT or SIGMOID)")
    elif width <= 0:
        raise ValueError(f"Window Width {width} must be > 0 for a LINEAR_EXACT VOI LUT function")
    return np.where(x <= center - width / 2, 0.0,
                    np.where(x > center + width / 2, 1.0, (x - center) / width + 0.5))
