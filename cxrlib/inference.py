"""Is experiment A different from the baseline? A test whose false-call rate is measured.

An experiment trained with several seeds is scored on one test set. Its number (the mean
AUROC over the findings, averaged over its seeds) is uncertain for two reasons: another seed
would have trained another model (**seed spread**), and other patients would have given
another test set (**test-set variance**). A verdict that looks at one of them alone calls
differences that are not there: the test-patient bootstrap holds the trained models fixed,
and the seed spread holds the test set fixed.

The design
----------
``D`` = A's seed-mean AUROC minus the baseline's, on the test images they share. Its variance
has the two parts, estimated separately and added::

    Var(D) = s2_seed * (1/nA + 1/nB) + v_test

* ``s2_seed``: the seed variance pooled from both arms' per-seed mean AUROCs (each arm's
  spread around its own mean, ``nA + nB - 2`` degrees of freedom);
* ``v_test``: the test-patient variance of the paired difference of the two arms' means that
  the seeds do not already hold (below), from DeLong's placement values (Sun & Xu 2014):
  every image's influence on each finding's AUROC, averaged over the findings of the mean
  and over an arm's seeds, summed per patient (images of one patient are not independent),
  and the variance of the patient sums (:func:`influence_variance`). The paired variance
  equals the patient bootstrap's variance to within its Monte Carlo error
  (``tests/test_inference.py`` checks it) and takes milliseconds where the bootstrap takes
  minutes on the 25,596 images of the official test list.

What the seeds already hold
---------------------------
Seed ``s`` of arm A errs on the test images in a part shared by the arm's seeds (its
architecture) and in a part of its own: its influences are ``psi_s = c + e_s``, the ``e_s``
independent across seeds with a patient-level variance ``w_A``. The paired variance of the
seed means is then ``Var(c_A - c_B) + w_A / nA + w_B / nB``. But each seed's own ``e_s``
also moves that seed's AUROC, so it is part of the spread of the per-seed AUROCs:
``E[s2_seed] = sigma2_seed + w`` (to first order, the influence expansion). Adding both
counts ``w / n`` twice. The design subtracts it from the paired variance::

    v_test = max(0, V_paired - w_A / nA - w_B / nB),
    w_A    = nA / (nA - 1) * mean over A's seeds of influence_variance(psi_s - mean_s psi_s)

``w_A`` is unbiased: the deviations of ``nA`` seeds' influences from their own mean have
``(nA - 1) / nA`` of the per-seed variance in expectation, and :func:`influence_variance` is
the patient variance of each. So ``V_paired - w_A / nA - w_B / nB`` is unbiased for
``Var(c_A - c_B)``, the test-set part no seed spread can show. The cut at zero only ever adds
variance (conservative). A side with one seed has no measured ``w`` and keeps its part (it
is not tested anyway); a fitted arm (no seed) has none. ``bench/verdict_calibration.py``
measured the corrected design's false-call rates and its power (the corrected rows of
``bench/results/verdict_calibration.md``; the uncorrected design called +0.05 at 3 v 3 only
half the time).

``t = D / sqrt(Var(D))`` is read against Student's t with the seeds' ``nA + nB - 2`` degrees of
freedom; the two-sided p-value decides at ``alpha = 0.05``. The test part is known far more
precisely than the seed part (hundreds of patients against a few seeds), so these degrees of
freedom are conservative where the test set's share is large. Satterthwaite's degrees of
freedom, which credit that precision, called up to 8% of A/A comparisons with two or three
seeds a side when the seed spread dominated (a seed variance that happens to come out small
raises the degrees of freedom exactly when the denominator is already too small); the
calibration bench measured that (the first run in the history of
bench/results/verdict_calibration.md), and the design keeps the seeds' degrees of freedom.

A side with fewer than :data:`MIN_SEEDS` seeds is **not tested**: one seed cannot say how far
another seed would land, and a pooled variance borrowed from the other arm assumes the two
architectures vary alike, which is exactly what is unknown. ``bench/verdict_calibration.py``
measures the false-call rate of this design at 2v2, 3v3 and 5v5 seeds over several seed
spreads and test sizes (and what 1v3 would give if it were tested), and its power against
planted differences (``bench/results/verdict_calibration.md``).

Power in words
--------------
A comparison that calls nothing says how large a difference it could have shown
(:mod:`cxrlib.results` puts it into words):
:func:`minimum_detectable_difference` is the true difference this test calls with 80%
probability at ``alpha = 0.05``, from the same standard error and degrees of freedom (the
noncentral t). "No difference larger than 0.03 shown" never means "the same".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import optimize, stats

from cxrlib.metrics import _check_inputs, _mean_mask, auroc, patient_groups

MIN_SEEDS = 2  # per side: below it the seed spread of that side is not measured
ALPHA = 0.05
POWER = 0.80
_MDD_QUANTILES = 2000

DESIGN_RULE = (
    "A difference from the baseline is called when the two-sided t-test of the difference in "
    "seed-mean AUROC rejects at alpha = 0.05, its variance the sum of the seed variance (pooled "
    "within both arms) and the test-patient variance of the paired difference (DeLong placement "
    "values summed per patient, less each seed's own image-level noise, which the seed variance already "
    "holds), on the seeds' degrees of freedom. A side with fewer than "
    f"{MIN_SEEDS} seeds is not tested. A comparison that calls nothing states the smallest "
    "difference it would have called with 80% probability."
)


# ----------------------------------------------------------------------------- influence values


def _placements(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray]:
    """One finding's AUROC and each image's influence on it (zero-sum over images).

    A positive's placement is the share of negatives scored below it (ties count half), a
    negative's the share of positives scored above it; both average to the AUROC. An image's
    influence is its placement minus the AUROC, divided by the size of its class: the
    first-order change of the AUROC when that image is weighted up (DeLong 1988).
    """
    pos = y > 0.5
    m, n = int(pos.sum()), int((~pos).sum())
    out = np.empty(len(s))
    sp, sn = np.sort(s[pos]), np.sort(s[~pos])
    # ties count half: (strictly below + below or equal) / 2
    v10 = (np.searchsorted(sn, s[pos], "left") + np.searchsorted(sn, s[pos], "right")) / (2.0 * n)
    v01 = 1.0 - (np.searchsorted(sp, s[~pos], "left") + np.searchsorted(sp, s[~pos], "right")) / (2.0 * m)
    auc = float(v10.mean())
    out[pos] = (v10 - auc) / m
    out[~pos] = (v01 - auc) / n
    return auc, out


def mean_auroc_influence(targets, scores, columns: Sequence[int]) -> tuple[float, np.ndarray]:
    """The mean AUROC over ``columns`` and every image's influence on it ``[N]``.

    Each column must have a positive and a negative (ask :func:`scorable_columns`).
    """
    y, s = _check_inputs(targets, scores)
    aucs, psi = [], np.zeros(len(y))
    for k in columns:
        a, p = _placements(y[:, k], s[:, k])
        aucs.append(a)
        psi += p
    return float(np.mean(aucs)), psi / len(columns)


def influence_variance(psi: np.ndarray, groups: np.ndarray | None) -> float:
    """Variance of a statistic whose image influences are ``psi``, whole patients resampled.

    The influences of one patient's images are summed (they move together under the patient
    bootstrap); with ``P`` patients the variance is ``P / (P - 1)`` times the sum of squares of
    the patient sums. ``groups`` as from :func:`cxrlib.metrics.patient_groups` (None: one
    patient per image).
    """
    psi = np.asarray(psi, dtype=np.float64)
    sums = psi if groups is None else np.bincount(groups, weights=psi)
    P = len(sums)
    if P < 2:
        return math.nan
    centred = sums - sums.mean()  # zero already for an AUROC; kept so any statistic works
    return float(P / (P - 1) * (centred ** 2).sum())


def scorable_columns(targets, label_names: Sequence[str] | None = None) -> np.ndarray:
    """The findings that enter the mean: a positive and a negative on these images (No Finding aside)."""
    y, _ = _check_inputs(targets, np.zeros_like(np.asarray(targets, dtype=np.float64)))
    names = list(label_names) if label_names is not None else [str(k) for k in range(y.shape[1])]
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} label names for {y.shape[1]} score columns")
    defined = (y.sum(0) > 0) & ((1 - y).sum(0) > 0)
    return np.flatnonzero(_mean_mask(names, defined))


@dataclass(frozen=True)
class Arm:
    """One experiment's seeds on a test set: per-seed mean AUROCs and the seed-mean's influences."""

    per_seed: np.ndarray  # [S] each seed's mean AUROC over the findings
    influence: np.ndarray  # [N] influence of the seed-averaged mean AUROC on each image
    # patient variance of one seed's own influences around the seed mean (w; NaN with one seed)
    own_variance: float = math.nan

    @property
    def n_seeds(self) -> int:
        return int(len(self.per_seed))

    @property
    def mean(self) -> float:
        return float(self.per_seed.mean())

    @property
    def sum_squares(self) -> float:
        return float(((self.per_seed - self.per_seed.mean()) ** 2).sum())


def own_variance(psi: np.ndarray, groups: np.ndarray | None) -> float:
    """Unbiased patient variance ``w`` of one seed's own influences, from ``psi`` ``[S, N]`` of ``S`` seeds.

    Each seed's deviation from the seeds' mean influence, its patient variance averaged over
    the seeds and scaled by ``S / (S - 1)`` (the deviations from a mean of ``S`` keep
    ``(S - 1) / S`` of it). NaN with one seed: nothing to measure it from.
    """
    psi = np.asarray(psi, dtype=np.float64)
    S = len(psi)
    if S < 2:
        return math.nan
    centre = psi.mean(0)
    return float(np.mean([influence_variance(p - centre, groups) for p in psi]) * S / (S - 1))


def arm(targets, seeds: Sequence, columns: Sequence[int], groups: np.ndarray | None = None) -> Arm:
    """An :class:`Arm` from one score matrix ``[N, K]`` per training seed (``groups``: patients)."""
    if not len(seeds):
        raise ValueError("an experiment needs at least one seed's scores")
    per_seed, psi = [], []
    for s in seeds:
        m, p = mean_auroc_influence(targets, s, columns)
        per_seed.append(m)
        psi.append(p)
    return Arm(np.asarray(per_seed), np.mean(psi, axis=0), own_variance(np.asarray(psi), groups))


def unshared_test_variance(paired: float, a: Arm, b: Arm) -> float:
    """The paired test-patient variance less what the seed variance already holds (module docstring).

    Subtracts ``w / n`` of each arm whose ``w`` is measured (two seeds or more), cut at zero.
    """
    held = sum(x.own_variance / x.n_seeds for x in (a, b) if np.isfinite(x.own_variance))
    return max(0.0, float(paired) - held)


# ----------------------------------------------------------------------------- the test


def minimum_detectable_difference(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The true difference a two-sided t-test with this ``se`` and ``df`` calls with probability ``power``.

    Solved on the noncentral t (no normal approximation, which with 4 degrees of freedom would
    promise a third more power than there is): ``T = (Z + nc) / S`` with ``S**2`` a chi-square
    over ``df``, its power averaged over 2,000 quantiles of ``S`` (scipy's noncentral t
    returns NaN for some fractional degrees of freedom).
    """
    if not (se > 0 and np.isfinite(se) and df > 0):
        return math.nan
    crit = stats.t.ppf(1 - alpha / 2, df)
    u = (np.arange(_MDD_QUANTILES) + 0.5) / _MDD_QUANTILES
    s = np.sqrt(stats.chi2.ppf(u, df) / df) if np.isfinite(df) and df < 1e7 else np.ones(1)

    def short(nc: float) -> float:
        return float(np.mean(stats.norm.cdf(nc - crit * s) + stats.norm.cdf(-nc - crit * s))) - power

    hi = crit + 1.0
    while short(hi) < 0:
        hi *= 1.5
    return float(optimize.brentq(short, 0.0, hi, xtol=1e-6) * se)


