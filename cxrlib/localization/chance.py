"""Chance is measured, not assumed: random maps on the model's own CAM grid, scored by the same
rule, and a model's paired difference from them.

Uniform noise is drawn on the CAM's own grid (the target layer's resolution: 7x7 for a
ResNet's last stage at 224 px, 28x28 for an FPN head), upsampled exactly as CAM maps are
(:func:`cxrlib.cam.upsample_maps`, then to the scoring size), and scored with the same rule,
many draws per region (:func:`random_maps`, :func:`random_map_scores`).
:func:`compare_with_random` describes the model's difference from that level per finding with
a paired bootstrap CI over images. It calls nothing: uniform random maps are a chance that
sparse or finding-blind maps beat without knowing anything
(``bench/results/verdict_calibration.md``), so the one verdict on a heatmap is the exact test's
(:mod:`cxrlib.localization.exact`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlib.cam import resize_heatmap, upsample_maps
from cxrlib.localization.geometry import DEFAULT_THRESHOLDS, WANG_RULE, BoxRule
from cxrlib.localization.tables import (_col, _finding_name, _finding_order, _score, _thresholds_of, _Truth,
                                        score_columns)
from cxrlib.metrics import paired_mean_difference


def random_maps(grids: Sequence[tuple[int, int]], size: tuple[int, int], n: int,
                rng: np.random.Generator) -> np.ndarray:
    """``n`` random heatmaps ``[n, H, W]``: uniform noise on each CAM grid, upsampled as CAM maps are.

    ``grids`` holds one ``(h, w)`` per target layer (see :func:`cxrlib.cam.target_grids`);
    ``size`` is the model's input size.
    """
    grids = [(int(g[0]), int(g[1])) for g in grids]
    if not grids or any(min(g) < 1 for g in grids):
        raise ValueError(f"grids must be a non-empty list of (h, w) with h, w >= 1, got {grids!r}")
    noise = [rng.random((int(n), *g), dtype=np.float32) for g in grids]
    return upsample_maps(noise, size)


def random_map_scores(
    regions: Sequence[Any],
    findings: Sequence[str],
    shapes: Sequence[tuple[int, int]],
    grids: Sequence[tuple[int, int]],
    input_size: tuple[int, int],
    n_draws: int = 20,
    image_ids: Sequence[str] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    rule: BoxRule = WANG_RULE,
    tolerance: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """The chance level of every score, per region: the mean over ``n_draws`` random maps.

    Each region (``regions[i]`` of ``findings[i]``, in a ``shapes[i]`` pixel grid: the full
    image for boxes, the input size for masks) is scored against ``n_draws`` maps drawn on
    ``grids`` and upsampled to ``input_size`` as a CAM map is, then resized to ``shapes[i]``
    as :func:`~cxrlib.localization.heatmaps.heatmap_scores` resizes a heatmap. Returns one row per region with
    ``image_id``, ``finding`` and a ``random:<column>`` per score column (hit rates, mean
    false-positive counts, mean energy), plus ``random:pointing_chance``.
    """
    n = len(regions)
    if len(findings) != n or len(shapes) != n or (image_ids is not None and len(image_ids) != n):
        raise ValueError("regions, findings, shapes (and image_ids) must have the same length")
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append(_random_row(regions[i], findings[i], None if image_ids is None else image_ids[i],
                                tuple(shapes[i]), grids, input_size, n_draws, rng, thresholds, rule, tolerance))
    columns = ["image_id", "finding", *("random:" + c for c in score_columns(thresholds))]
    return pd.DataFrame(rows, columns=columns)


def _random_row(region, finding, image_id, shape, grids, input_size, n_draws, rng, thresholds, rule, tolerance):
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    truth = _Truth(region, shape, tolerance)
    maps = random_maps(grids, input_size, n_draws, rng)
    rows = []
    for m in maps:
        if tuple(m.shape) != tuple(truth.shape):
            m = resize_heatmap(m, truth.shape)
        rows.append(_score(m, truth, thresholds, rule))
    out: dict[str, Any] = {"image_id": image_id, "finding": _finding_name(finding)}
    for c in score_columns(thresholds):
        out["random:" + c] = float(np.mean([float(r[c]) for r in rows]))
    return out


def compare_with_random(
    scores: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Model against random maps per finding and metric, paired over images.

    ``scores`` holds the model's columns and the ``random:`` columns of the same rows (as
    :class:`~cxrlib.localization.heatmaps.HeatmapScores` keeps them per method). For each
    finding (and ``All``) and metric: the number of (image, finding) items ``n`` and of
    ``images``, the model's mean, the random maps' mean and their difference with a 95%
    bootstrap CI over images (the items of one image resampled together). A description,
    not a test: no verdict is read from it (the exact test gives the verdict,
    :meth:`~cxrlib.localization.heatmaps.HeatmapScores.exact`). Default metrics: pointing
    game, energy, T(IoBB) accuracy and AFP at each threshold.
    """
    if metrics is None:
        thresholds = _thresholds_of(scores)
        metrics = ["pointing_game", "energy", *(_col("iobb", t) for t in thresholds),
                   *(_col("afp", t) for t in thresholds)]
    missing = [m for m in metrics if m not in scores.columns or "random:" + m not in scores.columns]
    if missing:
        raise ValueError(f"scores lack the model or random-map columns of {missing}: score with "
                         "score_heatmaps (whose scores[method] have them) or join random_map_scores rows")
    rows = []
    names = _finding_order(scores["finding"])
    for name in names + (["All"] if len(names) > 1 else []):
        frame = scores if name == "All" else scores[scores["finding"] == name]
        groups = frame["image_id"].to_numpy() if frame["image_id"].notna().all() else None
        for metric in metrics:
            res = paired_mean_difference(frame[metric].astype(float), frame["random:" + metric].astype(float),
                                         groups=groups, n_bootstrap=n_bootstrap, seed=seed)
            lo, hi = res["ci"]
            rows.append({"finding": name, "metric": metric, "n": res["n"], "images": res["n_groups"],
                         "model": res["mean_a"], "random map": res["mean_b"], "difference": res["diff"],
                         "ci_low": lo, "ci_high": hi})
    columns = ["finding", "metric", "n", "images", "model", "random map", "difference", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns).set_index(["finding", "metric"])
