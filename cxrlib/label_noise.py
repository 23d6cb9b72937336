"""Label noise as report mining makes it, and the cap it puts on the AUROC anyone can measure.

ChestX-ray14's labels were mined from radiology reports by NLP: per finding, the labeller
misses some true findings (a report that hedges, a finding mentioned in passing) and
invents fewer (a negation it misread). Against the truth it has a *sensitivity* (the share of
true findings it keeps) and a *specificity* (the share of absent findings it leaves absent),
finding by finding. The phantoms know the truth, so they can be given such a labeller:

    DataConfig(label_noise=["train"], label_sensitivity=0.8, label_specificity=0.98)

flips the training labels (``"test"``: the test labels) when the data is loaded. Which label
flips depends on (``data.seed``, the image id, the finding) alone: the same image gets the
same noisy label in every run, every subset and every part, and the noise is part of the
run's config and fingerprint (a noisy run is never reused as a clean one).

Noisy *test* labels cap the measured AUROC however good the model: a model that ranks the
truth perfectly still "misses" the invented positives and "ranks wrongly" the missed ones.
With PPV and NPV of the labeller at the finding's prevalence, and label errors that do not
depend on the model's score given the truth,

    observed AUROC = 0.5 + (true AUROC - 0.5) * (PPV + NPV - 1),   cap = (PPV + NPV) / 2

(:func:`observed_auroc`, :func:`auroc_cap`; tests check both against simulation on phantom
truth). Real label errors are not that kind: the findings a report misses are the subtle
ones, which a model also scores lower, so the real loss can be larger or smaller.
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib.labels import FINDINGS, NO_FINDING, canonical
from cxrlib.metrics import auroc
from cxrlib.seed import derive_seeds, uniforms

PARTS = ("train", "val", "test")
# Fixed tag: the label-noise stream never coincides with another use of data.seed.
TAG_LABEL_NOISE = 7301


def _rate(value: Any, name: str) -> float | dict[str, float]:
    """A rate as the config holds it: a number in [0, 1], or {finding: number} (others 1)."""
    def one(v, where):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1 or not math.isfinite(v):
            raise ValueError(f"data.{where}={v!r}: expected a number from 0 to 1")
        return float(v)

    if isinstance(value, Mapping):
        out = {}
        for finding, v in value.items():
            try:
                key = canonical(str(finding))
            except (KeyError, ValueError):
                key = None
            if key not in FINDINGS:
                raise ValueError(f"data.{name}: {finding!r} is not one of the 14 findings {list(FINDINGS)}")
            out[key] = one(v, f"{name}.{finding}")
        return out
    return one(value, name)


def check_config(data_cfg) -> None:
    """Raise a clear error for a label-noise setting that cannot be meant (DataConfig checks it)."""
    parts = data_cfg.label_noise
    if not isinstance(parts, (list, tuple)) or any(p not in PARTS for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"data.label_noise={parts!r}: expected a list of distinct parts out of {list(PARTS)} "
                         "(empty: the labels as the source gives them)")
    se = _rate(data_cfg.label_sensitivity, "label_sensitivity")
    sp = _rate(data_cfg.label_specificity, "label_specificity")
    clean = all(v == 1.0 for r in (se, sp) for v in (r.values() if isinstance(r, dict) else [r]))
    if parts and clean:
        raise ValueError(f"data.label_noise={list(parts)} with label_sensitivity and label_specificity 1: "
                         "nothing would flip; set one below 1 (report mining: sensitivity lower than specificity)")
    if not parts and not clean:
        raise ValueError("data.label_sensitivity/label_specificity are set but data.label_noise names no part: "
                         "say which labels to flip, e.g. data.label_noise=[train]")


def is_noisy(data_cfg) -> bool:
    return bool(getattr(data_cfg, "label_noise", None))


def per_finding(rate: float | Mapping[str, float], label_names: Sequence[str]) -> np.ndarray:
    """``float64 [K]``: the rate of each label (a finding not named keeps 1; No Finding is derived)."""
    if isinstance(rate, Mapping):
        table = {canonical(str(k)): float(v) for k, v in rate.items()}
        return np.array([table.get(n, 1.0) for n in label_names], dtype=np.float64)
    return np.full(len(label_names), float(rate), dtype=np.float64)


def _image_uniforms(image_ids, seed: int, k: int) -> np.ndarray:
    """``[N, k]`` uniforms that depend on (seed, image id, column) alone."""
    ids = np.array([zlib.crc32(str(i).encode()) for i in image_ids], dtype=np.int64)
    if not len(ids):
        return np.zeros((0, k))
    return uniforms(derive_seeds(int(seed), TAG_LABEL_NOISE, ids), k)


def flip_labels(targets, image_ids, sensitivity: float | Mapping[str, float] = 1.0,
                specificity: float | Mapping[str, float] = 1.0, seed: int = 0,
                label_names: Sequence[str] = FINDINGS) -> np.ndarray:
    """The labels a labeller with this ``sensitivity`` and ``specificity`` (per finding, or one
    number for all) would write: ``float32 [N, K]``.

    A true finding is kept with probability ``sensitivity``, an absent one invented with
    probability ``1 - specificity``, independently per image and finding; the draw depends on
    (``seed``, image id, finding) only. A ``No Finding`` column is recomputed from the
    noisy findings, as the release derives it.
    """
    y = np.asarray(targets, dtype=np.float32)
    names = list(label_names)
    if y.ndim != 2 or y.shape[1] != len(names):
        raise ValueError(f"targets shape {y.shape}: expected [N, {len(names)}] for {len(names)} label names")
    if len(image_ids) != len(y):
        raise ValueError(f"{len(image_ids)} image ids for {len(y)} rows of targets")
    if not set(np.unique(y)) <= {0.0, 1.0}:
        raise ValueError("targets must be 0/1 to be flipped")
    se = per_finding(_rate(sensitivity, "label_sensitivity"), names)
    sp = per_finding(_rate(specificity, "label_specificity"), names)
    u = _image_uniforms(image_ids, seed, len(names))
    positive = y > 0.5
    noisy = np.where(positive, u < se, u >= sp).astype(np.float32)
    if NO_FINDING in names:
        k = names.index(NO_FINDING)
        findings = [j for j in range(len(names)) if j != k]
        noisy[:, k] = (noisy[:, findings].max(axis=1) == 0) if findings else 1.0
    return noisy


def apply_to_datasets(data_cfg, datasets: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flip the labels of the parts ``data_cfg.label_noise`` names, in place on each dataset's
    ``targets``; returns the clean targets of those parts (``DataBundle.clean_targets``)."""
    check_config(data_cfg)
    clean = {}
    for part in data_cfg.label_noise:
        ds = datasets[part]
        clean[part] = np.array(ds.targets, copy=True)
        # One seed for every part: flips depend on the image id, and a patient-wise split puts an
        # image in one part only, so the parts' noise is independent while an image keeps its
        # noisy label wherever it is scored.
        ds.targets = flip_labels(ds.targets, ds.image_ids, data_cfg.label_sensitivity, data_cfg.label_specificity,
                                 seed=data_cfg.seed, label_names=ds.label_names)
    return clean


