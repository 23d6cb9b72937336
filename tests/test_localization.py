"""Localization scores against hand-computed values on small synthetic maps and boxes."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cxrlib import localization as loc


def spot(shape=(10, 10), at=((2, 3),)):
    h = np.zeros(shape, dtype=np.float32)
    for r, c in at:
        h[r, c] = 1.0
    return h


# ----------------------------------------------------------------------------- pointing game


def test_pointing_game_uses_pixel_centre_inside_box():
    h = spot(at=[(2, 3)])  # peak centre at (x=3.5, y=2.5)
    assert loc.pointing_game(h, (3, 2, 2, 2)) is True
    assert loc.pointing_game(h, (4, 2, 2, 2)) is False  # 3.5 < 4
    assert loc.pointing_game(h, (4, 2, 2, 2), tolerance=0.5) is True  # 0.5 px away
    assert loc.pointing_game(h, (4, 2, 2, 2), tolerance=0.49) is False
    # A Box-like object works the same as a tuple.
    assert loc.pointing_game(h, SimpleNamespace(finding="Nodule", x=3, y=2, w=2, h=2)) is True


def test_pointing_game_ties_take_first_maximum_in_row_major_order():
    h = spot(at=[(5, 5), (1, 8), (1, 1)])
    assert loc.peak(h) == (1, 1)
    assert loc.pointing_game(h, (0, 0, 2, 2)) is True
    assert loc.pointing_game(h, (5, 5, 1, 1)) is False
    # A flat map points at the top-left pixel.
    assert loc.peak(np.zeros((4, 4))) == (0, 0)


def test_pointing_game_with_mask_and_several_boxes():
    h = spot(at=[(6, 7)])
    mask = np.zeros((10, 10), dtype=bool)
    mask[6, 7] = True
    assert loc.pointing_game(h, mask) is True
    mask2 = np.zeros((10, 10), dtype=bool)
    mask2[6, 9] = True
    assert loc.pointing_game(h, mask2) is False
    assert loc.pointing_game(h, mask2, tolerance=2) is True
    assert loc.pointing_game(h, [(0, 0, 1, 1), (7, 6, 1, 1)]) is True  # any box counts


# ----------------------------------------------------------------------------- T(IoBB)


def test_predicted_boxes_two_levels_on_a_ramp():
    # Columns 0..9 hold c/9; scaled to [0,255] that is 28.33*c: >=60 from c=3, >=180 from c=7.
    h = np.tile(np.arange(10, dtype=np.float32) / 9, (10, 1))
    assert loc.predicted_boxes(h) == [(3, 0, 7, 10), (7, 0, 3, 10)]
    # IoBB against the right-most three columns: 30/70 for the wide box, 1 for the narrow one.
    assert loc.iobb(h, (7, 0, 3, 10)) == pytest.approx(1.0)
    assert loc.iobb(h, (7, 0, 3, 10), levels=(60,)) == pytest.approx(30 / 70)


def test_iobb_hand_computed_two_components():
    h = np.zeros((10, 10), dtype=np.float32)
    h[0:2, 0:2] = 1.0  # scaled 255: in both binary maps
    h[6:10, 6:10] = 0.5  # scaled 127.5: only in the level-60 map
    assert sorted(loc.predicted_boxes(h)) == [(0, 0, 2, 2), (0, 0, 2, 2), (6, 6, 4, 4)]
    gt = (6, 6, 2, 2)  # covers a quarter of the 4x4 component
    assert loc.iobb(h, gt) == pytest.approx(0.25)
    assert loc.iobb(h, gt, 0.1) is True
    assert loc.iobb(h, gt, 0.25) is False  # a hit needs IoBB > T
    assert loc.iobb(h, gt, 0.5) is False
    # Against a mask: 8 of the 16 pixels of the 4x4 box.
    mask = np.zeros((10, 10), dtype=bool)
    mask[6:8, 6:10] = True
    assert loc.iobb(h, mask) == pytest.approx(0.5)
    # Fractional boxes overlap continuously: (6.5, 6, 1, 4) covers 4 of 16 pixel units.
    assert loc.iobb(h, (6.5, 6, 1, 4)) == pytest.approx(0.25)


def test_flat_map_predicts_no_box_and_misses():
    flat = np.full((8, 8), 0.3, dtype=np.float32)
    assert loc.predicted_boxes(flat) == []
    assert loc.iobb(flat, (0, 0, 8, 8)) == 0.0
    assert loc.iobb(flat, (0, 0, 8, 8), 0.1) is False
    nan_map = np.full((8, 8), np.nan)
    assert loc.predicted_boxes(nan_map) == []


# ----------------------------------------------------------------------------- random baseline


def test_area_share_boxes_masks_and_clipping():
    assert loc.area_share((0, 0, 5, 5), (10, 10)) == pytest.approx(0.25)
    assert loc.area_share((-5, -5, 10, 10), (10, 10)) == pytest.approx(0.25)  # clipped
    # Two overlapping 4x4 boxes: 16 + 16 - 4 = 28 pixels of 100.
    assert loc.area_share([(0, 0, 4, 4), (2, 2, 4, 4)], (10, 10)) == pytest.approx(0.28)
    mask = np.zeros((10, 10), dtype=bool)
    mask.flat[:7] = True
    assert loc.area_share(mask, (10, 10)) == pytest.approx(0.07)


def test_random_point_hit_rate_equals_area_share():
    rng = np.random.default_rng(0)
    box = (0, 0, 10, 5)  # 50 of 400 pixels
    hits = [loc.pointing_game(rng.random((20, 20)), box) for _ in range(4000)]
    assert loc.area_share(box, (20, 20)) == pytest.approx(0.125)
    assert np.mean(hits) == pytest.approx(0.125, abs=0.02)


# ----------------------------------------------------------------------------- tables


def test_localization_table_exact_values():
    a = spot(at=[(2, 3)])  # hits (3,2,2,2); its only box is the pixel (3,2,1,1): IoBB 1
    b = spot(at=[(9, 9)])  # misses; its box (9,9,1,1) is outside: IoBB 0
    mask = np.zeros((10, 10), dtype=bool)
    mask[2, 3] = mask[2, 4] = True
    table = loc.localization_table(
        [a, b, a],
        [(3, 2, 2, 2), (0, 0, 5, 2), mask],
        ["Nodule", "Nodule", "Mass"],
    )
    assert list(table.index) == ["Mass", "Nodule", "All"]  # CheXNet order, then All
    assert list(table.columns) == ["n", "pointing_game", "random_baseline", "iobb@0.1", "iobb@0.25", "iobb@0.5"]
    nodule = table.loc["Nodule"]
    assert nodule["n"] == 2
    assert nodule["pointing_game"] == pytest.approx(0.5)
    assert nodule["random_baseline"] == pytest.approx((0.04 + 0.10) / 2)
    assert nodule["iobb@0.1"] == pytest.approx(0.5)
    assert nodule["iobb@0.5"] == pytest.approx(0.5)
    mass = table.loc["Mass"]
    assert (mass["n"], mass["pointing_game"], mass["random_baseline"]) == (1, 1.0, pytest.approx(0.02))
    assert table.loc["All", "n"] == 3
    assert table.loc["All", "pointing_game"] == pytest.approx(2 / 3)

    scores = loc.localization_scores([a, b], [(3, 2, 2, 2), (0, 0, 5, 2)], ["Nodule", "Infiltrate"], ["i1", "i2"])
    assert list(scores["finding"]) == ["Nodule", "Infiltration"]  # BBox list spelling accepted
    assert list(scores["iobb"]) == [pytest.approx(1.0), 0.0]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="does not match heatmap shape"):
        loc.pointing_game(np.zeros((4, 4)), np.zeros((5, 5), dtype=bool))
    with pytest.raises(ValueError, match="positive width"):
        loc.iobb(np.zeros((4, 4)), (0, 0, 0, 2))
    with pytest.raises(ValueError, match="same length"):
        loc.localization_table([np.zeros((4, 4))], [], ["Nodule"])
    with pytest.raises(ValueError, match="2-D"):
        loc.pointing_game(np.zeros(4), (0, 0, 1, 1))


# ----------------------------------------------------------------------------- datasets


class _PeakModel(torch.nn.Module):
    """Logit k = mean of its feature channel; channel k is the image itself (peak = brightest)."""

    def __init__(self, k=14):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, k, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


class _FakeDataset:
    def __init__(self, ids, image):
        self.image_ids = np.array(ids)
        self.targets = np.zeros((len(ids), 14), np.float32)
        self.label_names = list(loc.FINDINGS)
        self.image = image

    def __getitem__(self, i):
        return self.image, torch.zeros(14)


def test_evaluate_localization_boxes_on_full_image():
    size, full = 16, 64
    img = torch.zeros(1, size, size)
    img[0, 4, 12] = 1.0  # bright pixel at (row 4, col 12) of the model input
    box_hit = SimpleNamespace(finding="Nodule", x=48, y=16, w=4, h=4)  # the same spot, x4
    box_miss = SimpleNamespace(finding="Infiltrate", x=0, y=40, w=20, h=20)
    ds = _FakeDataset(["a.png", "b.png"], img)
    data = SimpleNamespace(
        test=ds, source="chestxray14",
        boxes=lambda i: [box_hit, box_miss] if i == "a.png" else [],
        full_image=lambda i: np.zeros((full, full), np.uint8),
        mask=lambda i, f: None,
    )
    model = _PeakModel()
    table, scores = loc.evaluate_localization(model, data, target_layers=[model.conv])
    assert list(scores["finding"]) == ["Nodule", "Infiltration"]
    assert list(scores["pointing_game"]) == [True, False]
    assert table.loc["Nodule", "random_baseline"] == pytest.approx(16 / full**2)
    assert table.loc["Infiltration", "n"] == 1


def test_evaluate_localization_phantom_masks_at_model_size():
    size = 16
    img = torch.zeros(1, size, size)
    img[0, 10, 3] = 1.0
    ds = _FakeDataset(["p0.png", "p1.png"], img)
    ds.targets[0, 5] = 1.0  # Nodule positive on p0 only
    mask = np.zeros((size, size), dtype=bool)
    mask[9:12, 2:5] = True
    data = SimpleNamespace(
        test=ds, source="phantoms", boxes=lambda i: [],
        full_image=lambda i: pytest.fail("phantom masks are scored at the model's size"),
        mask=lambda i, f: mask if f == "Nodule" else None,
    )
    model = _PeakModel()
    table, scores = loc.evaluate_localization(model, data, target_layers=[model.conv])
    assert list(scores["image_id"]) == ["p0.png"] and list(scores["finding"]) == ["Nodule"]
    assert scores["pointing_game"].item() is True
    assert table.loc["Nodule", "random_baseline"] == pytest.approx(9 / 256)
