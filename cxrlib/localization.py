"""Does a heatmap point at the disease, and more often than a random map would?

Ground truth is a *region* in the heatmap's own pixel grid: a box (a ``Box`` from
``DataBundle.boxes`` rescaled to the heatmap, or an ``(x, y, w, h)`` tuple), a boolean mask
of the heatmap's shape (the synthetic phantoms' lesion masks), or a list of boxes when an
image has several boxes of one finding (a hit on any counts).

Coordinates: pixel (row r, col c) covers the square [c, c+1) x [r, r+1); a box (x, y, w, h)
covers [x, x+w] x [y, y+h]. ChestX-ray14's ``BBox_List_2017.csv`` uses this convention
(x, y = top-left corner, in 1024-pixel coordinates). Where a box must become pixels (the
energy share, the pointing game's chance), a pixel belongs to the box when its centre
(c + 0.5, r + 0.5) lies in it, edges included: the pointing game's own rule.

Scores
------
* **Pointing game** (Zhang et al. 2016): a hit when the heatmap's maximum falls inside the
  region. The maximum is ``np.argmax`` of the map: on ties the *first* maximal pixel in
  row-major order (top-most, then left-most) is taken, so a flat map points at the top-left
  corner and, as it should, almost always misses. The point is the pixel's centre;
  ``tolerance`` (pixels, default 0) widens the region as in the original protocol's
  15-pixel tolerance. Its chance level (:func:`pointing_chance`) is the share of pixels
  whose centre lies within ``tolerance`` of the region: the hit rate of a uniformly random
  peak (the area share when ``tolerance`` is 0).
* **Energy** (the energy-based pointing game, Wang et al. 2020, Score-CAM): the share of
  the map's positive mass inside the region. A uniform map scores the area share.
* **T(IoBB) and T(IoU) with AFP** (Wang et al. 2017, ChestX-ray8, section 4): the map is
  turned into boxes by :class:`BoxRule` (below). IoBB of a predicted box = area(box ∩
  ground truth) / area(box); IoU = area(box ∩ ground truth) / area(box ∪ ground truth)
  (for a mask: mask pixels inside the box). An (image, finding) is localised at T when some
  predicted box has a score > T; every predicted box whose score is <= T is a false
  positive, and AFP is their average number per (image, finding). Accuracy alone rewards
  a map that scatters boxes; Wang et al. report the two together.
* **Random maps** (:func:`random_maps`, :func:`random_map_scores`): chance is measured,
  not assumed. Uniform noise is drawn on the CAM's own grid (the target layer's
  resolution: 7x7 for a ResNet's last stage at 224 px, 28x28 for an FPN head), upsampled
  exactly as CAM maps are (:func:`cxrlib.cam.upsample_maps`, then to the scoring size),
  and scored with the same rule, many draws per region. :func:`compare_with_random` gives
  the model's difference from that level per finding with a paired bootstrap CI over
  images.

The box rule
------------
Wang et al. binarise the [0, 255]-scaled map at 60 and 180 and take a box around every
isolated region of either binary map; their heatmaps give 1-3 boxes each. Taken literally
("every connected component") the rule is passed by noise: a white-noise 256 px map gives
about 3,000 boxes, one of which sits inside any nodule box (IoBB 1.0), and 7x7 noise
upsampled to 256 px reaches 0.60 / 0.42 / 0.27 at T(IoBB) = 0.1 / 0.25 / 0.5 on the
release's 984 boxes (Wang et al.'s ResNet-50: 0.63 / 0.49 / 0.33). So :data:`WANG_RULE`
states three things and AFP is always reported:

* ``levels = (60, 180)``: Wang et al.'s two binarisation levels on the min-max scaled map
  (``pixel >= level``); 8-connected components.
* ``min_area = 0.001``: components smaller than 0.1% of the map are speckle, not a
  prediction. That is below one cell of the finest CAM grid in the project (28x28 at 224
  px: 0.13% of the image), so no real CAM region is lost, and it stops IoBB (which rewards
  tiny boxes) from being won by a few pixels.
* ``max_boxes = 3``: at most three boxes per map, the largest components first (ties by
  level, then position) - the 1-3 boxes of Wang et al.'s maps. Identical boxes from the
  two levels are one prediction, so a box is never counted twice as a false positive.

:data:`UNLIMITED_RULE` is the rule without the last two (every component a box), kept to
show what the limit changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from cxrlib.cam import heatmaps_all_findings, resize_heatmap, target_grids, upsample_maps
from cxrlib.labels import FINDINGS, canonical
from cxrlib.metrics import paired_mean_difference
from cxrlib.references import WANG_CVPR, WANG_FINDINGS, WANG_IOBB_CVPR, WANG_IOBB_V5, WANG_V5
from cxrlib.results import BETTER, NO_DIFFERENCE, TOO_FEW, WORSE, estimate_text, interval_verdict

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
WANG_LEVELS: tuple[int, ...] = (60, 180)  # binarisation levels on the [0, 255]-scaled heatmap


@dataclass(frozen=True)
class BoxRule:
    """How a heatmap becomes predicted boxes (see the module docstring for the why).

    ``levels``: binarisation levels on the map min-max scaled to [0, 255]; ``min_area``:
    smallest component kept, as a share of the map's pixels; ``max_boxes``: most boxes a map
    may give (largest first; None: no limit).
    """

    levels: tuple[float, ...] = WANG_LEVELS
    min_area: float = 0.001
    max_boxes: int | None = 3

    def __post_init__(self):
        if not self.levels or any(not 0 <= float(v) <= 255 for v in self.levels):
            raise ValueError(f"BoxRule levels must be values in [0, 255], got {self.levels!r}")
        if not 0 <= self.min_area < 1:
            raise ValueError(f"BoxRule min_area is a share of the map in [0, 1), got {self.min_area!r}")
        if self.max_boxes is not None and int(self.max_boxes) < 1:
            raise ValueError(f"BoxRule max_boxes must be >= 1 or None, got {self.max_boxes!r}")

    def describe(self) -> str:
        """The rule in words, from its fields (for notebooks and reports)."""
        levels = " and ".join(f"{v:g}" for v in self.levels)
        size = (f"of at least {self.min_area:.1%} of the map" if self.min_area > 0 else "of any size")
        limit = ("every such component gives a box" if self.max_boxes is None
                 else f"at most {int(self.max_boxes)} box{'es' if int(self.max_boxes) != 1 else ''} per map, "
                      "largest component first")
        return (f"The heatmap is scaled to [0, 255] and binarised at {levels} (pixel >= level); the box "
                f"around each 8-connected component {size} is a predicted box ({limit}; the same box from two "
                "levels counts once). A finding is localised at T when a predicted box has IoBB (or IoU) > T "
                "with the ground truth; every other predicted box is a false positive, counted in AFP.")


WANG_RULE = BoxRule()
UNLIMITED_RULE = BoxRule(min_area=0.0, max_boxes=None)  # every component a box: for comparison only


# ----------------------------------------------------------------------------- regions


def _as_heatmap(heatmap: Any) -> np.ndarray:
    h = np.asarray(heatmap, dtype=np.float32)
    if h.ndim != 2 or h.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D array [H,W], got shape {h.shape}")
    if np.isfinite(h).all():  # the usual case: no copy (maps are scored many times over)
        return h
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
    """Share of an image of ``shape`` (rows, cols) covered by the region (exact area).

    Boxes are clipped to the image; several boxes count their union once.
    """
    shape = (int(shape[0]), int(shape[1]))
    kind, items = _regions(region, shape)
    if kind == "mask":
        return float(items[0].mean())
    return _union_area(items, shape) / float(shape[0] * shape[1])


def _within(items: list, kind: str, shape: tuple[int, int], tolerance: float = 0.0) -> np.ndarray:
    """Boolean [H,W]: pixels whose centre lies within ``tolerance`` of the region."""
    if kind == "mask":
        mask = items[0]
        if tolerance <= 0:
            return mask
        if not mask.any():
            return mask
        return ndimage.distance_transform_edt(~mask) <= tolerance
    H, W = shape
    px, py = np.arange(W) + 0.5, np.arange(H) + 0.5
    out = np.zeros(shape, dtype=bool)
    for x, y, w, h in items:
        dx = np.maximum(np.maximum(x - px, 0.0), px - (x + w))
        dy = np.maximum(np.maximum(y - py, 0.0), py - (y + h))
        if tolerance <= 0:
            out |= (dy[:, None] <= 0) & (dx[None, :] <= 0)
        else:
            out |= dy[:, None] ** 2 + dx[None, :] ** 2 <= tolerance * tolerance
    return out


def pointing_chance(region: Any, shape: tuple[int, int], tolerance: float = 0.0) -> float:
    """The pointing game's chance level: the hit rate of a uniformly random peak pixel.

    The share of pixels whose centre lies within ``tolerance`` of the region (inside it
    when 0), counted with the pointing game's own rule, so ``tolerance`` raises chance as
    it raises the score.
    """
    shape = (int(shape[0]), int(shape[1]))
    kind, items = _regions(region, shape)
    return float(_within(items, kind, shape, tolerance).mean())


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


def energy_share(heatmap: Any, box_or_mask: Any) -> float:
    """Share of the map's positive mass inside the region (0.0 for a map with no mass)."""
    h = np.maximum(_as_heatmap(heatmap), 0.0)
    kind, items = _regions(box_or_mask, h.shape)
    total = float(h.sum(dtype=np.float64))
    if total <= 0:
        return 0.0
    return float(h[_within(items, kind, h.shape)].sum(dtype=np.float64)) / total


