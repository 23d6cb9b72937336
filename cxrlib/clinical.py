"""From a ranking to a decision: thresholds, sensitivity, specificity, PPV and NPV.

AUROC says how well a model *ranks* images; a clinic needs a *decision* per image, and the
questions a clinician asks of it ("of the patients I flag, how many have it?") depend on
the threshold and on how common the finding is where the model is used.

* A threshold is chosen on the **validation** part by a stated rule (:data:`RULES`): Youden's
  J (the threshold maximising sensitivity + specificity - 1) or the highest threshold that
  reaches a target sensitivity. Choosing it on the test part would grade the model on the
  very images its threshold was fitted to.
* :func:`operating_points` applies each finding's threshold to the **test** part and reports
  sensitivity, specificity, PPV and NPV with 95% patient-bootstrap CIs (the resamples of
  :mod:`cxrlib.metrics`, so images of one patient move together), at the test set's own
  prevalence and, by Bayes' rule, at a stated clinical prevalence (:func:`bayes_ppv_npv`).
* :func:`pr_curve` gives precision and recall at every threshold, whose area (average
  precision, :func:`cxrlib.metrics.auprc`) falls with the prevalence while AUROC does not.

A score at or above the threshold counts as positive, everywhere in this module.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from cxrlib import metrics

YOUDEN = "youden"
SENSITIVITY = "sensitivity"
RULES = (YOUDEN, SENSITIVITY)
STATS = ("sensitivity", "specificity", "ppv", "npv")


@dataclass(frozen=True)
class ThresholdRule:
    """How a threshold is chosen on validation: ``youden``, or ``sensitivity`` with a target."""

    name: str = YOUDEN
    target: float | None = None  # the sensitivity to reach, for the ``sensitivity`` rule

    def __post_init__(self):
        if self.name not in RULES:
            raise ValueError(f"unknown threshold rule {self.name!r}: expected one of {RULES}")
        if self.name == SENSITIVITY and not (self.target is not None and 0 < self.target <= 1):
            raise ValueError(f"the sensitivity rule needs a target in (0, 1], got {self.target!r}")

    def describe(self) -> str:
        if self.name == YOUDEN:
            return "Youden's J on validation: the threshold maximising sensitivity + specificity - 1"
        return (f"target sensitivity on validation: the highest threshold whose validation sensitivity "
                f"is at least {self.target:.0%}")

    def choose(self, targets, scores) -> float:
        """The threshold for one finding's validation ``targets`` and ``scores`` (NaN when the
        part has no positive or no negative of it: no rule can be applied)."""
        y, s = _one_finding(targets, scores)
        if y.all() or not y.any():
            return math.nan
        return youden_threshold(y, s) if self.name == YOUDEN else sensitivity_threshold(y, s, self.target)


def _one_finding(targets, scores) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(targets, dtype=np.float64).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"targets ({y.shape}) and scores ({s.shape}) of one finding differ in length")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return y > 0.5, s


def youden_threshold(targets, scores) -> float:
    """The score maximising sensitivity + specificity - 1 when used as threshold (score >= t
    is positive); among equal J the highest such score (fewer positive calls)."""
    y, s = _one_finding(targets, scores)
    candidates = np.unique(s)
    sens = np.array([(s[y] >= t).mean() for t in candidates])
    spec = np.array([(s[~y] < t).mean() for t in candidates])
    j = sens + spec - 1
    return float(candidates[np.flatnonzero(j >= j.max() - 1e-12)[-1]])


def sensitivity_threshold(targets, scores, target: float) -> float:
    """The highest threshold whose sensitivity is at least ``target``: the k-th highest
    positive score, k = ceil(target x positives)."""
    y, s = _one_finding(targets, scores)
    pos = np.sort(s[y])[::-1]
    k = max(1, math.ceil(target * len(pos) - 1e-9))
    return float(pos[k - 1])


def confusion_rates(targets, scores, threshold: float, weights=None) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV of ``score >= threshold`` for one finding.

    ``weights`` ``[R, N]`` (bootstrap multiplicities) gives R values per statistic; without
    them, one. A rate whose denominator is empty (no predicted positive for PPV) is NaN.
    """
    y, s = _one_finding(targets, scores)
    w = np.ones((1, len(y))) if weights is None else np.asarray(weights, dtype=np.float64)
    called = s >= threshold
    tp, fn = w @ (y & called), w @ (y & ~called)
    fp, tn = w @ (~y & called), w @ (~y & ~called)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
                "ppv": tp / (tp + fp), "npv": tn / (tn + fn)}