def design_test(per_seed_a, per_seed_b, v_test: float, alpha: float = ALPHA,
                fitted_a: bool = False) -> dict[str, Any]:
    """The design's test from numbers alone: per-seed mean AUROCs of both arms and ``v_test``.

    ``v_test`` is the test-patient variance of the difference of the two arms' means (from
    :func:`influence_variance`).
    ``fitted_a``: arm A is fitted deterministically (the shortcut control), so it has no
    seed spread and the seed variance is B's alone.
    Returns ``diff``, ``se``, ``df``, ``t``, ``p_value``, ``ci`` (95% by default), ``mdd``
    (the difference called with 80% probability), ``seed_sd`` and the variance parts. Callers
    check :data:`MIN_SEEDS` first (:func:`compare_arms` does).
    """
    a, b = np.asarray(per_seed_a, dtype=np.float64), np.asarray(per_seed_b, dtype=np.float64)
    na, nb = len(a), len(b)
    df_seed = nb - 1 if fitted_a else na + nb - 2
    ss = ((b - b.mean()) ** 2).sum() + (0.0 if fitted_a else ((a - a.mean()) ** 2).sum())
    s2 = ss / df_seed if df_seed > 0 else math.nan
    seed_part = (s2 * ((0.0 if fitted_a else 1 / na) + 1 / nb)) if df_seed > 0 else 0.0
    var = seed_part + v_test
    df = float(df_seed) if df_seed > 0 else math.inf  # one seed a side: the test part alone (not tested)
    diff = float(a.mean() - b.mean())
    se = math.sqrt(var) if var > 0 else 0.0
    if se > 0:
        t = diff / se
        p = float(2 * stats.t.sf(abs(t), df))
        half = float(stats.t.ppf(1 - alpha / 2, df) * se)
    else:
        t, p, half = (0.0 if diff == 0 else math.copysign(math.inf, diff)), float(diff == 0), 0.0
    return {"diff": diff, "se": se, "df": df, "t": float(t), "p_value": p, "ci": [diff - half, diff + half],
            "mdd": minimum_detectable_difference(se, df, alpha), "seed_sd": math.sqrt(s2) if df_seed > 0 else math.nan,
            "seed_variance_part": float(seed_part), "test_variance_part": float(v_test), "alpha": alpha,
            "n_seeds_a": na, "n_seeds_b": nb}


