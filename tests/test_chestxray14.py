"""ChestX-ray14 as NIH ships it: splits, partial downloads, folder layouts, the box list."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from cxrlib.config import DataConfig
from cxrlib.data import load_data
from cxrlib.data import chestxray14 as cx


@pytest.fixture(scope="module")
def table(cxr14_sample):
    return cx.read_data_entry(cx.find_data_entry(cxr14_sample))


@pytest.fixture(scope="module")
def bundle(cxr14_sample, tmp_path_factory):
    """The whole sample at 16 px (decoding 621 PNGs once for the module)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = load_data(DataConfig(source="chestxray14", data_dir=str(cxr14_sample), image_size=16,
                                 cache_dir=str(tmp_path_factory.mktemp("cache")), workers=2), progress=False)
    b.caught = [str(w.message) for w in caught]
    return b


def _no_overlap(split):
    parts = list(split.patient_ids)
    for a in parts:
        for b in parts:
            if a < b:
                assert len(np.intersect1d(split.patient_ids[a], split.patient_ids[b])) == 0


def test_official_split_counts_and_patients(cxr14_sample, table):
    s = cx.official_split(cxr14_sample, table, val_fraction=0.1, seed=0)
    sizes = s.sizes()
    assert sizes["train"] + sizes["val"] == 86_524 and sizes["test"] == 25_596
    _no_overlap(s)
    tv_patients = np.unique(np.concatenate([s.patient_ids["train"], s.patient_ids["val"]]))
    assert len(tv_patients) == 28_008 and len(np.unique(s.patient_ids["test"])) == 2_797
    assert len(np.unique(s.patient_ids["val"])) == round(0.1 * 28_008)
    again = cx.official_split(cxr14_sample, table, val_fraction=0.1, seed=0)
    other = cx.official_split(cxr14_sample, table, val_fraction=0.1, seed=1)
    assert np.array_equal(again.image_ids["val"], s.image_ids["val"])
    assert not np.array_equal(other.image_ids["val"], s.image_ids["val"])


def test_chexnet_split(cxr14_sample, table):
    s = cx.chexnet_split(cxr14_sample, table)
    assert s.sizes() == {"train": 78_468, "val": 11_219, "test": 22_433}
    assert s.name == "CheXNet random patient-wise 70/10/20"
    _no_overlap(s)
    assert s.targets["test"].shape == (22_433, 14)
    present = cx.find_images(cxr14_sample)
    assert np.isin(list(present), s.image_ids["test"]).all()  # all 621 are CheXNet test images


@pytest.mark.slow  # decodes the 621 sample PNGs once for the module
def test_partial_download_counts(cxr14_sample, bundle):
    assert len(cx.find_images(cxr14_sample)) == 621
    b = bundle
    assert b.missing == 112_120 - 621
    assert len(b.train) + len(b.val) == 546 and len(b.test) == 75
    assert sum(b.missing_by_part.values()) == b.missing
    assert any("111499 of 112120" in m and "621 are present" in m for m in b.caught)
    assert b.split_name == "official patient-wise split (test_list.txt)"
    assert len(b.cache) == 621  # one cache for the whole dataset, shared by every split


def test_full_size_and_rgba_files(cxr14_sample, bundle):
    b = bundle
    from PIL import Image

    sides = {}
    for image_id, path in cx.find_images(cxr14_sample).items():
        with Image.open(path) as im:
            if im.size[0] == 1024:
                sides[image_id] = im.mode
    assert sorted(sides.values()).count("RGBA") == 6 and len(sides) == 12
    rgba = [i for i, m in sides.items() if m == "RGBA"][0]
    full = b.full_image(rgba)
    assert full.shape == (1024, 1024) and full.dtype == np.uint8


def test_box_list(cxr14_sample):
    boxes = cx.read_boxes(cxr14_sample / "BBox_List_2017.csv")
    assert len(boxes) == 880 and sum(len(v) for v in boxes.values()) == 984
    findings = {b.finding for v in boxes.values() for b in v}
    assert len(findings) == 8 and "Infiltration" in findings and "Infiltrate" not in findings
    b = boxes["00013118_008.png"][0]
    assert b.finding == "Atelectasis" and b.x == pytest.approx(225.084745762712) and b.image_size == 1024
    small = b.to_size(1024, 256)
    assert small.x == pytest.approx(b.x / 4) and small.h == pytest.approx(b.h / 4) and small.image_size == 256


