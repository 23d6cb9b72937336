"""Score tables: one row of scores per (heatmap, region), and their means per finding.

:func:`score_one` scores one heatmap against its region with every score of
:mod:`cxrlib.localization.geometry` (at each threshold T); :func:`localization_scores` does it
for a list; :func:`summarize_scores` gives the means per finding (with an ``All`` row);
:func:`localization_table` both at once.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlib.labels import FINDINGS, canonical
from cxrlib.localization.geometry import (DEFAULT_THRESHOLDS, WANG_RULE, BoxRule, _as_heatmap, _box_scores,
                                         _integral, _regions, _within, area_share, pointing_game,
                                         predicted_boxes)


def _col(kind: str, t: float) -> str:
    return f"{kind}@{t:g}"


def score_columns(thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[str]:
    """The score columns of a :func:`score_one` row, in table order."""
    return ["pointing_game", "random_baseline", "energy", "area_share", "iobb", "iou", "n_boxes",
            *(_col("iobb", t) for t in thresholds), *(_col("afp", t) for t in thresholds),
            *(_col("iou", t) for t in thresholds), *(_col("afp_iou", t) for t in thresholds)]


class _Truth:
    """A region prepared once in a pixel grid: what every score of it needs, map aside."""

    def __init__(self, region: Any, shape: tuple[int, int], tolerance: float):
        self.region, self.shape, self.tolerance = region, (int(shape[0]), int(shape[1])), float(tolerance)
        self.kind, self.items = _regions(region, self.shape)
        self.mask_area = float(self.items[0].sum()) if self.kind == "mask" else 0.0
        self.integral = _integral(self.items[0]) if self.kind == "mask" else None
        self.inside = _within(self.items, self.kind, self.shape)
        near = self.inside if tolerance <= 0 else _within(self.items, self.kind, self.shape, tolerance)
        self.chance = float(near.mean())
        self.area_share = area_share(region, self.shape)


def _score(h: np.ndarray, truth: _Truth, thresholds: Sequence[float], rule: BoxRule) -> dict[str, Any]:
    if h.shape != truth.shape:
        raise ValueError(f"heatmap shape {h.shape} does not match the region's grid {truth.shape}")
    b, u = _box_scores(predicted_boxes(h, rule), truth.kind, truth.items, truth.mask_area, truth.integral)
    mass = np.maximum(h, 0.0)
    total = float(mass.sum(dtype=np.float64))
    row: dict[str, Any] = {
        "pointing_game": pointing_game(h, truth.region, truth.tolerance),
        "random_baseline": truth.chance,
        "energy": float(mass[truth.inside].sum(dtype=np.float64)) / total if total > 0 else 0.0,
        "area_share": truth.area_share,
        "iobb": float(b.max()) if len(b) else 0.0,
        "iou": float(u.max()) if len(u) else 0.0,
        "n_boxes": len(b),
    }
    for t in thresholds:
        row[_col("iobb", t)] = bool((b > t).any())
        row[_col("afp", t)] = int((b <= t).sum())
    for t in thresholds:
        row[_col("iou", t)] = bool((u > t).any())
        row[_col("afp_iou", t)] = int((u <= t).sum())
    return row


def score_one(
    heatmap: Any,
    region: Any,
    finding: str,
    image_id: str | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    rule: BoxRule = WANG_RULE,
    tolerance: float = 0.0,
) -> dict[str, Any]:
    """One row of scores for one heatmap and its region.

    ``pointing_game`` (hit), ``random_baseline`` (its chance:
    :func:`~cxrlib.localization.geometry.pointing_chance` with the same ``tolerance``),
    ``energy``, ``area_share``, the best ``iobb`` and ``iou``, ``n_boxes``, and per threshold
    T: ``iobb@T`` / ``iou@T`` (localised) and ``afp@T`` / ``afp_iou@T`` (false-positive boxes).
    """
    h = _as_heatmap(heatmap)
    row = {"image_id": image_id, "finding": _finding_name(finding)}
    row.update(_score(h, _Truth(region, h.shape, tolerance), thresholds, rule))
    return row


def localization_scores(
    heatmaps: Sequence[Any],
    regions: Sequence[Any],
    findings: Sequence[str],
    image_ids: Sequence[str] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    rule: BoxRule = WANG_RULE,
    tolerance: float = 0.0,
) -> pd.DataFrame:
    """One :func:`score_one` row per (heatmap, region).

    ``heatmaps[i]`` is the map of ``findings[i]`` on one image and ``regions[i]`` that
    finding's ground truth in the same pixel grid.
    """
    n = len(heatmaps)
    if len(regions) != n or len(findings) != n or (image_ids is not None and len(image_ids) != n):
        raise ValueError(
            f"heatmaps ({n}), regions ({len(regions)}), findings ({len(findings)})"
            + (f", image_ids ({len(image_ids)})" if image_ids is not None else "")
            + " must have the same length"
        )
    rows = [
        score_one(heatmaps[i], regions[i], findings[i], None if image_ids is None else image_ids[i],
                  thresholds, rule, tolerance)
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=["image_id", "finding", *score_columns(thresholds)])


def _finding_name(name: str) -> str:
    try:
        return canonical(str(name))
    except ValueError:
        return str(name)


def _finding_order(names) -> list[str]:
    order = {name: i for i, name in enumerate(FINDINGS)}
    return sorted(set(names), key=lambda f: (order.get(f, len(order)), f))


def _thresholds_of(scores: pd.DataFrame, prefix: str = "") -> list[float]:
    return [float(c.split("@")[1]) for c in scores.columns if c.startswith(prefix + "iobb@")]


def summarize_scores(scores: pd.DataFrame, thresholds: Sequence[float] | None = None,
                     prefix: str = "") -> pd.DataFrame:
    """Per-finding means of score rows (plus an ``All`` row pooling them when there are several).

    Columns: ``n, pointing_game, random_baseline`` (the pointing game's chance),
    ``energy``, then per threshold the accuracies ``iobb@T``, the AFPs ``afp@T``, and the
    IoU variants ``iou@T``, ``afp_iou@T``. ``prefix`` reads another set of columns (the
    random-map columns ``random:...`` of
    :func:`~cxrlib.localization.chance.random_map_scores` rows).
    """
    thresholds = _thresholds_of(scores, prefix) if thresholds is None else list(thresholds)
    cols = ["pointing_game", "random_baseline", "energy", *(_col("iobb", t) for t in thresholds),
            *(_col("afp", t) for t in thresholds), *(_col("iou", t) for t in thresholds),
            *(_col("afp_iou", t) for t in thresholds)]
    if prefix:
        cols = [c for c in cols if prefix + c in scores.columns]
    if scores.empty:
        return pd.DataFrame(columns=["n", *cols]).rename_axis("finding")

    def agg(frame: pd.DataFrame) -> dict[str, float]:
        out = {"n": int(len(frame))}
        out.update({c: float(frame[prefix + c].astype(float).mean()) for c in cols})
        return out

    names = _finding_order(scores["finding"])
    table = pd.DataFrame({name: agg(scores[scores["finding"] == name]) for name in names}).T
    if len(names) > 1:
        table.loc["All"] = agg(scores)
    table = table[["n", *cols]]
    table["n"] = table["n"].astype(int)
    return table.rename_axis("finding")


def localization_table(
    heatmaps: Sequence[Any],
    regions: Sequence[Any],
    findings: Sequence[str],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    rule: BoxRule = WANG_RULE,
    tolerance: float = 0.0,
) -> pd.DataFrame:
    """Per finding: n, pointing game and its chance, energy, T(IoBB) / T(IoU) accuracies and AFPs.

    Inputs as in :func:`localization_scores` (boxes or masks in the heatmaps' coordinates).
    Rows follow the CheXNet finding order, with an ``All`` row when there are several.
    """
    scores = localization_scores(heatmaps, regions, findings, None, thresholds, rule, tolerance)
    return summarize_scores(scores, thresholds)
