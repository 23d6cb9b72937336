"""Does a heatmap point at the disease? Pointing game, T(IoBB) and a random baseline.

Ground truth is a *region* in the heatmap's own pixel grid: a box (a ``Box`` from
``DataBundle.boxes`` rescaled to the heatmap, or an ``(x, y, w, h)`` tuple), a boolean mask
of the heatmap's shape (the synthetic phantoms' lesion masks), or a list of boxes when an
image has several boxes of one finding (a hit on any counts).

Coordinates: pixel (row r, col c) covers the square [c, c+1) x [r, r+1); a box (x, y, w, h)
covers [x, x+w] x [y, y+h]. ChestX-ray14's ``BBox_List_2017.csv`` uses this convention
(x, y = top-left corner, in 1024-pixel coordinates).

Scores
------
* **Pointing game** (Zhang et al. 2016): a hit when the heatmap's maximum falls inside the
  region. The maximum is ``np.argmax`` of the map: on ties the *first* maximal pixel in
  row-major order (top-most, then left-most) is taken, so a flat map points at the top-left
  corner and, as it should, almost always misses. The point is the pixel's centre
  (c + 0.5, r + 0.5); ``tolerance`` (pixels, default 0) widens the region as in the
  original protocol's 15-pixel tolerance.
* **T(IoBB)** (Wang et al. 2017, ChestX-ray8, section 4 and appendix): the heatmap's
  intensities are min-max scaled to [0, 255]; the map is binarised at each of the two
  levels 60 and 180 (``pixel >= level``); every 8-connected component of either binary map
  gives one predicted box (its pixel extent). IoBB of a predicted box = area(predicted box
  ∩ ground truth) / area(predicted box) (for a mask: the mask pixels inside the box over
  the box area). An image counts as correctly localised at threshold T when some predicted
  box has IoBB > T; accuracy is the share of (image, finding) pairs localised. A flat map
  yields no box and is a miss.
* **Random baseline**: a uniformly random point lands in the region with probability equal
  to the region's share of the image area, so the pointing game's chance level is the mean
  area share (Nodule boxes: 0.5% of the image; Cardiomegaly: 17.6%).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlib.labels import FINDINGS, canonical

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5)
WANG_LEVELS: tuple[int, ...] = (60, 180)  # binarisation levels on the [0, 255]-scaled heatmap


# ----------------------------------------------------------------------------- regions


def _as_heatmap(heatmap: Any) -> np.ndarray:
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim != 2 or h.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D array [H,W], got shape {h.shape}")
    return np.nan_to_num(h, nan=0.0, posinf=0.0, neginf=0.0)


def _is_mask(region: Any) -> bool:
    return isinstance(region, np.ndarray) and region.ndim == 2


def _box_tuple(box: Any) -> tuple[float, float, float, float]:
    if all(hasattr(box, a) for a in ("x", "y", "w", "h")):
        x, y, w, h = box.x, box.y, box.w, box.h
    else:
        try:
            x, y, w, h = box
        except (TypeError, ValueError):
            raise ValueError(
                f"a region must be a Box, an (x, y, w, h) tuple, a 2-D boolean mask or a list of "
                f"boxes; got {box!r}"
            ) from None
    x, y, w, h = float(x), float(y), float(w), float(h)
    if not (w > 0 and h > 0 and np.isfinite([x, y, w, h]).all()):
        raise ValueError(f"box {box!r} must have finite coordinates and positive width and height")
    return x, y, w, h


def _regions(region: Any, shape: tuple[int, int]) -> tuple[str, list]:
    """('mask', [mask]) or ('boxes', [(x, y, w, h), ...])."""
    if _is_mask(region):
        mask = region.astype(bool)
        if mask.shape != shape:
            raise ValueError(
                f"mask shape {mask.shape} does not match heatmap shape {shape}: resize one to the other"
            )
        return "mask", [mask]
    if isinstance(region, (list, tuple)) and region and not np.isscalar(region[0]):
        return "boxes", [_box_tuple(b) for b in region]
    return "boxes", [_box_tuple(region)]


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _union_area(boxes: list[tuple[float, float, float, float]], shape: tuple[int, int]) -> float:
    """Exact area of the union of boxes clipped to the image (coordinate compression)."""
    H, W = shape
    clipped = []
    for x, y, w, h in boxes:
        x0, x1, y0, y1 = max(x, 0.0), min(x + w, float(W)), max(y, 0.0), min(y + h, float(H))
        if x1 > x0 and y1 > y0:
            clipped.append((x0, x1, y0, y1))
    if not clipped:
        return 0.0
    xs = sorted({v for b in clipped for v in b[:2]})
    ys = sorted({v for b in clipped for v in b[2:]})
    area = 0.0
    for xa, xb in zip(xs, xs[1:]):
        for ya, yb in zip(ys, ys[1:]):
            cx, cy = (xa + xb) / 2, (ya + yb) / 2
            if any(x0 <= cx <= x1 and y0 <= cy <= y1 for x0, x1, y0, y1 in clipped):
                area += (xb - xa) * (yb - ya)
    return area


def area_share(region: Any, shape: tuple[int, int]) -> float:
    """Share of an image of ``shape`` (rows, cols) covered by the region: the random baseline.

    Boxes are clipped to the image; several boxes count their union once.
    """
    shape = (int(shape[0]), int(shape[1]))
    kind, items = _regions(region, shape)
    if kind == "mask":
        return float(items[0].mean())
    return _union_area(items, shape) / float(shape[0] * shape[1])


# ----------------------------------------------------------------------------- scores


def peak(heatmap: Any) -> tuple[int, int]:
    """(row, col) of the heatmap's maximum; ties go to the first in row-major order."""
    h = _as_heatmap(heatmap)
    r, c = np.unravel_index(int(np.argmax(h)), h.shape)
    return int(r), int(c)