def _aligned(targets, seeds_a, seeds_b, label_names):
    y, first = _check_inputs(targets, seeds_a[0], "scores of A")
    for s in list(seeds_a) + list(seeds_b):
        if np.shape(s) != y.shape:
            raise ValueError(f"a seed's scores have shape {np.shape(s)}, the targets {y.shape}: score every seed "
                             "of both experiments on the same test images")
    return y, scorable_columns(y, label_names)


def compare_arms(targets, seeds_a: Sequence, seeds_b: Sequence, patient_ids=None,
                 label_names: Sequence[str] | None = None, alpha: float = ALPHA,
                 min_seeds: int = MIN_SEEDS, fitted_a: bool = False) -> dict[str, Any]:
    """Experiment A against experiment B (the baseline) on the same test images, by the design.

    ``seeds_a`` / ``seeds_b``: one score matrix ``[N, K]`` per training seed, rows aligned
    with ``targets``. Returns :func:`design_test`'s numbers plus ``mean_auroc_a/b``,
    ``per_seed_a/b``, ``n_images``, ``n_patients``, ``classes`` (column indices of the mean),
    ``paired_test_variance`` (the test-patient variance before the seeds' own part is taken out)
    and ``tested``: False when a side has fewer than ``min_seeds`` seeds (then ``p_value``,
    ``ci`` and ``mdd`` are None: "not tested"). ``fitted_a``: A is a deterministic fit with no
    seed (the shortcut control); only B's seeds count then.
    """
    if not len(seeds_a) or not len(seeds_b):
        raise ValueError(f"each side needs at least one seed's scores, got {len(seeds_a)} and {len(seeds_b)}")
    y, cols = _aligned(targets, seeds_a, seeds_b, label_names)
    if not len(cols):
        raise ValueError("no finding has both positives and negatives on these images: nothing to compare")
    groups = patient_groups(patient_ids, len(y))
    A, B = arm(y, seeds_a, cols, groups), arm(y, seeds_b, cols, groups)
    n_patients = len(y) if groups is None else int(groups.max()) + 1
    paired = influence_variance(A.influence - B.influence, groups)
    out = design_test(A.per_seed, B.per_seed, unshared_test_variance(paired, A, B), alpha, fitted_a)
    out["paired_test_variance"] = paired  # the patient bootstrap's variance, before the correction
    tested = (B.n_seeds if fitted_a else min(A.n_seeds, B.n_seeds)) >= min_seeds
    if not tested:
        out.update(p_value=None, ci=[None, None], mdd=None, t=None)
    out.update(tested=tested, min_seeds=min_seeds, mean_auroc_a=A.mean, mean_auroc_b=B.mean,
               per_seed_a=A.per_seed.tolist(), per_seed_b=B.per_seed.tolist(), n_images=int(len(y)),
               n_patients=n_patients, classes=[int(c) for c in cols])
    return out


