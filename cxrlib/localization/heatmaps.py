"""A model's heatmaps scored on a DataBundle's ground truth, beside random maps on its own CAM
grid: :func:`score_heatmaps`, the one entry point, returns :class:`HeatmapScores`.

What is scored against follows what the data offers (:func:`ground_truth_of`): lesion masks,
scored at the model's input size where the heatmap is made, else boxes, scored on the heatmap
resized to the full image where they were drawn (:func:`localization_regions`). Random maps
depend on the model's CAM grid, not on the CAM method, so they are drawn and scored once and
every method is compared with the same draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlib.cam import heatmaps_all_findings, resize_heatmap, target_grids
from cxrlib.labels import FINDINGS, canonical
from cxrlib.localization.chance import compare_with_random, random_map_scores
from cxrlib.localization.exact import N_PERMUTATIONS, PRIMARY_METRIC, peak_position, pointing_cross, tests_by_finding
from cxrlib.localization.geometry import DEFAULT_THRESHOLDS, WANG_RULE, BoxRule
from cxrlib.localization.tables import _col, score_columns, score_one, summarize_scores
from cxrlib.localization.words import DESCRIBED_METRICS, difference_text, exact_text, short_words
from cxrlib.references import WANG_CVPR, WANG_FINDINGS, WANG_IOBB_CVPR, WANG_IOBB_V5, WANG_V5

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
            row = score_one(hm, r.truth, r.finding, r.image_id, thresholds, rule, tolerance)
            row["peak_y"], row["peak_x"] = peak_position(hm)  # for the exact test against chance
            rows.append(row)
    return pd.DataFrame(rows, columns=["image_id", "finding", *score_columns(thresholds), "peak_y", "peak_x"])


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
    regions: list[Region] = field(default_factory=list, repr=False)  # what was scored, for the exact test
    n_permutations: int = N_PERMUTATIONS
    _versus: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    _exact: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

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

    def exact(self, method: str | None = None) -> pd.DataFrame:
        """The exact test against chance of one method, per finding and ``All``: its pointing-game hit
        rate against the same maps scored on other images' regions of the finding
        (:mod:`~cxrlib.localization.exact`; computed once). The verdicts come from here."""
        method = self._method(method)
        if method not in self._exact:
            scores = self.scores[method]
            if len(self.regions) != len(scores) or "peak_y" not in scores:
                raise ValueError("the exact test needs the scored regions and each map's peak: score with "
                                 "score_heatmaps")
            cross = pointing_cross(scores[["peak_y", "peak_x"]].to_numpy(), [r.truth for r in self.regions],
                                   [r.shape for r in self.regions])
            self._exact[method] = tests_by_finding({PRIMARY_METRIC: cross}, list(scores["finding"]),
                                                   self.n_permutations, self.seed).droplevel("metric")
        return self._exact[method]

    def _published(self, finding: str, t: float) -> dict[str, float]:
        """Wang et al.'s T(IoBB) accuracy of ``finding`` from each paper version, where this
        scoring is against boxes as theirs was; nothing against phantom masks: a mask holds
        only the lesion, a box the lung around it too, so the two are never put in one row."""
        if self.ground_truth != BOXES:
            return {}
        k = WANG_FINDINGS.index(finding) if finding in WANG_FINDINGS else None
        return {source: math.nan if k is None or t not in table else table[t][k]
                for source, table in ((WANG_CVPR, WANG_IOBB_CVPR), (WANG_V5, WANG_IOBB_V5))}

    def side_by_side(self, method: str | None = None, thresholds: Sequence[float] = tuple(WANG_IOBB_CVPR)
                     ) -> pd.DataFrame:
        """Per finding and T(IoBB): the method's accuracy and AFP, the random maps', the difference
        with its 95% CI (described: the verdict is :meth:`exact`'s), and, when scored against
        boxes, Wang et al.'s accuracy from each paper version (never beside phantom mask scores)."""
        method = self._method(method)
        versus = self.versus(method)
        thresholds = [t for t in thresholds if t in self.thresholds]
        rows = []
        for finding in versus.index.unique(level="finding"):
            for t in thresholds:
                acc, afp = versus.loc[(finding, _col("iobb", t))], versus.loc[(finding, _col("afp", t))]
                rows.append({
                    "finding": finding, "T(IoBB)": t, "n": int(acc["n"]), "images": int(acc["images"]),
                    method: acc["model"], f"{method} AFP": afp["model"],
                    RANDOM_MAPS: acc["random map"], f"{RANDOM_MAPS} AFP": afp["random map"],
                    "difference [95% CI]": difference_text(acc),
                    **self._published(finding, t),
                })
        return pd.DataFrame(rows).set_index(["finding", "T(IoBB)"])

    def verdict(self, method: str | None = None, metrics: Sequence[str] = DESCRIBED_METRICS) -> str:
        """In words, per finding: does the method's heatmap find its own image's region more often than
        chance, by the exact test (:meth:`exact`, :func:`exact_text`), preceded by a warning when most
        of its maps are empty. ``metrics`` is accepted for callers; the verdict is the pointing game's."""
        method = self._method(method)
        lead = (f"{method} heatmaps of the model, scored on {self.ground_truth} of {self.n_images} images, "
                f"against {self.n_random} random maps per region drawn on the model's {self.grid_text} CAM grid.")
        empty = self.empty_maps().loc[method]
        if empty["maps"] and empty["share"] >= EMPTY_MAPS_WARNING:
            lead += (f"\nWarning: {int(empty['without a box'])} of {int(empty['maps'])} {method} maps "
                     f"({empty['share']:.0%}) are flat (no positive evidence for the finding) and give no "
                     "box: these scores say little about where this model looks.")
        return lead + "\n" + exact_text(self.exact(method), method)

    def summary(self, method: str | None = None, metrics: Sequence[str] = DESCRIBED_METRICS) -> pd.DataFrame:
        """Per finding, for the report: the method beside the random maps on ``metrics`` (each
        T(IoBB) accuracy with its AFP) with the paired difference and its 95% CI (described),
        the exact test's chance, p-value and ``verdict`` (the only one), and, when scored against
        boxes, Wang et al.'s T(IoBB) > 0.1 accuracy from each paper version."""
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
            exact = self.exact(method).loc[finding]
            row["pointing game, own maps on other images"] = exact["chance"]
            row["exact p"] = exact["p_value"]
            row["verdict"] = exact["verdict"]
            row.update({f"{source}, T(IoBB) > 0.1": value for source, value in self._published(finding, 0.1).items()})
            rows.append(row)
        return pd.DataFrame(rows).set_index("finding")

    def pooled(self, metrics: Sequence[str] = DESCRIBED_METRICS) -> pd.DataFrame:
        """Every method beside the random maps over all findings (the ``All`` rows, or the one
        finding's), on ``metrics``: one row per (method, metric), the difference with its 95% CI
        described (the verdict is :meth:`exact`'s, per method)."""
        frames = {}
        for m in self.methods:
            versus = self.versus(m)
            key = "All" if "All" in versus.index.get_level_values("finding") else versus.index[0][0]
            frames[m] = versus.loc[key].loc[[x for x in metrics if x in versus.loc[key].index]]
        return pd.concat(frames, names=["method"])[["n", "images", "model", "random map", "difference", "ci_low",
                                                    "ci_high"]]

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
    """Score each CAM method's heatmaps (``methods``) on ``data``'s ``part`` and, once, random
    maps on the model's CAM grid.

    Only (image, finding) pairs with ground truth count (:func:`localization_regions`);
    ``findings`` narrows them, ``limit`` caps the images scored. Each region is scored with
    ``rule`` at ``thresholds`` (:func:`~cxrlib.localization.tables.score_one`, pointing-game
    ``tolerance`` in pixels) and against ``n_random`` random maps drawn with ``seed``
    (:func:`~cxrlib.localization.chance.random_maps`); ``n_bootstrap`` resamples the paired
    comparison with them (:meth:`HeatmapScores.versus`). ``target_layers``: the CAM layers
    (default: the model's registered target layer). ``randomcam`` draws from NumPy's global
    generator: seed it (:func:`cxrlib.seed.set_seed`) for repeatable scores.
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
                         int(n_bootstrap), int(seed), regions)