def pointing_game(heatmap: Any, box_or_mask: Any, tolerance: float = 0.0) -> bool:
    """True when the heatmap's maximum (pixel centre) lies in the region (within ``tolerance``)."""
    h = _as_heatmap(heatmap)
    kind, items = _regions(box_or_mask, h.shape)
    r, c = peak(h)
    if kind == "mask":
        mask = items[0]
        if tolerance <= 0:
            return bool(mask[r, c])
        rows, cols = np.nonzero(mask)
        return bool(rows.size and np.min((rows - r) ** 2 + (cols - c) ** 2) <= tolerance**2)
    px, py = c + 0.5, r + 0.5
    for x, y, w, hh in items:
        dx = max(x - px, 0.0, px - (x + w))
        dy = max(y - py, 0.0, py - (y + hh))
        if dx * dx + dy * dy <= tolerance * tolerance:
            return True
    return False


def predicted_boxes(heatmap: Any, levels: Sequence[float] = WANG_LEVELS) -> list[tuple[int, int, int, int]]:
    """Wang et al.'s boxes: (x, y, w, h) of each 8-connected component at each level.

    The map is min-max scaled to [0, 255] and binarised as ``pixel >= level``; a flat map
    gives no box.
    """
    import cv2

    h = _as_heatmap(heatmap)
    lo, hi = float(h.min()), float(h.max())
    if not hi > lo:
        return []
    scaled = (h - lo) / (hi - lo) * 255.0
    boxes: list[tuple[int, int, int, int]] = []
    for level in levels:
        binary = (scaled >= float(level)).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        for x, y, w, hh, _area in stats[1:n]:  # row 0 is the background
            boxes.append((int(x), int(y), int(w), int(hh)))
    return boxes


def _iobb_one(pred: tuple[int, int, int, int], kind: str, items: list) -> float:
    x, y, w, h = pred
    if kind == "mask":
        return float(items[0][y : y + h, x : x + w].sum()) / float(w * h)
    best = 0.0
    for gx, gy, gw, gh in items:
        inter = _overlap(x, x + w, gx, gx + gw) * _overlap(y, y + h, gy, gy + gh)
        best = max(best, inter / float(w * h))
    return best


def iobb(heatmap: Any, box: Any, T: float | None = None, levels: Sequence[float] = WANG_LEVELS) -> float | bool:
    """Best IoBB of the heatmap's predicted boxes against ``box`` (a box, boxes or a mask).

    Without ``T``: the largest IoBB over the predicted boxes (0.0 when there is none).
    With ``T``: the T(IoBB) verdict, ``IoBB > T``.
    """
    h = _as_heatmap(heatmap)
    kind, items = _regions(box, h.shape)
    best = max((_iobb_one(p, kind, items) for p in predicted_boxes(h, levels)), default=0.0)
    return best if T is None else bool(best > T)


# ----------------------------------------------------------------------------- tables


def _iobb_col(t: float) -> str:
    return f"iobb@{t:g}"


