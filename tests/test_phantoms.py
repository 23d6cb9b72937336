"""Synthetic chest phantoms: determinism, sizes, masks, label statistics, split, resolution."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlib.phantoms import (
    CXR14_COOCCURRENCE,
    CXR14_PREVALENCE,
    LUNG_FINDINGS,
    Phantom,
    PhantomSpec,
    phantom_split,
    phantom_table,
    render_phantom,
)
from cxrlib.labels import FINDINGS

NODULE = FINDINGS.index("Nodule")


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return phantom_table(3000, seed=0)


def _first_with(table: pd.DataFrame, finding: str, alone: bool = False) -> int:
    rows = table[finding] == 1
    if alone:
        rows &= table[list(FINDINGS)].sum(axis=1) == 1
    return int(np.flatnonzero(rows.to_numpy())[0])


def test_table_columns_ids_and_synthetic_marker(table):
    assert list(table.columns) == ["image_id", "patient_id", *FINDINGS]
    assert table["image_id"].iloc[123] == "phantom_00000123.png"
    assert table.attrs["synthetic"] is True and "synthetic" in table.attrs["description"]
    assert set(np.unique(table[list(FINDINGS)].to_numpy())) <= {0, 1}
    # Several images per patient, so that a patient-wise split matters.
    assert table["patient_id"].nunique() < 0.6 * len(table)
    # A shorter table is a prefix of a longer one.
    pd.testing.assert_frame_equal(phantom_table(500, seed=0), table.iloc[:500], check_like=False)


def test_render_is_deterministic_and_seed_dependent():
    a = render_phantom(7, 96, seed=3)
    b = render_phantom(7, 96, seed=3)
    assert isinstance(a, Phantom) and a.synthetic
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = render_phantom(7, 96, seed=4)
    assert np.abs(a.image.astype(int) - c.image.astype(int)).mean() > 1.0
    d = render_phantom(8, 96, seed=3)
    assert not np.array_equal(a.image, d.image)
    e = render_phantom(7, 96, seed=3, spec=PhantomSpec(contrast=2.0))
    assert a.labels.tolist() == e.labels.tolist()


@pytest.mark.parametrize("size", [32, 64, 200, 512])
def test_any_size(size, table):
    i = _first_with(table, "Effusion")
    p = render_phantom(i, size)
    assert p.image.shape == (size, size) and p.image.dtype == np.uint8
    assert p.masks.shape == (14, size, size) and p.masks.dtype == bool
    assert p.labels.dtype == np.float32 and p.labels.shape == (14,)
    assert p.lung_mask.shape == (size, size) and 0.15 < p.lung_mask.mean() < 0.6
    # A real picture: dark lungs, bright mediastinum, black air outside the body.
    img = p.image.astype(float)
    assert img[p.lung_mask].mean() < img[p.heart_mask].mean() - 20
    assert img.std() > 20


def test_labels_match_table_and_masks_match_labels(table):
    for i in range(0, 3000, 97):
        p = render_phantom(i, 64)
        np.testing.assert_array_equal(p.labels, table.loc[i, list(FINDINGS)].to_numpy(np.float32))
        assert p.patient_id == table.loc[i, "patient_id"]
        assert p.image_id == table.loc[i, "image_id"]
        np.testing.assert_array_equal(p.masks.any(axis=(1, 2)), p.labels == 1)


def test_every_finding_has_a_mask_and_lung_findings_lie_in_the_lungs(table):
    for name in FINDINGS:
        k = FINDINGS.index(name)
        for size in (32, 128):
            p = render_phantom(_first_with(table, name), size)
            assert p.labels[k] == 1 and p.masks[k].any(), (name, size)
            if name in LUNG_FINDINGS:
                assert not (p.masks[k] & ~p.lung_mask).any(), f"{name} mask leaves the lungs at {size} px"
    cardio = render_phantom(_first_with(table, "Cardiomegaly"), 128)
    np.testing.assert_array_equal(cardio.masks[FINDINGS.index("Cardiomegaly")], cardio.heart_mask)
    assert [b[0] for b in cardio.boxes()] == [FINDINGS[k] for k in np.flatnonzero(cardio.labels)]


def test_findings_change_the_image(table):
    """Each finding's pixels differ from the same phantom drawn with contrast 0."""
    for name in FINDINGS:
        i = _first_with(table, name)
        k = FINDINGS.index(name)
        on = render_phantom(i, 128).image.astype(float)
        off = render_phantom(i, 128, spec=PhantomSpec(contrast=0.0)).image.astype(float)
        mask = render_phantom(i, 128).masks[k]
        assert np.abs(on - off)[mask].mean() > 3.0, name