def bayes_ppv_npv(sensitivity, specificity, prevalence: float) -> tuple[np.ndarray, np.ndarray]:
    """PPV and NPV that a test of this sensitivity and specificity has where the finding has
    ``prevalence`` (Bayes' rule):

        PPV = sens p / (sens p + (1 - spec)(1 - p)),  NPV = spec (1 - p) / (spec (1 - p) + (1 - sens) p)
    """
    if not 0 < prevalence < 1:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    se, sp, p = np.asarray(sensitivity, float), np.asarray(specificity, float), prevalence
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = se * p / (se * p + (1 - sp) * (1 - p))
        npv = sp * (1 - p) / (sp * (1 - p) + (1 - se) * p)
    return ppv, npv


def thresholds(val_predictions: dict, rule: ThresholdRule) -> dict[str, float]:
    """Each finding's threshold chosen on validation predictions by ``rule``."""
    names = [str(n) for n in val_predictions["label_names"]]
    y, s = np.asarray(val_predictions["targets"]), np.asarray(val_predictions["scores"])
    return {name: rule.choose(y[:, k], s[:, k]) for k, name in enumerate(names)}


def _ci(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if not len(v):
        return math.nan, math.nan
    return float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))


def operating_points(val_predictions: dict, test_predictions: dict, rule: ThresholdRule = ThresholdRule(),
                     clinical_prevalence: float | None = None, n_bootstrap: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Per finding: the validation threshold, then test sensitivity, specificity, PPV and NPV
    with 95% patient-bootstrap CIs (columns ``<stat>``, ``<stat> lo``, ``<stat> hi``), and
    with ``clinical_prevalence`` the PPV and NPV there (``ppv at clinic`` ...).

    The bootstrap draws the test part's patients with replacement (a missing patient id is a
    patient of its own), the same resamples for every finding; a rate left without a
    denominator in a resample (no positive drawn) is left out of that rate's interval.
    """
    names = [str(n) for n in test_predictions["label_names"]]
    if [str(n) for n in val_predictions["label_names"]] != names:
        raise ValueError("validation and test predictions name different findings: score them with the same model")
    chosen = thresholds(val_predictions, rule)
    y, s = np.asarray(test_predictions["targets"]), np.asarray(test_predictions["scores"])
    pids = test_predictions.get("patient_ids")
    weights = (np.concatenate(list(metrics.bootstrap_weights(len(y), pids, n_bootstrap, seed)))
               if n_bootstrap > 0 else np.zeros((0, len(y))))
    rows = []
    for k, name in enumerate(names):
        row = {"finding": name, "threshold": chosen[name], "test positives": int((y[:, k] > 0.5).sum()),
               "test prevalence": float((y[:, k] > 0.5).mean()) if len(y) else math.nan}
        point = (confusion_rates(y[:, k], s[:, k], chosen[name]) if np.isfinite(chosen[name])
                 else {st: np.array([math.nan]) for st in STATS})
        boot = (confusion_rates(y[:, k], s[:, k], chosen[name], weights) if np.isfinite(chosen[name]) and len(weights)
                else {st: np.array([]) for st in STATS})
        for st in STATS:
            row[st] = float(point[st][0])
            row[f"{st} lo"], row[f"{st} hi"] = _ci(boot[st])
        if clinical_prevalence is not None:
            ppv, npv = bayes_ppv_npv(point["sensitivity"], point["specificity"], clinical_prevalence)
            bppv, bnpv = bayes_ppv_npv(boot["sensitivity"], boot["specificity"], clinical_prevalence)
            row["ppv at clinic"], row["npv at clinic"] = float(ppv[0]), float(npv[0])
            row["ppv at clinic lo"], row["ppv at clinic hi"] = _ci(bppv)
            row["npv at clinic lo"], row["npv at clinic hi"] = _ci(bnpv)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("finding")
    table.attrs.update(rule=rule.describe(), clinical_prevalence=clinical_prevalence,
                       bootstrap="patients" if pids is not None else "images", n_bootstrap=len(weights))
    return table


def pr_curve(targets, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of ``score >= t`` at every distinct score ``t`` (descending), as
    ``(recall, precision, thresholds)``; empty arrays when the finding has no positive."""
    y, s = _one_finding(targets, scores)
    if not y.any():
        return np.zeros(0), np.zeros(0), np.zeros(0)
    t = np.unique(s)[::-1]
    called = s[None, :] >= t[:, None]
    tp = (called & y).sum(1)
    return tp / y.sum(), tp / called.sum(1), t