def localization_scores(
    heatmaps: Sequence[Any],
    regions: Sequence[Any],
    findings: Sequence[str],
    image_ids: Sequence[str] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    levels: Sequence[float] = WANG_LEVELS,
    tolerance: float = 0.0,
) -> pd.DataFrame:
    """One row per (heatmap, region): finding, pointing_game, iobb, iobb@T..., area_share.

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
                  thresholds, levels, tolerance)
        for i in range(n)
    ]
    columns = ["image_id", "finding", "pointing_game", "iobb", *(_iobb_col(t) for t in thresholds), "area_share"]
    return pd.DataFrame(rows, columns=columns)


def score_one(
    heatmap: Any,
    region: Any,
    finding: str,
    image_id: str | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    levels: Sequence[float] = WANG_LEVELS,
    tolerance: float = 0.0,
) -> dict[str, Any]:
    """The localization_scores row of one heatmap and its region."""
    h = _as_heatmap(heatmap)
    best = iobb(h, region, None, levels)
    row = {
        "image_id": image_id,
        "finding": _finding_name(finding),
        "pointing_game": pointing_game(h, region, tolerance),
        "iobb": best,
        "area_share": area_share(region, h.shape),
    }
    for t in thresholds:
        row[_iobb_col(t)] = bool(best > t)
    return row


def _finding_name(name: str) -> str:
    try:
        return canonical(str(name))
    except ValueError:
        return str(name)


def summarize_scores(scores: pd.DataFrame, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """Per-finding table from localization_scores rows (plus an ``All`` row pooling them)."""
    cols = ["n", "pointing_game", "random_baseline", *(_iobb_col(t) for t in thresholds)]
    if scores.empty:
        return pd.DataFrame(columns=cols).rename_axis("finding")
    order = {name: i for i, name in enumerate(FINDINGS)}

    def agg(frame: pd.DataFrame) -> dict[str, float]:
        out = {"n": int(len(frame)), "pointing_game": float(frame["pointing_game"].mean()),
               "random_baseline": float(frame["area_share"].mean())}
        for t in thresholds:
            out[_iobb_col(t)] = float(frame[_iobb_col(t)].mean())
        return out

    names = sorted(scores["finding"].unique(), key=lambda f: (order.get(f, len(order)), f))
    table = pd.DataFrame({name: agg(scores[scores["finding"] == name]) for name in names}).T
    if len(names) > 1:
        table.loc["All"] = agg(scores)
    table = table[cols]
    table["n"] = table["n"].astype(int)
    return table.rename_axis("finding")


def localization_table(
    heatmaps: Sequence[Any],
    regions: Sequence[Any],
    findings: Sequence[str],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    levels: Sequence[float] = WANG_LEVELS,
    tolerance: float = 0.0,
) -> pd.DataFrame:
    """Per finding: n, pointing game, random baseline (mean area share), T(IoBB) accuracies.

    Inputs as in :func:`localization_scores` (boxes or masks in the heatmaps' coordinates).
    Rows follow the CheXNet finding order, with an ``All`` row when there are several.
    Columns: ``n, pointing_game, random_baseline, iobb@0.1, iobb@0.25, iobb@0.5``.
    """
    scores = localization_scores(heatmaps, regions, findings, None, thresholds, levels, tolerance)
    return summarize_scores(scores, thresholds)


# ----------------------------------------------------------------------------- datasets


def evaluate_localization(
    model,
    data,
    part: str = "test",
    method: str = "gradcam",
    findings: Sequence[str] | None = None,
    limit: int | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    tolerance: float = 0.0,
    target_layers=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a model's heatmaps on a DataBundle's ground truth: (table, per-item scores).

    Real ChestX-ray14 boxes (``data.boxes``, full-image pixels) are scored on the heatmap
    resized to the full image (``data.full_image``), where the boxes were drawn; phantom
    masks (``data.mask``, cache size) are scored on the heatmap at the model's input size.
    Only images with ground truth for a finding count; ``limit`` caps the images scored.
    """
    from cxrlib.cam import heatmaps_all_findings, resize_heatmap

    dataset = getattr(data, part)
    label_names = list(getattr(dataset, "label_names", FINDINGS))
    wanted = None if findings is None else {canonical(f) for f in findings}
    rows: list[dict[str, Any]] = []
    scored = 0
    for i, image_id in enumerate(dataset.image_ids):
        if limit is not None and scored >= limit:
            break
        image_id = str(image_id)
        truth: dict[str, Any] = {}
        full_shape = None
        boxes = list(data.boxes(image_id) or [])
        for box in boxes:
            name = canonical(box.finding)
            if wanted is None or name in wanted:
                truth.setdefault(name, []).append(box)
        if not truth and getattr(data, "source", "") == "phantoms":
            for k, name in enumerate(label_names[: len(FINDINGS)]):
                if (wanted is None or name in wanted) and dataset.targets[i, k] > 0:
                    mask = data.mask(image_id, name)
                    if mask is not None and np.any(mask):
                        truth[name] = np.asarray(mask, dtype=bool)
        if not truth:
            continue
        if any(not _is_mask(v) for v in truth.values()):
            full_shape = np.asarray(data.full_image(image_id)).shape[:2]
        names = list(truth)
        image, _ = dataset[i]
        maps = heatmaps_all_findings(
            model, image, method=method, target_layers=target_layers,
            classes=[label_names.index(n) for n in names],
        )
        for name, hm in zip(names, maps):
            region = truth[name]
            if not _is_mask(region):
                hm = resize_heatmap(hm, full_shape)
            elif region.shape != hm.shape:
                hm = resize_heatmap(hm, region.shape)
            # Scored at once: full-resolution maps of a whole test set would not fit in memory.
            rows.append(score_one(hm, region, name, image_id, thresholds, WANG_LEVELS, tolerance))
        scored += 1
    columns = ["image_id", "finding", "pointing_game", "iobb", *(_iobb_col(t) for t in thresholds), "area_share"]
    scores = pd.DataFrame(rows, columns=columns)
    return summarize_scores(scores, thresholds), scores


__all__ = [
    "DEFAULT_THRESHOLDS",
    "WANG_LEVELS",
    "area_share",
    "evaluate_localization",
    "iobb",
    "localization_scores",
    "localization_table",
    "peak",
    "pointing_game",
    "predicted_boxes",
    "score_one",
    "summarize_scores",
]