def experiment_interval(targets, seeds: Sequence, patient_ids=None, label_names: Sequence[str] | None = None,
                        level: float = 0.95) -> dict[str, Any]:
    """The CI of an experiment's seed-mean AUROC, covering seeds and test patients.

    ``mean +- t(n - 1) * sqrt(s2 / n + v_test)``, with the seed variance ``s2`` of its seeds
    and ``v_test`` the test-patient variance of the seed-mean, on the seeds' ``n - 1`` degrees of
    freedom (conservative, as in :func:`design_test`). With one seed the seed spread is unknown: the CI covers the test patients only
    (normal quantile) and ``covers`` says so.
    """
    y, cols = _aligned(targets, seeds, [], label_names)
    if not len(cols):
        raise ValueError("no finding has both positives and negatives on these images: no mean AUROC")
    groups = patient_groups(patient_ids, len(y))
    A = arm(y, seeds, cols)
    n_patients = len(y) if groups is None else int(groups.max()) + 1
    v_test = influence_variance(A.influence, groups)
    if A.n_seeds >= 2:
        seed_part = A.sum_squares / (A.n_seeds - 1) / A.n_seeds
        df = A.n_seeds - 1
        half = stats.t.ppf(0.5 + level / 2, df) * math.sqrt(seed_part + v_test)
        covers = "seeds and test patients"
    else:
        seed_part, df = math.nan, math.inf
        half = stats.norm.ppf(0.5 + level / 2) * math.sqrt(v_test)
        covers = "test patients only (one seed: the seed spread is not measured)"
    half = float(half)
    # an AUROC lies in [0, 1]: the normal interval is cut there
    return {"mean": A.mean, "ci": [max(0.0, A.mean - half), min(1.0, A.mean + half)], "covers": covers, "level": level,
            "n_seeds": A.n_seeds, "per_seed": A.per_seed.tolist(), "df": df,
            "seed_sd": math.sqrt(A.sum_squares / (A.n_seeds - 1)) if A.n_seeds >= 2 else math.nan,
            "test_se": math.sqrt(v_test), "n_images": int(len(y)), "n_patients": n_patients}