def test_boxes_follow_the_file_size(cxr14_sample, bundle):
    """Sample files downsized to 512 get their boxes halved, so overlays line up."""
    b = bundle
    listed = cx.read_boxes(cxr14_sample / "BBox_List_2017.csv")
    present = cx.find_images(cxr14_sample)
    with_boxes = [i for i in present if i in listed]
    assert len(with_boxes) == 12
    for image_id in with_boxes:
        side = b.full_image(image_id).shape[0]
        got = b.boxes(image_id)
        assert [g.image_size for g in got] == [side] * len(got)
        assert got[0].w == pytest.approx(listed[image_id][0].w * side / 1024)
    assert b.boxes("00000001_000.png") == []


def test_bad_box_row_named(tmp_path):
    p = tmp_path / "BBox_List_2017.csv"
    p.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Nodul,1,2,3,4,,,\n")
    with pytest.raises(ValueError, match="row 2.*Nodul"):
        cx.read_boxes(p)


def _mini_release(src, dst, image_ids, layout="images"):
    dst.mkdir(exist_ok=True)
    for name in ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt"):
        (dst / name).symlink_to(src / name)
    for k, image_id in enumerate(image_ids):
        folder = dst / "images" if layout == "images" else dst / f"images_{k % 3 + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image_id).symlink_to(src / "images" / image_id)
    return dst


def test_tarball_layout(cxr14_sample, tmp_path):
    ids = sorted(cx.find_images(cxr14_sample))[:30]
    root = _mini_release(cxr14_sample, tmp_path / "release", ids, layout="tarballs")
    found = cx.find_images(root)
    assert sorted(found) == ids and any("images_002" in str(p) for p in found.values())


def test_no_images_error_says_where(cxr14_sample, tmp_path):
    root = _mini_release(cxr14_sample, tmp_path / "release", [])
    with pytest.raises(FileNotFoundError) as err:
        load_data(DataConfig(source="chestxray14", data_dir=str(root), cache_dir=str(tmp_path / "c")), progress=False)
    assert str(root / "images") in str(err.value) and "images_0XX" in str(err.value)


def test_missing_table_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017"):
        cx.find_data_entry(tmp_path)


def test_custom_list_files_and_overlap_error(cxr14_sample, table, tmp_path):
    ids = sorted(cx.find_images(cxr14_sample))
    folder = tmp_path / "mysplit"
    folder.mkdir()
    (folder / "train_list.txt").write_text("\n".join(ids[:300]) + "\n")
    (folder / "val_list.txt").write_text("\n".join(ids[300:400]) + "\n")
    (folder / "test_list.txt").write_text("\n".join(ids[400:]) + "\n")
    s = cx.load_split(cxr14_sample, str(folder), table)
    assert s.sizes() == {"train": 300, "val": 100, "test": 221} and "custom" in s.name
    assert np.array_equal(s.targets["val"], table.targets[table.rows(ids[300:400])])
    # The same patient in train and test: a clear error naming the patient.
    other = cx.patient_of(ids[0])
    clash = "%08d_999.png" % other
    t2 = tmp_path / "Data_Entry_2017.csv"
    t2.write_text(f"Image Index,Finding Labels,Patient ID\n{ids[0]},Mass,{other}\n{clash},Mass,{other}\n")
    small = cx.read_data_entry(t2)
    (folder / "train_list.txt").write_text(ids[0] + "\n")
    (folder / "val_list.txt").write_text("")
    (folder / "test_list.txt").write_text(clash + "\n")
    with pytest.raises(ValueError, match="empty"):
        cx.list_split(folder, small, "x")
    (folder / "val_list.txt").write_text(clash.replace("999", "998") + " " + " ".join(["0"] * 14) + "\n")
    with pytest.raises(ValueError) as err:
        cx.list_split(folder, small, "x")
    assert str(other) in str(err.value) and "train" in str(err.value) and "test" in str(err.value)


def test_malformed_list_line_named(tmp_path):
    p = tmp_path / "train_list.txt"
    p.write_text("00000001_000.png 0 1 0 0 0 0 0 0 0 0 0 0 0 0\n00000002_000.png 0 1\n")
    with pytest.raises(ValueError, match="line 2"):
        cx.read_list(p)


def test_limit_is_deterministic_and_patient_wise(cxr14_sample, tmp_path):
    cfg = DataConfig(source="chestxray14", data_dir=str(cxr14_sample), image_size=16, limit=20,
                     cache_dir=str(tmp_path), workers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = load_data(cfg, progress=False)
        b = load_data(cfg, progress=False)
    assert [len(a.train), len(a.val), len(a.test)] == [20, 20, 20]
    assert np.array_equal(a.train.image_ids, b.train.image_ids)
    assert len(a.cache) == 60  # a capped run caches only what it uses
    assert not set(a.train.patient_ids) & set(a.test.patient_ids)
    idx = cx.limit_part(np.array(["a_0", "a_1", "b_0", "c_0"]), np.array([1, 1, 2, 3]), 2, seed=0)
    assert len(idx) == 2
