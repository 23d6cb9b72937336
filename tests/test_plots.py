"""The ROC figures say what chance is: the diagonal for one finding, a measured curve for a micro-average."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from cxrlib import plots  # noqa: E402
from cxrlib.labels import FINDINGS  # noqa: E402


def test_prevalence_only_scores_beat_the_diagonal_when_pooled_by_hand():
    # Finding A: 2 positives of 4 (prevalence 0.5); finding B: 1 of 4 (0.25). Pooled: 3
    # positives, 5 negatives, 15 pairs: A's positives outrank B's negatives (6 wins), B's
    # positive loses to A's negatives (2), the rest tie (4 + 3): (6 + 7 / 2) / 15.
    targets = np.array([[1, 1], [1, 0], [0, 0], [0, 0]], dtype=float)
    scores = plots.prevalence_only_scores(targets)
    np.testing.assert_array_equal(scores, [[0.5, 0.25]] * 4)
    assert roc_auc_score(targets.ravel(), scores.ravel()) == pytest.approx(9.5 / 15)
    for k in range(2):  # per finding the same scores are pure chance
        assert roc_auc_score(targets[:, k], scores[:, k]) == 0.5


def test_the_micro_averaged_roc_draws_its_chance_curve_and_one_finding_does_not():
    rng = np.random.default_rng(0)
    prevalence = np.linspace(0.02, 0.4, len(FINDINGS))
    targets = (rng.random((400, len(FINDINGS))) < prevalence).astype(float)
    pred = {"targets": targets, "scores": rng.random(targets.shape), "label_names": list(FINDINGS)}
    ax = plots.plot_roc_curves({"noise": pred})
    labels = [line.get_label() for line in ax.get_lines()]
    chance = [lab for lab in labels if lab.startswith("prevalence only")]
    assert len(chance) == 1
    expected = roc_auc_score(targets.ravel(), plots.prevalence_only_scores(targets).ravel())
    assert expected > 0.6 and f"({expected:.3f})" in chance[0]  # well above the diagonal's 0.5
    assert "chance" in ax.get_title()
    plt.close(ax.figure)
    ax = plots.plot_roc_curves({"noise": pred}, finding="Effusion")
    assert not [line for line in ax.get_lines() if line.get_label().startswith("prevalence only")]
    plt.close(ax.figure)