def predicted_boxes(heatmap: Any, rule: BoxRule = WANG_RULE) -> list[tuple[int, int, int, int]]:
    """The boxes ``(x, y, w, h)`` a heatmap predicts under ``rule``: largest first.

    The map is min-max scaled to [0, 255] and binarised as ``pixel >= level`` at each level;
    every 8-connected component of at least ``min_area`` of the map gives its pixel extent;
    identical boxes are one; at most ``max_boxes`` are kept. A flat map gives no box.
    """
    import cv2  # an optional heavy dependency, needed only to find components

    h = _as_heatmap(heatmap)
    lo, hi = float(h.min()), float(h.max())
    if not hi > lo:
        return []
    smallest = rule.min_area * h.size
    found: dict[tuple[int, int, int, int], tuple[int, int]] = {}
    for rank, level in enumerate(rule.levels):
        # pixel >= level on the [0, 255]-scaled map, compared in the map's own units
        binary = (h >= np.float32(lo + float(level) / 255.0 * (hi - lo))).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        for x, y, w, hh, area in stats[1:n]:  # row 0 is the background
            if area >= smallest:
                found.setdefault((int(x), int(y), int(w), int(hh)), (int(area), rank))
    order = sorted(found, key=lambda b: (-found[b][0], found[b][1], b[1], b[0]))
    return order if rule.max_boxes is None else order[: int(rule.max_boxes)]


