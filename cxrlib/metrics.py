"""AUROC per class and on average, with honest uncertainty.

* :func:`auroc_report`: per-class AUROC and AUPRC, their mean over the 14 findings, and 95%
  bootstrap confidence intervals. When patient ids are known the bootstrap resamples
  *patients* (a cluster bootstrap), because images of one patient are not independent.
* :func:`paired_comparison`: two runs scored on the same test images; bootstrap of the
  difference in mean AUROC (same resamples for both runs) with a two-sided p-value.
* :func:`delong_test`: DeLong's test for two correlated AUROCs of one class, computed with
  the fast midrank algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21(11)).
* :func:`seed_mean_auroc` and :func:`paired_seed_comparison`: the same for an experiment
  trained with several seeds. What is called a difference (the verdict) and how a statistic is
  written are :mod:`cxrlib.results`' convention.

A class with no positives (or no negatives) has no AUROC: it is reported as undefined,
left out of the mean, and a warning says so; nothing crashes.

Two rules keep the bootstrap honest on small or incomplete test sets:

* **Every resample is averaged over the same findings.** A resample in which a finding of
  the mean has no positive (or no negative) left has no mean over those findings; it is
  redrawn, and the returned ``bootstrap_redrawn`` says how many were. (Averaging such a
  resample over the findings it still has, as ``np.nanmean`` would, mixes means over
  different sets of findings into one interval.) The CI is then the bootstrap
  distribution conditional on every finding being scorable, the only one a mean over a
  fixed set of findings has.
* **A missing patient id is a patient of its own.** Runs on data without patient ids store
  -1 (or None, NaN, ""); grouping those together would make the whole test set one
  patient, and every resample the same.

The bootstrap never re-sorts: a resample is a vector of multiplicities (how often each image
was drawn), and the AUROC of a weighted sample is computed from the scores sorted once.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from scipy import stats

from cxrlib.labels import NO_FINDING

_CHUNK = 64  # bootstrap replicates computed together (memory: CHUNK x N floats)
# Redrawing stops after this many draws per requested resample (a finding with a single
# positive among many patients is missing from ~37% of resamples; one that is missing
# from nearly all of them cannot be bootstrapped and is better reported than looped on).
_MAX_DRAWS_PER_RESAMPLE = 20


def _as_2d(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be [N] or [N, K], got shape {a.shape}")
    return a


def _check_inputs(targets, scores, name="scores") -> tuple[np.ndarray, np.ndarray]:
    y, s = _as_2d(targets, "targets"), _as_2d(scores, name)
    if y.shape != s.shape:
        raise ValueError(f"targets shape {y.shape} and {name} shape {s.shape} differ")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contain NaN or infinite values: {int((~np.isfinite(s)).sum())} entries")
    return (y > 0.5).astype(np.float64), s


class _SortedClass:
    """One class's scores sorted once, with tie groups, for weighted AUROC."""

    def __init__(self, y: np.ndarray, s: np.ndarray):
        self.order = np.argsort(s, kind="mergesort")
        ss = s[self.order]
        self.y = y[self.order]
        self.starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])

    def auc(self, w: np.ndarray) -> np.ndarray:
        """AUROC for weights ``w`` [R, N] (in original order); NaN where undefined."""
        w = w[:, self.order]
        pos = np.add.reduceat(w * self.y, self.starts, axis=1)
        neg = np.add.reduceat(w * (1 - self.y), self.starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each tie group
        num = (pos * (below + 0.5 * neg)).sum(1)
        den = pos.sum(1) * neg.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def auroc(targets, scores) -> np.ndarray:
    """Per-class AUROC ``[K]`` (NaN where a class lacks positives or negatives)."""
    y, s = _check_inputs(targets, scores)
    ones = np.ones((1, len(y)))
    return np.array([_SortedClass(y[:, k], s[:, k]).auc(ones)[0] for k in range(y.shape[1])])


def auprc(targets, scores) -> np.ndarray:
    """Per-class average precision ``[K]`` (scikit-learn's definition; NaN without positives)."""
    from sklearn.metrics import average_precision_score

    y, s = _check_inputs(targets, scores)
    out = np.full(y.shape[1], np.nan)
    for k in range(y.shape[1]):
        if 0 < y[:, k].sum():
            out[k] = average_precision_score(y[:, k], s[:, k])
    return out


def _is_missing_id(v) -> bool:
    if v is None:
        return True
    if isinstance(v, (float, np.floating)):
        return bool(np.isnan(v)) or v < 0
    if isinstance(v, (int, np.integer)):
        return v < 0
    return str(v).strip() in ("", "-1", "None", "nan")


def patient_groups(patient_ids, n: int) -> np.ndarray | None:
    """Group index per image for the cluster bootstrap (None: every image its own group).

    Images sharing a patient id share a group; a missing id (None, NaN, a negative number
    such as the -1 runs store for data without ids, "") is a group of its own.
    """
    if patient_ids is None:
        return None
    ids = np.asarray(patient_ids, dtype=object).ravel()
    if len(ids) != n:
        raise ValueError(f"patient_ids has {len(ids)} entries for {n} images")
    # Numbered in order of first appearance, so that ids all missing (or all distinct) give
    # exactly the image-level bootstrap.
    index: dict[Any, int] = {}
    groups = np.empty(n, dtype=np.int64)
    for i, v in enumerate(ids):
        key = ("image", i) if _is_missing_id(v) else ("patient", str(v))
        groups[i] = index.setdefault(key, len(index))
    return groups


def bootstrap_weights(n: int, patient_ids, n_bootstrap: int, seed: int):
    """Yield multiplicity matrices [R, n] for ``n_bootstrap`` resamples in chunks: the one
    patient bootstrap of every CI here and in :mod:`cxrlib.clinical` (a statistic weighted by
    a row is that statistic on one resample).

    With patient ids, whole patients are drawn with replacement (cluster bootstrap); an
    image's multiplicity is its patient's. Missing ids count as one patient per image.
    """
    rng = np.random.default_rng(seed)
    groups = patient_groups(patient_ids, n)
    n_groups = n if groups is None else (int(groups.max()) + 1 if n else 0)
    done = 0
    while done < n_bootstrap:
        r = min(_CHUNK, n_bootstrap - done)
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=r).astype(np.float64)
        yield counts if groups is None else counts[:, groups]
        done += r


