"""Metrics: AUROC against scikit-learn, DeLong against a hand computation, bootstrap CIs."""
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrlib.labels import FINDINGS
from cxrlib.metrics import (auroc, auroc_report, delong_test, mean_auroc, paired_comparison, paired_seed_comparison,
                            seed_mean_auroc)


def _data(n=300, k=4, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.3).astype(np.float32)
    s = rng.normal(size=(n, k)) + signal * y
    s[:20] = np.round(s[:20])  # ties
    return y, s


def test_auroc_and_auprc_match_sklearn():
    y, s = _data()
    rep = auroc_report(y, s, list("abcd"), n_bootstrap=0)
    for k, name in enumerate("abcd"):
        assert rep["per_class"][name]["auroc"] == pytest.approx(roc_auc_score(y[:, k], s[:, k]), abs=1e-12)
        assert rep["per_class"][name]["auprc"] == pytest.approx(average_precision_score(y[:, k], s[:, k]))
        assert rep["per_class"][name]["n_pos"] == int(y[:, k].sum())
    assert rep["mean_auroc"] == pytest.approx(np.mean([roc_auc_score(y[:, k], s[:, k]) for k in range(4)]))


def test_undefined_class_is_left_out_with_warning():
    y, s = _data(k=3)
    y[:, 1] = 0  # no positives
    y[:, 2] = 1  # no negatives
    with pytest.warns(UserWarning, match="undefined"):
        rep = auroc_report(y, s, ["a", "b", "c"], n_bootstrap=50)
    assert rep["undefined"] == ["b", "c"]
    assert rep["per_class"]["b"]["auroc"] is None and rep["per_class"]["b"]["auroc_ci"] == [None, None]
    assert rep["mean_auroc"] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    with pytest.warns(UserWarning):
        rep = auroc_report(np.zeros((5, 1)), np.arange(5.0)[:, None], ["x"], n_bootstrap=10)
    assert rep["mean_auroc"] is None and rep["mean_auroc_ci"] == [None, None]


def test_no_finding_reported_not_averaged():
    y, s = _data(k=15, n=400)
    names = list(FINDINGS) + ["No Finding"]
    rep = auroc_report(y, s, names, n_bootstrap=0)
    aucs = auroc(y, s)
    assert rep["mean_auroc"] == pytest.approx(aucs[:14].mean())
    assert "No Finding" in rep["per_class"]
    assert mean_auroc(y, s, names) == pytest.approx(aucs[:14].mean())


def test_bootstrap_ci_covers_estimate_and_is_reproducible():
    y, s = _data(n=400)
    a = auroc_report(y, s, list("abcd"), n_bootstrap=200, seed=3)
    b = auroc_report(y, s, list("abcd"), n_bootstrap=200, seed=3)
    assert a == b
    lo, hi = a["mean_auroc_ci"]
    assert lo < a["mean_auroc"] < hi and hi - lo < 0.15
    for name in "abcd":
        lo, hi = a["per_class"][name]["auroc_ci"]
        assert lo < a["per_class"][name]["auroc"] < hi


def test_bootstrap_replicate_equals_direct_auroc_of_resample():
    """The multiplicity-weighted AUROC equals sklearn's AUROC on the materialised resample."""
    from cxrlib.metrics import _SortedClass, bootstrap_weights
    y, s = _data(n=60, k=1)
    w = next(bootstrap_weights(60, None, 3, seed=1))
    got = _SortedClass(y[:, 0], s[:, 0]).auc(w)
    for r in range(3):
        idx = np.repeat(np.arange(60), w[r].astype(int))
        assert got[r] == pytest.approx(roc_auc_score(y[idx, 0], s[idx, 0]), abs=1e-12)


