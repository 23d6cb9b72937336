"""Top errors, the seed ensemble and its disagreement, against hand-computed values."""
import numpy as np
import pytest

from cxrlib import error_analysis as ea


def _preds(targets, scores, ids=None):
    targets, scores = np.asarray(targets, float), np.asarray(scores, float)
    n = len(targets)
    return {"targets": targets, "scores": scores, "label_names": np.array(["A", "B"][: targets.shape[1]]),
            "ids": np.array(ids or [f"i{k}" for k in range(n)]), "patient_ids": np.array([f"p{k}" for k in range(n)])}


def test_top_errors_by_hand():
    # finding A: negatives i0 0.9, i1 0.2, i2 0.6; positives i3 0.1, i4 0.8, i5 0.5.
    # False positives, highest first: i0 (0.9), i2 (0.6); false negatives, lowest first: i3, i5.
    p = _preds([[0], [0], [0], [1], [1], [1]], [[0.9], [0.2], [0.6], [0.1], [0.8], [0.5]])
    table = ea.top_errors(p, "A", n=2)
    assert list(table["kind"]) == [ea.FALSE_POSITIVE] * 2 + [ea.FALSE_NEGATIVE] * 2
    assert list(table["image id"]) == ["i0", "i2", "i3", "i5"] and list(table["row"]) == [0, 2, 3, 5]
    assert list(table["score"]) == [0.9, 0.6, 0.1, 0.5]
    # At threshold 0.7 only i0 is a wrong positive call; i3 and i5 are both missed.
    at = ea.top_errors(p, "A", n=3, threshold=0.7)
    assert list(at["image id"]) == ["i0", "i3", "i5"]
    assert ea.top_errors(p, "A", n=1, threshold=float("nan"))["image id"].tolist() == ["i0", "i3"]
    with pytest.raises(ValueError, match="unknown finding"):
        ea.top_errors(p, "Hernia")


def test_best_ranked_finding():
    # A ranks its one positive first (AUROC 1), B last (AUROC 0)
    p = _preds([[1, 1], [0, 0], [0, 0]], [[0.9, 0.1], [0.2, 0.5], [0.1, 0.6]])
    assert ea.best_ranked_finding(p) == "A"


def test_seed_ensemble_by_hand():
    # two seeds, two images, one finding: image 0 scored 0.2 and 0.4 (mean 0.3, SD 0.1),
    # image 1 scored 0.6 by both (mean 0.6, SD 0).
    a = _preds([[0], [1]], [[0.2], [0.6]])
    b = _preds([[0], [1]], [[0.4], [0.6]])
    ens = ea.seed_ensemble([a, b])
    np.testing.assert_allclose(ens["scores"][:, 0], [0.3, 0.6])
    np.testing.assert_allclose(ens["disagreement"][:, 0], [0.1, 0.0])
    assert int(ens["seeds"]) == 2
    with pytest.raises(ValueError, match="at least two"):
        ea.seed_ensemble([a])
    with pytest.raises(ValueError, match="other test images"):
        ea.seed_ensemble([a, _preds([[0], [1]], [[0.2], [0.6]], ids=["x", "y"])])


def test_distrust_flags_the_disputed_images_by_hand():
    # Four images, two findings, two seeds. Per image the largest SD over findings:
    # image 0: findings differ by 0.4 and 0.0 -> 0.2; image 1: 0.0 and 0.1 -> 0.05;
    # image 2: agree -> 0; image 3: 0.2 and 0.6 -> 0.3. Flag half (2 images): 3 and 0.
    y = [[1, 0], [0, 1], [1, 0], [0, 1]]
    s1 = [[0.3, 0.1], [0.2, 0.9], [0.9, 0.1], [0.4, 0.2]]
    s2 = [[0.7, 0.1], [0.2, 0.8], [0.9, 0.1], [0.6, 0.8]]
    ens = ea.seed_ensemble([_preds(y, s1), _preds(y, s2)])
    d = ea.distrust(ens, fraction=0.5)
    np.testing.assert_allclose(d.uncertainty, [0.2, 0.05, 0.0, 0.3])
    assert d.flagged.tolist() == [True, False, False, True]
    # ensemble means: image 0 [0.5, 0.1], image 3 [0.5, 0.5]; |p - y| = 0.5, 0.1, 0.5, 0.5 -> 0.4
    # images 1, 2: [0.2, 0.85] vs [0, 1] -> 0.2, 0.15; [0.9, 0.1] vs [1, 0] -> 0.1, 0.1 -> 0.1375
    flagged, other = d.table.iloc[0], d.table.iloc[1]
    assert flagged["images"] == 2 and flagged["mean |p - y|"] == pytest.approx(0.4)
    assert other["mean |p - y|"] == pytest.approx(0.1375)
    assert flagged["mean seed SD"] == pytest.approx(0.25) and other["mean seed SD"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match="seed_ensemble"):
        ea.distrust(_preds(y, s1))


def test_ensemble_table_rows():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 2)) < 0.4).astype(float)
    seeds = [_preds(y, np.clip(0.5 * y + 0.4 * rng.random(y.shape), 0, 1)) for _ in range(3)]
    table = ea.ensemble_table(seeds, n_bootstrap=50)
    assert list(table.index) == ["seed 0", "seed 1", "seed 2", "ensemble"]
    assert (table["CI low"] <= table["mean AUROC"]).all() and (table["mean AUROC"] <= table["CI high"]).all()


def test_seed_report_with_one_seed_says_what_to_do():
    one = ea.seed_report([_preds([[0], [1]], [[0.2], [0.6]])])
    assert one.table is None and one.distrust is None and "seeds.baseline" in one.note


def test_seed_report_in_words_from_its_tables():
    y = [[1, 0], [0, 1], [1, 0], [0, 1]]
    s1 = [[0.3, 0.1], [0.2, 0.9], [0.9, 0.1], [0.4, 0.2]]
    s2 = [[0.7, 0.1], [0.2, 0.8], [0.9, 0.1], [0.6, 0.8]]
    rep = ea.seed_report([_preds(y, s1), _preds(y, s2)], fraction=0.5, n_bootstrap=20)
    assert "2 seeds" in rep.note and "is 0.400, on the other 2 0.13" in rep.note  # 0.4 and 0.1375 above
    assert rep.distrust.flagged.tolist() == [True, False, False, True]