class _Resamples:
    """Bootstrap resamples in which every class of ``classes`` keeps a positive and a negative.

    Iterating yields accepted multiplicity chunks until ``n_bootstrap`` are accepted (or the
    draw cap is reached); ``redrawn`` then counts the rejected draws, ``accepted`` the rest.
    """

    def __init__(self, y: np.ndarray, patient_ids, n_bootstrap: int, seed: int, classes):
        self.pos = y[:, list(classes)]
        self.neg = 1.0 - self.pos
        self.n, self.patient_ids, self.n_bootstrap, self.seed = len(y), patient_ids, n_bootstrap, seed
        self.accepted = self.redrawn = 0

    def __iter__(self):
        cap = _MAX_DRAWS_PER_RESAMPLE * self.n_bootstrap
        draws = bootstrap_weights(self.n, self.patient_ids, cap, self.seed)
        for w in draws:
            ok = ((w @ self.pos) > 0).all(axis=1) & ((w @ self.neg) > 0).all(axis=1)
            need = self.n_bootstrap - self.accepted
            last = np.flatnonzero(ok)[need - 1] if ok.sum() >= need else len(ok) - 1
            ok = ok[: last + 1]  # draws after the last resample needed are never made
            w = w[: last + 1][ok]
            self.redrawn += int((~ok).sum())
            self.accepted += len(w)
            if len(w):
                yield w
            if self.accepted >= self.n_bootstrap:
                return
        warnings.warn(
            f"only {self.accepted} of {self.n_bootstrap} bootstrap resamples kept every finding scorable "
            f"after {cap} draws: a finding has too few positives or negatives for a bootstrap CI",
            stacklevel=3,
        )