def _box_scores(preds: Sequence[tuple[int, int, int, int]], kind: str, items: list,
                mask_area: float, integral: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(IoBB, IoU) of each predicted box against the region (best over several boxes), vectorised.

    For a mask, ``integral`` is its summed-area table (:func:`_integral`), so each box's
    mask pixels cost four look-ups, not a sum over the box.
    """
    p = np.asarray(preds, dtype=np.float64).reshape(-1, 4)
    if len(p) == 0:
        return np.zeros(0), np.zeros(0)
    x, y, w, h = p.T
    area = w * h
    if kind == "mask":
        S = _integral(items[0]) if integral is None else integral
        x0, y0, x1, y1 = (v.astype(np.int64) for v in (x, y, x + w, y + h))
        inter = (S[y1, x1] - S[y0, x1] - S[y1, x0] + S[y0, x0]).astype(np.float64)
        return inter / area, inter / (area + mask_area - inter)
    best_iobb, best_iou = np.zeros(len(p)), np.zeros(len(p))
    for gx, gy, gw, gh in items:
        ix = np.clip(np.minimum(x + w, gx + gw) - np.maximum(x, gx), 0.0, None)
        iy = np.clip(np.minimum(y + h, gy + gh) - np.maximum(y, gy), 0.0, None)
        inter = ix * iy
        best_iobb = np.maximum(best_iobb, inter / area)
        best_iou = np.maximum(best_iou, inter / (area + gw * gh - inter))
    return best_iobb, best_iou


def _integral(mask: np.ndarray) -> np.ndarray:
    """Summed-area table ``S[r, c]`` = mask pixels above row r and left of column c."""
    S = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    S[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return S


def box_scores(heatmap: Any, region: Any, rule: BoxRule = WANG_RULE) -> list[tuple[float, float]]:
    """(IoBB, IoU) of each predicted box against the region, in :func:`predicted_boxes` order."""
    h = _as_heatmap(heatmap)
    kind, items = _regions(region, h.shape)
    area = float(items[0].sum()) if kind == "mask" else 0.0
    b, u = _box_scores(predicted_boxes(h, rule), kind, items, area)
    return [(float(i), float(j)) for i, j in zip(b, u)]


def iobb(heatmap: Any, box: Any, T: float | None = None, rule: BoxRule = WANG_RULE) -> float | bool:
    """Best IoBB of the heatmap's predicted boxes against ``box`` (a box, boxes or a mask).

    Without ``T``: the largest IoBB over the predicted boxes (0.0 when there is none).
    With ``T``: the T(IoBB) verdict, ``IoBB > T``.
    """
    best = max((b for b, _ in box_scores(heatmap, box, rule)), default=0.0)
    return best if T is None else bool(best > T)


def iou(heatmap: Any, box: Any, T: float | None = None, rule: BoxRule = WANG_RULE) -> float | bool:
    """Best IoU of the heatmap's predicted boxes against ``box``; with ``T`` the verdict ``IoU > T``."""
    best = max((u for _, u in box_scores(heatmap, box, rule)), default=0.0)
    return best if T is None else bool(best > T)


# ----------------------------------------------------------------------------- tables


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

    ``pointing_game`` (hit), ``random_baseline`` (its chance: :func:`pointing_chance` with
    the same ``tolerance``), ``energy``, ``area_share``, the best ``iobb`` and ``iou``,
    ``n_boxes``, and per threshold T: ``iobb@T`` / ``iou@T`` (localised) and ``afp@T`` /
    ``afp_iou@T`` (false-positive boxes).
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
    random-map columns ``random:...`` of :func:`random_map_scores` rows).
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


# ----------------------------------------------------------------------------- random maps


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
    as :func:`evaluate_localization` resizes a heatmap. Returns one row per region with
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


# Below six images even a model that beats the random maps on every one of them could not
# show it: an exact sign test on n paired images reaches p < 0.05 (two-sided) only from
# n = 6 (2 x 0.5**6 = 0.031), while a bootstrap over so few images can give a CI that
# excludes 0 whatever the truth (one image: a CI of zero width).
MIN_IMAGES = 6


