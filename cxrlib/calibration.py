"""Does a printed probability of 0.3 mean "3 in 10 such images have it"? Calibration.

* :func:`reliability` bins the predicted probabilities (equal-width bins) and gives, per
  bin, the mean prediction beside the observed share of positives: the reliability diagram.
* :func:`brier` (mean squared error of the probabilities) and :func:`ece` (expected
  calibration error: the bins' |observed - predicted|, weighted by how many entries fall in
  each) summarise it.
* :func:`fit_temperature` fits one temperature T on the **validation** part (logits divided
  by T, by maximum likelihood); :func:`fit_platt` fits a slope and an intercept per finding.
  Both are increasing maps of the score, so they leave every finding's ranking (AUROC)
  exactly as it was: they change what the numbers mean, not which image comes first. A
  temperature alone cannot undo a shifted prior (class-weighted BCE moves every logit of a
  rare finding up); Platt's intercept can.

Entries are (image, finding) pairs; the multi-label scores ``[N, K]`` are pooled over the
findings unless a function says it works per finding.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import optimize

from cxrlib import metrics

_EPS = 1e-7  # probabilities are clipped this far from 0 and 1 before taking logits
DEFAULT_BINS = 10


def _pair(targets, scores) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(targets, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"targets shape {y.shape} and scores shape {s.shape} differ")
    if not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
        raise ValueError("scores must be probabilities in [0, 1] (no NaN): pass sigmoid outputs, not logits")
    return (y > 0.5).astype(np.float64), s


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def reliability(targets, scores, n_bins: int = DEFAULT_BINS) -> pd.DataFrame:
    """Per equal-width bin of [0, 1]: ``count``, ``predicted`` (mean probability) and
    ``observed`` (share of positives); empty bins are left out. A probability on a bin edge
    belongs to the bin above it (1.0 to the last bin)."""
    y, s = _pair(targets, scores)
    y, s = y.ravel(), s.ravel()
    b = np.minimum((s * n_bins).astype(int), n_bins - 1)
    rows = [{"bin": f"{i / n_bins:.1f}-{(i + 1) / n_bins:.1f}", "count": int((b == i).sum()),
             "predicted": float(s[b == i].mean()), "observed": float(y[b == i].mean())}
            for i in range(n_bins) if (b == i).any()]
    return pd.DataFrame(rows, columns=["bin", "count", "predicted", "observed"]).set_index("bin")


def ece(targets, scores, n_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error: sum over bins of (share of entries) x |observed - predicted|."""
    table = reliability(targets, scores, n_bins)
    if not len(table):
        return math.nan
    w = table["count"] / table["count"].sum()
    return float((w * (table["observed"] - table["predicted"]).abs()).sum())


def brier(targets, scores) -> float:
    """Mean squared difference between probability and outcome (0 is perfect)."""
    y, s = _pair(targets, scores)
    return float(((s - y) ** 2).mean()) if y.size else math.nan


def _nll(y: np.ndarray, z: np.ndarray) -> float:
    # BCE of sigmoid(z) against y, written with logaddexp so large logits stay finite
    return float((np.logaddexp(0, z) - y * z).mean())


@dataclass(frozen=True)
class Temperature:
    """Logits divided by ``value`` (> 1 softens over-confident probabilities, < 1 sharpens)."""

    value: float

    def apply(self, scores) -> np.ndarray:
        return sigmoid(logit(scores) / self.value)


def fit_temperature(targets, scores) -> Temperature:
    """The one temperature minimising the validation BCE of ``sigmoid(logit / T)`` over all
    (image, finding) entries (searched over log T in [1/100, 100])."""
    y, s = _pair(targets, scores)
    if not y.any() or y.all():
        raise ValueError("temperature scaling needs validation entries of both classes; this part has "
                         f"{int(y.sum())} positives among {y.size} entries")
    z = logit(s).ravel()
    y = y.ravel()
    res = optimize.minimize_scalar(lambda lt: _nll(y, z / math.exp(lt)), bounds=(-math.log(100), math.log(100)),
                                   method="bounded", options={"xatol": 1e-8})
    return Temperature(float(math.exp(res.x)))


