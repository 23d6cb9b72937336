"""cxrlib.inference: the comparison design against hand values, DeLong and the patient bootstrap."""
import math

import numpy as np
import pytest

from cxrlib import inference as inf
from cxrlib.metrics import delong_test, paired_seed_comparison


def test_placements_by_hand():
    # pairs (positive, negative): 0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1 -> AUROC 3/4
    y = np.array([[1], [1], [0], [0]])
    s = np.array([[0.9], [0.4], [0.5], [0.1]])
    auc, psi = inf.mean_auroc_influence(y, s, [0])
    assert auc == pytest.approx(0.75)
    # positives: (1 - .75) / 2, (.5 - .75) / 2; negatives: (.5 - .75) / 2, (1 - .75) / 2
    np.testing.assert_allclose(psi, [0.125, -0.125, -0.125, 0.125])
    # four patients: 4/3 * sum of squares; two patients whose influences cancel: no variance
    assert inf.influence_variance(psi, None) == pytest.approx(4 / 3 * 4 * 0.125 ** 2)
    assert inf.influence_variance(psi, np.array([0, 0, 1, 1])) == pytest.approx(0.0)


def test_influence_of_a_mean_is_the_mean_of_influences():
    rng = np.random.default_rng(0)
    y = (rng.random((50, 3)) < 0.4).astype(float)
    s = rng.random((50, 3)) + y
    auc, psi = inf.mean_auroc_influence(y, s, [0, 2])
    parts = [inf.mean_auroc_influence(y, s, [k]) for k in (0, 2)]
    assert auc == pytest.approx(np.mean([p[0] for p in parts]))
    np.testing.assert_allclose(psi, np.mean([p[1] for p in parts], axis=0))


def test_influence_variance_matches_delong():
    rng = np.random.default_rng(1)
    y = rng.random(600) < 0.3
    s = rng.standard_normal(600) + y
    _, psi = inf.mean_auroc_influence(y[:, None], s[:, None], [0])
    d = delong_test(y, s, rng.standard_normal(600))
    assert inf.influence_variance(psi, None) == pytest.approx(d["var1"], rel=0.01)


def test_test_variance_matches_the_patient_bootstrap():
    """v_test of a paired difference of seed means against the bootstrap that resamples patients."""
    rng = np.random.default_rng(1)
    n, k = 600, 4
    pid = rng.integers(0, 250, n)
    y = (rng.random((n, k)) < 0.2).astype(float)
    shared = rng.standard_normal((250, k))[pid]
    seeds_a = [1.0 * y + 0.7 * shared + rng.standard_normal((n, k)) for _ in range(3)]
    seeds_b = [0.9 * y + 0.5 * shared + rng.standard_normal((n, k)) for _ in range(3)]
    c = inf.compare_arms(y, seeds_a, seeds_b, patient_ids=pid)
    boot = paired_seed_comparison(y, seeds_a, seeds_b, patient_ids=pid, n_bootstrap=2000, seed=3)
    boot_se = (boot["ci"][1] - boot["ci"][0]) / (2 * 1.96)
    assert math.sqrt(c["paired_test_variance"]) == pytest.approx(boot_se, rel=0.12)
    assert c["diff"] == pytest.approx(boot["diff"])
    # clustering matters: images of one patient share noise, so ignoring patients understates v_test
    unclustered = inf.compare_arms(y, seeds_a, seeds_b)
    assert unclustered["paired_test_variance"] < c["paired_test_variance"]


def test_design_test_by_hand():
    c = inf.design_test([0.80, 0.82], [0.75, 0.77], v_test=0.0)
    # pooled s2 = (2e-4 + 2e-4) / 2; se = sqrt(s2 * (1/2 + 1/2)); t = 0.05 / 0.01414 = 3.5355 on 2 df
    assert c["se"] == pytest.approx(math.sqrt(2e-4))
    assert c["df"] == pytest.approx(2.0)
    t = 0.05 / math.sqrt(2e-4)
    assert c["t"] == pytest.approx(t)
    assert c["p_value"] == pytest.approx(1 - t / math.sqrt(t * t + 2))  # Student's t on 2 df, two-sided
    assert c["seed_sd"] == pytest.approx(math.sqrt(2e-4))


def test_degrees_of_freedom_are_the_seeds():
    # however large the test part, the t quantile is the seeds' (nA + nB - 2): conservative, as measured
    c = inf.design_test([0.80, 0.82, 0.81], [0.75, 0.77, 0.76], v_test=1e-3)
    assert c["df"] == 4.0 and c["se"] == pytest.approx(math.sqrt(1e-4 * (2 / 3) + 1e-3))
    fitted = inf.design_test([0.70], [0.75, 0.77, 0.76], v_test=1e-3, fitted_a=True)
    assert fitted["df"] == 2.0  # a fitted control: the baseline's seeds alone


