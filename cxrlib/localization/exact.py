"""Does a heatmap find *this* image's lesion? An exact test against chance.

The question a localization score must answer is not "does the map hit lesions" (a map that
always points at the middle of the right lung hits many) but "does it hit the lesion of the
image it was computed on more often than it would hit another image's lesion of the same
finding". So chance is the model's **own maps scored against other images' regions**: the
same maps, the same sparsity, the same favourite location, with the link between a map and
its image cut. Whatever a map earns by being sparse, smooth or aimed at a typical place, it
earns under chance as well.

The test
--------
For one finding with ``n`` (map, region) items, :func:`cross_scores` scores every map against
every region: ``S[i, j]`` is map ``i`` scored on region ``j``. The model's aggregate is the
mean of the diagonal (each map on its own region). A chance set is the mean of
``S[i, pi(i)]`` for a random permutation ``pi`` of the regions; :func:`permutation_test` draws
``B`` of them and returns the Monte Carlo p-value ``(1 + #{chance >= model}) / (1 + B)``.
When maps carry no information about their own image's region, the model's pairing is one
more draw from the permutation distribution, so this p-value is exact (never below its
nominal rate) for any number of images and however rare the hits: no bootstrap, no normal
approximation, and a model without a single hit simply gets p = 1.

One primary metric per finding decides the verdict, chosen in advance:
:data:`PRIMARY_METRIC`, the pointing game (rule-free: no box rule, no threshold to tune).
Other accuracies may be tested beside it with Holm's correction across them
(:func:`holm`); AFP is reported, never tested (fewer false boxes is what a flat map achieves
best). ``bench/verdict_calibration.py`` measures the false-call rate with random, sparse
random and finding-blind maps as the model, at 6 to 200 images, and the power against a
localizer that hits 30 points above chance.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlib.cam import resize_heatmap
from cxrlib.localization.geometry import (WANG_RULE, BoxRule, _as_heatmap, _integral, _regions, _within,
                                          predicted_boxes)

PRIMARY_METRIC = "pointing_game"
ALPHA = 0.05
N_PERMUTATIONS = 999
# The least p-value B permutations can give is 1 / (1 + B); with fewer images than this the
# permutations repeat (n! of them in all), and the test cannot reach alpha.
MIN_IMAGES = 4  # 4! = 24 orderings: the smallest p is 1/24 = 0.042 < 0.05


def _metric(metric: str) -> tuple[str, float | None]:
    if metric in ("pointing_game", "energy"):
        return metric, None
    kind, _, t = metric.partition("@")
    if kind in ("iobb", "iou") and t:
        return kind, float(t)
    raise ValueError(f"metric {metric!r} is not testable against chance: use 'pointing_game', 'energy', "
                     "'iobb@T' or 'iou@T' (AFP is reported, not tested)")


def _maps_on(heatmaps: list[np.ndarray], shape: tuple[int, int]) -> list[np.ndarray]:
    return [h if h.shape == shape else resize_heatmap(h, shape) for h in heatmaps]


def cross_scores(heatmaps: Sequence[Any], regions: Sequence[Any], metric: str = PRIMARY_METRIC,
                 shapes: Sequence[tuple[int, int]] | None = None, rule: BoxRule = WANG_RULE) -> np.ndarray:
    """``S[i, j]``: heatmap ``i`` scored by ``metric`` on region ``j`` (float ``[n, n]``).

    ``regions[j]`` lives in the pixel grid ``shapes[j]`` (default: heatmap ``j``'s own shape,
    as :func:`cxrlib.localization.localization_scores` requires); a map is resized to a
    region's grid as the scoring of its own region resizes it. Metrics: ``pointing_game``
    (hit), ``energy`` (share of the map's mass inside), ``iobb@T`` / ``iou@T`` (some
    predicted box scores above T under ``rule``).
    """
    kind, threshold = _metric(metric)
    maps = [_as_heatmap(h) for h in heatmaps]
    n = len(maps)
    if len(regions) != n:
        raise ValueError(f"{n} heatmaps but {len(regions)} regions: give one region per heatmap")
    shapes = [m.shape for m in maps] if shapes is None else [(int(s[0]), int(s[1])) for s in shapes]
    if len(shapes) != n:
        raise ValueError(f"{n} heatmaps but {len(shapes)} region shapes")
    S = np.zeros((n, n))
    for shape in sorted(set(shapes)):
        cols = [j for j in range(n) if shapes[j] == shape]
        on = _maps_on(maps, shape)
        S[:, cols] = _scores_on_grid(on, [regions[j] for j in cols], shape, kind, threshold, rule)
    return S


def _scores_on_grid(maps, regions, shape, kind, threshold, rule) -> np.ndarray:
    parsed = [_regions(r, shape) for r in regions]
    if kind in ("pointing_game", "energy"):
        inside = np.stack([_within(items, k, shape) for k, items in parsed]).reshape(len(parsed), -1)
        flat = np.stack(maps).reshape(len(maps), -1)
        if kind == "pointing_game":
            return inside[:, np.argmax(flat, axis=1)].T.astype(np.float64)
        mass = np.maximum(flat, 0.0).astype(np.float64)
        total = mass.sum(1, keepdims=True)
        return np.where(total > 0, mass @ inside.T.astype(np.float64) / np.where(total > 0, total, 1), 0.0)
    boxes = [np.asarray(predicted_boxes(m, rule), dtype=np.float64).reshape(-1, 4) for m in maps]
    owner = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)]).astype(np.int64)
    p = np.concatenate(boxes) if owner.size else np.zeros((0, 4))
    out = np.zeros((len(maps), len(parsed)))
    if not len(p):
        return out  # no map predicts a box: nothing is localised anywhere
    x, y, w, h = p.T
    area = w * h
    for j, (k, items) in enumerate(parsed):
        if k == "mask":
            S = _integral(items[0])
            x0, y0, x1, y1 = (v.astype(np.int64) for v in (x, y, x + w, y + h))
            inter = (S[y1, x1] - S[y0, x1] - S[y1, x0] + S[y0, x0]).astype(np.float64)
            score = inter / area if kind == "iobb" else inter / (area + items[0].sum() - inter)
        else:
            score = np.zeros(len(p))
            for gx, gy, gw, gh in items:
                inter = (np.clip(np.minimum(x + w, gx + gw) - np.maximum(x, gx), 0.0, None)
                         * np.clip(np.minimum(y + h, gy + gh) - np.maximum(y, gy), 0.0, None))
                score = np.maximum(score, inter / area if kind == "iobb" else inter / (area + gw * gh - inter))
        hit = np.zeros(len(maps), dtype=bool)
        np.logical_or.at(hit, owner, score > threshold)
        out[:, j] = hit
    return out


def permutation_test(cross: np.ndarray, n_permutations: int = N_PERMUTATIONS, seed: int = 0,
                     strata: Sequence | None = None) -> dict[str, Any]:
    """The model's mean score (diagonal of ``cross``) against whole sets of permuted pairings.

    ``strata`` (e.g. the finding of each item) keeps every region within its stratum, so a
    pooled test compares each map only with regions of its own finding. Returns ``model``
    (the aggregate), ``chance`` (mean over the permutations), ``chance_q95``, ``p_value``
    (one-sided, higher is better: ``(1 + #{chance >= model}) / (1 + B)``), ``n`` and
    ``n_permutations``.
    """
    cross = np.asarray(cross, dtype=np.float64)
    n = len(cross)
    if cross.shape != (n, n):
        raise ValueError(f"cross scores must be square [n, n], got shape {cross.shape}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    if n == 0:
        return {"model": math.nan, "chance": math.nan, "chance_q95": math.nan, "p_value": math.nan, "n": 0,
                "n_permutations": 0}
    rng = np.random.default_rng(seed)
    strata = np.zeros(n, dtype=np.int64) if strata is None else pd.factorize(np.asarray(strata, dtype=object))[0]
    perm = np.empty((n_permutations, n), dtype=np.int64)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        order = np.argsort(rng.random((n_permutations, len(idx))), axis=1)
        perm[:, idx] = idx[order]
    chance = cross[np.arange(n)[None, :], perm].mean(axis=1)
    model = float(np.trace(cross) / n)
    # a tolerance, so that a chance set equal to the model's in exact arithmetic counts as equal
    at_least = int((chance >= model - 1e-12).sum())
    return {"model": model, "chance": float(chance.mean()), "chance_q95": float(np.quantile(chance, 0.95)),
            "p_value": (1 + at_least) / (1 + n_permutations), "n": int(n), "n_permutations": int(n_permutations)}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error at most alpha across the tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


BETTER, NO_EVIDENCE, TOO_FEW = "better than chance", "not shown better than chance", "too few images"


def chance_test(heatmaps: Sequence[Any], regions: Sequence[Any], findings: Sequence[str],
                metrics: Sequence[str] = (PRIMARY_METRIC,), shapes: Sequence[tuple[int, int]] | None = None,
                n_permutations: int = N_PERMUTATIONS, seed: int = 0, alpha: float = ALPHA,
                rule: BoxRule = WANG_RULE) -> pd.DataFrame:
    """Per finding (and ``All``, permuted within findings) and metric: the exact test against chance.

    The first of ``metrics`` is primary; with several, their p-values are Holm-adjusted within
    each finding and the verdict is ``better than chance`` when any adjusted p-value is below
    ``alpha``. Columns: ``n``, ``model``, ``chance`` (the mean over permutations), ``p_value``,
    ``p_holm``, ``verdict``. Fewer than :data:`MIN_IMAGES` items: ``too few images``.
    """
    findings = [str(f) for f in findings]
    if not (len(heatmaps) == len(regions) == len(findings)):
        raise ValueError(f"heatmaps ({len(heatmaps)}), regions ({len(regions)}) and findings ({len(findings)}) "
                         "must have the same length")
    crosses = {m: cross_scores(heatmaps, regions, m, shapes, rule) for m in metrics}
    return tests_by_finding(crosses, findings, n_permutations, seed, alpha)


def tests_by_finding(crosses: dict[str, np.ndarray], findings: Sequence[str], n_permutations: int = N_PERMUTATIONS,
                     seed: int = 0, alpha: float = ALPHA) -> pd.DataFrame:
    """:func:`chance_test` from cross-score matrices already made (``{metric: S}``, the first primary)."""
    findings = np.asarray([str(f) for f in findings], dtype=object)
    names = list(dict.fromkeys(findings))
    rows = []
    for name in names + (["All"] if len(names) > 1 else []):
        idx = np.arange(len(findings)) if name == "All" else np.flatnonzero(findings == name)
        results = [permutation_test(S[np.ix_(idx, idx)], n_permutations, seed, findings[idx])
                   for S in crosses.values()]
        adjusted = holm([r["p_value"] for r in results])
        for m, r, p_adj in zip(crosses, results, adjusted):
            word = TOO_FEW if len(idx) < MIN_IMAGES else BETTER if p_adj < alpha else NO_EVIDENCE
            rows.append({"finding": name, "metric": m, "n": r["n"], "model": r["model"], "chance": r["chance"],
                         "p_value": r["p_value"], "p_holm": float(p_adj), "verdict": word})
    return pd.DataFrame(rows).set_index(["finding", "metric"])


def peak_position(heatmap: Any) -> tuple[float, float]:
    """Where the pointing game looks: the maximum's pixel centre as a share of the height and width."""
    h = _as_heatmap(heatmap)
    r, c = np.unravel_index(int(np.argmax(h)), h.shape)
    return (r + 0.5) / h.shape[0], (c + 0.5) / h.shape[1]


def pointing_cross(peaks: Sequence[tuple[float, float]], regions: Sequence[Any],
                   shapes: Sequence[tuple[int, int]]) -> np.ndarray:
    """The pointing game's ``S[i, j]`` from each map's peak (:func:`peak_position`) alone.

    What a test set of full-resolution maps needs (they are scored one by one and not kept):
    map ``i``'s peak is placed in region ``j``'s grid at the same relative position. On one
    grid shape this is exactly :func:`cross_scores`; across shapes it ignores how resizing a
    map could move its maximum by a pixel.
    """
    peaks = np.asarray(peaks, dtype=np.float64).reshape(-1, 2)
    if not (len(peaks) == len(regions) == len(shapes)):
        raise ValueError(f"peaks ({len(peaks)}), regions ({len(regions)}) and shapes ({len(shapes)}) differ in number")
    S = np.zeros((len(peaks), len(regions)))
    for j, (region, shape) in enumerate(zip(regions, shapes)):
        shape = (int(shape[0]), int(shape[1]))
        kind, items = _regions(region, shape)
        inside = _within(items, kind, shape)
        rows = np.minimum((peaks[:, 0] * shape[0]).astype(np.int64), shape[0] - 1)
        cols = np.minimum((peaks[:, 1] * shape[1]).astype(np.int64), shape[1] - 1)
        S[:, j] = inside[rows, cols]
    return S
