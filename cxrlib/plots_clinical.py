"""Figures of the clinical-evaluation lesson: ROC beside precision-recall, reliability
diagrams, and the seeds' disagreement. Each takes plain prediction dicts (as runs store
them) and returns the Figure or Axes, so a notebook cell is one call."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from cxrlib import calibration, clinical, metrics


def _column(predictions: Mapping, finding: str) -> tuple[np.ndarray, np.ndarray]:
    names = [str(n) for n in predictions["label_names"]]
    if finding not in names:
        raise ValueError(f"unknown finding {finding!r}: the predictions hold {names}")
    k = names.index(finding)
    return np.asarray(predictions["targets"])[:, k], np.asarray(predictions["scores"])[:, k]


def plot_roc_and_pr(predictions: Mapping, findings: Sequence[str], operating: Mapping | None = None,
                    panel: float = 4.0):
    """ROC (left) and precision-recall (right) curves of ``findings``; on the PR panel each
    finding's prevalence (what a random ranking scores) is a dotted line of its colour.
    ``operating`` (an :func:`cxrlib.clinical.operating_points` table) marks each finding's
    chosen threshold on both curves."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(2 * panel, panel))
    for i, finding in enumerate(findings):
        y, s = _column(predictions, finding)
        if y.min() == y.max():
            continue
        colour = f"C{i}"
        fpr, tpr, _ = roc_curve(y, s)
        auc = float(metrics.auroc(y, s)[0])
        roc_ax.plot(fpr, tpr, color=colour, linewidth=1.2, label=f"{finding} AUROC {auc:.3f}")
        recall, precision, _ = clinical.pr_curve(y, s)
        ap = float(metrics.auprc(y, s)[0])
        pr_ax.step(recall, precision, where="post", color=colour, linewidth=1.2,
                   label=f"{finding} AUPRC {ap:.3f} (prevalence {y.mean():.3f})")
        pr_ax.axhline(y.mean(), color=colour, linestyle=":", linewidth=1)
        if operating is not None and finding in operating.index and np.isfinite(operating.loc[finding, "threshold"]):
            r = operating.loc[finding]
            roc_ax.plot(1 - r["specificity"], r["sensitivity"], "o", color=colour)
            if np.isfinite(r["ppv"]):
                pr_ax.plot(r["sensitivity"], r["ppv"], "o", color=colour)
    roc_ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    roc_ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity", title="ROC", xlim=(0, 1),
               ylim=(0, 1.02))
    pr_ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="precision-recall", xlim=(0, 1),
              ylim=(0, 1.02))
    if roc_ax.get_legend_handles_labels()[0]:  # a finding without positives draws no curve
        roc_ax.legend(fontsize=7, loc="lower right")
        pr_ax.legend(fontsize=7, loc="upper right")
    else:
        roc_ax.set_title(f"ROC: no positive of {', '.join(findings)} in these images")
    fig.tight_layout()
    return fig


def plot_reliability(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], n_bins: int = calibration.DEFAULT_BINS,
                     title: str = "reliability", ax=None):
    """Reliability diagram of several score sets ``{label: (targets, scores)}`` pooled over
    findings: observed share of positives against mean prediction per bin, marker area by
    the bin's count; the diagonal is perfect calibration. Legends carry ECE and Brier."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    for label, (y, s) in curves.items():
        table = calibration.reliability(y, s, n_bins)
        size = 200 * table["count"] / max(1, table["count"].max())
        line, = ax.plot(table["predicted"], table["observed"], linewidth=1.2,
                        label=f"{label}: ECE {calibration.ece(y, s, n_bins):.3f}, Brier {calibration.brier(y, s):.3f}")
        ax.scatter(table["predicted"], table["observed"], s=size, color=line.get_color(), alpha=0.6)
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    ax.set(xlabel="mean predicted probability in the bin", ylabel="share of positives in the bin", xlim=(0, 1),
           ylim=(0, 1), title=title)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper left")
    return ax


def plot_calibration_by_run(val_by_run: Mapping[str, Mapping], test_by_run: Mapping[str, Mapping],
                            panel: float = 3.6):
    """One reliability diagram per run (e.g. per loss of notebook 06): its test scores as
    trained and after a temperature fitted on its validation scores."""
    import matplotlib.pyplot as plt

    names = list(test_by_run)
    fig, axes = plt.subplots(1, len(names), figsize=(panel * len(names), panel), squeeze=False)
    for ax, name in zip(axes.flat, names):
        test, val = test_by_run[name], val_by_run[name]
        t = calibration.fit_temperature(val["targets"], val["scores"])
        plot_reliability({"as trained": (test["targets"], test["scores"]),
                          f"T = {t.value:.2f}": (test["targets"], t.apply(test["scores"]))}, title=name, ax=ax)
    fig.tight_layout()
    return fig


def plot_disagreement(ensemble: Mapping, flags, panel: float = 4.0):
    """Left: each image's seed disagreement (its most-disputed finding's SD), the flagged
    ones marked. Right: the ensemble's error |p - y| per image against that disagreement."""
    import matplotlib.pyplot as plt

    u = flags.uncertainty
    err = np.abs(np.asarray(ensemble["scores"]) - np.asarray(ensemble["targets"])).mean(axis=1)
    fig, (h_ax, s_ax) = plt.subplots(1, 2, figsize=(2 * panel, panel))
    h_ax.hist(u, bins=30, color="C0")
    if flags.flagged.any():
        h_ax.axvline(u[flags.flagged].min(), color="C3", linestyle="--", label="flagged at and above")
        h_ax.legend(fontsize=7)
    h_ax.set(xlabel="largest SD across seeds over the findings", ylabel="images", title="seed disagreement")
    s_ax.scatter(u[~flags.flagged], err[~flags.flagged], s=8, color="C0", label="trusted")
    s_ax.scatter(u[flags.flagged], err[flags.flagged], s=12, color="C3", label="flagged")
    s_ax.set(xlabel="seed disagreement", ylabel="ensemble mean |p - y| over findings", title="error and disagreement")
    s_ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["plot_calibration_by_run", "plot_disagreement", "plot_reliability", "plot_roc_and_pr"]