# ----------------------------------------------------------------------------- controls

NEGATIVE_CONTROL = "A/A control"
POSITIVE_CONTROL = "planted-loss control"


def negative_control(targets, seeds: Sequence, patient_ids=None, label_names: Sequence[str] | None = None,
                     n_more: int = 3, seed: int = 0) -> dict[str, Any]:
    """The baseline against ``n_more`` further seeds of itself, simulated from its own spread.

    Training more seeds would cost a run each, so the extra seeds' mean AUROCs are drawn from
    a normal with the baseline's seed mean and SD, and the test-patient variance of the
    difference is the part that belongs to the seeds (each seed's influences around the
    seed mean), scaled to ``n_more`` against the baseline's seeds, less that same part as the
    seed variance already holds it (:func:`unshared_test_variance`): both arms are one process,
    so no test-set part is left and the test is the seeds' own. Nothing separates the two
    arms, so the design should call no difference, and does so 95% of the time
    (``bench/results/verdict_calibration.md``): one draw, fixed by ``seed``.
    """
    y, cols = _aligned(targets, seeds, [], label_names)
    if len(seeds) < MIN_SEEDS:
        raise ValueError(f"the negative control needs the baseline's seed spread: {len(seeds)} seed(s), "
                         f"train at least {MIN_SEEDS}")
    groups = patient_groups(patient_ids, len(y))
    per_seed, psi = zip(*(mean_auroc_influence(y, s, cols) for s in seeds))
    per_seed, psi = np.asarray(per_seed), np.asarray(psi)
    sd = float(per_seed.std(ddof=1))
    more = per_seed.mean() + sd * np.random.default_rng(seed).standard_normal(n_more)
    own = own_variance(psi, groups)
    paired = own * (1 / n_more + 1 / len(per_seed))
    n_patients = len(y) if groups is None else int(groups.max()) + 1
    out = design_test(more, per_seed, unshared_test_variance(
        paired, Arm(more, np.zeros(len(y)), own), Arm(per_seed, psi.mean(0), own)))
    out["paired_test_variance"] = paired
    out.update(tested=True, min_seeds=MIN_SEEDS, mean_auroc_a=float(more.mean()), mean_auroc_b=float(per_seed.mean()),
               per_seed_a=more.tolist(), per_seed_b=per_seed.tolist(), n_images=int(len(y)), n_patients=n_patients,
               classes=[int(c) for c in cols], simulated=True)
    return out


