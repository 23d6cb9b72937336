"""Exercises where the student writes the piece, and checks that say in words what is wrong.

Each ``check_*`` runs the student's function on small cases whose answers are known (from
the library's own implementation of the same idea: :mod:`cxrlib.losses`,
:mod:`cxrlib.metrics`, :mod:`cxrlib.clinical`), and when an answer is wrong compares it with
the answers that the usual mistakes give, so the message names the mistake rather than
only the number. A check never raises on a wrong answer: it returns a :class:`Check` that
prints as its verdict (and is falsy when the function is wrong).

=========================  ===========================================================
``check_weighted_bce``     ``fn(logits [B,K] tensor, targets [B,K] tensor, pos_fraction [K])``
                           -> the class-weighted BCE of notebook 06, a scalar tensor
``check_leakage``          ``fn(train, test)`` (DataFrames with ``image_id``, ``patient_id``)
                           -> the set of patient ids present in both
``check_auroc``            ``fn(targets [N], scores [N])`` -> AUROC as a float, from ranks
``check_threshold``        ``fn(targets [N], scores [N], target_sensitivity)`` -> the highest
                           threshold (score >= threshold is positive) whose sensitivity
                           reaches the target
=========================  ===========================================================
"""
from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from cxrlib import clinical, metrics


@dataclass
class Check:
    """The outcome of one check: which cases passed and, for the others, why not."""

    name: str
    cases: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.cases > 0 and not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if self.passed:
            return f"{self.name}: all {self.cases} cases right."
        lines = [f"{self.name}: {len(self.failures)} of {self.cases} cases wrong."]
        return "\n".join(lines + [f"  - {f}" for f in self.failures])

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        if self.passed:
            return f"**{self.name}**: all {self.cases} cases right."
        return "\n".join([f"**{self.name}**: {len(self.failures)} of {self.cases} cases wrong."]
                         + [f"* {f}" for f in self.failures])


def _call(check: Check, case: str, fn: Callable, *args) -> tuple[bool, Any]:
    """Run the student's function; an exception becomes a failure that quotes it."""
    try:
        return True, fn(*args)
    except Exception as err:  # the student's code may raise anything; the check reports it
        where = traceback.extract_tb(err.__traceback__)[-1]
        check.failures.append(f"{case}: your function raised {type(err).__name__}: {err} (line {where.lineno})")
        return False, None


def _close(a: float, b: float, tol: float = 1e-6) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tol * max(1.0, abs(b))


def _as_float(check: Check, case: str, value: Any) -> float | None:
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        check.failures.append(f"{case}: expected one number, got {type(value).__name__} {value!r:.80}")
        return None


# --------------------------------------------------------------------------- weighted BCE


def _bce_variants(logits, targets, pos_fraction) -> dict[str, float]:
    """The right weighted BCE and what the usual mistakes compute instead."""
    # torch only for the loss exercise: the other checks run on NumPy alone
    import torch
    import torch.nn.functional as F

    from cxrlib.losses import WeightedBCELoss  # imports torch: only for this exercise

    p = torch.as_tensor(np.asarray(pos_fraction, dtype=np.float64), dtype=torch.float32)
    pos, neg = -F.logsigmoid(logits) * targets, -F.logsigmoid(-logits) * (1 - targets)
    return {
        "right": float(WeightedBCELoss(pos_fraction)(logits, targets)),
        "swapped": float((p * pos + (1 - p) * neg).mean()),
        "unweighted": float((pos + neg).mean()),
        "summed": float(((1 - p) * pos + p * neg).sum()),
        "negated": -float(WeightedBCELoss(pos_fraction)(logits, targets)),
        "positives only": float(((1 - p) * pos).mean()),
        "sigmoid twice": float(WeightedBCELoss(pos_fraction)(torch.sigmoid(logits), targets)),
    }


_BCE_MISTAKES = {
    "swapped": "positives are weighted by the share of positives and negatives by the share of negatives: that "
               "is the wrong way round. A rare finding's positives must weigh MORE: w+ = |N|/(|P|+|N|) = 1 - "
               "pos_fraction, w- = pos_fraction",
    "unweighted": "this is plain BCE: the class weights are not applied",
    "summed": "the weighted terms are summed; the loss is their mean over all B x K entries (a sum makes the "
              "learning rate depend on the batch size)",
    "negated": "the sign is wrong: log-probabilities are negative, so the loss is MINUS their weighted mean",
    "positives only": "only the positives' term is there: the negatives' term w- (1-y) log(1-p) is missing",
    "sigmoid twice": "the sigmoid was applied to something that already was a probability (or the logits were "
                     "treated as probabilities): the function receives logits; use logsigmoid(logits) and "
                     "logsigmoid(-logits)",
}


