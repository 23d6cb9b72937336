"""The results in sentences: each comparison of a results table (:func:`cxrlib.results.results_table`)
said in words made from its numbers, with the rule that decided it (:func:`conclusions`), and
notebook 12's stratified test set said likewise (:func:`strata_words`). Every number is written
through :mod:`cxrlib.results`' one convention; this module only composes sentences.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

import pandas as pd

from cxrlib.config import BASELINE
from cxrlib.inference import NEGATIVE_CONTROL
from cxrlib.results import (BETTER, CONTROL, DESIGN_CONTROL, MISSING, VERDICT_RULE, WORSE, Verdict, estimate_text,
                            interval_text, number_text, p_text, seed_words, verdict)


@dataclass(repr=False)
class Conclusions:
    """Each comparison of a results table in words made from its numbers, with the rule that
    decided it. Displays as a list in a notebook; :meth:`html` for the index page."""

    rule: str
    baseline: str | None  # the baseline's own numbers, or None when the table has no baseline
    controls: list[str]  # per control (shortcut, metadata): how far the baseline is above it
    comparisons: list[str]  # one sentence per other run

    @property
    def lines(self) -> list[str]:
        return ([self.baseline] if self.baseline else []) + self.controls + self.comparisons

    def html(self) -> str:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.lines)
        return f'<p class="note">{html.escape(self.rule)}</p><ul class="conclusions">{items}</ul>'

    def __repr__(self) -> str:
        return "\n".join([self.rule, ""] + [f"- {line}" for line in self.lines])

    def _repr_markdown_(self) -> str:
        return "\n".join([f"*{self.rule}*", ""] + [f"- {line}" for line in self.lines])


def conclusions(table: pd.DataFrame, baseline: str = BASELINE) -> Conclusions:
    """Each run of ``table`` (:func:`results_table`) against ``baseline`` in one
    sentence: the difference, its 95% CI and p-value and the verdict with its reason
    (:func:`verdict`; a null result says the difference it could have shown); the design's
    own controls first, and how far the baseline is above each control (the shortcut control,
    the metadata control), each in its own sentence with its own words. Nothing here
    is typed by hand: change a number in the table and the sentence changes with it.
    """
    rows = {r["experiment"]: r for _, r in table.iterrows()}
    base = rows.get(baseline)
    base_text, control_texts = None, []
    if base is not None:
        base_text = (f"The baseline ({_what(base)}) reaches a test mean AUROC of {number_text(base['mean AUROC'])} "
                     f"{seed_words(base)}, 95% CI {interval_text(base['CI low'], base['CI high'], missing=MISSING)} "
                     f"(over {base['CI covers'] or 'test patients'}) on {int(base['test images'])} test images "
                     f"({base['split']}).")
    comparisons, checks = [], []
    for name, r in rows.items():
        if name == baseline:
            continue
        if base is None:
            comparisons.append(f"{name}: no baseline run to compare with.")
            continue
        v = _row_verdict(r, base)
        if r["kind"] == DESIGN_CONTROL:
            checks.append(_design_control_words(name, r, v))
            continue
        if not math.isfinite(r["diff vs baseline"]):
            comparisons.append(f"{name} ({_what(r)}), mean AUROC {number_text(r['mean AUROC'])}, was not compared "
                               f"with the baseline: {r['reason'] or 'no paired comparison'}.")
            continue
        if r["kind"] == CONTROL:
            control_texts.append(_control_words(name, r, base))
            continue
        d = r["diff vs baseline"]
        outcome = {BETTER: "better than the baseline", WORSE: "worse than the baseline"}.get(v.label, v.label)
        comparisons.append(
            f"{name} ({_what(r)}): mean AUROC {number_text(r['mean AUROC'])} {seed_words(r)}, "
            f"{number_text(d, signed=True)} against the baseline, "
            f"95% CI {interval_text(r['diff CI low'], r['diff CI high'], signed=True, missing=MISSING)}, "
            f"{p_text(r['p-value'], sentence=True)}. Verdict: {outcome}, because {v.why}.")
    return Conclusions(rule=VERDICT_RULE, baseline=base_text, controls=control_texts,
                       comparisons=checks + comparisons)


def _row_verdict(r, base) -> Verdict:
    return verdict(r["diff vs baseline"], r["diff CI low"], r["diff CI high"], r["p-value"], r["MDD"], int(r["seeds"]),
                   int(base["seeds"]),
                   fitted=r["kind"] == CONTROL)


def _design_control_words(name: str, r, v: Verdict) -> str:
    """A control of the design in one sentence: what it is, what it should give, what it gave."""
    negative = name == NEGATIVE_CONTROL
    expected = "no difference" if negative else "worse"
    ok = (not v.called) if negative else (v.label == WORSE)
    if ok:
        meaning = ("as it should: the design does not call a difference between seeds of one experiment" if negative
                   else "as it should: the design detects a loss of this size on these test images")
    elif negative:
        meaning = "a false call, which the design makes about one time in twenty (bench/results/verdict_calibration.md)"
    else:
        meaning = ("the design missed a loss known to be there: this profile has too little power for differences "
                   "this small")
    return (f"{name} ({r['model']}): {number_text(r['diff vs baseline'], signed=True)}, 95% CI "
            f"{interval_text(r['diff CI low'], r['diff CI high'], signed=True, missing=MISSING)}, "
            f"{p_text(r['p-value'], sentence=True)}; expected {expected}, the verdict is {v.label}, {meaning}.")


# Each control's inputs as a sentence names them, by the name its run folder gives it (cxrlib.experiments).
_CONTROL_INPUTS = {"intensity statistics": "global intensity statistics", "metadata": "the metadata"}


def _control_words(name: str, r, base) -> str:
    """A control against the baseline in one sentence, in words right for what that control sees."""
    gap = -r["diff vs baseline"]  # the baseline minus the control, as the sentence reads
    v = _row_verdict(r, base)
    where = f"{number_text(gap)} above" if gap > 0 else f"{number_text(-gap)} below"
    gap_ci = interval_text(-r["diff CI high"], -r["diff CI low"], signed=True, missing=MISSING)
    numbers = f"95% CI of the gap {gap_ci}, {p_text(r['p-value'], sentence=True)}"
    inputs = _CONTROL_INPUTS.get(str(r["model"]), f"the inputs of {name}")
    sees = f" that sees {r['sees']}" if isinstance(r.get("sees"), str) and r.get("sees") else ""
    if v.label == WORSE:  # the control is worse than the baseline
        meaning = f"the baseline reads more from the images than {inputs} give"
    elif v.label == BETTER:
        meaning = f"{inputs} alone beat the baseline: its AUROCs say little about reading the images"
    else:
        meaning = (f"the gap is not shown ({v.why}); that is no evidence that {inputs} do as well, "
                   f"only that this profile cannot tell: read the AUROCs above with care")
    return (f"The baseline's mean AUROC ({number_text(base['mean AUROC'])}) is {where} that of {name} "
            f"({number_text(r['mean AUROC'])}; {r['model']}: a logistic regression per finding"
            f"{sees}): {numbers}. So {meaning}.")


def _what(r) -> str:
    if r.get("kind") == CONTROL:
        return str(r["model"])
    parts = [str(r["model"])] + [str(r[k]) for k in ("head", "wrapper") if r[k] and r[k] != "gap"]
    if r["loss"]:
        parts.append(f"{r['loss']} loss")
    if r["image size"] and not pd.isna(r["image size"]):
        parts.append(f"{int(r['image size'])} px")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- a stratified test set


def strata_words(table: pd.DataFrame) -> list[str]:
    """One sentence per model of a test set stratified by a confounder (``runs.read_strata``;
    rows ``(model, stratum)``, the first stratum all positives, then the strata, each against
    the same negatives; columns ``positives``, ``negatives``, ``<finding> AUROC``, ``low``,
    ``high``): every stratum's AUROC with its 95% CI, and the gap between the first two strata."""
    auroc_col = next(c for c in table.columns if str(c).endswith(" AUROC"))
    finding = str(auroc_col)[: -len(" AUROC")]
    lines = []
    for model in table.index.unique(level=0):
        rows = table.loc[model]
        said = [f"{estimate_text(r[auroc_col], r['low'], r['high'])} on the {int(r['positives'])} {stratum}"
                for stratum, r in rows.iloc[1:].iterrows()]
        whole = rows.iloc[0]
        line = (f"{model}: {finding} AUROC {estimate_text(whole[auroc_col], whole['low'], whole['high'])} over "
                f"{rows.index[0]} ({int(whole['positives'])}) of one test set; " + " and ".join(said)
                + f", each against the same {int(whole['negatives'])} negatives")
        if len(rows) >= 3:
            gap = rows.iloc[1][auroc_col] - rows.iloc[2][auroc_col]
            line += f" (gap {number_text(gap, signed=True)})"
        lines.append(line + ".")
    return lines