@dataclass(frozen=True)
class Platt:
    """Per finding ``sigmoid(slope x logit + intercept)``; a finding that could not be
    fitted (no validation positive or negative) keeps slope 1, intercept 0."""

    slope: np.ndarray
    intercept: np.ndarray
    unfitted: tuple[int, ...] = ()

    def apply(self, scores) -> np.ndarray:
        return sigmoid(logit(scores) * self.slope + self.intercept)


def fit_platt(targets, scores) -> Platt:
    """Slope and intercept per finding by maximum likelihood on validation ``[N, K]``."""
    y, s = _pair(targets, scores)
    y, z = np.atleast_2d(y.T).T, np.atleast_2d(logit(s).T).T
    k = y.shape[1]
    slope, intercept, unfitted = np.ones(k), np.zeros(k), []
    for j in range(k):
        if not y[:, j].any() or y[:, j].all():
            unfitted.append(j)
            continue
        res = optimize.minimize(lambda p: _nll(y[:, j], p[0] * z[:, j] + p[1]), x0=[1.0, 0.0], method="BFGS",
                                options={"gtol": 1e-10})
        slope[j], intercept[j] = res.x
    if unfitted:
        warnings.warn(f"Platt scaling left {len(unfitted)} finding(s) unfitted: no validation positive or negative",
                      stacklevel=2)
    return Platt(slope, intercept, tuple(unfitted))


def summary(targets, scores, label_names=None) -> dict[str, float]:
    """Mean AUROC, Brier score, ECE and mean probability over prevalence of one score matrix."""
    y, s = _pair(targets, scores)
    prevalence = y.mean()
    return {"mean AUROC": float(np.nanmean(metrics.auroc(y, s))) if y.size else math.nan,
            "Brier": brier(y, s), "ECE": ece(y, s),
            "mean probability / prevalence": float(s.mean() / prevalence) if prevalence > 0 else math.nan}


def before_after(val: Mapping, test: Mapping) -> tuple[pd.DataFrame, Temperature]:
    """One run's test calibration before and after a temperature fitted on its validation
    predictions: a table (rows ``raw`` and ``temperature T=...``) and the temperature."""
    t = fit_temperature(val["targets"], val["scores"])
    rows = {"raw": summary(test["targets"], test["scores"]),
            f"temperature T={t.value:.2f}": summary(test["targets"], t.apply(test["scores"]))}
    return pd.DataFrame(rows).T, t


def compare_runs(val_by_run: Mapping[str, Mapping], test_by_run: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per run (e.g. one per loss): test AUROC, Brier and ECE before and after its own
    temperature and its own Platt scaling (both fitted on validation). AUROC does not move
    under either; the calibration columns do."""
    rows = []
    for name, test in test_by_run.items():
        val = val_by_run[name]
        t = fit_temperature(val["targets"], val["scores"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unfitted findings are counted in the table instead
            platt = fit_platt(val["targets"], val["scores"])
        raw = summary(test["targets"], test["scores"])
        tmp = summary(test["targets"], t.apply(test["scores"]))
        pl = summary(test["targets"], platt.apply(test["scores"]))
        rows.append({"run": name, "mean AUROC": raw["mean AUROC"], "temperature": t.value,
                     "mean p / prevalence": raw["mean probability / prevalence"],
                     "Brier": raw["Brier"], "ECE": raw["ECE"], "Brier after T": tmp["Brier"], "ECE after T": tmp["ECE"],
                     "ECE after Platt": pl["ECE"], "mean AUROC after T": tmp["mean AUROC"],
                     "findings Platt left unfitted": len(platt.unfitted)})
    return pd.DataFrame(rows).set_index("run")


__all__ = ["DEFAULT_BINS", "Platt", "Temperature", "before_after", "brier", "compare_runs", "ece", "fit_platt",
           "fit_temperature", "logit", "reliability", "sigmoid", "summary"]
