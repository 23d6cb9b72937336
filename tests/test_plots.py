"""The ROC figures say what chance is: the diagonal for one finding, a measured curve for a
micro-average; the learning curve shows every training step beside each epoch's validation."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from cxrlib import plots, plots_training  # noqa: E402
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


def _step_log(n_steps: int, epochs: int = 1, stage: str = "", start: int = 1, seed: int = 0) -> pd.DataFrame:
    """A falling, noisy per-batch loss over ``epochs`` epochs of ``n_steps`` steps each."""
    steps = np.arange(start, start + n_steps * epochs)
    loss = 0.7 * np.exp(-steps / 60) + 0.2 + np.random.default_rng(seed).normal(0, 0.03, len(steps))
    return pd.DataFrame({"step": steps, "epoch": (steps - start) // n_steps + 1, "stage": stage, "samples": 32,
                         "train_loss": loss, "lr": 1e-3})


def _history(steps_per_epoch: int, aurocs: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(1, len(aurocs) + 1), "step": [steps_per_epoch * (e + 1) for e in
                                                                      range(len(aurocs))],
                         "val_mean_auroc": aurocs})


def test_the_running_window_is_an_eighth_of_an_epoch_and_at_least_three_steps():
    assert plots_training.running_window(_step_log(44)) == 5  # the cpu profile's one epoch
    assert plots_training.running_window(_step_log(4900, epochs=2)) == 612  # a full epoch on ChestX-ray14
    assert plots_training.running_window(_step_log(10)) == 3
    assert plots_training.running_window(_step_log(2)) == 2  # never more than the log holds


def test_the_running_mean_starts_again_with_each_stage():
    log = pd.concat([_step_log(4, stage="global"), _step_log(4, stage="fusion", start=5).assign(train_loss=5.0)])
    mean = plots_training.running_mean(log.reset_index(drop=True), 3)
    assert mean.iloc[4:].tolist() == [5.0] * 4  # the global stage's losses do not leak into the fusion's
    assert mean.iloc[3] == pytest.approx(log["train_loss"].iloc[2:4].mean())


def test_the_learning_curve_draws_each_step_and_the_validation_points_beside_it():
    log = _step_log(44)
    ax = plots_training.plot_learning_curves({"baseline": _history(44, [0.71]), "old run": _history(44, [0.65])},
                                             {"baseline": log, "old run": None})
    raw, mean = ax.get_lines()  # the training loss: every step, and its running mean
    np.testing.assert_array_equal(raw.get_xdata(), np.arange(1, 45))
    np.testing.assert_array_equal(raw.get_ydata(), log["train_loss"])
    assert np.std(np.diff(mean.get_ydata())) < np.std(np.diff(raw.get_ydata())) / 2  # the batch noise averaged
    assert raw.get_color() == mean.get_color() and raw.get_alpha() < 1
    (twin,) = [a for a in ax.figure.axes if a is not ax]
    auroc = {line.get_label(): line for line in twin.get_lines()}
    assert set(auroc) == {"baseline", "old run", "chance"}  # the run without a step log still shows its epochs
    assert list(auroc["chance"].get_ydata()) == [0.5, 0.5] and twin.get_ylim() == (0.45, 1.0)
    assert auroc["baseline"].get_xdata().tolist() == [44] and auroc["baseline"].get_ydata().tolist() == [0.71]
    assert auroc["baseline"].get_color() == mean.get_color() != auroc["old run"].get_color()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["baseline (loss: mean of 5 steps)", "old run"]
    assert "AUROC" in twin.get_ylabel() and "loss" in ax.get_ylabel() and ax.get_xlabel() == "optimizer step"
    plt.close(ax.figure)


def test_without_a_step_log_the_panel_is_the_validation_curve_per_epoch():
    ax = plots_training.plot_learning_curves({"baseline": _history(44, [0.6, 0.7, 0.72]), "control": None},
                                             {"baseline": None})
    assert len(ax.figure.axes) == 1  # no loss to draw: no second axis
    line, chance = ax.get_lines()
    assert line.get_xdata().tolist() == [44, 88, 132] and line.get_ydata().tolist() == [0.6, 0.7, 0.72]
    assert chance.get_label() == "chance" and ax.get_ylabel().startswith("validation mean AUROC")
    plt.close(ax.figure)
