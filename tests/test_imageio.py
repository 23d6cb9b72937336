"""Decoding every kind of file the release and the demo meet into uint8 gray."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cxrlib.data import chestxray14 as cx
from cxrlib.data.imageio import ImageError, image_size, read_image, sniff_format, window


@pytest.fixture(scope="module")
def files(cxr14_sample):
    kinds = {}
    for image_id, path in sorted(cx.find_images(cxr14_sample).items()):
        with Image.open(path) as im:
            kinds.setdefault((im.mode, im.size[0]), path)
    return kinds


def test_8bit_gray_png(files):
    path = files[("L", 512)]
    img = read_image(path)
    assert img.dtype == np.uint8 and img.shape == (512, 512)
    assert np.array_equal(img, np.asarray(Image.open(path)))


def test_full_size_and_rgba_pngs(files):
    gray = read_image(files[("L", 1024)])
    assert gray.shape == (1024, 1024)
    path = files[("RGBA", 1024)]
    img = read_image(path)
    rgba = np.asarray(Image.open(path))
    assert img.shape == (1024, 1024) and img.dtype == np.uint8
    assert (rgba[..., 3] == 255).all() and np.array_equal(img, rgba[..., 0])


def _png16(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def test_16bit_png(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # up to 65520
    data = _png16(ramp)
    path = tmp_path / "x16.png"
    path.write_bytes(data)
    assert Image.open(path).mode.startswith("I")
    img = read_image(path)
    assert img.dtype == np.uint8 and img.shape == (64, 64)
    expected = np.rint(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.abs(img.astype(int) - expected).max() <= 1 and img.max() == 255
    # 12-bit detector values in a 16-bit PNG use the whole 8-bit range, not the darkest 1/16.
    twelve = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    img12 = read_image(_png16(twelve), name="x12.png")
    assert img12.max() == 255 and img12[0, 1] == 0


def test_palette_jpeg_and_rgb(tmp_path):
    gray = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
    buf = io.BytesIO()
    Image.fromarray(gray).convert("P").save(buf, format="PNG")
    assert np.array_equal(read_image(buf.getvalue()), gray)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="JPEG", quality=95)
    assert np.abs(read_image(buf.getvalue()).astype(int) - gray).max() <= 8
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 0] = 200
    buf = io.BytesIO()
    Image.fromarray(colour).save(buf, format="PNG")
    assert read_image(buf.getvalue()).max() == round(200 * 0.299)  # luma for true colour


def test_truncated_and_corrupt_png_name_the_file(files, tmp_path):
    data = files[("L", 512)].read_bytes()
    bad = tmp_path / "00000000_000.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="00000000_000.png.*(truncated|corrupt)"):
        read_image(bad)
    flipped = bytearray(data)
    flipped[200:400] = b"\x00" * 200
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ImageError, match="00000000_000.png"):
        read_image(bad)
    assert issubclass(ImageError, ValueError)


def test_empty_missing_not_an_image_and_too_large(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png.*empty"):
        read_image(empty)
    with pytest.raises(ImageError, match="nothere.png.*not found"):
        read_image(tmp_path / "nothere.png")
    with pytest.raises(ImageError, match="notes.txt.*not a readable image.*PNG, JPEG or DICOM"):
        read_image(b"hello, not an image", name="notes.txt")
    big = io.BytesIO()
    Image.new("L", (300, 300)).save(big, format="PNG")
    with pytest.raises(ImageError, match="max_pixels"):
        read_image(big.getvalue(), name="big.png", max_pixels=10_000)


# ----------------------------------------------------------------------------- deep PNGs


def _with_sbit(png: bytes, bits: int) -> bytes:
    """Insert an sBIT chunk (gray: one byte) right after IHDR, as an encoder would."""
    ihdr_end = 8 + 12 + 13
    body = b"sBIT" + bytes([bits])
    chunk = struct.pack(">I", 1) + body + struct.pack(">I", zlib.crc32(body))
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def test_one_pixel_crossing_a_power_of_two_changes_no_other_pixel():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 1800, size=(64, 64)).astype(np.uint16)  # 11-bit detector values
    a, b = base.copy(), base.copy()
    a[5, 5], b[5, 5] = 2047, 2048  # the old rule scaled by 2047 here and by 4095 there
    ia, ib = read_image(_png16(a), name="a.png"), read_image(_png16(b), name="b.png")
    others = np.ones(base.shape, bool)
    others[5, 5] = False
    assert np.array_equal(ia[others], ib[others])
    # The gain is the 99.9th percentile of the values: p maps to 255, zero to 0, linear between.
    p = np.percentile(a.astype(float), 99.9)  # the pixel at (5, 5) is above it either way
    assert p == np.percentile(b.astype(float), 99.9) < 1800
    expected = np.floor(np.clip(base * 255.0 / p, 0, 255) + 0.5).astype(np.uint8)
    assert np.array_equal(ia[others], expected[others])
    assert ia[5, 5] == ib[5, 5] == 255
    # With a declared depth (sBIT): every pixel by 4095, whatever the brightest one.
    ia = read_image(_with_sbit(_png16(a), 12), name="a.png")
    ib = read_image(_with_sbit(_png16(b), 12), name="b.png")
    expected = np.floor(base * 255.0 / 4095 + 0.5).astype(np.uint8)
    assert np.array_equal(ia[others], expected[others]) and np.array_equal(ib[others], expected[others])
    assert (ia[5, 5], ib[5, 5]) == (127, 128)


def test_png_sbit_declares_the_depth():
    raw = np.array([[0, 1, 2047, 2048, 4095, 1000]], np.uint16)  # raw 12-bit samples
    img = read_image(_with_sbit(_png16(raw), 12), name="raw12.png")
    # v * 255 / 4095, half up: 0, 0.06, 127.47, 127.53, 255, 62.27
    assert img.tolist() == [[0, 0, 127, 128, 255, 62]]
    # The same samples scaled to 16 bits as the PNG specification asks (left shift with bit
    # replication) read the same.
    scaled = (raw.astype(np.uint32) << 4 | raw.astype(np.uint32) >> 8).astype(np.uint16)
    img16 = read_image(_with_sbit(_png16(scaled), 12), name="scaled12.png")
    assert np.abs(img16.astype(int) - img.astype(int)).max() <= 1 and img16[0, 4] == 255
    # Without sBIT a dark 12-bit image is not judged by its brightest pixel: a 12-bit image
    # whose values stay below 1024 is stretched by its percentile gain, not shown at 1/4.
    dark = np.tile(np.arange(0, 1024, 4, dtype=np.uint16), (4, 1))
    assert read_image(_png16(dark), name="dark.png").max() == 255


# ----------------------------------------------------------------------------- formats


def test_format_by_content_not_extension(tmp_path, files):
    png = files[("L", 512)].read_bytes()
    named_dcm = tmp_path / "x.dcm"
    named_dcm.write_bytes(png)
    assert sniff_format(png) == "png"
    assert np.array_equal(read_image(named_dcm), read_image(files[("L", 512)]))
    assert image_size(named_dcm) == (512, 512)
    # A DICOM named .png (with its preamble), and one without preamble named .bin.
    pixels = np.array([[0, 100], [200, 255]], np.uint8)
    dicom = _dicom_bytes(pixels, bits=8)
    assert sniff_format(dicom) == "dicom"
    (tmp_path / "y.png").write_bytes(dicom)
    assert np.array_equal(read_image(tmp_path / "y.png"), pixels)
    assert image_size(tmp_path / "y.png") == (2, 2)
    bare = _dicom_bytes(pixels, bits=8, preamble=False)
    assert bare[128:132] != b"DICM" and sniff_format(bare) == "dicom"
    assert np.array_equal(read_image(bare, name="z.bin"), pixels)
    # JPEG by content whatever its name.
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(buf, format="JPEG")
    assert sniff_format(buf.getvalue()) == "jpeg"
    assert np.abs(read_image(buf.getvalue(), name="photo.dcm").astype(int) - 90).max() <= 2
    # Another image format: named, with what is accepted.
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="GIF")
    with pytest.raises(ImageError, match=r"scan\.png: not a readable image.*PNG, JPEG or DICOM"):
        read_image(buf.getvalue(), name="scan.png")
    with pytest.raises(ImageError, match=r"broken\.dcm: corrupt or unsupported DICOM"):
        read_image(b"\0" * 300, name="broken.dcm")


# ----------------------------------------------------------------------------- DICOM


def _dicom_bytes(pixels: np.ndarray, bits: int, photometric: str = "MONOCHROME2", preamble: bool = True,
                 signed: bool = False, **elements) -> bytes:
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    samples = 3 if pixels.ndim == 3 else 1
    allocated = 8 if bits <= 8 else 16
    dtype = {(8, False): np.uint8, (16, False): np.uint16, (16, True): np.int16}[(allocated, signed)]
    if preamble:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    else:
        ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = samples
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    ds.PhotometricInterpretation = photometric
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    buf = io.BytesIO()
    if preamble:
        ds.save_as(buf, enforce_file_format=True)
    else:
        ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return buf.getvalue()


def _both_polarities(pixels, bits, expected, **elements):
    """MONOCHROME2 gives ``expected``; MONOCHROME1 of the same file gives 255 - expected."""
    mono2 = read_image(_dicom_bytes(np.array([pixels]), bits, "MONOCHROME2", **elements), name="m2.dcm")
    mono1 = read_image(_dicom_bytes(np.array([pixels]), bits, "MONOCHROME1", **elements), name="m1.dcm")
    assert mono2.tolist() == [expected]
    assert mono1.tolist() == [[255 - v for v in expected]]


def test_dicom_8bit_declared_range_rescale_and_window():
    values = [0, 1, 95, 96, 128, 159, 160, 255]
    _both_polarities(values, 8, values)  # declared 8-bit range: exact
    # A linear modality LUT without a window maps the declared range onto itself: no change...
    _both_polarities(values, 8, values, RescaleSlope=2, RescaleIntercept=-10)
    # ... unless its slope is negative: higher stored values are then lower modality values.
    _both_polarities(values, 8, [255 - v for v in values], RescaleSlope=-1, RescaleIntercept=0)
    # Window C=128, W=65 (LINEAR): 0 up to 95.5, 255 above 159.5, ((x-127.5)/64+0.5)*255 between.
    _both_polarities(values, 8, [0, 0, 0, 2, 129, 253, 255, 255], WindowCenter=128, WindowWidth=65)


def test_dicom_12bit_modality_then_window():
    values = [0, 800, 812, 1000, 1012, 1100, 1212, 4095]
    # Declared 12-bit range: v * 255 / 4095, half up.
    _both_polarities(values, 12, [0, 50, 51, 62, 63, 68, 75, 255])
    # Modality LUT m = 2v - 1024 first, then the window C=1000, W=801 (LINEAR) in modality
    # units: 0 up to m = 599.5, 255 above 1399.5, ((m-999.5)/800+0.5)*255 between.
    # m: -1024, 576, 600, 976, 1000, 1176, 1400, 7166
    _both_polarities(values, 12, [0, 0, 0, 120, 128, 184, 255, 255],
                     RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=1000, WindowWidth=801)
    # Several windows: the first is used.
    _both_polarities(values, 12, [0, 0, 0, 120, 128, 184, 255, 255],
                     RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=[1000, 50], WindowWidth=[801, 10])
    # LINEAR_EXACT C=1000, W=800: (m - 1000) / 800 + 0.5 on [600, 1400].
    _both_polarities(values, 12, [0, 0, 0, 120, 128, 184, 255, 255], RescaleSlope=2, RescaleIntercept=-1024,
                     WindowCenter=1000, WindowWidth=800, VOILUTFunction="LINEAR_EXACT")


def test_dicom_16bit_declared_range_signed_and_voi_lut_sequence():
    from pydicom.dataset import Dataset

    values = [0, 257, 1000, 32768, 40000, 65535]
    _both_polarities(values, 16, [0, 1, 4, 128, 156, 255])  # v * 255 / 65535, half up
    # Signed 16-bit with an intercept: the declared range is [-32768, 32767] + 1024.
    _both_polarities([-32768, 0, 32767], 16, [0, 128, 255], signed=True, RescaleSlope=1, RescaleIntercept=1024)
    # A VOI LUT Sequence: 4 entries from stored value 10, 8-bit output: below 10 the first
    # entry, beyond the table the last.
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 10, 8])  # LUT Descriptor: entries, first value, bits
    item.add_new(0x00283006, "US", [0, 100, 200, 255])  # LUT Data
    _both_polarities([0, 5, 10, 11, 12, 13, 65535], 16, [0, 0, 0, 100, 200, 255, 255], VOILUTSequence=[item])


def test_dicom_colour_of_any_depth_does_not_wrap():
    gray16 = np.array([[0, 1000, 32768, 65535]], np.uint16)
    rgb = np.repeat(gray16[..., None], 3, axis=2)
    img = read_image(_dicom_bytes(rgb, 16, "RGB"), name="rgb16.dcm")
    assert img.tolist() == [[0, 4, 128, 255]]  # astype(uint8) gave 0, 232, 0, 255
    rgb12 = np.repeat(np.array([[0, 2048, 4095]], np.uint16)[..., None], 3, axis=2)
    assert read_image(_dicom_bytes(rgb12, 12, "RGB"), name="rgb12.dcm").tolist() == [[0, 128, 255]]
    # True colour: luma of the 8-bit colour, as for a colour PNG.
    red = np.zeros((1, 1, 3), np.uint16)
    red[..., 0] = 65535
    assert read_image(_dicom_bytes(red, 16, "RGB"), name="red.dcm").item() == round(255 * 0.299)
    rgb8 = np.repeat(np.array([[0, 77, 255]], np.uint8)[..., None], 3, axis=2)
    assert read_image(_dicom_bytes(rgb8, 8, "RGB"), name="rgb8.dcm").tolist() == [[0, 77, 255]]


def test_window_function_edges():
    x = np.array([1535.0, 1536.0, 1536.5, 2048.0, 2559.0, 2559.5])
    # C=2048, W=1024, LINEAR: 0 up to 1536, 1 above 2559.
    got = window(x, 2048, 1024)
    assert got[0] == got[1] == 0.0 and got[-1] == 1.0
    assert got[2] == pytest.approx((1536.5 - 2047.5) / 1023 + 0.5)
    assert got[3] == pytest.approx(0.5 / 1023 + 0.5) and got[4] == pytest.approx(1.0)
    assert window(np.array([9.0, 10.0, 11.0]), 10.5, 1).tolist() == [0.0, 0.0, 1.0]  # width 1: a step
    assert window(np.array([10.0]), 10, 4, "SIGMOID")[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="Window Width"):
        window(x, 0, 0.5)
    with pytest.raises(ValueError, match="VOI LUT Function"):
        window(x, 0, 10, "LOG")