def _ppv_npv(sensitivity, specificity, prevalence) -> tuple[np.ndarray, np.ndarray]:
    se, sp, pi = (np.asarray(v, dtype=np.float64) for v in (sensitivity, specificity, prevalence))
    if ((se < 0) | (se > 1) | (sp < 0) | (sp > 1)).any():
        raise ValueError(f"sensitivity {sensitivity!r} and specificity {specificity!r}: expected numbers from 0 to 1")
    if ((pi <= 0) | (pi >= 1)).any():
        raise ValueError(f"prevalence {prevalence!r}: expected a share strictly between 0 and 1")
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = se * pi / (se * pi + (1 - sp) * (1 - pi))
        npv = sp * (1 - pi) / (sp * (1 - pi) + (1 - se) * pi)
    return ppv, npv


def observed_auroc(true_auroc, sensitivity, specificity, prevalence):
    """The AUROC measured against noisy labels, for a model whose AUROC against the truth is
    ``true_auroc``, when the labeller's errors do not depend on the score given the truth.

    A noisy positive is truly positive with probability PPV, a noisy negative truly negative
    with probability NPV; pairs of the same true class rank as a coin (0.5) and a pair with
    both labels wrong ranks the wrong way round, so the distance from chance shrinks by
    ``PPV + NPV - 1``. Arrays broadcast (one value per finding). NaN where the labeller writes
    no positive or no negative (sensitivity 0 with specificity 1, and the reverse).
    """
    ppv, npv = _ppv_npv(sensitivity, specificity, prevalence)
    a = np.asarray(true_auroc, dtype=np.float64)
    out = 0.5 + (a - 0.5) * (ppv + npv - 1)
    return float(out) if out.ndim == 0 else out


def auroc_cap(sensitivity, specificity, prevalence):
    """The highest AUROC measurable against noisy labels: a perfect model's, ``(PPV + NPV) / 2``."""
    return observed_auroc(1.0, sensitivity, specificity, prevalence)


def corrected_auroc(observed, sensitivity, specificity, prevalence):
    """The true AUROC that :func:`observed_auroc` maps to ``observed`` (its inverse); only as
    good as the labeller's sensitivity and specificity are known, and the errors non-differential."""
    ppv, npv = _ppv_npv(sensitivity, specificity, prevalence)
    # clipped to [0, 1]: a measured value beyond the cap is chance (few positives), not skill
    out = np.clip(0.5 + (np.asarray(observed, dtype=np.float64) - 0.5) / (ppv + npv - 1), 0.0, 1.0)
    return float(out) if out.ndim == 0 else out