def percentile_ci(values: np.ndarray, level: float = 0.95) -> list[float]:
    """The percentile interval ``[low, high]`` of bootstrap ``values`` (the finite ones) at
    ``level``; NaNs when there are none."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return [math.nan, math.nan]
    a = (1 - level) / 2
    return [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))]


def _paired_p_and_ci(boot: np.ndarray) -> tuple[float, list[float]]:
    """Two-sided bootstrap p-value of a difference (the smaller tail share, doubled, never below
    one resample's weight) and its 95% CI; NaN when there were no resamples."""
    if not len(boot):
        return math.nan, [math.nan, math.nan]
    tail = min((boot <= 0).mean(), (boot >= 0).mean())
    return float(min(1.0, max(2 * tail, 1.0 / (len(boot) + 1)))), percentile_ci(boot)


def _mean_mask(label_names: Sequence[str], defined: np.ndarray) -> np.ndarray:
    """Classes that enter the mean: defined findings (No Finding is reported, not averaged)."""
    return np.array([d and name != NO_FINDING for name, d in zip(label_names, defined)], dtype=bool)


def _boot_class_aucs(y, scores: Sequence[np.ndarray], patient_ids, n_bootstrap, seed, classes):
    """Bootstrap AUROCs ``[accepted, len(classes)]`` per score matrix, on the same resamples.

    Resamples that leave a class of ``classes`` without positives or negatives are redrawn
    (see the module docstring); returns ``(per-score arrays, resampler)`` whose counts say
    how many were.
    """
    classes = list(classes)
    sorted_ = [[_SortedClass(y[:, k], s[:, k]) for k in classes] for s in scores]
    resamples = _Resamples(y, patient_ids, n_bootstrap, seed, classes)
    out: list[list[np.ndarray]] = [[] for _ in scores]
    for w in resamples:
        for j, per_class in enumerate(sorted_):
            out[j].append(np.stack([c.auc(w) for c in per_class], axis=1) if per_class else np.zeros((len(w), 0)))
    return [np.concatenate(o) if o else np.zeros((0, len(classes))) for o in out], resamples


def bootstrap_aurocs(targets, scores, classes: Sequence[int], patient_ids=None, n_bootstrap: int = 1000,
                     seed: int = 0) -> np.ndarray:
    """The AUROC of each of ``classes`` (column indices) on each patient-bootstrap resample of
    one score matrix ``[N, K]``: ``[accepted, len(classes)]``, the resampling of
    :func:`auroc_report` (a resample that leaves one of ``classes`` without positives or
    negatives is drawn again). Its quantiles (:func:`percentile_ci`) are the CIs; two sets'
    arrays drawn with different seeds give the CI of a difference of independent AUROCs."""
    y, s = _check_inputs(targets, scores)
    (boot,), _ = _boot_class_aucs(y, [s], patient_ids, n_bootstrap, seed, classes)
    return boot


def _n_patients(patient_ids, n: int) -> int | None:
    groups = patient_groups(patient_ids, n)
    return None if groups is None else int(len(np.unique(groups)))


def auroc_report(targets, scores, label_names: Sequence[str], patient_ids=None, n_bootstrap: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """AUROC/AUPRC per class, mean AUROC over defined findings, and 95% bootstrap CIs.

    Returns ``{"label_names", "per_class": {name: {"auroc", "auroc_ci", "auprc", "n_pos"}},
    "mean_auroc", "mean_auroc_ci", "undefined", "n_images", "n_patients", "n_bootstrap",
    "bootstrap", "bootstrap_redrawn"}`` with NaN written as ``None`` (JSON-ready).
    ``n_bootstrap`` is the number of resamples behind the CIs; ``bootstrap_redrawn`` counts
    the resamples redrawn because a defined finding had lost all its positives or negatives
    in them. Missing patient ids count as one patient per image. ``n_bootstrap=0`` skips the
    CIs.
    """
    y, s = _check_inputs(targets, scores)
    label_names = list(label_names)
    if len(label_names) != y.shape[1]:
        raise ValueError(f"{len(label_names)} label names for {y.shape[1]} score columns")
    aucs = auroc(y, s)
    aps = auprc(y, s)
    defined = np.isfinite(aucs)
    undefined = [n for n, d in zip(label_names, defined) if not d]
    if undefined:
        warnings.warn(f"AUROC undefined (no positives or no negatives) for {undefined}: left out of the mean",
                      stacklevel=2)
    in_mean = _mean_mask(label_names, defined)
    mean = float(aucs[in_mean].mean()) if in_mean.any() else math.nan
    ci = {name: [math.nan, math.nan] for name in label_names}
    mean_ci = [math.nan, math.nan]
    accepted = redrawn = 0
    if n_bootstrap > 0 and defined.any():
        classes = np.flatnonzero(defined)
        (boot,), resamples = _boot_class_aucs(y, [s], patient_ids, n_bootstrap, seed, classes)
        accepted, redrawn = resamples.accepted, resamples.redrawn
        for j, k in enumerate(classes):
            ci[label_names[k]] = percentile_ci(boot[:, j])
        cols = [j for j, k in enumerate(classes) if in_mean[k]]
        if cols and len(boot):
            mean_ci = percentile_ci(boot[:, cols].mean(axis=1))  # every resample: the same findings
    per_class = {
        name: {"auroc": _num(aucs[k]), "auroc_ci": [_num(v) for v in ci[name]], "auprc": _num(aps[k]),
               "n_pos": int(y[:, k].sum())}
        for k, name in enumerate(label_names)
    }
    return {
        "label_names": label_names,
        "per_class": per_class,
        "mean_auroc": _num(mean),
        "mean_auroc_ci": [_num(v) for v in mean_ci],
        "undefined": undefined,
        "n_images": int(len(y)),
        "n_patients": _n_patients(patient_ids, len(y)),
        "n_bootstrap": int(accepted),
        "bootstrap": "patients" if patient_ids is not None else "images",
        "bootstrap_redrawn": int(redrawn),
    }


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def mean_auroc(targets, scores, label_names: Sequence[str] | None = None) -> float:
    """Mean AUROC over defined findings (NaN if none is defined); no warning, no CI."""
    aucs = auroc(targets, scores)
    names = list(label_names) if label_names is not None else [str(k) for k in range(len(aucs))]
    m = _mean_mask(names, np.isfinite(aucs))
    return float(aucs[m].mean()) if m.any() else math.nan


def paired_comparison(targets, scores_a, scores_b, patient_ids=None, n_bootstrap: int = 1000, seed: int = 0,
                      label_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Is run A's mean AUROC different from run B's on the same test images?

    Both runs are scored on the *same* bootstrap resamples (patients when ``patient_ids``
    are given), so the shared difficulty of the images cancels. The p-value is two-sided:
    twice the share of resampled differences on the other side of zero (at least
    1/(R+1) so it is never reported as exactly 0). Also returns per-class differences with
    DeLong's p-value. Classes undefined on these images are left out; resamples that leave a
    class of the mean without positives or negatives are redrawn (``bootstrap_redrawn``).
    Missing patient ids count as one patient per image.
    """
    y, sa = _check_inputs(targets, scores_a, "scores_a")
    _, sb = _check_inputs(targets, scores_b, "scores_b")
    if sa.shape != sb.shape:
        raise ValueError(f"scores_a shape {sa.shape} and scores_b shape {sb.shape} differ")
    names = list(label_names) if label_names is not None else [str(k) for k in range(y.shape[1])]
    a_auc, b_auc = auroc(y, sa), auroc(y, sb)
    defined = np.isfinite(a_auc)
    in_mean = _mean_mask(names, defined)
    if not in_mean.any():
        raise ValueError("no class has both positives and negatives on these images: nothing to compare")
    diff = float(a_auc[in_mean].mean() - b_auc[in_mean].mean())
    cols = np.flatnonzero(in_mean)
    boot = np.full(0, np.nan)
    redrawn = 0
    if n_bootstrap > 0:
        (ba, bb), resamples = _boot_class_aucs(y, [sa, sb], patient_ids, n_bootstrap, seed, cols)
        redrawn = resamples.redrawn
        boot = ba.mean(axis=1) - bb.mean(axis=1)  # both runs on the same resamples and findings
    p, ci = _paired_p_and_ci(boot)
    per_class = {}
    for k in np.flatnonzero(defined):
        if min(y[:, k].sum(), (1 - y[:, k]).sum()) < 2:
            continue  # DeLong's variance needs 2 positives and 2 negatives (a rare finding may have 1)
        d = delong_test(y[:, k], sa[:, k], sb[:, k])
        per_class[names[k]] = {"auroc_a": d["auc1"], "auroc_b": d["auc2"], "diff": d["auc1"] - d["auc2"],
                               "delong_z": d["z"], "delong_p": d["p_value"]}
    return {
        "mean_auroc_a": float(a_auc[in_mean].mean()),
        "mean_auroc_b": float(b_auc[in_mean].mean()),
        "diff": diff,
        "ci": [_num(v) for v in ci],
        "p_value": _num(p),
        "n_bootstrap": int(len(boot)),
        "bootstrap": "patients" if patient_ids is not None else "images",
        "bootstrap_redrawn": int(redrawn),
        "n_images": int(len(y)),
        "n_patients": _n_patients(patient_ids, len(y)),
        "classes": [names[k] for k in cols],
        "per_class": per_class,
    }


def paired_mean_difference(a, b, groups=None, n_bootstrap: int = 1000, seed: int = 0,
                           level: float = 0.95) -> dict[str, Any]:
    """Mean of ``a - b`` over paired items, with a (cluster) bootstrap CI and p-value.

    ``a[i]`` and ``b[i]`` are two scores of the same item (a model's localization hit and
    the random-map hit rate on the same image and finding). ``groups`` (e.g. image or
    patient ids) are resampled whole, so items of one image move together; missing ids
    are groups of their own. The p-value is two-sided, as in :func:`paired_comparison`.
    Returns ``{"mean_a", "mean_b", "diff", "ci", "p_value", "n", "n_groups", "n_bootstrap"}``.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores have {len(a)} and {len(b)} items: give one pair per item")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired scores contain NaN or infinite values")
    n = len(a)
    if n == 0:
        return {"mean_a": None, "mean_b": None, "diff": None, "ci": [None, None], "p_value": None,
                "n": 0, "n_groups": 0, "n_bootstrap": 0}
    d = a - b
    boot = []
    if n_bootstrap > 0:
        for w in bootstrap_weights(n, groups, n_bootstrap, seed):
            boot.append((w @ d) / w.sum(axis=1))
    boot = np.concatenate(boot) if boot else np.zeros(0)
    if len(boot):
        tail = min((boot <= 0).mean(), (boot >= 0).mean())
        p = float(min(1.0, max(2 * tail, 1.0 / (len(boot) + 1))))
        ci = percentile_ci(boot, level)
    else:
        p, ci = math.nan, [math.nan, math.nan]
    groups_ = patient_groups(groups, n)
    return {
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "diff": float(d.mean()),
        "ci": [_num(v) for v in ci],
        "p_value": _num(p),
        "n": int(n),
        "n_groups": int(n if groups_ is None else len(np.unique(groups_))),
        "n_bootstrap": int(len(boot)),
    }


def _midrank(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def delong_test(y, s1, s2) -> dict[str, float]:
    """DeLong's test of AUROC(s1) == AUROC(s2) on the same images (one class).

    Fast DeLong (Sun & Xu 2014): the structural components come from midranks,
    V10_i = (R_i^{all} - R_i^{pos}) / n for each positive, V01_j = 1 - (R_j^{all} - R_j^{neg}) / m
    for each negative; var(A1 - A2) = (S10_11 + S10_22 - 2 S10_12)/m + (S01_... )/n.
    Returns auc1, auc2, var1, var2, cov, z and the two-sided p_value.
    """
    y = np.asarray(y).ravel() > 0.5
    s = np.stack([np.asarray(s1, dtype=np.float64).ravel(), np.asarray(s2, dtype=np.float64).ravel()])
    if s.shape[1] != len(y):
        raise ValueError(f"delong_test: {len(y)} labels but {s.shape[1]} scores")
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"delong_test needs at least 2 positives and 2 negatives, got {m} and {n}")
    pos, neg = s[:, y], s[:, ~y]
    v10 = np.empty((2, m))
    v01 = np.empty((2, n))
    aucs = np.empty(2)
    for r in range(2):
        tz = _midrank(np.concatenate([pos[r], neg[r]]))
        tx, ty = _midrank(pos[r]), _midrank(neg[r])
        aucs[r] = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10[r] = (tz[:m] - tx) / n
        v01[r] = 1.0 - (tz[m:] - ty) / m
    cov = np.cov(v10) / m + np.cov(v01) / n
    var_diff = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    if var_diff <= 0:
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    else:
        z = diff / math.sqrt(var_diff)
    p = float(2 * stats.norm.sf(abs(z)))
    return {"auc1": float(aucs[0]), "auc2": float(aucs[1]), "var1": float(cov[0, 0]), "var2": float(cov[1, 1]),
            "cov": float(cov[0, 1]), "z": float(z), "p_value": p}


# ----------------------------------------------------------------------------- seeds


def seed_spread(values: Sequence[float]) -> dict[str, Any]:
    """``n``, ``mean``, ``sd`` (n - 1 in the denominator; NaN below two values), ``min``, ``max``."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"n": 0, "mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan}
    return {"n": int(len(v)), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
            "min": float(v.min()), "max": float(v.max())}


def _seed_inputs(targets, seeds: Sequence, name: str, label_names) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    if not len(seeds):
        raise ValueError(f"{name}: no seeds given (one score matrix per training seed)")
    y, first = _check_inputs(targets, seeds[0], name)
    scores = [first] + [_check_inputs(targets, s, name)[1] for s in seeds[1:]]
    names = list(label_names) if label_names is not None else [str(k) for k in range(y.shape[1])]
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} label names for {y.shape[1]} score columns")
    return y, scores, names


def seed_mean_auroc(targets, seeds: Sequence, label_names: Sequence[str] | None = None, patient_ids=None,
                    n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean AUROC of one experiment trained with several seeds, scored on the same test images.

    ``seeds`` holds one score matrix ``[N, K]`` per training seed. Returns ``per_seed`` (each
    seed's mean AUROC over the defined findings), their ``mean`` (the experiment's number),
    ``sd``/``min``/``max``/``n_seeds`` (the seed spread), and ``ci``: the 95% bootstrap CI of
    that mean over seeds, every seed scored on the same resampled patients. So the CI is the
    test-set uncertainty of exactly the number shown, holding the trained models fixed, and
    the seed spread beside it is the training uncertainty; neither hides in the other.
    """
    y, scores, names = _seed_inputs(targets, seeds, "seed scores", label_names)
    in_mean = _mean_mask(names, np.isfinite(auroc(y, scores[0])))
    if not in_mean.any():
        raise ValueError("no finding has both positives and negatives on these images: no mean AUROC")
    cols = np.flatnonzero(in_mean)
    per_seed = [float(auroc(y, s)[in_mean].mean()) for s in scores]
    ci, accepted, redrawn = [math.nan, math.nan], 0, 0
    if n_bootstrap > 0:
        boot, resamples = _boot_class_aucs(y, scores, patient_ids, n_bootstrap, seed, cols)
        accepted, redrawn = resamples.accepted, resamples.redrawn
        if accepted:
            ci = percentile_ci(np.mean([b.mean(axis=1) for b in boot], axis=0))
    spread = seed_spread(per_seed)
    return {"per_seed": per_seed, "mean": spread["mean"], "sd": spread["sd"], "min": spread["min"],
            "max": spread["max"], "n_seeds": spread["n"], "ci": [_num(v) for v in ci],
            "n_bootstrap": int(accepted), "bootstrap_redrawn": int(redrawn),
            "bootstrap": "patients" if patient_ids is not None else "images", "classes": [names[k] for k in cols]}


def paired_seed_comparison(targets, seeds_a: Sequence, seeds_b: Sequence, patient_ids=None, n_bootstrap: int = 1000,
                           seed: int = 0, label_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Experiment A against experiment B, each trained with one or more seeds, on the same test images.

    ``diff`` is A's mean AUROC averaged over its seeds minus B's: the difference of the two
    numbers a results table shows, whatever the number of seeds on each side (the AUROC of
    seed-averaged scores would instead reward whichever side has more seeds, since an
    ensemble scores higher than its members). Its ``ci`` and two-sided ``p_value`` come from
    resampling test patients, every seed of both sides on the same resamples (as in
    :func:`paired_comparison`, which this equals for one seed each). ``seed_diffs`` holds
    every seed of A minus every seed of B: seeds are not paired across experiments (seed k
    of another architecture starts from other weights), so every pairing counts, and their
    range excludes 0 exactly when the two sets of seeds do not overlap.
    """
    y, sa, names = _seed_inputs(targets, seeds_a, "scores of A", label_names)
    _, sb, _ = _seed_inputs(targets, seeds_b, "scores of B", label_names)
    if sa[0].shape != sb[0].shape:
        raise ValueError(f"scores of A {sa[0].shape} and of B {sb[0].shape} differ in shape")
    in_mean = _mean_mask(names, np.isfinite(auroc(y, sa[0])))
    if not in_mean.any():
        raise ValueError("no class has both positives and negatives on these images: nothing to compare")
    cols = np.flatnonzero(in_mean)
    per_a = [float(auroc(y, s)[in_mean].mean()) for s in sa]
    per_b = [float(auroc(y, s)[in_mean].mean()) for s in sb]
    diff = float(np.mean(per_a) - np.mean(per_b))
    boot, redrawn = np.full(0, np.nan), 0
    if n_bootstrap > 0:
        parts, resamples = _boot_class_aucs(y, sa + sb, patient_ids, n_bootstrap, seed, cols)
        redrawn = resamples.redrawn
        if resamples.accepted:
            means = [p.mean(axis=1) for p in parts]  # every seed's mean AUROC on every resample
            boot = np.mean(means[:len(sa)], axis=0) - np.mean(means[len(sa):], axis=0)
    p, ci = _paired_p_and_ci(boot)
    seed_diffs = [a - b for a in per_a for b in per_b]
    return {
        "mean_auroc_a": float(np.mean(per_a)), "mean_auroc_b": float(np.mean(per_b)),
        "per_seed_a": per_a, "per_seed_b": per_b, "diff": diff, "ci": [_num(v) for v in ci], "p_value": _num(p),
        "seed_diffs": seed_diffs, "seed_diff_min": float(min(seed_diffs)), "seed_diff_max": float(max(seed_diffs)),
        "n_seeds_a": len(per_a), "n_seeds_b": len(per_b), "n_bootstrap": int(len(boot)),
        "bootstrap_redrawn": int(redrawn), "bootstrap": "patients" if patient_ids is not None else "images",
        "n_images": int(len(y)), "n_patients": _n_patients(patient_ids, len(y)), "classes": [names[k] for k in cols],
    }


def alarms_at_threshold(targets, scores, threshold: float, label_names: Sequence[str] | None = None):
    """What one decision threshold does on a test set, per finding and over all findings.

    Every score at or above ``threshold`` raises an alarm. Per finding: images, positives,
    alarms, true and false alarms, missed positives, sensitivity (true alarms / positives,
    NaN without positives) and false alarms per image; the last row, ``all findings``, adds
    them up, so its ``false alarms per image`` is what a reader of every finding's alarm on
    one image sees on average. Returns a pandas DataFrame indexed by finding.
    """
    import pandas as pd  # the table is for notebooks; the metrics above need no pandas

    y, s = _check_inputs(targets, scores)
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a number, got {threshold!r}")
    names = list(label_names) if label_names is not None else [f"class {k}" for k in range(y.shape[1])]
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} label names for {y.shape[1]} columns of targets")
    positive, alarm = y > 0.5, s >= threshold
    counts = pd.DataFrame({
        "images": np.full(y.shape[1], len(y)), "positives": positive.sum(axis=0), "alarms": alarm.sum(axis=0),
        "true alarms": (alarm & positive).sum(axis=0), "false alarms": (alarm & ~positive).sum(axis=0),
        "missed": (~alarm & positive).sum(axis=0)}, index=pd.Index(names, name="finding"))
    total = counts.sum()
    total["images"] = len(y)
    counts.loc["all findings"] = total
    counts["sensitivity"] = counts["true alarms"] / counts["positives"].where(counts["positives"] > 0)
    counts["false alarms per image"] = counts["false alarms"] / counts["images"]
    return counts
