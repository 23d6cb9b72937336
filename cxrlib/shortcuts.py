"""The hidden-stratification lesson: a model that learns the chest drain, not the pneumothorax.

In real chest X-ray archives many Pneumothorax images show a patient already treated, with
a chest drain in place (Oakden-Rayner, Dunnmon, Carneiro and Re, "Hidden stratification
causes clinically meaningful failures in machine learning for medical imaging", 2020). A
model can score well on such a test set by finding the drain, and fail on the patients who
matter: the untreated ones, who have no drain yet.

The phantoms reproduce this on purpose when asked (``PhantomSpec.confounder``): a drain on
most Pneumothorax images of the training split only. This module trains nothing itself; it
names the lesson's runs (:func:`lesson_configs`), draws a test split as the training split is
drawn (:func:`drained_part`), scores models on both test splits (:func:`stratified_table`),
measures where their heatmaps point (:func:`drain_pointing`) and shows it
(:func:`plot_drain_heatmaps`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from cxrlib import phantoms
from cxrlib.config import ExperimentConfig
from cxrlib.data.datasets import preprocess
from cxrlib.data.phantom_source import phantom_spec, with_confounder
from cxrlib.labels import FINDINGS
from cxrlib.metrics import auroc_report
from cxrlib.train import predict_images

FINDING = "Pneumothorax"
# The lesson's run lives in a subfolder of the study's runs: it is a demonstration of a
# failure, not a result, so the study's results table (one row per run folder) leaves it out.
LESSON_DIR = "shortcuts"
RUN_NAME = "drain"
WITH_DRAINS = "test, drains as in training"
WITHOUT_DRAINS = "test, no drains"


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
    """A split's images drawn as the training split is (drains on ``share`` of its
    Pneumothorax images): ``images`` uint8 [N,S,S], ``drains`` bool [N], ``drain_masks`` and
    ``lesion_masks`` (the finding's) bool [N,S,S], and the split's ids, patients and targets."""

    image_ids: np.ndarray
    patient_ids: np.ndarray
    targets: np.ndarray
    label_names: list[str]
    images: np.ndarray
    drains: np.ndarray
    drain_masks: np.ndarray
    lesion_masks: np.ndarray
    indices: np.ndarray


def drained_part(data_cfg, dataset) -> DrainedPart:
    """``dataset`` (a part of a phantom bundle) re-drawn with its drains, at the cache size.

    ``data_cfg`` must have the confounder on (:func:`lesson_configs`); the images are rendered
    as training images, so the same coin decides the drain as it would in training.
    """
    spec = phantom_spec(data_cfg)
    if spec.confounder <= 0:
        raise ValueError("data_cfg has no confounder: pass the drain config of lesson_configs(base)")
    k = FINDINGS.index(FINDING)
    indices = np.array([phantoms.phantom_index(i) for i in dataset.image_ids], dtype=np.int64)
    rendered = [phantoms.render_phantom(int(i), data_cfg.image_size, seed=data_cfg.seed, spec=spec, training=True)
                for i in indices]
    return DrainedPart(
        image_ids=np.asarray(dataset.image_ids), patient_ids=np.asarray(dataset.patient_ids),
        targets=np.asarray(dataset.targets), label_names=list(dataset.label_names),
        images=np.stack([p.image for p in rendered]), drains=np.array([p.drain for p in rendered]),
        drain_masks=np.stack([p.drain_mask for p in rendered]), lesion_masks=np.stack([p.masks[k] for p in rendered]),
        indices=indices)


def stratified_table(runs: Mapping[str, object], part: DrainedPart, n_bootstrap: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Each run's AUROC for the finding and its mean AUROC on both test splits.

    ``runs``: ``{name: RunResult}`` of models trained on the same split; their saved test
    predictions are the drain-free split (val and test never carry drains), and ``part``
    (:func:`drained_part` of that test split) the split with drains as in training.
    """
    rows = []
    k = part.label_names.index(FINDING)
    positives = part.targets[:, k] > 0
    for name, run in runs.items():
        pred = run.predictions
        if not np.array_equal(np.asarray(pred["ids"]).astype(str), part.image_ids.astype(str)):
            raise ValueError(f"run {name!r} scored other test images than the drained split: another split or size")
        channels, size = run.config.model.in_chans, run.config.data.image_size
        drained = predict_images(run.model, list(part.images), size, channels)
        for split, scores in ((WITH_DRAINS, drained), (WITHOUT_DRAINS, np.asarray(pred["scores"]))):
            r = auroc_report(part.targets, scores, part.label_names, patient_ids=part.patient_ids,
                             n_bootstrap=n_bootstrap, seed=seed)
            per = r["per_class"][FINDING]
            lo, hi = per["auroc_ci"]
            rows.append({
                "model": name, "test split": split, f"{FINDING} AUROC": per["auroc"],
                "95% CI": f"{_num(lo):.3f} to {_num(hi):.3f}", "mean AUROC": r["mean_auroc"],
                "positives with a drain": f"{int(part.drains[positives].sum()) if split == WITH_DRAINS else 0} "
                                          f"of {int(positives.sum())}",
            })
    return pd.DataFrame(rows).set_index(["model", "test split"])


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def _heat(model, images: np.ndarray, channels: int, size: int, method: str) -> np.ndarray:
    from cxrlib import cam  # pytorch-grad-cam: only the heatmaps load it (planning runs needs none)

    x = torch.stack([preprocess(im, size, channels) for im in images])
    return cam.heatmaps(model, x, FINDING, method=method)


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
        maps = _heat(run.model, part.images[on], run.config.model.in_chans, run.config.data.image_size, method)
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
    maps = {name: _heat(r.model, part.images[on], r.config.model.in_chans, r.config.data.image_size, method)
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