def noisy_prevalence(sensitivity, specificity, prevalence):
    """The share of images the labeller calls positive: ``se * pi + (1 - sp) * (1 - pi)``."""
    se, sp, pi = (np.asarray(v, dtype=np.float64) for v in (sensitivity, specificity, prevalence))
    out = se * pi + (1 - sp) * (1 - pi)
    return float(out) if out.ndim == 0 else out


# ----------------------------------------------------------------------------- the lesson's pieces

LESSON_DIR = "label_noise"  # the noisy-training runs live here, out of the study's results table
RUN_NAME = "noisy_labels"


def noisy_training_config(base, sensitivity: float | Mapping[str, float], specificity: float | Mapping[str, float],
                          parts: Sequence[str] = ("train", "val")):
    """``base`` (an ExperimentConfig) trained on labels of that labeller: by default its
    training and validation labels (the archive's), the test labels left true so the cost is
    measured against the truth. Same model, seed, split and budget; the run lives under
    ``<runs_dir>/label_noise``."""
    from pathlib import Path

    data = dataclasses.replace(base.data, label_noise=list(parts), label_sensitivity=sensitivity,
                               label_specificity=specificity)
    return dataclasses.replace(base, name=RUN_NAME, runs_dir=str(Path(base.runs_dir) / LESSON_DIR), data=data)


def test_noise_table(predictions: Mapping[str, Any], sensitivity: float | Mapping[str, float],
                     specificity: float | Mapping[str, float], seed: int = 0) -> pd.DataFrame:
    """A run's test predictions scored against its true labels and against the labels a
    labeller of this sensitivity and specificity would have written (no training: the same
    scores). Per finding: prevalence, AUROC against the truth, against the noisy labels
    (measured), the measured value :func:`observed_auroc` predicts, and the cap; then the mean
    over findings defined in both."""
    names = [str(n) for n in predictions["label_names"]]
    y = np.asarray(predictions["targets"], dtype=np.float32)
    s = np.asarray(predictions["scores"], dtype=np.float64)
    noisy = flip_labels(y, np.asarray(predictions["ids"]), sensitivity, specificity, seed=seed, label_names=names)
    true_auc, noisy_auc = auroc(y, s), auroc(noisy, s)
    pi = y.mean(axis=0)
    se, sp = per_finding(_rate(sensitivity, "label_sensitivity"), names), per_finding(
        _rate(specificity, "label_specificity"), names)
    ok = (pi > 0) & (pi < 1)
    predicted, cap = np.full(len(names), np.nan), np.full(len(names), np.nan)
    predicted[ok] = observed_auroc(true_auc[ok], se[ok], sp[ok], pi[ok])
    cap[ok] = auroc_cap(se[ok], sp[ok], pi[ok])
    table = pd.DataFrame({"prevalence": pi, "true positives": y.sum(axis=0).astype(int),
                          "labelled positives": noisy.sum(axis=0).astype(int), "AUROC vs truth": true_auc,
                          "AUROC vs noisy labels": noisy_auc, "predicted": predicted, "cap": cap},
                         index=pd.Index(names, name="finding"))
    defined = table[["AUROC vs truth", "AUROC vs noisy labels"]].notna().all(axis=1)
    table.loc["mean"] = table[defined].mean(numeric_only=True)
    table.loc["mean", ["true positives", "labelled positives"]] = np.nan
    return table


def cap_table(sensitivity: float, specificity: float, prevalences: Sequence[float] = (0.002, 0.01, 0.02, 0.05,
                                                                                     0.1, 0.2, 0.4)) -> pd.DataFrame:
    """The cap (a perfect model's measurable AUROC) of one labeller at several prevalences,
    with the PPV and NPV behind it: rare findings are capped hardest, because the few
    positives a labeller invents are many beside the few true ones."""
    pi = np.asarray(prevalences, dtype=np.float64)
    ppv, npv = _ppv_npv(sensitivity, specificity, pi)
    return pd.DataFrame({"prevalence": pi, "labeller PPV": ppv, "labeller NPV": npv,
                         "cap": auroc_cap(sensitivity, specificity, pi)}).set_index("prevalence")


def lesson_plan(profile, sensitivity: float | Mapping[str, float] = 0.8,
                specificity: float | Mapping[str, float] = 0.98, train_noise: bool = True) -> list:
    """Notebook 10's runs, once per seed of the profile: the baseline it re-scores and, with
    ``train_noise``, the baseline trained on this labeller's train/val labels."""
    base = profile.baseline
    return [base] + ([noisy_training_config(base, sensitivity, specificity)] if train_noise else [])