def check_weighted_bce(fn: Callable) -> Check:
    """Check a class-weighted BCE ``fn(logits, targets, pos_fraction)`` (see the module table)."""
    import torch

    check = Check("check_weighted_bce")
    gen = torch.Generator().manual_seed(0)
    cases = {
        "a batch of 6 images, 3 findings": (torch.randn(6, 3, generator=gen) * 2,
                                            (torch.rand(6, 3, generator=gen) < 0.3).float(), [0.1, 0.3, 0.5]),
        "one image, one positive finding": (torch.tensor([[1.5, -0.5]]), torch.tensor([[1.0, 0.0]]), [0.2, 0.6]),
        "large logits (must stay finite)": (torch.tensor([[40.0, -40.0], [-40.0, 40.0]]),
                                            torch.tensor([[1.0, 0.0], [1.0, 0.0]]), [0.25, 0.25]),
    }
    for case, (logits, targets, frac) in cases.items():
        check.cases += 1
        ok, out = _call(check, case, fn, logits.clone(), targets.clone(), np.asarray(frac))
        if not ok:
            continue
        got = _as_float(check, case, out)
        if got is None:
            continue
        if isinstance(out, torch.Tensor) and out.dim() != 0:
            check.failures.append(f"{case}: returned a tensor of shape {tuple(out.shape)}; the loss is one number "
                                  "(the mean over entries)")
            continue
        want = _bce_variants(logits, targets, frac)
        if _close(got, want["right"], 1e-4):
            continue
        mistake = next((m for m, v in want.items() if m != "right" and _close(got, v, 1e-4)), None)
        why = _BCE_MISTAKES[mistake] if mistake else "none of the usual mistakes gives this value either"
        check.failures.append(f"{case}: expected {want['right']:.5f}, got {got:.5f}: {why}"
                              if math.isfinite(got) else f"{case}: got {got}: use logsigmoid, not log(sigmoid())")
    return check


# --------------------------------------------------------------------------- leakage


def check_leakage(fn: Callable) -> Check:
    """Check a patient-leakage finder ``fn(train, test) -> set of shared patient ids``."""
    check = Check("check_leakage")
    cases = {
        # patient 7 has one image in each part; no image is in both
        "one patient in both parts": (["00001_000", "00007_000", "00008_000"], [1, 7, 8],
                                      ["00007_001", "00009_000"], [7, 9], {7}),
        "a clean patient-wise split": (["00001_000", "00001_001"], [1, 1], ["00002_000", "00003_000"], [2, 3], set()),
        # two patients leak, one with several images on each side
        "two patients, several images": (["a1", "a2", "b1", "c1"], [10, 10, 11, 12],
                                         ["a3", "a4", "c2", "d1"], [10, 10, 12, 13], {10, 12}),
    }
    for case, (tr_img, tr_pat, te_img, te_pat, want) in cases.items():
        check.cases += 1
        train = pd.DataFrame({"image_id": tr_img, "patient_id": tr_pat})
        test = pd.DataFrame({"image_id": te_img, "patient_id": te_pat})
        ok, out = _call(check, case, fn, train.copy(), test.copy())
        if not ok:
            continue
        if isinstance(out, (bool, np.bool_, int, np.integer)):
            check.failures.append(f"{case}: returned {out!r}; return the SET of shared patient ids (a count or a "
                                  "yes/no hides which patients to move)")
            continue
        try:
            got = {int(v) if str(v).lstrip("-").isdigit() else v for v in out}
        except TypeError:
            check.failures.append(f"{case}: returned {type(out).__name__}; return a set of patient ids")
            continue
        if got == want:
            continue
        images = set(tr_img) | set(te_img)
        if got & images or got == set(tr_img) & set(te_img):
            why = ("image ids were compared: a split can share no image and still share a patient, whose other "
                   "films the model has memorised; compare the patient_id column")
        elif got < want:
            why = f"patients {sorted(want - got)} are in both parts and were missed"
        else:
            why = f"patients {sorted(got - want)} are not in both parts"
        check.failures.append(f"{case}: expected {sorted(want)}, got {sorted(got, key=str)}: {why}")
    return check


# --------------------------------------------------------------------------- AUROC


