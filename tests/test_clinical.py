"""Thresholds and operating points against values computed by hand in the comments."""
import math

import numpy as np
import pytest

from cxrlib import clinical
from cxrlib.clinical import ThresholdRule

# One finding, six images: three negatives (0.1, 0.4, 0.8) and three positives (0.35, 0.7, 0.9).
Y = np.array([0, 0, 1, 0, 1, 1])
S = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.9])


def test_youden_threshold_by_hand():
    # J = sens + spec - 1 at each score used as threshold (score >= t is positive):
    #   t=0.10: 3/3 + 0/3 - 1 = 0      t=0.35: 3/3 + 1/3 - 1 = 1/3   t=0.40: 2/3 + 1/3 - 1 = 0
    #   t=0.70: 2/3 + 2/3 - 1 = 1/3    t=0.80: 1/3 + 2/3 - 1 = 0     t=0.90: 1/3 + 3/3 - 1 = 1/3
    # J = 1/3 at 0.35, 0.7 and 0.9; the rule takes the highest of them.
    assert clinical.youden_threshold(Y, S) == 0.9
    assert ThresholdRule("youden").choose(Y, S) == 0.9


def test_sensitivity_threshold_by_hand():
    # positives sorted high to low: 0.9, 0.7, 0.35. Target 0.6 needs ceil(0.6 x 3) = 2 of them: 0.7.
    assert clinical.sensitivity_threshold(Y, S, 0.6) == 0.7
    # 2/3 = 0.667 < 0.67: all three are needed, so the threshold drops to the lowest positive.
    assert clinical.sensitivity_threshold(Y, S, 0.67) == 0.35
    assert clinical.sensitivity_threshold(Y, S, 1.0) == 0.35
    assert ThresholdRule("sensitivity", 0.5).choose(Y, S) == 0.7  # ceil(1.5) = 2


