"""The hidden-stratification lesson: a model that learns the chest drain, not the pneumothorax.

In real chest X-ray archives many Pneumothorax images show a patient already treated, with
a chest drain in place (Oakden-Rayner, Dunnmon, Carneiro and Re, "Hidden stratification
causes clinically meaningful failures in machine learning for medical imaging", 2020). A
model can score well on such a test set by finding the drain, and fail on the patients who
matter: the untreated ones, who have no drain yet. The label hides two strata; its AUROC
averages over them.

The phantoms reproduce this on purpose when asked (``PhantomSpec.confounder``): a drain on
most Pneumothorax images of the training split only. This module trains nothing itself; it
names the lesson's runs (:func:`lesson_configs`; :func:`lesson_plan` is notebook 12's plan
for the check), draws ONE test set as an archive holds it, a drain on some of its positives
(:func:`drained_part`), stratifies it: drained and undrained positives each against the same
negatives (:func:`stratified_table`; kept beside the drained run by
:func:`cxrlib.runs.write_strata`, said in words by :func:`cxrlib.conclusions.strata_words`, read
back for the results notebook by :func:`read_strata` and :func:`strata_summary`), measures where heatmaps
point (:func:`drain_pointing`) and shows it (:func:`plot_drain_heatmaps`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from cxrlib import experiments, phantoms
from cxrlib import runs as runs_store
from cxrlib.config import ExperimentConfig
from cxrlib.data.phantom_source import phantom_spec, with_confounder
from cxrlib.labels import FINDINGS
from cxrlib.metrics import auroc_report
from cxrlib.conclusions import strata_words
from cxrlib.results import MISSING, interval_text

FINDING = "Pneumothorax"
# The lesson's run lives in a subfolder of the study's runs: it is a demonstration of a
# failure, not a result, so the study's results table (one row per run folder) leaves it out.
LESSON_DIR = "shortcuts"
RUN_NAME = "drain"
# The test set's positives carry a drain at this drawn rate: half of them, so both strata
# are as large as the test set allows (the training share only decides what the model learns).
TEST_DRAIN_RATE = 0.5
ALL_POSITIVES = "all positives"
WITH_DRAINS = "positives with a drain"
WITHOUT_DRAINS = "positives without a drain"
STRATA = (ALL_POSITIVES, WITH_DRAINS, WITHOUT_DRAINS)  # the first is all, then the gap's two sides


def lesson_configs(base: ExperimentConfig, share: float = 0.9,
                   num_phantoms: int = 0) -> tuple[ExperimentConfig, ExperimentConfig]:
    """The lesson's two runs: ``(clean, drain)``, the same model, seed, split and budget,
    the second trained with a chest drain on ``share`` of the training Pneumothorax phantoms.

    With ``num_phantoms`` 0 the clean run *is* ``base`` (the study's baseline, reused);
    otherwise both draw ``num_phantoms`` phantoms (a tiny profile has too few Pneumothorax
    images to measure) and the clean one is named ``clean``. The drain exists on phantoms
    only: a profile on real data gets phantoms at its image size, the clean run trained anew.
    Lesson runs live under ``<runs_dir>/shortcuts``.
    """
    lesson_dir = str(Path(base.runs_dir) / LESSON_DIR)
    clean = base
    if base.data.source != "phantoms" or (num_phantoms and num_phantoms != base.data.num_phantoms):
        data = dataclasses.replace(base.data, source="phantoms",
                                   num_phantoms=int(num_phantoms or base.data.num_phantoms))
        clean = dataclasses.replace(base, name="clean", runs_dir=lesson_dir, data=data)
    drain = dataclasses.replace(clean, name=RUN_NAME, runs_dir=lesson_dir, data=with_confounder(clean.data, share))
    return clean, drain


def lesson_plan(profile, head: str = "", share: float = 0.9, num_phantoms: int = 0) -> list[ExperimentConfig]:
    """Notebook 12's runs (its plan, :class:`cxrlib.experiments.NotebookPlan`): the
    :func:`lesson_configs` of the run notebook 07 scores, the baseline with ``head``."""
    return list(lesson_configs(experiments.heatmap_config(profile, head), share, num_phantoms))


def has_drains(data_cfg, dataset, training: bool) -> np.ndarray:
    """``bool [N]``: which samples of ``dataset`` carry a drain when drawn as a training
    (``training``) or a held-out image under ``data_cfg`` (decided without rendering)."""
    spec = phantom_spec(data_cfg)
    return np.array([phantoms.has_drain(phantoms.phantom_index(i), data_cfg.seed, spec, y, training)
                     for i, y in zip(dataset.image_ids, dataset.targets)], dtype=bool)


def drain_census(data_cfg, bundle) -> pd.DataFrame:
    """Per part of a phantom bundle: images, Pneumothorax positives, and how many carry a
    drain (only the training split's may)."""
    k = bundle.label_names.index(FINDING)
    rows = []
    for part in ("train", "val", "test"):
        ds = bundle.dataset(part)
        drains = has_drains(data_cfg, ds, training=part == "train")
        positives = ds.targets[:, k] > 0
        rows.append({"part": part, "images": len(ds), f"{FINDING} positives": int(positives.sum()),
                     "with a drain": int(drains.sum()), "drains on negatives": int((drains & ~positives).sum())})
    return pd.DataFrame(rows).set_index("part")


@dataclass
class DrainedPart:
    """A test split drawn as an archive holds it: a drain on a drawn share (``rate``) of its
    Pneumothorax images, none on negatives. ``images`` uint8 [N,S,S], ``drains`` bool [N],
    ``drain_masks`` and ``lesion_masks`` (the finding's) bool [N,S,S], and the split's ids,
    patients and targets."""

    image_ids: np.ndarray
    patient_ids: np.ndarray
    targets: np.ndarray
    label_names: list[str]
    images: np.ndarray
    drains: np.ndarray
    drain_masks: np.ndarray
    lesion_masks: np.ndarray
    indices: np.ndarray
    rate: float = TEST_DRAIN_RATE


def drained_part(data_cfg, dataset, rate: float = TEST_DRAIN_RATE) -> DrainedPart:
    """``dataset`` (a part of a phantom bundle) re-drawn with a drain on a share ``rate`` of
    its Pneumothorax images (each decided by the phantom's own coin), at the cache size.

    ``data_cfg`` must have the confounder on (:func:`lesson_configs`); the images are rendered
    as training images are, so a drain looks as the model saw it, and an image without a
    drain is the very image of the drain-free split.
    """
    if phantom_spec(data_cfg).confounder <= 0:
        raise ValueError("data_cfg has no confounder: pass the drain config of lesson_configs(base)")
    if not 0 < float(rate) <= 1:
        raise ValueError(f"rate is the share of test positives with a drain, in (0, 1]; got {rate!r}")
    spec = phantom_spec(with_confounder(data_cfg, float(rate)))
    k = FINDINGS.index(FINDING)
    indices = np.array([phantoms.phantom_index(i) for i in dataset.image_ids], dtype=np.int64)
    rendered = [phantoms.render_phantom(int(i), data_cfg.image_size, seed=data_cfg.seed, spec=spec, training=True)
                for i in indices]
    return DrainedPart(
        image_ids=np.asarray(dataset.image_ids), patient_ids=np.asarray(dataset.patient_ids),
        targets=np.asarray(dataset.targets), label_names=list(dataset.label_names),
        images=np.stack([p.image for p in rendered]), drains=np.array([p.drain for p in rendered]),
        drain_masks=np.stack([p.drain_mask for p in rendered]), lesion_masks=np.stack([p.masks[k] for p in rendered]),
        indices=indices, rate=float(rate))


def _stratum_rows(part: DrainedPart, scores: np.ndarray, n_bootstrap: int, seed: int) -> list[dict]:
    """The finding's AUROC on each stratum: its positives against every negative of the part."""
    k = part.label_names.index(FINDING)
    positive = part.targets[:, k] > 0
    keep = {ALL_POSITIVES: positive, WITH_DRAINS: positive & part.drains, WITHOUT_DRAINS: positive & ~part.drains}
    rows = []
    for stratum, chosen in keep.items():
        rows_in = chosen | ~positive  # the stratum's positives and the same negatives
        row = {"stratum": stratum, "positives": int(chosen.sum()), "negatives": int((~positive).sum()),
               f"{FINDING} AUROC": np.nan, "low": np.nan, "high": np.nan}
        if chosen.any():
            r = auroc_report(part.targets[rows_in][:, [k]], scores[rows_in][:, [k]], [FINDING],
                             patient_ids=part.patient_ids[rows_in], n_bootstrap=n_bootstrap, seed=seed)
            per = r["per_class"][FINDING]
            row.update({f"{FINDING} AUROC": per["auroc"], "low": per["auroc_ci"][0], "high": per["auroc_ci"][1]})
        rows.append(row)
    return rows


def stratified_table(runs: Mapping[str, object], part: DrainedPart, n_bootstrap: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Each run scored once on ONE test set, the finding's AUROC per stratum: all positives
    (what a study reports), the positives with a drain and those without, each against the
    same negatives, with the 95% CI of a patient bootstrap.

    ``runs``: ``{name: RunResult}`` of models trained on the split ``part`` was drawn from
    (:func:`drained_part` of its test part). A model that reads the drain ranks the drained
    positives far above the undrained ones: the gap between the strata is the lesson.
    """
    rows = []
    for name, run in runs.items():
        if not np.array_equal(np.asarray(run.predictions["ids"]).astype(str), part.image_ids.astype(str)):
            raise ValueError(f"run {name!r} scored other test images than the drained test set: another split or size")
        scores = np.asarray(run.predictor.probabilities(list(part.images)))
        rows += [{"model": name, **row} for row in _stratum_rows(part, scores, n_bootstrap, seed)]
    table = pd.DataFrame(rows).set_index(["model", "stratum"])
    table.insert(3, "95% CI", [interval_text(lo, hi, missing=MISSING) for lo, hi in zip(table["low"], table["high"])])
    table.attrs["notes"] = {"finding": FINDING, "test drain rate": part.rate,
                            "test set": "one test part; a drain on a drawn share of its positives, none on negatives"}
    return table


def read_strata(runs_dir: str | Path) -> pd.DataFrame | None:
    """The stratified table notebook 12 kept (:func:`cxrlib.runs.write_strata`, beside the
    drained run) under a study's ``runs_dir``; None when the lesson has not run there."""
    return runs_store.read_strata(Path(runs_dir) / LESSON_DIR / RUN_NAME)


def strata_summary(runs_dir: str | Path) -> str:
    """Notebook 12's result under ``runs_dir`` in words (:func:`strata_words`), or what to run
    to get it: what notebook 13 and the report's index say about the lesson."""
    table = read_strata(runs_dir)
    if table is None:
        return (f"Hidden stratification: not measured under {runs_dir}; run notebook 12 "
                f"(python -m cxrlib report --only 12) to stratify its test set by the drain.")
    return "\n".join(strata_words(table))


def _heat(run, images: np.ndarray, method: str) -> np.ndarray:
    return run.predictor.heatmaps(list(images), FINDING, method=method)


def drain_pointing(runs: Mapping[str, object], part: DrainedPart, method: str = "gradcam") -> pd.DataFrame:
    """Where each run's heatmap for the finding points on the test images that carry a drain:
    the share whose hottest pixel lies on the drain (within a pixel) and on the lesion's mask.
    The drain and the lesion may overlap, so the two shares can sum to more than 1."""
    on = np.flatnonzero(part.drains)
    if len(on) == 0:
        raise ValueError("no test image carries a drain: raise the confounder share or the number of phantoms")
    near = _dilate(part.drain_masks[on])
    rows = []
    for name, run in runs.items():
        maps = _heat(run, part.images[on], method)
        hottest = maps.reshape(len(on), -1).argmax(axis=1)
        flat_drain, flat_lesion = near.reshape(len(on), -1), part.lesion_masks[on].reshape(len(on), -1)
        rows.append({"model": name, "images with a drain": len(on),
                     "hottest pixel on the drain": float(flat_drain[np.arange(len(on)), hottest].mean()),
                     "on the lesion": float(flat_lesion[np.arange(len(on)), hottest].mean()),
                     "chance (drain area share)": float(near.mean())})
    return pd.DataFrame(rows).set_index("model")


def _dilate(masks: np.ndarray) -> np.ndarray:
    """Grow each mask by one pixel (8-neighbourhood): a thin drain at a coarse heatmap."""
    out = masks.copy()
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    h, w = masks.shape[1:]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= padded[:, dy:dy + h, dx:dx + w]
    return out


def plot_drain_heatmaps(runs: Mapping[str, object], part: DrainedPart, n: int = 3, method: str = "gradcam",
                        panel: float = 2.4):
    """For ``n`` test images with a drain: the image with its drain (red) and lesion (green)
    outlined, then each run's heatmap for the finding on it; returns the Figure."""
    import matplotlib.pyplot as plt

    from cxrlib import cam  # pytorch-grad-cam: only the heatmaps load it

    on = np.flatnonzero(part.drains)[:n]
    if len(on) == 0:
        raise ValueError("no test image carries a drain: raise the confounder share or the number of phantoms")
    names = list(runs)
    maps = {name: _heat(r, part.images[on], method)
            for name, r in runs.items()}
    fig, axes = plt.subplots(len(on), 1 + len(names), figsize=(panel * (1 + len(names)), panel * len(on)),
                             squeeze=False)
    for row, i in enumerate(on):
        ax = axes[row, 0]
        ax.imshow(part.images[i], cmap="gray", vmin=0, vmax=255)
        ax.contour(part.drain_masks[i], levels=[0.5], colors="red", linewidths=0.8)
        ax.contour(part.lesion_masks[i], levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_title(f"{part.image_ids[i]}\ndrain red, {FINDING} green", fontsize=7)
        ax.set_axis_off()
        for col, name in enumerate(names, start=1):
            cam.overlay(part.images[i], maps[name][row], ax=axes[row, col], title=f"{name}: {FINDING} ({method})")
    fig.tight_layout()
    return fig
