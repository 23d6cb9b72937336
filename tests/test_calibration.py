"""Calibration measures and fitted rescaling against hand-computed values."""
import math

import numpy as np
import pytest

from cxrlib import calibration, metrics


def test_reliability_ece_and_brier_by_hand():
    # probabilities 0.05 (neg), 0.15 (pos), 0.15 (neg), 0.95 (pos) in ten bins:
    #   0.0-0.1: 1 entry, predicted 0.05, observed 0
    #   0.1-0.2: 2 entries, predicted 0.15, observed 1/2
    #   0.9-1.0: 1 entry, predicted 0.95, observed 1
    # ECE = 1/4 x 0.05 + 2/4 x 0.35 + 1/4 x 0.05 = 0.2
    # Brier = (0.05^2 + 0.85^2 + 0.15^2 + 0.05^2) / 4 = 0.75 / 4 = 0.1875
    y, s = [0, 1, 0, 1], [0.05, 0.15, 0.15, 0.95]
    table = calibration.reliability(y, s)
    assert list(table.index) == ["0.0-0.1", "0.1-0.2", "0.9-1.0"]
    assert list(table["count"]) == [1, 2, 1]
    np.testing.assert_allclose(table["predicted"], [0.05, 0.15, 0.95])
    np.testing.assert_allclose(table["observed"], [0, 0.5, 1])
    assert calibration.ece(y, s) == pytest.approx(0.2)
    assert calibration.brier(y, s) == pytest.approx(0.1875)


def test_edges_and_logits_refused():
    # 1.0 belongs to the last bin, 0.1 to the bin above its edge
    table = calibration.reliability([1, 0], [1.0, 0.1])
    assert list(table.index) == ["0.1-0.2", "0.9-1.0"]
    with pytest.raises(ValueError, match="probabilities"):
        calibration.brier([1, 0], [2.3, -1.0])


def test_temperature_by_hand():
    # Every logit is ln 9 (p = 0.9) and 3 of 4 entries are positive. The likelihood is best
    # where sigmoid(ln 9 / T) = 3/4, i.e. ln 9 / T = ln 3: T = 2.
    y = np.array([[1, 1], [1, 0]])
    s = np.full((2, 2), 0.9)
    t = calibration.fit_temperature(y, s)
    assert t.value == pytest.approx(2.0, rel=1e-5)
    np.testing.assert_allclose(t.apply(s), 0.75, rtol=1e-5)
    with pytest.raises(ValueError, match="both classes"):
        calibration.fit_temperature(np.zeros((2, 2)), s)


def test_platt_by_hand():
    # Finding 0: four entries at logit -1 with one positive, four at +1 with three. The
    # best fit gives each group its own rate: slope x -1 + b = ln(1/3), slope + b = ln 3,
    # so slope = ln 3, intercept 0. Finding 1 has no positive: left as it was, with a warning.
    z = np.r_[[-1.0] * 4, [1.0] * 4]
    p = calibration.sigmoid(z)
    y = np.c_[[1, 0, 0, 0, 1, 1, 1, 0], np.zeros(8)]
    with pytest.warns(UserWarning, match="unfitted"):
        platt = calibration.fit_platt(y, np.c_[p, p])
    assert platt.slope[0] == pytest.approx(math.log(3), abs=1e-4)
    assert platt.intercept[0] == pytest.approx(0.0, abs=1e-4)
    assert platt.unfitted == (1,) and platt.slope[1] == 1 and platt.intercept[1] == 0
    np.testing.assert_allclose(platt.apply(np.c_[p, p])[:, 0], [0.25] * 4 + [0.75] * 4, atol=1e-4)


def test_rescaling_keeps_the_ranking_and_fixes_a_shifted_prior():
    # Scores of a model trained with class weights: every logit pushed up by 2 (a prior shift).
    rng = np.random.default_rng(0)
    n, k = 2000, 3
    y = (rng.random((n, k)) < 0.1).astype(float)
    true_logit = rng.normal(size=(n, k)) + 2.0 * y - 2.5
    y = (rng.random((n, k)) < calibration.sigmoid(true_logit)).astype(float)  # calibrated by construction
    shifted = calibration.sigmoid(true_logit + 2.0)
    half = n // 2
    val, test = slice(0, half), slice(half, n)
    t = calibration.fit_temperature(y[val], shifted[val])
    platt = calibration.fit_platt(y[val], shifted[val])
    for rescaled in (t.apply(shifted[test]), platt.apply(shifted[test])):
        np.testing.assert_allclose(metrics.auroc(y[test], rescaled), metrics.auroc(y[test], shifted[test]), atol=1e-12)
    raw = calibration.ece(y[test], shifted[test])
    assert calibration.ece(y[test], platt.apply(shifted[test])) < raw / 3  # the intercept undoes the shift
    np.testing.assert_allclose(platt.intercept, -2.0, atol=0.4)


def test_compare_runs_table():
    rng = np.random.default_rng(1)
    y = (rng.random((400, 2)) < 0.3).astype(float)
    s = np.clip(0.3 + 0.3 * y + 0.1 * rng.normal(size=y.shape), 0.01, 0.99)
    pred = {"targets": y, "scores": s}
    table = calibration.compare_runs({"a": pred}, {"a": pred})
    row = table.loc["a"]
    assert row["mean AUROC"] == pytest.approx(row["mean AUROC after T"], abs=1e-12)
    assert row["ECE"] == pytest.approx(calibration.ece(y, s))
    assert row["temperature"] > 0 and row["findings Platt left unfitted"] == 0
    before_after, t = calibration.before_after(pred, pred)
    assert before_after.index[1] == f"temperature T={t.value:.2f}"