def test_cluster_bootstrap_resamples_patients():
    from cxrlib.metrics import bootstrap_weights
    pids = np.repeat(np.arange(10), 3)
    for w in bootstrap_weights(30, pids, 100, seed=0):
        blocks = w.reshape(len(w), 10, 3)
        assert (blocks == blocks[:, :, :1]).all()  # a patient's images are drawn together
        assert (w.sum(1) == 30).all()
    # clustered duplicates: image-level CIs are too narrow, patient-level ones are honest
    y, s = _data(n=100, k=1)
    y3, s3, p3 = np.repeat(y, 3, 0), np.repeat(s, 3, 0), np.repeat(np.arange(100), 3)
    wide = auroc_report(y3, s3, ["a"], patient_ids=p3, n_bootstrap=300)["mean_auroc_ci"]
    narrow = auroc_report(y3, s3, ["a"], n_bootstrap=300)["mean_auroc_ci"]
    assert wide[1] - wide[0] > 1.3 * (narrow[1] - narrow[0])


def _psi(x, y):
    return 1.0 if x > y else 0.5 if x == y else 0.0


def test_delong_against_hand_worked_example():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s1 = np.array([0.9, 0.8, 0.4, 0.5, 0.3, 0.2, 0.4])
    s2 = np.array([0.7, 0.3, 0.6, 0.6, 0.1, 0.5, 0.2])
    # structural components straight from DeLong et al. 1988: V10(X_i) = mean_j psi(X_i, Y_j),
    # V01(Y_j) = mean_i psi(X_i, Y_j)
    X1, Y1, X2, Y2 = s1[y == 1], s1[y == 0], s2[y == 1], s2[y == 0]
    m, n = len(X1), len(Y1)
    v10 = np.array([[np.mean([_psi(x, yy) for yy in Y]) for x in X] for X, Y in ((X1, Y1), (X2, Y2))])
    v01 = np.array([[np.mean([_psi(x, yy) for x in X]) for yy in Y] for X, Y in ((X1, Y1), (X2, Y2))])
    a = v10.mean(1)
    assert a[0] == pytest.approx(10.5 / 12) and a[1] == pytest.approx(9.5 / 12)  # counted by hand

    def s(u, v):
        return ((u - u.mean()) * (v - v.mean())).sum() / (len(u) - 1)

    var = lambda r, q: s(v10[r], v10[q]) / m + s(v01[r], v01[q]) / n  # noqa: E731
    z = (a[0] - a[1]) / math.sqrt(var(0, 0) + var(1, 1) - 2 * var(0, 1))
    got = delong_test(y, s1, s2)
    assert got["auc1"] == pytest.approx(a[0]) and got["auc2"] == pytest.approx(a[1])
    assert got["var1"] == pytest.approx(var(0, 0)) and got["cov"] == pytest.approx(var(0, 1))
    assert got["z"] == pytest.approx(z)
    assert got["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)))


def test_delong_identical_scores_and_bad_input():
    y, s = _data(k=1)
    d = delong_test(y[:, 0], s[:, 0], s[:, 0])
    assert d["z"] == 0.0 and d["p_value"] == 1.0
    with pytest.raises(ValueError, match="positives"):
        delong_test([1, 0, 0], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])