def compare_with_random(
    scores: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Model against random maps per finding and metric, paired over images.

    ``scores`` holds the model's columns and the ``random:`` columns of the same rows (as
    :func:`evaluate_localization` returns them). For each finding (and ``All``) and metric:
    the number of (image, finding) items ``n`` and of ``images``, the model's mean, the
    random maps' mean, their difference with a 95% bootstrap CI over images (the items of
    one image resampled together) and its p-value, and the ``verdict``: ``better`` or
    ``worse`` than the random maps when the CI excludes 0 on that side (above for
    accuracies and energy, below for AFPs), ``no difference shown`` when it includes 0,
    ``too few images`` below :data:`MIN_IMAGES`. ``better than random`` is the verdict
    ``better``. Default metrics: pointing game, energy, T(IoBB) accuracy and AFP at each
    threshold.
    """
    if metrics is None:
        thresholds = _thresholds_of(scores)
        metrics = ["pointing_game", "energy", *(_col("iobb", t) for t in thresholds),
                   *(_col("afp", t) for t in thresholds)]
    missing = [m for m in metrics if m not in scores.columns or "random:" + m not in scores.columns]
    if missing:
        raise ValueError(f"scores lack the model or random-map columns of {missing}: score with "
                         "evaluate_localization(..., n_random > 0) or join random_map_scores rows")
    rows = []
    names = _finding_order(scores["finding"])
    for name in names + (["All"] if len(names) > 1 else []):
        frame = scores if name == "All" else scores[scores["finding"] == name]
        groups = frame["image_id"].to_numpy() if frame["image_id"].notna().all() else None
        for metric in metrics:
            res = paired_mean_difference(frame[metric].astype(float), frame["random:" + metric].astype(float),
                                         groups=groups, n_bootstrap=n_bootstrap, seed=seed)
            lo, hi = res["ci"]
            verdict = interval_verdict(lo, hi, res["n_groups"], MIN_IMAGES, lower_is_better=metric.startswith("afp"))
            rows.append({"finding": name, "metric": metric, "n": res["n"], "images": res["n_groups"],
                         "model": res["mean_a"], "random map": res["mean_b"], "difference": res["diff"],
                         "ci_low": lo, "ci_high": hi, "p_value": res["p_value"], "verdict": verdict,
                         "better than random": verdict == BETTER})
    columns = ["finding", "metric", "n", "images", "model", "random map", "difference", "ci_low", "ci_high",
               "p_value", "verdict", "better than random"]
    return pd.DataFrame(rows, columns=columns).set_index(["finding", "metric"])

# ----------------------------------------------------------------------------- datasets

MASKS, BOXES = "lesion masks", "boxes"
RANDOM_MAPS = "random maps"


@dataclass(frozen=True)
class Region:
    """One (image, finding) to score: its ground truth in the pixel grid where it is scored."""

    index: int  # the image's position in the dataset part
    image_id: str
    finding: str
    truth: Any  # a boolean mask at the model's input size, or the finding's boxes in full-image pixels
    shape: tuple[int, int]  # the grid a heatmap is resized to before it is scored


def ground_truth_of(data) -> str:
    """What localization is scored against on ``data``: :data:`MASKS` or :data:`BOXES`.

    Decided by what the data offers (``data.offers``), never by the source's name: lesion
    masks where offered (the phantoms draw them pixel by pixel, so they are the truth, and a
    mask's bounding box would count the healthy lung around a lesion as lesion), else boxes.
    """
    offers = getattr(data, "offers", None)
    if offers is None:
        raise TypeError(f"{type(data).__name__} does not say what ground truth it offers (no .offers): "
                        "load it with cxrlib.data.load_data, whose bundles declare offers.masks / offers.boxes")
    if offers.masks:
        return MASKS
    if offers.boxes:
        return BOXES
    raise ValueError("the data offers neither lesion masks nor boxes: there is nothing to score localization against")


def localization_regions(data, part: str = "test", findings: Sequence[str] | None = None,
                         limit: int | None = None) -> list[Region]:
    """Every (image, finding) of ``data``'s ``part`` that has ground truth, image by image.

    Masks (``data.mask(image_id, finding)`` for each positive finding) are put on the
    model's input grid, where the heatmap is made (nearest neighbour when the mask has
    another size); boxes (``data.boxes(image_id)``) stay in full-image pixels, where they
    were drawn (``data.full_image``). ``limit`` caps the images, not the regions.
    """
    kind = ground_truth_of(data)
    dataset = getattr(data, part)
    label_names = list(getattr(dataset, "label_names", FINDINGS))
    wanted = None if findings is None else {canonical(f) for f in findings}
    regions: list[Region] = []
    n_images = 0
    for i, image_id in enumerate(dataset.image_ids):
        if limit is not None and n_images >= limit:
            break
        image_id = str(image_id)
        truth = (_masks_of(data, dataset, i, image_id, label_names, wanted) if kind == MASKS
                 else _boxes_of(data, image_id, wanted))
        if not truth:
            continue
        if kind == MASKS:
            shape = tuple(int(v) for v in dataset[i][0].shape[-2:])  # the model's input grid
        else:
            shape = tuple(int(v) for v in np.asarray(data.full_image(image_id)).shape[:2])
        for name, region in truth.items():
            if kind == MASKS and region.shape != shape:
                region = _resize_mask(region, shape)
            regions.append(Region(i, image_id, name, region, shape))
        n_images += 1
    return regions


def heatmap_scores(model, data, regions: Sequence[Region], part: str = "test", method: str = "gradcam",
                   thresholds: Sequence[float] = DEFAULT_THRESHOLDS, rule: BoxRule = WANG_RULE,
                   tolerance: float = 0.0, target_layers=None) -> pd.DataFrame:
    """One :func:`score_one` row per region: the model's ``method`` heatmap of its finding.

    One CAM pass per image serves all of its findings; each map is resized to its region's
    grid and scored there at once (full-resolution maps of a test set would not fit in memory).
    """
    dataset = getattr(data, part)
    label_names = list(getattr(dataset, "label_names", FINDINGS))
    rows = []
    for index, group in groupby(regions, key=lambda r: r.index):
        group = list(group)
        image, _ = dataset[index]
        maps = heatmaps_all_findings(model, image, method=method, target_layers=target_layers,
                                     classes=[label_names.index(r.finding) for r in group])
        for r, hm in zip(group, maps):
            if tuple(hm.shape) != r.shape:
                hm = resize_heatmap(hm, r.shape)
            rows.append(score_one(hm, r.truth, r.finding, r.image_id, thresholds, rule, tolerance))
    return pd.DataFrame(rows, columns=["image_id", "finding", *score_columns(thresholds)])


def cam_grid(model, data, regions: Sequence[Region], part: str = "test",
             target_layers=None) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """(the model's CAM grids, its input size) on the images of ``regions``: what random maps are drawn on."""
    if not regions:
        return [], (0, 0)
    image, _ = getattr(data, part)[regions[0].index]
    return target_grids(model, image, target_layers), tuple(int(v) for v in image.shape[-2:])


def _random_rows(regions, grids, input_size, n_random, thresholds, rule, tolerance, seed) -> pd.DataFrame:
    return random_map_scores([r.truth for r in regions], [r.finding for r in regions], [r.shape for r in regions],
                             grids, input_size, n_draws=n_random, image_ids=[r.image_id for r in regions],
                             thresholds=thresholds, rule=rule, tolerance=tolerance, seed=seed)


def _join(scores: pd.DataFrame, random: pd.DataFrame) -> pd.DataFrame:
    """The model's rows beside the random-map rows of the same regions (same order)."""
    if len(scores) != len(random) or not (scores["image_id"].to_numpy() == random["image_id"].to_numpy()).all():
        raise ValueError("model and random-map rows must score the same regions in the same order")
    return pd.concat([scores, random.drop(columns=["image_id", "finding"])], axis=1)


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
    rule: BoxRule = WANG_RULE,
    n_random: int = 20,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a model's heatmaps on a DataBundle's ground truth: ``(table, per-item scores)``.

    What is scored against follows what the data offers (:func:`ground_truth_of`): lesion
    masks, scored at the model's input size where the heatmap is made, else boxes, scored
    on the heatmap resized to the full image where they were drawn
    (:func:`localization_regions`). Only (image, finding) pairs with ground truth count;
    ``limit`` caps the images scored.

    With ``n_random`` > 0 each scored region is also scored against that many random maps
    on the model's own CAM grid (:func:`random_maps`), whose means fill the per-item
    ``random:`` columns; :func:`compare_with_random` turns them into the paired comparison.
    The table is :func:`summarize_scores` of the model's scores. To score several CAM
    methods against the same random maps, use :func:`score_heatmaps`.
    """
    regions = localization_regions(data, part, findings, limit)
    scores = heatmap_scores(model, data, regions, part, method, thresholds, rule, tolerance, target_layers)
    if n_random > 0:
        grids, input_size = cam_grid(model, data, regions, part, target_layers)
        scores = _join(scores, _random_rows(regions, grids, input_size, n_random, thresholds, rule, tolerance, seed))
    return summarize_scores(scores, thresholds), scores


def _masks_of(data, dataset, i: int, image_id: str, label_names: list[str], wanted) -> dict[str, np.ndarray]:
    truth = {}
    for k, name in enumerate(label_names[: len(FINDINGS)]):
        if (wanted is None or name in wanted) and dataset.targets[i, k] > 0:
            mask = data.mask(image_id, name)
            if mask is not None and np.any(mask):
                truth[name] = np.asarray(mask, dtype=bool)
    return truth


def _boxes_of(data, image_id: str, wanted) -> dict[str, list]:
    truth: dict[str, list] = {}
    for box in data.boxes(image_id) or []:
        name = canonical(box.finding)
        if wanted is None or name in wanted:
            truth.setdefault(name, []).append(box)
    return truth


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask to ``shape`` (rows, cols), pixel centres kept."""
    H, W = shape
    rows = np.minimum(((np.arange(H) + 0.5) * mask.shape[0] / H).astype(int), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * mask.shape[1] / W).astype(int), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


# ----------------------------------------------------------------------------- several methods, one chance level

# The metrics the verdict speaks about: the rule-free pointing game and energy, and Wang et
# al.'s accuracy at a lenient and a strict threshold (each told with its AFP).
VERDICT_METRICS: tuple[str, ...] = ("pointing_game", "energy", "iobb@0.1", "iobb@0.5")
# Above this share of maps without a box, a method's scores say little about where the model looks.
EMPTY_MAPS_WARNING = 0.5


@dataclass
class HeatmapScores:
    """A model's heatmaps, per CAM method, against the data's ground truth and random maps.

    Random maps depend on the model's CAM grid, not on the method, so they are drawn and
    scored once (``random``, one row per region) and every method is compared with the
    same draws. ``scores[method]`` holds that method's rows with the ``random:`` columns
    joined, ready for :func:`compare_with_random`.
    """

    ground_truth: str  # MASKS or BOXES
    grids: list[tuple[int, int]]  # the model's CAM grid(s): where the random maps are drawn
    input_size: tuple[int, int]
    rule: BoxRule
    thresholds: tuple[float, ...]
    n_random: int  # random maps per region
    random: pd.DataFrame
    scores: dict[str, pd.DataFrame]
    n_bootstrap: int = 1000
    seed: int = 0
    _versus: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    @property
    def n_images(self) -> int:
        return int(self.random["image_id"].nunique())

    @property
    def grid_text(self) -> str:
        return " + ".join(f"{h}x{w}" for h, w in self.grids) or "none"

    def _method(self, method: str | None) -> str:
        method = method or self.methods[0]
        if method not in self.scores:
            raise ValueError(f"method {method!r} was not scored; scored: {self.methods}")
        return method

    def table(self) -> pd.DataFrame:
        """Per method, and for the random maps, per finding: :func:`summarize_scores`."""
        parts = {m: summarize_scores(s, self.thresholds) for m, s in self.scores.items()}
        parts[RANDOM_MAPS] = summarize_scores(self.random, self.thresholds, prefix="random:")
        return pd.concat(parts, names=["maps", "finding"])

    def empty_maps(self) -> pd.DataFrame:
        """Per method: maps scored and how many give no box (flat: no positive evidence for the finding)."""
        rows = []
        for m, s in self.scores.items():
            empty = s["n_boxes"].astype(int) == 0
            rows.append({"method": m, "maps": len(s), "without a box": int(empty.sum()),
                         "share": float(empty.mean()) if len(s) else math.nan})
        return pd.DataFrame(rows).set_index("method")

    def versus(self, method: str | None = None) -> pd.DataFrame:
        """:func:`compare_with_random` of one method (computed once)."""
        method = self._method(method)
        if method not in self._versus:
            self._versus[method] = compare_with_random(self.scores[method], n_bootstrap=self.n_bootstrap,
                                                       seed=self.seed)
        return self._versus[method]

    def side_by_side(self, method: str | None = None, thresholds: Sequence[float] = tuple(WANG_IOBB_CVPR)
                     ) -> pd.DataFrame:
        """Per finding and T(IoBB): the method's accuracy and AFP, the random maps', the difference
        with its 95% CI and verdict, and Wang et al.'s accuracy from each paper version."""
        method = self._method(method)
        versus = self.versus(method)
        thresholds = [t for t in thresholds if t in self.thresholds]
        rows = []
        for finding in versus.index.unique(level="finding"):
            for t in thresholds:
                acc, afp = versus.loc[(finding, _col("iobb", t))], versus.loc[(finding, _col("afp", t))]
                k = WANG_FINDINGS.index(finding) if finding in WANG_FINDINGS else None
                rows.append({
                    "finding": finding, "T(IoBB)": t, "n": int(acc["n"]), "images": int(acc["images"]),
                    method: acc["model"], f"{method} AFP": afp["model"],
                    RANDOM_MAPS: acc["random map"], f"{RANDOM_MAPS} AFP": afp["random map"],
                    "difference [95% CI]": difference_text(acc), "verdict": acc["verdict"],
                    WANG_CVPR: math.nan if k is None or t not in WANG_IOBB_CVPR else WANG_IOBB_CVPR[t][k],
                    WANG_V5: math.nan if k is None or t not in WANG_IOBB_V5 else WANG_IOBB_V5[t][k],
                })
        return pd.DataFrame(rows).set_index(["finding", "T(IoBB)"])

    def verdict(self, method: str | None = None, metrics: Sequence[str] = VERDICT_METRICS) -> str:
        """In words, per finding: does the method's heatmap beat the random maps (:func:`verdict_text`),
        preceded by a warning when most of its maps are empty."""
        method = self._method(method)
        lead = (f"{method} heatmaps of the model, scored on {self.ground_truth} of {self.n_images} images, "
                f"against {self.n_random} random maps per region drawn on the model's {self.grid_text} CAM grid.")
        empty = self.empty_maps().loc[method]
        if empty["maps"] and empty["share"] >= EMPTY_MAPS_WARNING:
            lead += (f"\nWarning: {int(empty['without a box'])} of {int(empty['maps'])} {method} maps "
                     f"({empty['share']:.0%}) are flat (no positive evidence for the finding) and give no "
                     "box: these scores say little about where this model looks.")
        return lead + "\n" + verdict_text(self.versus(method), method, metrics)

    def summary(self, method: str | None = None, metrics: Sequence[str] = VERDICT_METRICS) -> pd.DataFrame:
        """Per finding, for the report: the method against the random maps on ``metrics`` (each
        T(IoBB) accuracy with its AFP), the paired difference with its 95% CI, what it beats
        the random maps on, and Wang et al.'s T(IoBB) > 0.1 accuracy from each paper version."""
        method = self._method(method)
        versus = self.versus(method)
        rows = []
        for finding in versus.index.unique(level="finding"):
            v = versus.loc[finding]
            row: dict[str, Any] = {"finding": finding, "n": int(v["n"].iloc[0]), "images": int(v["images"].iloc[0])}
            for metric in metrics:
                label = short_words(metric)
                row[label] = v.loc[metric, "model"]
                if metric.startswith("iobb@"):
                    row[f"{label} AFP"] = v.loc["afp@" + metric.split("@")[1], "model"]
                row[f"{label}, {RANDOM_MAPS}"] = v.loc[metric, "random map"]
                if metric.startswith("iobb@"):
                    row[f"{label} AFP, {RANDOM_MAPS}"] = v.loc["afp@" + metric.split("@")[1], "random map"]
                row[f"{label} difference [95% CI]"] = difference_text(v.loc[metric])
            verdicts = v.loc[list(metrics), "verdict"]
            better = [short_words(m) for m in metrics if verdicts[m] == BETTER]
            row[f"beats the {RANDOM_MAPS} on"] = (", ".join(better) if better else
                                                  TOO_FEW if (verdicts == TOO_FEW).all() else "none")
            k = WANG_FINDINGS.index(finding) if finding in WANG_FINDINGS else None
            for source, table in ((WANG_CVPR, WANG_IOBB_CVPR), (WANG_V5, WANG_IOBB_V5)):
                row[f"{source}, T(IoBB) > 0.1"] = math.nan if k is None else table[0.1][k]
            rows.append(row)
        return pd.DataFrame(rows).set_index("finding")

    def pooled(self, metrics: Sequence[str] = VERDICT_METRICS) -> pd.DataFrame:
        """Every method against the random maps over all findings (the ``All`` rows, or the one
        finding's), on ``metrics``: one row per (method, metric)."""
        frames = {}
        for m in self.methods:
            versus = self.versus(m)
            key = "All" if "All" in versus.index.get_level_values("finding") else versus.index[0][0]
            frames[m] = versus.loc[key].loc[[x for x in metrics if x in versus.loc[key].index]]
        return pd.concat(frames, names=["method"])[["n", "images", "model", "random map", "difference", "ci_low",
                                                    "ci_high", "verdict"]]

    def notes(self, method: str | None = None) -> dict[str, Any]:
        """What :meth:`summary` was measured on and its verdict in words, to keep beside it."""
        method = self._method(method)
        return {"method": method, "ground truth": self.ground_truth, "images": self.n_images,
                "regions": int(len(self.random)), "CAM grid": self.grid_text, "random maps per region": self.n_random,
                "box rule": self.rule.describe(), "verdict": self.verdict(method)}


def score_heatmaps(
    model,
    data,
    methods: Sequence[str] = ("gradcam",),
    part: str = "test",
    findings: Sequence[str] | None = None,
    limit: int | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    tolerance: float = 0.0,
    target_layers=None,
    rule: BoxRule = WANG_RULE,
    n_random: int = 20,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> HeatmapScores:
    """Score each CAM method's heatmaps and, once, random maps on the model's CAM grid.

    Ground truth and regions as in :func:`evaluate_localization`. ``randomcam`` draws from
    NumPy's global generator: seed it (:func:`cxrlib.seed.set_seed`) for repeatable scores.
    """
    if not methods:
        raise ValueError("methods must name at least one CAM method, e.g. ['gradcam']")
    if n_random < 1:
        raise ValueError(f"n_random must be >= 1: the random maps are the chance level, got {n_random}")
    kind = ground_truth_of(data)
    regions = localization_regions(data, part, findings, limit)
    if not regions:
        raise ValueError(f"none of the {len(getattr(data, part).image_ids)} {part} images has {kind} for "
                         f"{'any finding' if findings is None else list(findings)}: there is nothing to score "
                         "(ChestX-ray14's boxed images are all in the official test list: use the official split "
                         "and have them downloaded)")
    grids, input_size = cam_grid(model, data, regions, part, target_layers)
    random = _random_rows(regions, grids, input_size, n_random, thresholds, rule, tolerance, seed)
    scores = {m: _join(heatmap_scores(model, data, regions, part, m, thresholds, rule, tolerance, target_layers),
                       random) for m in methods}
    return HeatmapScores(kind, grids, input_size, rule, tuple(thresholds), int(n_random), random, scores,
                         int(n_bootstrap), int(seed))


# ----------------------------------------------------------------------------- in words

_METRIC_WORDS = {"pointing_game": "the pointing game", "energy": "the energy share"}


def short_words(metric: str) -> str:
    """A metric's short name for a table column (``iobb@0.1`` -> ``T(IoBB) > 0.1``)."""
    kind, _, t = metric.partition("@")
    return {"pointing_game": "pointing game", "energy": "energy share"}.get(metric) or {
        "iobb": f"T(IoBB) > {t}", "iou": f"T(IoU) > {t}", "afp": f"AFP at T(IoBB) = {t}",
        "afp_iou": f"AFP at T(IoU) = {t}"}.get(kind, metric)


def metric_words(metric: str) -> str:
    """How a metric column is named in a sentence (``iobb@0.1`` -> ``T(IoBB) > 0.1 accuracy``)."""
    if metric in _METRIC_WORDS:
        return _METRIC_WORDS[metric]
    kind, _, t = metric.partition("@")
    return {"iobb": f"T(IoBB) > {t} accuracy", "iou": f"T(IoU) > {t} accuracy",
            "afp": f"false positives per image at T(IoBB) = {t}",
            "afp_iou": f"false positives per image at T(IoU) = {t}"}.get(kind, metric)


def difference_text(row) -> str:
    """``+0.120 [+0.050, +0.190]``: a comparison row's difference with its 95% CI (written by
    :func:`cxrlib.results.estimate_text`, the one convention)."""
    return estimate_text(row["difference"], row["ci_low"], row["ci_high"], signed=True)


def _clause(versus: pd.DataFrame, finding: str, metric: str) -> str:
    row = versus.loc[(finding, metric)]
    text = f"{metric_words(metric)} {row['model']:.3f} vs {row['random map']:.3f}"
    afp = "afp@" + metric.split("@")[1] if metric.startswith("iobb@") else None
    if afp and (finding, afp) in versus.index:
        other = versus.loc[(finding, afp)]
        text += f" with {other['model']:.2f} vs {other['random map']:.2f} false positives per image"
    return f"{text}: {difference_text(row)}"


def _join_words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "; ".join(items[:-1]) + "; and " + items[-1]


def verdict_text(versus: pd.DataFrame, name: str = "the model", metrics: Sequence[str] = VERDICT_METRICS) -> str:
    """Per finding, in words: on which metrics ``name``'s heatmaps beat the random maps (the 95%
    CI of the paired difference excludes 0), on which they do not, and where they are worse.

    ``versus`` is :func:`compare_with_random`'s table, indexed by (finding, metric) or with
    those two as columns (as read back from a run folder). Every sentence comes from its numbers;
    a finding with fewer than :data:`MIN_IMAGES` images is called too few to tell.
    """
    if "finding" in versus.columns:
        versus = versus.set_index(["finding", "metric"])
    metrics = [m for m in metrics if m in versus.index.unique(level="metric")]
    if not metrics:
        raise ValueError(f"the comparison holds none of the metrics {list(VERDICT_METRICS)}")
    lines, beaten, counted = [], 0, 0
    for finding in versus.index.unique(level="finding"):
        rows = versus.loc[finding].loc[metrics]
        images = int(rows["images"].max())
        head = f"- {finding} ({images} image{'s' if images != 1 else ''}): "
        if (rows["verdict"] == TOO_FEW).all():
            lines.append(head + f"too few images to tell whether {name} beats the random maps "
                         f"(at least {MIN_IMAGES} are needed).")
            continue
        by = {v: [m for m in metrics if rows.loc[m, "verdict"] == v] for v in (BETTER, NO_DIFFERENCE, WORSE)}
        parts = []
        if by[BETTER]:
            parts.append(f"{name} beats the random maps on " + _join_words([_clause(versus, finding, m) for m in by[BETTER]]) + ".")
        if by[NO_DIFFERENCE]:
            subject = "It does not beat them" if by[BETTER] else f"{name} does not beat the random maps"
            parts.append(f"{subject} on " + _join_words([_clause(versus, finding, m) for m in by[NO_DIFFERENCE]])
                         + " (the CI includes 0).")
        if by[WORSE]:
            subject = "It is worse than them" if parts else f"{name} is worse than the random maps"
            parts.append(f"{subject} on " + _join_words([_clause(versus, finding, m) for m in by[WORSE]]) + ".")
        lines.append(head + " ".join(parts))
        if finding != "All":
            counted += 1
            beaten += bool(by[BETTER])
    if counted:
        lines.insert(0, f"{name} beats the random maps on at least one of these metrics for {beaten} of the "
                        f"{counted} findings that have enough images"
                        + ("." if beaten == counted else f"; for the other {counted - beaten} it does not."))
    return "\n".join(lines)


__all__ = [
    "BOXES",
    "DEFAULT_THRESHOLDS",
    "EMPTY_MAPS_WARNING",
    "MASKS",
    "MIN_IMAGES",
    "RANDOM_MAPS",
    "UNLIMITED_RULE",
    "VERDICT_METRICS",
    "WANG_LEVELS",
    "WANG_RULE",
    "BoxRule",
    "HeatmapScores",
    "Region",
    "area_share",
    "box_scores",
    "cam_grid",
    "compare_with_random",
    "difference_text",
    "energy_share",
    "evaluate_localization",
    "ground_truth_of",
    "heatmap_scores",
    "iobb",
    "iou",
    "localization_regions",
    "localization_scores",
    "localization_table",
    "metric_words",
    "peak",
    "pointing_chance",
    "pointing_game",
    "predicted_boxes",
    "random_map_scores",
    "random_maps",
    "score_columns",
    "score_heatmaps",
    "score_one",
    "short_words",
    "summarize_scores",
    "verdict_text",
]
