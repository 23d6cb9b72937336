"""MedMNIST npz files: the real PneumoniaMNIST file, bad files, the offline path."""
from __future__ import annotations

import numpy as np
import pytest

from cxrlib.config import DataConfig
from cxrlib.data import load_data
from cxrlib.data import medmnist as mm
from cxrlib.data.cache import resize_image


def test_real_npz_sizes(pneumoniamnist_npz):
    splits = mm.load_npz(pneumoniamnist_npz)
    assert {k: len(v.images) for k, v in splits.items()} == {"train": 3882, "val": 524, "test": 624}
    assert splits["train"].images.shape[1:] == (28, 28) and splits["train"].images.dtype == np.uint8
    assert splits["val"].labels.shape == (524, 1)
    assert int(splits["val"].labels.sum()) == 389 and int(splits["test"].labels.sum()) == 390


def test_bad_npz_errors(tmp_path):
    p = tmp_path / "broken.npz"
    np.savez(p, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="broken.npz.*missing key.*val_images"):
        mm.load_npz(p)
    arrays = {f"{s}_images": np.zeros((2, 28, 28), np.uint8) for s in mm.SPLITS}
    arrays |= {f"{s}_labels": np.zeros((2, 1)) for s in mm.SPLITS}
    arrays["test_labels"] = np.zeros((3, 1))
    np.savez(p, **arrays)
    with pytest.raises(ValueError, match="test_labels has shape"):
        mm.load_npz(p)
    arrays["test_labels"] = np.zeros((2, 1))
    arrays["val_images"] = np.zeros((2, 28, 28), np.float32)
    np.savez(p, **arrays)
    with pytest.raises(ValueError, match="val_images is float32"):
        mm.load_npz(p)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        mm.load_npz(tmp_path / "junk.npz")


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        mm.find_npz("chestmnist", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "chestmnist.npz") in msg and "pip install medmnist" in msg


def test_download_without_package_is_clear(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_medmnist(name, *args, **kwargs):
        if name == "medmnist":
            raise ImportError("No module named 'medmnist'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_medmnist)
    with pytest.raises(ImportError, match="pip install medmnist.*pneumoniamnist.npz"):
        mm.download("pneumoniamnist", tmp_path)
    with pytest.raises(ValueError, match="unknown MedMNIST"):
        mm.download("pathmnist", tmp_path)


def test_load_data_through_the_cache(pneumoniamnist_npz, tmp_path):
    cfg = DataConfig(source="pneumoniamnist", data_dir=str(pneumoniamnist_npz.parent), image_size=32,
                     cache_dir=str(tmp_path), workers=1)
    b = load_data(cfg, progress=False)
    assert (len(b.train), len(b.val), len(b.test)) == (3882, 524, 624)
    assert b.label_names == ["Pneumonia"] and b.missing == 0 and b.image_size == 32
    raw = mm.load_npz(pneumoniamnist_npz)["test"].images[5]
    assert np.array_equal(b.test.raw(5), resize_image(raw, 32))
    assert np.array_equal(b.full_image(b.test.image_ids[5]), raw)
    x, y = b.test[5]
    assert x.shape == (1, 32, 32) and y.shape == (1,)
    assert b.boxes(b.test.image_ids[5]) == [] and b.mask(b.test.image_ids[5], 0) is None
    with pytest.raises(ValueError, match="include_no_finding"):
        load_data(DataConfig(source="pneumoniamnist", data_dir=str(pneumoniamnist_npz), include_no_finding=True,
                             cache_dir=str(tmp_path)), progress=False)