def _auroc_variants(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    pos, neg = s[y == 1], s[y == 0]
    wins, ties = (pos[:, None] > neg[None, :]).sum(), (pos[:, None] == neg[None, :]).sum()
    pairs = len(pos) * len(neg)
    right = float(metrics.auroc(y, s)[0])
    return {"right": right, "flipped": 1 - right, "ties lost": wins / pairs, "ties won": (wins + ties) / pairs,
            "not divided": float(wins + 0.5 * ties), "accuracy": float(((s >= 0.5) == (y == 1)).mean())}


_AUROC_MISTAKES = {
    "flipped": "this is 1 - AUROC: the order is reversed (AUROC is the chance that a random positive scores "
               "HIGHER than a random negative)",
    "ties lost": "a tie between a positive and a negative counts as 0; it counts as one half (the chance of "
                 "ordering them right by a coin toss)",
    "ties won": "a tie between a positive and a negative counts as 1; it counts as one half",
    "not divided": "the count of correctly ordered pairs is not divided by the number of (positive, negative) "
                   "pairs",
    "accuracy": "this is the accuracy at a threshold of 0.5, not a ranking measure: AUROC uses no threshold",
}


def check_auroc(fn: Callable) -> Check:
    """Check ``fn(targets, scores) -> AUROC`` (ties count one half)."""
    check = Check("check_auroc")
    cases = {
        "perfect ranking": ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]),
        "one pair out of order": ([0, 1, 0, 1], [0.1, 0.3, 0.4, 0.9]),
        "ties across classes": ([0, 1, 0, 1, 1], [0.2, 0.2, 0.7, 0.7, 0.9]),
        "scores that are not probabilities": ([1, 0, 1, 0, 0, 1], [3.0, -1.0, 0.5, 0.5, 2.0, -2.0]),
    }
    for case, (y, s) in cases.items():
        check.cases += 1
        y, s = np.asarray(y), np.asarray(s, dtype=np.float64)
        ok, out = _call(check, case, fn, y.copy(), s.copy())
        got = _as_float(check, case, out) if ok else None
        if got is None:
            continue
        want = _auroc_variants(y, s)
        if _close(got, want["right"]):
            continue
        mistake = next((m for m, v in want.items() if m != "right" and _close(got, v)), None)
        why = _AUROC_MISTAKES[mistake] if mistake else "none of the usual mistakes gives this value either"
        check.failures.append(f"{case}: expected {want['right']:.4f}, got {got:.4f}: {why}")
    return check


# --------------------------------------------------------------------------- threshold


def check_threshold(fn: Callable) -> Check:
    """Check ``fn(targets, scores, target_sensitivity) -> threshold`` (the highest threshold,
    score >= threshold positive, whose sensitivity reaches the target)."""
    check = Check("check_threshold")
    cases = {
        "target 0.5 of four positives": ([0, 1, 0, 1, 1, 1], [0.3, 0.9, 0.6, 0.4, 0.8, 0.2], 0.5),
        "target not a multiple of 1/n": ([1, 0, 1, 1, 0], [0.7, 0.5, 0.6, 0.3, 0.1], 0.6),
        "ties at the threshold": ([1, 1, 0, 1, 0], [0.8, 0.5, 0.5, 0.5, 0.2], 0.4),
        "every positive": ([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1], 1.0),
    }
    for case, (y, s, target) in cases.items():
        check.cases += 1
        y, s = np.asarray(y), np.asarray(s, dtype=np.float64)
        ok, out = _call(check, case, fn, y.copy(), s.copy(), target)
        got = _as_float(check, case, out) if ok else None
        if got is None:
            continue
        want = clinical.sensitivity_threshold(y, s, target)
        if np.array_equal(s >= got, s >= want):  # any threshold making the same calls is as good
            continue
        sens = float((s[y == 1] >= got).mean())
        if sens < target:
            why = (f"at {got:.3f} the sensitivity is only {sens:.2f}, below the target {target}; count a score "
                   "EQUAL to the threshold as positive, and round the number of positives needed up")
        else:
            lost = float((s[y == 0] < want).mean() - (s[y == 0] < got).mean())
            why = (f"{got:.3f} reaches the target ({sens:.2f}) but is not the highest threshold that does: "
                   f"{want:.3f} also reaches it and keeps {lost:.0%} more of the negatives below the threshold "
                   "(specificity given away for nothing)")
        check.failures.append(f"{case}: expected {want:.3f}, got {got:.3f}: {why}")
    return check


__all__ = ["Check", "check_auroc", "check_leakage", "check_threshold", "check_weighted_bce"]