def headline(table: pd.DataFrame, finding: str, auroc: float | None = None) -> str:
    """One finding's operating point in words, from an :func:`operating_points` row."""
    r = table.loc[finding]

    def pct(stat: str) -> str:
        v, lo, hi = r[stat], r[f"{stat} lo"], r[f"{stat} hi"]
        if not np.isfinite(v):
            return "undefined"
        ci = f" (95% CI {lo:.0%} to {hi:.0%})" if np.isfinite(lo) else ""
        return f"{v:.0%}{ci}"

    head = f"{finding}: " + ("" if auroc is None else f"AUROC {auroc:.3f}; " if np.isfinite(auroc)
                             else "AUROC undefined (the test part lacks a positive or a negative); ")
    if not np.isfinite(r["threshold"]):
        return head + "no threshold: the validation part has no positive (or no negative) of it"
    text = (head + f"at threshold {r['threshold']:.3f} sensitivity {pct('sensitivity')}, specificity "
            f"{pct('specificity')}, PPV {pct('ppv')} at the test prevalence of {r['test prevalence']:.1%} "
            f"({int(r['test positives'])} positives)")
    if "ppv at clinic" in table.columns and table.attrs.get("clinical_prevalence"):
        text += f"; PPV {pct('ppv at clinic')} where {table.attrs['clinical_prevalence']:.1%} of patients have it"
    return text


def rarest_scored(table: pd.DataFrame) -> str | None:
    """The rarest finding of an :func:`operating_points` table that has a threshold and a test
    positive (where a high AUROC and a low PPV meet); None when no finding has both."""
    scored = table[np.isfinite(table["threshold"]) & (table["test positives"] > 0)]
    return None if not len(scored) else str(scored["test prevalence"].idxmin())


def validation_predictions(run, data=None, device: str = "cpu") -> dict[str, np.ndarray]:
    """A finished run's model scored on its validation part (predictions as in
    ``test_predictions.npz``). Runs keep test predictions only, so the model is reloaded
    from the run folder (:func:`cxrlib.runs.load_model`) and scored by the same path as the
    test part (:func:`cxrlib.experiments.score`, the run's own test-time augmentation). ``run``
    is a :class:`cxrlib.runs.RunResult` or a run folder; ``data`` the run's DataBundle if
    already loaded."""
    from cxrlib import experiments, runs  # torch and the data layer only when a model is scored
    from cxrlib.data import load_data

    result = run if isinstance(run, runs.RunResult) else runs.load_run(run, with_model=False)
    cfg = result.config
    predictor = result.predictor if result.model is not None else runs.load_model(result.run_dir, device)
    data = data if data is not None else load_data(cfg.data, progress=False)
    if not len(data.val):
        raise ValueError(f"{result.run_dir}: the validation part of {data.split_name} is empty; a threshold or a "
                         "temperature needs validation images")
    with warnings.catch_warnings():  # findings absent from validation get no threshold; said where it is used
        warnings.filterwarnings("ignore", message="AUROC undefined")
        predictions = experiments.score(predictor, data.val, tta=cfg.train.tta,
                                        batch_size=max(cfg.train.batch_size, 1),
                                        amp=cfg.train.amp)
    return predictions


def pr_table(predictions: dict, findings: Sequence[str] | None = None) -> pd.DataFrame:
    """AUROC beside AUPRC and the prevalence (the AUPRC of a random ranking) per finding."""
    names = [str(n) for n in predictions["label_names"]]
    y, s = np.asarray(predictions["targets"]), np.asarray(predictions["scores"])
    table = pd.DataFrame({"prevalence": (y > 0.5).mean(axis=0), "AUROC": metrics.auroc(y, s),
                          "AUPRC": metrics.auprc(y, s)}, index=pd.Index(names, name="finding"))
    table["AUPRC / prevalence"] = table["AUPRC"] / table["prevalence"].where(table["prevalence"] > 0)
    return table if findings is None else table.loc[list(findings)]


__all__ = ["RULES", "STATS", "SENSITIVITY", "YOUDEN", "ThresholdRule", "bayes_ppv_npv", "confusion_rates",
           "headline", "operating_points", "pr_curve", "pr_table", "rarest_scored", "sensitivity_threshold",
           "thresholds", "validation_predictions", "youden_threshold"]
