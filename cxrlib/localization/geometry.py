"""Where one heatmap points, scored against one region: the pointing game, the energy share,
and the IoBB and IoU of the boxes a heatmap gives under a stated box rule.

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

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

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