def test_prevalence_and_cooccurrence_follow_chestxray14():
    t = phantom_table(60000, seed=1)
    y = t[list(FINDINGS)].to_numpy(float)
    prev = y.mean(axis=0)
    # Binomial standard error, widened for the within-patient correlation of follow-ups.
    se = np.sqrt(CXR14_PREVALENCE * (1 - CXR14_PREVALENCE) / len(t)) * 3
    assert np.all(np.abs(prev - CXR14_PREVALENCE) < 4 * se + 1e-3), (prev, CXR14_PREVALENCE)
    co = (y.T @ y) / len(t)
    ref = CXR14_COOCCURRENCE / 112120
    big = ref > 0.005
    assert np.all(np.abs(co[big] - ref[big]) < 0.25 * ref[big] + 0.002)
    # The strongest real pairs keep their lift (Effusion-Atelectasis, Cardiomegaly-Effusion).
    a, c, e = FINDINGS.index("Atelectasis"), FINDINGS.index("Cardiomegaly"), FINDINGS.index("Effusion")
    assert co[a, e] > 1.5 * prev[a] * prev[e] and co[c, e] > 1.5 * prev[c] * prev[e]


def test_split_is_patient_wise(table):
    parts = phantom_split(table, seed=0)
    assert set(parts) == {"train", "val", "test"}
    all_rows = np.concatenate(list(parts.values()))
    assert sorted(all_rows.tolist()) == list(range(len(table)))
    patients = {k: set(table["patient_id"].to_numpy()[v]) for k, v in parts.items()}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    shares = [len(parts[k]) / len(table) for k in ("train", "val", "test")]
    assert abs(shares[0] - 0.7) < 0.03 and abs(shares[1] - 0.1) < 0.03 and abs(shares[2] - 0.2) < 0.03
    other = phantom_split(table, seed=1)
    assert not np.array_equal(other["test"], parts["test"])
    with pytest.raises(ValueError, match="patient_id"):
        phantom_split(pd.DataFrame({"x": [1]}), seed=0)


def _nodule_cnr(index: int, size: int) -> float:
    """Contrast-to-noise of the nodule on the rendered image: (mask mean - ring mean) / ring sd."""
    p = render_phantom(index, size)
    img = p.image.astype(float)
    mask = p.masks[NODULE]
    cy, cx = np.argwhere(mask).mean(axis=0)
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(yy - cy, xx - cx) / size
    ring = (d > 0.02) & (d < 0.05) & p.lung_mask
    return (img[mask].mean() - img[ring].mean()) / img[ring].std()


def test_nodule_loses_signal_at_low_resolution(table):
    rows = np.flatnonzero(((table["Nodule"] == 1) & (table[list(FINDINGS)].sum(axis=1) == 1)).to_numpy())[:6]
    assert len(rows) == 6
    low = np.mean([_nodule_cnr(int(i), 64) for i in rows])
    high = np.mean([_nodule_cnr(int(i), 256) for i in rows])
    assert high > 1.5, high  # visible at 256 px
    assert low < 0.5 * high, (low, high)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="size"):
        render_phantom(0, 4)
    with pytest.raises(ValueError, match="index"):
        render_phantom(-1, 64)
    with pytest.raises(TypeError, match="spec"):
        render_phantom(0, 64, spec={"contrast": 1})
    with pytest.raises(ValueError, match="contrast"):
        PhantomSpec(contrast=-1)
    with pytest.raises(ValueError, match="n="):
        phantom_table(-5)


def test_one_drawing_function_per_finding_in_label_order():
    from cxrlib.phantoms.findings import DRAW

    assert tuple(DRAW) == FINDINGS and all(callable(f) for f in DRAW.values())