def test_rule_without_both_classes_is_undefined_and_bad_rules_are_refused():
    assert math.isnan(ThresholdRule().choose([0, 0, 0], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="unknown threshold rule"):
        ThresholdRule("accuracy")
    with pytest.raises(ValueError, match="target in"):
        ThresholdRule("sensitivity")


def test_confusion_rates_by_hand():
    # t = 0.9: called positive only the 0.9 (a positive). TP 1, FN 2, FP 0, TN 3.
    r = clinical.confusion_rates(Y, S, 0.9)
    assert r["sensitivity"][0] == pytest.approx(1 / 3) and r["specificity"][0] == 1.0
    assert r["ppv"][0] == 1.0 and r["npv"][0] == pytest.approx(3 / 5)
    # A bootstrap resample as multiplicities [2, 1, 1, 0, 1, 0] at t = 0.7:
    # positives drawn: 0.35 (x1, missed), 0.7 (x1, found) -> sens 1/2;
    # negatives drawn: 0.1 (x2), 0.4 (x1), both below -> spec 3/3; PPV 1/1; NPV 3/(3 + 1).
    w = np.array([[2, 1, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1]])
    r = clinical.confusion_rates(Y, S, 0.7, weights=w)
    np.testing.assert_allclose(r["sensitivity"], [0.5, 2 / 3])
    np.testing.assert_allclose(r["specificity"], [1.0, 2 / 3])
    np.testing.assert_allclose(r["ppv"], [1.0, 2 / 3])
    np.testing.assert_allclose(r["npv"], [0.75, 2 / 3])


def test_bayes_by_hand():
    # sens 0.9, spec 0.8, prevalence 0.1: PPV = 0.09 / (0.09 + 0.2 x 0.9) = 1/3,
    # NPV = 0.72 / (0.72 + 0.1 x 0.1) = 0.72 / 0.73.
    ppv, npv = clinical.bayes_ppv_npv(0.9, 0.8, 0.1)
    assert float(ppv) == pytest.approx(1 / 3) and float(npv) == pytest.approx(0.72 / 0.73)
    with pytest.raises(ValueError, match="prevalence"):
        clinical.bayes_ppv_npv(0.9, 0.8, 0.0)


def _preds(y, s, pids=None):
    y, s = np.asarray(y, float), np.asarray(s, float)
    return {"targets": y, "scores": s, "label_names": np.array(["A", "B"]),
            "ids": np.array([f"i{k}" for k in range(len(y))]),
            "patient_ids": np.asarray(pids if pids is not None else np.arange(len(y)))}


def test_operating_points_threshold_from_validation_stats_on_test():
    # Validation: finding A is the six images above (Youden threshold 0.9); finding B has no
    # positive there, so no threshold and no statistics.
    val = _preds(np.c_[Y, np.zeros(6)], np.c_[S, S])
    # Test: A's scores 0.95 (pos), 0.9 (neg), 0.5 (pos), 0.2 (neg). At t = 0.9: TP 1 (0.95),
    # FP 1 (0.9), FN 1 (0.5), TN 1 (0.2): every rate 1/2. Prevalence 2/4.
    test = _preds([[1, 1], [0, 0], [1, 0], [0, 0]], [[0.95, 0.1], [0.9, 0.2], [0.5, 0.3], [0.2, 0.4]],
                  pids=["p1", "p1", "p2", "p3"])
    table = clinical.operating_points(val, test, ThresholdRule("youden"), clinical_prevalence=0.1,
                                      n_bootstrap=200, seed=1)
    a = table.loc["A"]
    assert a["threshold"] == 0.9 and a["test positives"] == 2 and a["test prevalence"] == 0.5
    for stat in clinical.STATS:
        assert a[stat] == 0.5
        assert 0.0 <= a[f"{stat} lo"] <= a[stat] <= a[f"{stat} hi"] <= 1.0
    # Bayes at 10%: PPV = 0.05 / (0.05 + 0.5 x 0.9) = 0.1; NPV = 0.45 / (0.45 + 0.05) = 0.9
    assert a["ppv at clinic"] == pytest.approx(0.1) and a["npv at clinic"] == pytest.approx(0.9)
    assert math.isnan(table.loc["B", "threshold"]) and math.isnan(table.loc["B", "sensitivity"])
    assert table.attrs["bootstrap"] == "patients" and table.attrs["n_bootstrap"] == 200
    assert "Youden" in table.attrs["rule"]
    assert "PPV 10%" in clinical.headline(table, "A", auroc=0.75)
    assert clinical.rarest_scored(table) == "A"  # B has no threshold
    assert clinical.headline(table, "B", auroc=float("nan")) == (
        "B: AUROC undefined (the test part lacks a positive or a negative); no threshold: the validation part has "
        "no positive (or no negative) of it")
    assert clinical.rarest_scored(table.drop(index="A")) is None


def test_operating_points_bootstrap_moves_patients_together():
    # Two patients: p1 holds both positives, p2 both negatives. A patient resample draws
    # p1 twice, p2 twice or one each: a resample without p1 has no positive, so sensitivity
    # is defined only where p1 was drawn, and then every positive is there: always 1.
    val = _preds([[0, 0], [1, 1]], [[0.2, 0.2], [0.8, 0.8]])
    test = _preds([[1, 1], [1, 1], [0, 0], [0, 0]], [[0.9, 0.9], [0.85, 0.85], [0.1, 0.1], [0.3, 0.3]],
                  pids=["p1", "p1", "p2", "p2"])
    table = clinical.operating_points(val, test, ThresholdRule("sensitivity", 1.0), n_bootstrap=100)
    assert table.loc["A", "threshold"] == 0.8
    assert table.loc["A", "sensitivity lo"] == table.loc["A", "sensitivity hi"] == 1.0


def test_mismatched_findings_are_refused():
    val = _preds(np.c_[Y, Y], np.c_[S, S])
    test = dict(val, label_names=np.array(["A", "C"]))
    with pytest.raises(ValueError, match="different findings"):
        clinical.operating_points(val, test)


def test_pr_curve_by_hand():
    # scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg), thresholds high to low:
    # 0.9: TP 1 of 1 called -> P 1,   R 1/2;   0.8: TP 1 of 2 -> P 1/2, R 1/2
    # 0.7: TP 2 of 3 -> P 2/3, R 1;           0.1: TP 2 of 4 -> P 1/2, R 1
    recall, precision, t = clinical.pr_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    np.testing.assert_allclose(t, [0.9, 0.8, 0.7, 0.1])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1, 1])
    np.testing.assert_allclose(precision, [1, 0.5, 2 / 3, 0.5])


def test_pr_table_auprc_beside_prevalence():
    # A: the curve above; AP = sum over positives of precision at their rank = (1 + 2/3) / 2 = 5/6.
    p = _preds([[1, 1], [0, 0], [1, 0], [0, 0]], [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.4]])
    table = clinical.pr_table(p)
    assert table.loc["A", "AUPRC"] == pytest.approx(5 / 6) and table.loc["A", "prevalence"] == 0.5
    assert table.loc["A", "AUROC"] == pytest.approx(0.75)  # 3 of the 4 (pos, neg) pairs in order
    # B: its one positive is scored lowest: AUROC 0, AP = 1/4, a quarter of the images positive
    assert table.loc["B", "AUROC"] == 0 and table.loc["B", "AUPRC / prevalence"] == pytest.approx(1.0)