def test_mdd_by_hand():
    # with the variance known, the 80%-power difference is (1.960 + 0.842) standard errors
    assert inf.minimum_detectable_difference(0.01, 1e9) == pytest.approx(0.028016, rel=1e-3)
    # on 4 degrees of freedom it is 3.761 standard errors (the noncentral t, not 2.80)
    assert inf.minimum_detectable_difference(1.0, 4) == pytest.approx(3.761, rel=1e-3)
    assert math.isnan(inf.minimum_detectable_difference(0.0, 4))


def _arms(rng, n_a, n_b, shift=0.0, n=400):
    y = (rng.random((n, 3)) < 0.3).astype(float)
    a = [(1.0 + shift) * y + rng.standard_normal((n, 3)) for _ in range(n_a)]
    b = [y + rng.standard_normal((n, 3)) for _ in range(n_b)]
    return y, a, b


def test_one_seed_is_not_tested_and_a_fitted_control_needs_no_seed():
    rng = np.random.default_rng(2)
    y, a, b = _arms(rng, 1, 3)
    c = inf.compare_arms(y, a, b)
    assert not c["tested"] and c["p_value"] is None and c["mdd"] is None
    fitted = inf.compare_arms(y, a, b, fitted_a=True)  # a deterministic fit has no seed spread to measure
    assert fitted["tested"] and fitted["p_value"] is not None
    # its seed variance is the baseline's alone: sum of squares over n_b - 1, divided by n_b
    per_b = np.asarray(fitted["per_seed_b"])
    assert fitted["seed_variance_part"] == pytest.approx(per_b.var(ddof=1) / 3)


def test_controls_of_the_design():
    rng = np.random.default_rng(6)
    y, a, _ = _arms(rng, 3, 1, n=600)
    neg = inf.negative_control(y, a, seed=1)
    assert neg["simulated"] and neg["n_seeds_a"] == 3 and neg["p_value"] > 0.05
    pos = inf.positive_control(y, a)
    assert pos["diff"] < 0 and pos["p_value"] < 0.05
    with pytest.raises(ValueError, match="seed spread"):
        inf.negative_control(y, a[:1])


def test_experiment_interval_covers_seeds_and_says_so():
    rng = np.random.default_rng(3)
    y, a, _ = _arms(rng, 3, 1)
    ci = inf.experiment_interval(y, a)
    assert ci["covers"] == "seeds and test patients"
    assert ci["ci"][0] < ci["mean"] < ci["ci"][1]
    # wider than the test patients alone: the seed spread is in it
    assert ci["ci"][1] - ci["mean"] > 1.96 * ci["test_se"]
    one = inf.experiment_interval(y, a[:1])
    assert one["covers"].startswith("test patients only")
    assert one["ci"][1] - one["mean"] == pytest.approx(1.959964 * one["test_se"], rel=1e-5)


def test_bad_inputs_say_what_to_do():
    rng = np.random.default_rng(4)
    y, a, b = _arms(rng, 2, 2)
    with pytest.raises(ValueError, match="same test images"):
        inf.compare_arms(y, a, [b[0][:10], b[1]])
    with pytest.raises(ValueError, match="at least one seed"):
        inf.compare_arms(y, a, [])
    with pytest.raises(ValueError, match="no finding has both"):
        inf.compare_arms(np.ones_like(y), a, b)


def test_the_seeds_own_noise_is_counted_once():
    """Each seed's own image-level noise is in the seed spread already: the test part keeps only the shared part."""
    rng = np.random.default_rng(7)
    n, k = 800, 3
    pid = rng.integers(0, 400, n)
    y = (rng.random((n, k)) < 0.3).astype(float)
    shared = rng.standard_normal((n, k))  # one architecture: its seeds share this noise
    seeds_a = [y + shared + rng.standard_normal((n, k)) for _ in range(3)]
    seeds_b = [y + shared + rng.standard_normal((n, k)) for _ in range(3)]
    c = inf.compare_arms(y, seeds_a, seeds_b, patient_ids=pid)
    groups = inf.patient_groups(pid, n)
    cols = inf.scorable_columns(y)
    w = [inf.own_variance([inf.mean_auroc_influence(y, s, cols)[1] for s in arm], groups) for arm in (seeds_a, seeds_b)]
    assert c["test_variance_part"] == pytest.approx(max(0.0, c["paired_test_variance"] - w[0] / 3 - w[1] / 3))
    # one process on both sides: what is left of the paired variance is a small share of it
    assert c["test_variance_part"] < 0.3 * c["paired_test_variance"]
    # the seeds' own part is what the per-seed AUROCs scatter by when nothing else moves them
    per_seed = np.concatenate([c["per_seed_a"], c["per_seed_b"]])
    assert np.mean(w) == pytest.approx(per_seed.var(ddof=1), rel=0.8)
