"""cxrlib.localization.exact: cross scores equal the localization scores, the permutation test's p."""
import numpy as np
import pytest

from cxrlib import localization as L
from cxrlib.localization import exact as lc
from cxrlib.cam import upsample_maps


def _maps_and_boxes(n=16, seed=0):
    rng = np.random.default_rng(seed)
    maps = upsample_maps(rng.random((n, 6, 6), dtype=np.float32), (48, 48))
    boxes = [(float(rng.integers(4, 30)), float(rng.integers(4, 30)), 12.0, 10.0) for _ in range(n)]
    return maps, boxes


@pytest.mark.parametrize("metric", ["pointing_game", "energy", "iobb@0.1", "iou@0.25"])
def test_cross_scores_are_the_localization_scores(metric):
    maps, boxes = _maps_and_boxes()
    mask = np.zeros((48, 48), bool)
    mask[10:20, 10:25] = True
    masks = [np.roll(mask, 3 * i, axis=0) for i in range(len(maps))]
    for regions in (boxes, masks):
        S = lc.cross_scores(maps, regions, metric)
        expected = [[float(L.score_one(maps[i], regions[j], "Mass")[metric]) for j in range(len(maps))]
                    for i in range(len(maps))]
        np.testing.assert_allclose(S, expected, atol=1e-12)


def test_cross_scores_resize_a_map_to_the_region_grid():
    maps, _ = _maps_and_boxes(4)
    boxes = [(100.0, 100.0, 200.0, 200.0)] * 4  # in a 480 px image
    S = lc.cross_scores(maps, boxes, "pointing_game", shapes=[(480, 480)] * 4)
    from cxrlib.cam import resize_heatmap
    expected = [float(L.pointing_game(resize_heatmap(m, (480, 480)), boxes[0])) for m in maps]
    np.testing.assert_allclose(S[:, 0], expected)


def test_permutation_test_by_hand():
    n = 10
    own = np.eye(n)  # each map hits its own region only
    r = lc.permutation_test(own, n_permutations=999, seed=0)
    assert r["model"] == 1.0 and r["chance"] == pytest.approx(0.1, abs=0.02)
    assert r["p_value"] == pytest.approx(1 / 1000)  # no permutation of 10 regions fixes all of them (w.h.p.)
    flat = np.full((n, n), 0.3)  # a map that scores the same on every region earns nothing
    assert lc.permutation_test(flat, 99)["p_value"] == 1.0
    none = np.zeros((n, n))  # no hit at all: p = 1, never "worse"
    assert lc.permutation_test(none, 99)["p_value"] == 1.0


def test_strata_keep_regions_within_their_finding():
    strata = np.array(["Mass"] * 5 + ["Nodule"] * 5)
    same = strata[:, None] == strata[None, :]
    cross = np.where(same, 0.5, 1.0)  # other findings' regions would score higher
    assert lc.permutation_test(cross, 99, strata=strata)["p_value"] == 1.0
    assert lc.permutation_test(cross, 99, strata=strata)["chance"] == pytest.approx(0.5)
    assert lc.permutation_test(cross, 99)["chance"] > 0.5


def test_holm_by_hand():
    np.testing.assert_allclose(lc.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(lc.holm([0.5]), [0.5])


def test_chance_test_verdicts():
    rng = np.random.default_rng(5)
    n = 12
    centres = rng.uniform(12, 36, (n, 2))
    boxes = [(cx - 5, cy - 5, 10.0, 10.0) for cx, cy in centres]
    yy, xx = np.mgrid[0:48, 0:48] + 0.5
    on_target = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 18) for cx, cy in centres])
    findings = ["Mass"] * n
    t = lc.chance_test(on_target, boxes, findings, metrics=["pointing_game", "iobb@0.1"], n_permutations=199)
    assert t.loc[("Mass", "pointing_game"), "verdict"] == lc.BETTER
    assert t.loc[("Mass", "pointing_game"), "p_holm"] >= t.loc[("Mass", "pointing_game"), "p_value"]
    # the same maps shuffled across images: the same sparsity and places, the link cut
    shuffled = on_target[np.roll(np.arange(n), 1)]
    t = lc.chance_test(shuffled, boxes, findings, n_permutations=199)
    assert t.loc[("Mass", "pointing_game"), "verdict"] == lc.NO_EVIDENCE
    few = lc.chance_test(on_target[:3], boxes[:3], findings[:3], n_permutations=99)
    assert few.loc[("Mass", "pointing_game"), "verdict"] == lc.TOO_FEW


def test_afp_is_not_testable():
    maps, boxes = _maps_and_boxes(4)
    with pytest.raises(ValueError, match="AFP is reported, not tested"):
        lc.cross_scores(maps, boxes, "afp@0.1")
    with pytest.raises(ValueError, match="one region per heatmap"):
        lc.cross_scores(maps, boxes[:2])


def test_pointing_cross_from_peaks_equals_the_cross_scores():
    maps, boxes = _maps_and_boxes(12, seed=3)
    peaks = [lc.peak_position(m) for m in maps]
    np.testing.assert_array_equal(lc.pointing_cross(peaks, boxes, [(48, 48)] * 12),
                                  lc.cross_scores(maps, boxes, "pointing_game"))
    t = lc.tests_by_finding({"pointing_game": lc.pointing_cross(peaks, boxes, [(48, 48)] * 12)}, ["Mass"] * 12, 99)
    assert t.loc[("Mass", "pointing_game"), "verdict"] == lc.NO_EVIDENCE  # random maps: no better than chance
