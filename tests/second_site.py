"""A second ChestX-ray14 folder in the release's layout, made from a subset of the real sample:
the external site of the tests on real data."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from cxrlib.data import chestxray14 as cx


def make_second_site(sample: Path, root: Path, n_train_val: int = 40, n_test: int = 20) -> Path:
    """``root/site_b`` with the sample's metadata table and split lists and links to
    ``n_train_val`` + ``n_test`` of its images (the last ones by name, so that a test can take
    the first ones for something else)."""
    site = root / "site_b"
    (site / "images").mkdir(parents=True, exist_ok=True)
    for name in ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt"):
        shutil.copyfile(sample / name, site / name)
    present = cx.find_images(sample)
    test = set(cx.read_list(sample / "test_list.txt")[0].tolist())
    names = sorted(present)[::-1]
    chosen = [n for n in names if n in test][:n_test] + [n for n in names if n not in test][:n_train_val]
    for name in chosen:
        link = site / "images" / name
        if not link.exists():
            os.symlink(present[name], link)
    return site
