"""Decoding every kind of file the release and the demo meet into uint8 gray."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cxrlib.data import chestxray14 as cx
from cxrlib.data.imageio import ImageError, read_image


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


def test_dicom_monochrome1(tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(tmp_path / "x.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    pixels = np.tile(np.arange(0, 4000, 125, dtype=np.uint16), (8, 1))
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    img = read_image(tmp_path / "x.dcm")
    assert img.shape == (8, 32) and img[0, 0] == 255 and img[0, -1] == 0  # inverted


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
    with pytest.raises(ImageError, match="notes.txt.*not a readable image"):
        read_image(b"hello, not an image", name="notes.txt")
    big = io.BytesIO()
    Image.new("L", (300, 300)).save(big, format="PNG")
    with pytest.raises(ImageError, match="max_pixels"):
        read_image(big.getvalue(), name="big.png", max_pixels=10_000)
