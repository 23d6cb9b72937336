"""The registry of data sources: what each offers, and bundles that follow it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cxrlib.data
from cxrlib import phantoms
from cxrlib.config import DataConfig, ExperimentConfig
from cxrlib.data import DataBundle, load_data
from cxrlib.data.sources import Offers, get_source, make_plan, source_names
from cxrlib.labels import FINDINGS


def test_registry_lists_every_source_with_its_capabilities():
    assert cxrlib.data.SOURCES == source_names() == ("phantoms", "chestxray14", "chestmnist", "pneumoniamnist")
    assert get_source("phantoms").offers == Offers(masks=True, boxes=False, patient_ids=True, needs_data_dir=False)
    assert get_source("chestxray14").offers == Offers(masks=False, boxes=True, patient_ids=True, needs_data_dir=True)
    for name in ("chestmnist", "pneumoniamnist"):
        assert get_source(name).offers == Offers(masks=False, boxes=False, patient_ids=False, needs_data_dir=False)
    with pytest.raises(ValueError, match="unknown data source 'nih'.*phantoms"):
        get_source("nih")


def test_common_checks_name_the_value():
    with pytest.raises(ValueError, match="unknown data source"):
        make_plan(DataConfig(source="pathmnist"))
    with pytest.raises(ValueError, match="needs data_dir.*Data_Entry"):
        make_plan(DataConfig(source="chestxray14"))
    with pytest.raises(ValueError, match="image_size 4"):
        make_plan(DataConfig(image_size=4))
    with pytest.raises(ValueError, match="on_corrupt"):
        make_plan(DataConfig(on_corrupt="ignore"))


def test_a_real_phantom_bundle_offers_masks_and_no_boxes(tmp_path):
    """Localization on phantoms must score masks: the bundle gives no boxes to score."""
    b = load_data(DataConfig(source="phantoms", num_phantoms=48, image_size=32, cache_dir=str(tmp_path), workers=1),
                  progress=False)
    assert isinstance(b, DataBundle) and b.offers.masks and not b.offers.boxes
    hits = 0
    for i, image_id in enumerate(b.test.image_ids):
        assert b.boxes(str(image_id)) == []
        for k in np.flatnonzero(b.test.targets[i]):
            mask = b.mask(str(image_id), FINDINGS[k])
            assert mask.shape == (32, 32) and mask.any()
            hits += 1
    assert hits > 0, "no finding in the test part to check"


def test_phantom_cache_key_and_run_fingerprint_hash_the_whole_package(monkeypatch):
    """A change in any module of cxrlib.phantoms (here: findings.py) gives another cache, and
    another run fingerprint: a run trained on the old drawings is not reused."""
    cfg = DataConfig(source="phantoms", num_phantoms=60)
    run = ExperimentConfig(data=cfg)
    real = ExperimentConfig(data=DataConfig(source="chestxray14"))
    key, run_fp, real_fp = make_plan(cfg).cache_key, run.fingerprint(), real.fingerprint()
    fingerprint = phantoms.code_fingerprint()
    read_bytes = Path.read_bytes

    def edited(path: Path) -> bytes:
        data = read_bytes(path)
        return data + b"\n# edited\n" if path.name == "findings.py" and path.parent.name == "phantoms" else data

    monkeypatch.setattr(Path, "read_bytes", edited)
    phantoms.code_fingerprint.cache_clear()  # read once per process; this test edits the source
    try:
        assert phantoms.code_fingerprint() != fingerprint
        assert make_plan(cfg).cache_key != key
        assert run.fingerprint() != run_fp
        assert real.fingerprint() == real_fp  # real images do not depend on the phantoms' code
    finally:
        monkeypatch.undo()
        phantoms.code_fingerprint.cache_clear()