def planted_loss(targets, seeds: Sequence, columns: Sequence[int], drop: float, seed: int = 0) -> list[np.ndarray]:
    """The seeds' scores with Gaussian noise added, scaled so that their mean AUROC falls by ``drop``.

    Noise of ``k`` times each finding's score SD is added (the same draws for every ``k``), and
    ``k`` is found by bisection: a model known to rank worse by a chosen amount.
    """
    rng = np.random.default_rng(seed)
    seeds = [np.asarray(s, dtype=np.float64) for s in seeds]
    noise = [s.std(axis=0, keepdims=True) * rng.standard_normal(s.shape) for s in seeds]
    y, _ = _check_inputs(targets, seeds[0])

    def mean_of(k: float) -> float:
        return float(np.mean([auroc(y, s + k * e)[list(columns)].mean() for s, e in zip(seeds, noise)]))

    goal = mean_of(0.0) - drop
    lo, hi = 0.0, 1.0
    while mean_of(hi) > goal and hi < 1e3:  # a goal below chance is never reached: noise stops at 1,000 SDs
        lo, hi = hi, hi * 2
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_of(mid) > goal else (lo, mid)
    return [s + hi * e for s, e in zip(seeds, noise)]


def positive_control(targets, seeds: Sequence, patient_ids=None, label_names: Sequence[str] | None = None,
                     drop: float | None = None, seed: int = 0) -> dict[str, Any]:
    """The baseline's seeds made worse by a known amount (:func:`planted_loss`) against the
    baseline: a comparison whose answer is known to be "worse", to show that the design can call
    one. ``drop`` (in mean AUROC) defaults to twice the minimum detectable difference of the
    baseline against its own seeds (:func:`negative_control`), a loss the design calls nearly
    always if its stated power is true. Returns :func:`compare_arms`'s numbers and ``planted``.
    """
    y, cols = _aligned(targets, seeds, [], label_names)
    if drop is None:
        drop = 2 * negative_control(y, seeds, patient_ids, label_names, n_more=len(seeds), seed=seed)["mdd"]
    out = compare_arms(y, planted_loss(y, seeds, cols, drop, seed), seeds, patient_ids, label_names)
    # what was planted: the drop asked for, unless chance (0.5) came first
    return {**out, "planted": float(out["mean_auroc_b"] - out["mean_auroc_a"]), "asked": float(drop)}
