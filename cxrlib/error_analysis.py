"""Which images does the model get wrong, and which of its answers should nobody trust?

* :func:`top_errors`: per finding, the negatives it scored highest (false positives) and the
  positives it scored lowest (false negatives), the images to look at first;
  :func:`plot_errors` draws them with the model's heatmap for that finding (:mod:`cxrlib.cam`
  on the full image, :mod:`cxrlib.overlay` for the ground truth).
* :func:`seed_ensemble`: the training seeds of one experiment (same test images, different
  initial weights, data order and augmentation) averaged into one model, and their spread
  per (image, finding) as a measure of uncertainty. :func:`ensemble_table` sets the
  ensemble's AUROC beside each seed's; :func:`distrust` flags the images the seeds disagree
  on most and measures how wrong the ensemble is there compared with the rest.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib import metrics
from cxrlib.labels import canonical

FALSE_POSITIVE = "false positive"
FALSE_NEGATIVE = "false negative"


def _finding_index(predictions: Mapping, finding: str) -> int:
    names = [str(n) for n in predictions["label_names"]]
    if finding not in names:
        raise ValueError(f"unknown finding {finding!r}: the predictions hold {names}")
    return names.index(finding)


def top_errors(predictions: Mapping, finding: str, n: int = 3, threshold: float | None = None) -> pd.DataFrame:
    """The ``n`` highest-scored negatives (false positives) and ``n`` lowest-scored positives
    (false negatives) of ``finding``; with ``threshold``, only those on the wrong side of it
    (score >= threshold is a positive call; None or NaN, a finding without a threshold: the
    worst-ranked whatever their score). Columns: kind, row (index in the predictions,
    which is the dataset's order), image id, patient id, score."""
    k = _finding_index(predictions, finding)
    y = np.asarray(predictions["targets"])[:, k] > 0.5
    s = np.asarray(predictions["scores"])[:, k].astype(np.float64)
    neg, pos = np.flatnonzero(~y), np.flatnonzero(y)
    fp = neg[np.argsort(-s[neg], kind="mergesort")]
    fn = pos[np.argsort(s[pos], kind="mergesort")]
    if threshold is not None and np.isfinite(threshold):
        fp, fn = fp[s[fp] >= threshold], fn[s[fn] < threshold]
    pids = predictions.get("patient_ids")
    rows = [{"kind": kind, "row": int(i), "image id": str(predictions["ids"][i]),
             "patient id": str(pids[i]) if pids is not None else "", "score": float(s[i])}
            for kind, idx in ((FALSE_POSITIVE, fp[:n]), (FALSE_NEGATIVE, fn[:n])) for i in idx]
    table = pd.DataFrame(rows, columns=["kind", "row", "image id", "patient id", "score"])
    table.attrs["finding"] = finding
    return table


def best_ranked_finding(predictions: Mapping) -> str:
    """The finding with the highest test AUROC (its errors are the model's most instructive:
    where it ranks best, what it still gets wrong)."""
    with np.errstate(all="ignore"):
        aucs = metrics.auroc(predictions["targets"], predictions["scores"])
    if not np.isfinite(aucs).any():
        raise ValueError("no finding has both positives and negatives in these predictions: no AUROC to rank by")
    return str(np.asarray(predictions["label_names"])[int(np.nanargmax(aucs))])


def plot_errors(model, data, errors: pd.DataFrame, method: str = "gradcam", panel: float = 2.4):
    """Each image of a :func:`top_errors` table with the model's heatmap for the table's
    finding over the full image, the finding's ground truth outlined (boxes or masks, as the
    data offers); one row per kind. Returns the Figure (None when the table is empty)."""
    import matplotlib.pyplot as plt

    from cxrlib import cam  # torch and pytorch-grad-cam only when heatmaps are drawn

    if not len(errors):
        return None
    finding = errors.attrs["finding"]
    position = {str(i): j for j, i in enumerate(data.test.image_ids)}
    kinds = [k for k in (FALSE_POSITIVE, FALSE_NEGATIVE) if (errors["kind"] == k).any()]
    ncols = int(errors["kind"].value_counts().max())
    fig, axes = plt.subplots(len(kinds), ncols, figsize=(panel * ncols, panel * len(kinds)), squeeze=False)
    for r, kind in enumerate(kinds):
        chosen = errors[errors["kind"] == kind]
        for c, ax in enumerate(axes[r]):
            if c >= len(chosen):
                ax.set_axis_off()
                continue
            row = chosen.iloc[c]
            image_id = row["image id"]
            if image_id not in position:
                raise ValueError(f"image {image_id} is not in the test part of {data.split_name}: "
                                 "give the errors of this data's test predictions")
            heat = cam.heatmap(model, data.test[position[image_id]][0], finding, method=method)
            mask = data.mask(image_id, finding) if kind == FALSE_NEGATIVE else None
            boxes = [b for b in data.boxes(image_id) if _names(getattr(b, "finding", None), finding)]
            cam.overlay(data.full_image(image_id), heat, boxes=boxes, masks=mask, ax=ax,
                        title=f"{kind}\n{image_id} p={row['score']:.2f}")
    fig.suptitle(f"{finding}: the worst errors with their {method} heatmaps", y=1.02)
    fig.tight_layout()
    return fig


def _names(box_finding: str | None, finding: str) -> bool:
    """Whether a box's finding (the release spells some differently, "Infiltrate") is ``finding``."""
    try:
        return box_finding is not None and canonical(box_finding) == canonical(finding)
    except ValueError:
        return box_finding == finding


def _same_images(predictions: Sequence[Mapping]) -> None:
    first = np.asarray(predictions[0]["ids"])
    for k, p in enumerate(predictions[1:], start=1):
        if not np.array_equal(np.asarray(p["ids"]), first):
            raise ValueError(f"seed {k}'s predictions are on other test images than the first seed's: an ensemble "
                             "averages the seeds of one experiment on one test set")


def seed_ensemble(predictions: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """The seeds' predictions averaged: the first seed's ids, patient ids, targets and label
    names, ``scores`` the mean probability over seeds and ``disagreement`` their standard
    deviation (ddof 0: with two seeds, half the gap between them) per (image, finding)."""
    if len(predictions) < 2:
        raise ValueError(f"an ensemble needs at least two seeds' predictions, got {len(predictions)}: train the "
                         "experiment with more seeds (profile seeds:)")
    _same_images(predictions)
    stack = np.stack([np.asarray(p["scores"], dtype=np.float64) for p in predictions])
    first = predictions[0]
    return {"ids": np.asarray(first["ids"]), "patient_ids": np.asarray(first["patient_ids"]),
            "targets": np.asarray(first["targets"]), "label_names": np.asarray(first["label_names"]),
            "scores": stack.mean(axis=0), "disagreement": stack.std(axis=0), "seeds": np.int64(len(predictions))}


def ensemble_table(predictions: Sequence[Mapping], n_bootstrap: int = 200, seed: int = 0) -> pd.DataFrame:
    """Mean AUROC with its patient-bootstrap CI of each seed and of their ensemble (over the
    findings with positives and negatives in the test set, the same for every row)."""
    ens = seed_ensemble(predictions)
    names = [str(n) for n in ens["label_names"]]
    rows = {}
    for label, scores in [*((f"seed {k}", p["scores"]) for k, p in enumerate(predictions)), ("ensemble", ens["scores"])]:
        with warnings.catch_warnings():  # undefined findings: the same in every row, warned once by the runs
            warnings.filterwarnings("ignore", message="AUROC undefined")
            r = metrics.auroc_report(ens["targets"], scores, names, patient_ids=ens["patient_ids"],
                                     n_bootstrap=n_bootstrap, seed=seed)
        rows[label] = {"mean AUROC": r["mean_auroc"], "CI low": r["mean_auroc_ci"][0], "CI high": r["mean_auroc_ci"][1]}
    return pd.DataFrame(rows).T


@dataclass(frozen=True)
class Distrust:
    """Images flagged by the seeds' disagreement: ``flagged`` bool ``[N]``, the per-image
    ``uncertainty`` (its largest disagreement over the findings) and a ``table`` comparing
    the ensemble's error on flagged and other images."""

    flagged: np.ndarray
    uncertainty: np.ndarray
    table: pd.DataFrame


def distrust(ensemble: Mapping, fraction: float = 0.1) -> Distrust:
    """Flag the ``fraction`` of images whose most-disputed finding has the largest seed
    spread, and measure on both groups the ensemble's mean absolute error |p - y| over all
    findings and its mean AUROC (findings without both classes in a group left out)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if "disagreement" not in ensemble:
        raise ValueError("distrust needs an ensemble's predictions: pass seed_ensemble(...)'s result")
    y, s = np.asarray(ensemble["targets"], dtype=np.float64), np.asarray(ensemble["scores"])
    u = np.asarray(ensemble["disagreement"]).max(axis=1)
    n_flag = max(1, int(round(fraction * len(u))))
    flagged = np.zeros(len(u), dtype=bool)
    flagged[np.argsort(-u, kind="mergesort")[:n_flag]] = True
    rows = {}
    for label, m in (("flagged (seeds disagree most)", flagged), ("the other images", ~flagged)):
        with np.errstate(all="ignore"):
            aucs = metrics.auroc(y[m], s[m]) if m.any() else np.array([math.nan])
        rows[label] = {"images": int(m.sum()), "mean seed SD": float(u[m].mean()) if m.any() else math.nan,
                       "mean |p - y|": float(np.abs(s[m] - y[m]).mean()) if m.any() else math.nan,
                       "mean AUROC": float(np.nanmean(aucs)) if np.isfinite(aucs).any() else math.nan}
    return Distrust(flagged=flagged, uncertainty=u, table=pd.DataFrame(rows).T)


@dataclass(frozen=True)
class SeedReport:
    """What a lesson shows of an experiment's seeds: ``note`` in words always; ``table``
    (:func:`ensemble_table`), ``ensemble`` and ``distrust`` only with two seeds or more."""

    note: str
    table: pd.DataFrame | None = None
    ensemble: dict | None = None
    distrust: Distrust | None = None


def seed_report(predictions: Sequence[Mapping], fraction: float = 0.1, n_bootstrap: int = 200,
                seed: int = 0) -> SeedReport:
    """The seed ensemble, its AUROC beside each seed's and the images it flags, or, with a
    single seed, a note saying how to get more."""
    if len(predictions) < 2:
        return SeedReport(note=f"{len(predictions)} training seed: no ensemble and no disagreement to measure; "
                               "train more seeds of the baseline (--set seeds.baseline=[0,1,2]) to see them")
    ens = seed_ensemble(predictions)
    table = ensemble_table(predictions, n_bootstrap=n_bootstrap, seed=seed)
    flags = distrust(ens, fraction)
    t = flags.table
    gain = table.loc["ensemble", "mean AUROC"] - table["mean AUROC"].iloc[:-1].mean()
    note = (f"{len(predictions)} seeds: ensemble mean AUROC {table.loc['ensemble', 'mean AUROC']:.3f}, "
            f"{gain:+.3f} against the seeds' average; on the {int(t.iloc[0]['images'])} images the seeds disagree on "
            f"most the ensemble's mean |p - y| is {t.iloc[0]['mean |p - y|']:.3f}, on the other "
            f"{int(t.iloc[1]['images'])} {t.iloc[1]['mean |p - y|']:.3f}")
    return SeedReport(note=note, table=table, ensemble=ens, distrust=flags)


__all__ = ["FALSE_NEGATIVE", "FALSE_POSITIVE", "Distrust", "best_ranked_finding", "distrust", "ensemble_table", "plot_errors",
           "SeedReport", "seed_ensemble", "seed_report", "top_errors"]
