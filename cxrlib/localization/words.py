"""A localization evaluation in words: metric names for tables and sentences, a difference from
the random maps with its 95% CI (described, never a verdict), and per finding the exact test's
verdict against chance - every number written through :mod:`cxrlib.results`' convention, every
sentence made from its numbers."""
from __future__ import annotations

import pandas as pd

from cxrlib.results import estimate_text, number_text, p_text

# The metrics the tables describe beside the random maps: the rule-free pointing game and
# energy, and Wang et al.'s accuracy at a lenient and a strict threshold (each told with its
# AFP). The verdict is the exact test's on the pointing game alone.
DESCRIBED_METRICS: tuple[str, ...] = ("pointing_game", "energy", "iobb@0.1", "iobb@0.5")
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


def exact_text(exact: pd.DataFrame, name: str = "the model") -> str:
    """The exact test against chance in words, one line per finding (``All`` last): the hit rate
    of the model's maps on their own images' regions against the same maps on other images'
    regions of the finding, and the verdict (:func:`cxrlib.localization.exact.tests_by_finding`)."""
    lines = []
    for finding, r in exact.iterrows():
        where = "its regions" if finding == "All" else f"other images' {finding} regions"
        n = int(r["n"])
        lines.append(f"- {finding} ({n} region{'' if n == 1 else 's'}): {name} points into its own image's region in "
                     f"{number_text(r['model'])} of them, into {where} in {number_text(r['chance'])} (the same maps, "
                     f"re-paired): {r['verdict']} ({p_text(r['p_value'], sentence=True)}, exact).")
    lines.append("The verdict is the pointing game's, chosen in advance; the T(IoBB) accuracies, their AFP and the "
                 "comparison with random maps in the tables are described, not tested.")
    return "\n".join(lines)