def test_paired_comparison_detects_better_run():
    y, s = _data(n=400, signal=1.0)
    rng = np.random.default_rng(5)
    better = s + 1.5 * y  # strictly more separation
    res = paired_comparison(y, better, s, n_bootstrap=300, label_names=list("abcd"))
    assert res["diff"] > 0 and res["ci"][0] > 0 and res["p_value"] < 0.01
    assert all(v["delong_p"] < 0.05 for v in res["per_class"].values())
    same = paired_comparison(y, s + rng.normal(0, 1e-9, s.shape), s, n_bootstrap=200)
    assert same["p_value"] > 0.5 and abs(same["diff"]) < 1e-3


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="shape"):
        auroc_report(np.zeros((3, 2)), np.zeros((3, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="label names"):
        auroc_report(np.zeros((3, 2)), np.zeros((3, 2)), ["a"])
    with pytest.raises(ValueError, match="NaN"):
        auroc_report(np.zeros((3, 1)), np.array([[0.1], [np.nan], [0.2]]), ["a"])


# ----------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("missing", [-1, None, float("nan"), ""])
def test_missing_patient_ids_are_one_patient_per_image(missing):
    y, s = _data(n=200, k=2, signal=0.3)
    better = s + 0.3 * y
    ids = np.array([missing] * len(y), dtype=object)
    res = paired_comparison(y, better, s, patient_ids=ids, n_bootstrap=300, seed=4)
    lo, hi = res["ci"]
    assert hi - lo > 0.005, "one patient for the whole test set: every resample the same"
    assert res["n_patients"] == 200
    # Exactly the image-level bootstrap.
    images = paired_comparison(y, better, s, n_bootstrap=300, seed=4)
    assert res["ci"] == images["ci"] and res["p_value"] == images["p_value"]
    rep = auroc_report(y, s, ["a", "b"], patient_ids=ids, n_bootstrap=200, seed=1)
    assert rep["n_patients"] == 200
    assert rep["mean_auroc_ci"] == auroc_report(y, s, ["a", "b"], n_bootstrap=200, seed=1)["mean_auroc_ci"]
    # Known ids beside missing ones still group: 3 images of patient 7, the rest alone.
    mixed = np.array([7, 7, 7] + [missing] * 197, dtype=object)
    from cxrlib.metrics import patient_groups
    groups = patient_groups(mixed, 200)
    assert groups[0] == groups[1] == groups[2] and len(np.unique(groups)) == 198


def test_bootstrap_mean_is_over_the_same_findings_in_every_resample():
    """A finding with one positive among 30 images: ~37% of resamples lose it. They are
    redrawn and counted, and every resample's mean is over all three findings."""
    from cxrlib.metrics import bootstrap_weights

    rng = np.random.default_rng(2)
    n = 30
    y = np.zeros((n, 3))
    y[:12, 0] = 1
    y[5:20, 1] = 1
    y[3, 2] = 1  # a single positive
    s = rng.normal(size=(n, 3)) + y
    R = 400
    rep = auroc_report(y, s, ["a", "b", "c"], n_bootstrap=R, seed=0)
    assert rep["n_bootstrap"] == R
    share = rep["bootstrap_redrawn"] / (rep["bootstrap_redrawn"] + R)
    assert 0.25 < share < 0.50, share  # (1 - 1/30)^30 = 0.36
    # The same rule, written out: draw, keep resamples where every finding has both
    # classes, take the first R, average the three AUROCs of each.
    means, redrawn = [], 0
    for w in bootstrap_weights(n, None, 20 * R, seed=0):
        for row in w:
            idx = np.repeat(np.arange(n), row.astype(int))
            if len(means) == R:
                break
            if any(len(np.unique(y[idx, k])) < 2 for k in range(3)):
                redrawn += 1
                continue
            means.append(np.mean([roc_auc_score(y[idx, k], s[idx, k]) for k in range(3)]))
        if len(means) == R:
            break
    assert redrawn == rep["bootstrap_redrawn"]
    assert rep["mean_auroc_ci"] == pytest.approx(list(np.quantile(means, [0.025, 0.975])), abs=1e-12)
    # The paired comparison uses the same rule on the same resamples for both runs.
    res = paired_comparison(y, s + 0.5 * y, s, n_bootstrap=R, seed=0)
    assert res["n_bootstrap"] == R and res["bootstrap_redrawn"] == redrawn


def test_hopeless_bootstrap_warns_and_says_how_many_resamples_it_kept():
    n = 400
    y = np.zeros((n, 1))
    y[0, 0] = 1  # one positive among 400: missing from ~37% of resamples, but present often enough
    y2 = np.zeros((n, 2))
    y2[0, 0] = y2[1, 1] = 1
    rep = auroc_report(y, np.arange(n, dtype=float)[:, None], ["a"], n_bootstrap=50)
    assert rep["n_bootstrap"] == 50
    from cxrlib import metrics
    old = metrics._MAX_DRAWS_PER_RESAMPLE
    metrics._MAX_DRAWS_PER_RESAMPLE = 1  # one draw per resample: some must be lost
    try:
        with pytest.warns(UserWarning, match="bootstrap resamples kept every finding"):
            rep = auroc_report(y2, np.tile(np.arange(n, dtype=float)[:, None], (1, 2)), ["a", "b"], n_bootstrap=100)
    finally:
        metrics._MAX_DRAWS_PER_RESAMPLE = old
    assert 0 < rep["n_bootstrap"] < 100 and rep["n_bootstrap"] + rep["bootstrap_redrawn"] == 100


def test_paired_mean_difference_hand_worked():
    from cxrlib.metrics import paired_mean_difference

    a = np.array([1.0, 1.0, 0.0, 1.0])
    b = np.array([0.5, 0.25, 0.0, 0.25])
    res = paired_mean_difference(a, b, n_bootstrap=500, seed=0)
    assert (res["mean_a"], res["mean_b"], res["diff"]) == (0.75, 0.25, 0.5)
    # Differences 0.5, 0.75, 0, 0.75: every resample's mean lies in [0, 0.75].
    lo, hi = res["ci"]
    assert 0.0 <= lo < 0.5 < hi <= 0.75 and res["n"] == res["n_groups"] == 4
    # All differences positive: the p-value is its floor, 1/(R+1).
    res = paired_mean_difference([1.0, 1.0, 1.0], [0.0, 0.5, 0.25], n_bootstrap=99)
    assert res["p_value"] == pytest.approx(0.01) and res["ci"][0] > 0
    # Groups move together: two items of one image, identical differences within it.
    res = paired_mean_difference([1, 1, 0, 0], [0, 0, 0, 0], groups=["x", "x", "y", "y"], n_bootstrap=200)
    assert res["n_groups"] == 2 and res["diff"] == 0.5
    with pytest.raises(ValueError, match="one pair per item"):
        paired_mean_difference([1, 0], [1], n_bootstrap=10)


# ----------------------------------------------------------------------------- seeds and the verdict


def _seed_data(n=120, k=6, seed=3):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.3).astype(float)
    y[:2] = 1 - y[2:4]
    patients = np.arange(n) // 2
    return y, patients, rng


def test_seed_mean_auroc_is_the_mean_over_seeds_with_a_ci_of_that_mean():
    y, patients, rng = _seed_data()
    seeds = [0.4 * y + rng.random(y.shape) for _ in range(3)]
    out = seed_mean_auroc(y, seeds, patient_ids=patients, n_bootstrap=300, seed=1)
    per_seed = [mean_auroc(y, s) for s in seeds]
    assert out["per_seed"] == pytest.approx(per_seed) and out["mean"] == pytest.approx(np.mean(per_seed))
    assert out["sd"] == pytest.approx(np.std(per_seed, ddof=1)) and out["n_seeds"] == 3
    assert (out["min"], out["max"]) == pytest.approx((min(per_seed), max(per_seed)))
    assert out["ci"][0] < out["mean"] < out["ci"][1] and out["n_bootstrap"] == 300
    # one seed: exactly the CI auroc_report gives, on the same resamples
    one = seed_mean_auroc(y, seeds[:1], patient_ids=patients, n_bootstrap=300, seed=1)
    ref = auroc_report(y, seeds[0], [f"c{k}" for k in range(y.shape[1])], patient_ids=patients, n_bootstrap=300, seed=1)
    assert one["ci"] == pytest.approx(ref["mean_auroc_ci"]) and math.isnan(one["sd"])
    with pytest.raises(ValueError, match="no seeds"):
        seed_mean_auroc(y, [])


def test_paired_seed_comparison_differences_of_seed_means_and_every_seed_pair():
    y, patients, rng = _seed_data()
    a = [0.8 * y + rng.random(y.shape) for _ in range(3)]
    b = [0.3 * y + rng.random(y.shape) for _ in range(2)]
    out = paired_seed_comparison(y, a, b, patient_ids=patients, n_bootstrap=300, seed=2)
    per_a, per_b = [mean_auroc(y, s) for s in a], [mean_auroc(y, s) for s in b]
    assert out["diff"] == pytest.approx(np.mean(per_a) - np.mean(per_b))
    assert len(out["seed_diffs"]) == 6  # every seed of A with every seed of B
    assert out["seed_diff_min"] == pytest.approx(min(per_a) - max(per_b))
    assert out["seed_diff_max"] == pytest.approx(max(per_a) - min(per_b))
    assert out["ci"][0] > 0 and out["p_value"] < 0.05
    # one seed each: the same numbers as paired_comparison, resample for resample
    one = paired_seed_comparison(y, a[:1], b[:1], patient_ids=patients, n_bootstrap=300, seed=2)
    ref = paired_comparison(y, a[0], b[0], patient_ids=patients, n_bootstrap=300, seed=2)
    assert (one["diff"], one["p_value"]) == pytest.approx((ref["diff"], ref["p_value"]))
    assert one["ci"] == pytest.approx(ref["ci"])


def test_alarms_at_threshold_by_hand():
    from cxrlib.metrics import alarms_at_threshold

    targets = np.array([[1, 0], [0, 0], [1, 1], [0, 0]])
    scores = np.array([[0.9, 0.6], [0.7, 0.1], [0.2, 0.5], [0.1, 0.8]])
    table = alarms_at_threshold(targets, scores, 0.5, ["A", "B"])
    # A alarms on rows 0 (true) and 1 (false) and misses row 2; B (0.5 counts) on 0 and 3 (false) and 2 (true)
    assert table.loc["A", ["alarms", "true alarms", "false alarms", "missed"]].tolist() == [2, 1, 1, 1]
    assert table.loc["B", ["alarms", "true alarms", "false alarms", "missed"]].tolist() == [3, 1, 2, 0]
    assert table.loc["A", "sensitivity"] == 0.5 and table.loc["B", "false alarms per image"] == 0.5
    total = table.loc["all findings"]
    assert (total["images"], total["positives"], total["false alarms"]) == (4, 3, 3)
    assert total["false alarms per image"] == 0.75 and total["sensitivity"] == pytest.approx(2 / 3)
    # a lower threshold raises more false alarms; a finding without positives has no sensitivity
    assert alarms_at_threshold(targets, scores, 0.05, ["A", "B"]).loc["all findings", "false alarms"] == 5
    assert np.isnan(alarms_at_threshold(np.zeros((2, 1)), np.ones((2, 1)), 0.5).iloc[0]["sensitivity"])
    with pytest.raises(ValueError, match="label names"):
        alarms_at_threshold(targets, scores, 0.5, ["A"])


def test_bootstrap_aurocs_is_the_patient_bootstrap_of_auroc_report():
    from cxrlib.metrics import auroc_report, bootstrap_aurocs, percentile_ci

    rng = np.random.default_rng(11)
    y = (rng.random((300, 3)) < 0.3).astype(float)
    s = y + rng.standard_normal((300, 3))
    pid = rng.integers(0, 150, 300)
    boot = bootstrap_aurocs(y, s, [0, 2], pid, n_bootstrap=200, seed=5)
    assert boot.shape == (200, 2)
    report = auroc_report(y, s, ["a", "b", "c"], patient_ids=pid, n_bootstrap=200, seed=5)
    # the same resamples as the report's: the same CI for a class
    np.testing.assert_allclose(percentile_ci(boot[:, 0]), report["per_class"]["a"]["auroc_ci"])
    assert all(np.isnan(percentile_ci(np.array([np.nan]))))
