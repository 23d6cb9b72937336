"""A localization comparison in words: metric names for tables and sentences, a difference with
its 95% CI, and per finding whether a heatmap beats the random maps - every number written
through :mod:`cxrlib.results`' convention, every sentence made from its numbers."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from cxrlib.localization.chance import MIN_IMAGES
from cxrlib.results import BETTER, NO_DIFFERENCE, TOO_FEW, WORSE, estimate_text

# The metrics the verdict speaks about: the rule-free pointing game and energy, and Wang et
# al.'s accuracy at a lenient and a strict threshold (each told with its AFP).
VERDICT_METRICS: tuple[str, ...] = ("pointing_game", "energy", "iobb@0.1", "iobb@0.5")
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

    ``versus`` is :func:`~cxrlib.localization.chance.compare_with_random`'s table, indexed by
    (finding, metric) or with those two as columns (as read back from a run folder). Every
    sentence comes from its numbers; a finding with fewer than :data:`MIN_IMAGES` images is
    called too few to tell.
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
