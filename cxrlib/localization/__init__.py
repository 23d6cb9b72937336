"""Does a heatmap point at the disease, and more often than a random map would?

The package, one layer on the next:

* :mod:`~cxrlib.localization.geometry`: one heatmap against one region (a box, several
  boxes or a mask, in the heatmap's pixel grid): the pointing game and its chance level,
  the energy share, and Wang et al.'s T(IoBB) / T(IoU) with AFP under a stated
  :class:`BoxRule` (:data:`WANG_RULE`; why the rule is needed is told there).
* :mod:`~cxrlib.localization.tables`: a row of every score per (heatmap, region) and the
  means per finding.
* :mod:`~cxrlib.localization.chance`: random maps on the model's own CAM grid, scored by
  the same rule, and the model's paired difference from them over images (described, never
  a verdict).
* :mod:`~cxrlib.localization.exact`: the exact test against chance: the model's own maps
  scored on other images' regions of the same finding (a permutation test), so that a map's
  sparsity or favourite place earns nothing; the pointing game decides.
* :mod:`~cxrlib.localization.heatmaps`: a model's CAM heatmaps on a DataBundle's ground
  truth (lesion masks where offered, else boxes): :func:`score_heatmaps`, the one entry
  point, returns :class:`HeatmapScores` (tables, comparison, verdict, summary for the report).
* :mod:`~cxrlib.localization.words`: the tables' names and the exact test's verdict in words,
  written through :mod:`cxrlib.results`' convention.

Everything public is importable from ``cxrlib.localization`` itself.
"""
from cxrlib.localization.chance import compare_with_random, random_map_scores, random_maps
from cxrlib.localization.exact import (BETTER, MIN_IMAGES, NO_EVIDENCE, PRIMARY_METRIC, TOO_FEW, chance_test,
                                       cross_scores, holm, permutation_test)
from cxrlib.localization.geometry import (DEFAULT_THRESHOLDS, UNLIMITED_RULE, WANG_LEVELS, WANG_RULE, BoxRule,
                                          area_share, box_scores, energy_share, iobb, iou, peak, pointing_chance,
                                          pointing_game, predicted_boxes)
from cxrlib.localization.heatmaps import (BOXES, EMPTY_MAPS_WARNING, MASKS, RANDOM_MAPS, HeatmapScores, Region,
                                          cam_grid, ground_truth_of, heatmap_scores, localization_regions,
                                          score_heatmaps)
from cxrlib.localization.tables import (localization_scores, localization_table, score_columns, score_one,
                                        summarize_scores)
from cxrlib.localization.words import DESCRIBED_METRICS, difference_text, exact_text, metric_words, short_words

__all__ = [
    "BETTER",
    "BOXES",
    "DEFAULT_THRESHOLDS",
    "DESCRIBED_METRICS",
    "EMPTY_MAPS_WARNING",
    "MASKS",
    "MIN_IMAGES",
    "PRIMARY_METRIC",
    "NO_EVIDENCE",
    "RANDOM_MAPS",
    "TOO_FEW",
    "UNLIMITED_RULE",
    "WANG_LEVELS",
    "WANG_RULE",
    "BoxRule",
    "HeatmapScores",
    "Region",
    "area_share",
    "box_scores",
    "cam_grid",
    "chance_test",
    "compare_with_random",
    "cross_scores",
    "difference_text",
    "energy_share",
    "exact_text",
    "ground_truth_of",
    "heatmap_scores",
    "holm",
    "iobb",
    "iou",
    "localization_regions",
    "localization_scores",
    "localization_table",
    "metric_words",
    "peak",
    "pointing_chance",
    "permutation_test",
    "pointing_game",
    "predicted_boxes",
    "random_map_scores",
    "random_maps",
    "score_columns",
    "score_heatmaps",
    "score_one",
    "short_words",
    "summarize_scores",
]
