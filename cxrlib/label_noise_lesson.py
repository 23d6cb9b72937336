"""Notebook 10's plan and its positive control in words: the parts of the label-noise lesson
that train and compare. :mod:`cxrlib.label_noise` itself stays a leaf (the data and the
config import it), so what needs the experiments and the verdicts lives here.

The positive control is an arm trained on labels whose labeller never reports one finding
(:func:`cxrlib.label_noise.never_reported_config`): its answer is known before it runs, since
its labels hold no positive of that finding to learn it from, and every other finding's
labels are the baseline's (a negative control in the same runs).
:func:`cxrlib.results.finding_comparison` gives the design's verdict on each
(:func:`cxrlib.label_noise.positive_control_groups`); :func:`positive_control_words` says what
it showed, and whether its answer is known on this data at all.
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from cxrlib import label_noise, results
from cxrlib.experiments import seed_configs


def positive_control_words(table: pd.DataFrame, finding: str, source: str = "phantoms") -> str:
    """What the positive control showed, in sentences, from the first two rows of
    :func:`cxrlib.results.finding_comparison` over
    :func:`cxrlib.label_noise.positive_control_groups`: whether the
    answer is known here at all (real labels are not the truth; a baseline that never learned
    the finding has nothing to lose), then the verdict on the finding and on the others."""
    key = label_noise.never_reported_finding(finding)
    target, rest = table.iloc[0], table.iloc[1]
    base = results.estimate_text(target["base AUROC"], target["base CI low"], target["base CI high"])
    out = []
    if source != "phantoms":
        out.append(f"The labels of this {source} data are mined from reports, not known to be true: the arm is label "
                   f"noise on real labels (no {key} in its training and validation labels), scored against test "
                   "labels that are themselves noisy, so the answer below is expected, not known.")
    learned = bool(pd.notna(target["base CI low"]) and target["base CI low"] > 0.5)
    if not learned:
        out.append(f"The baseline did not learn {key} here (AUROC {base}, a CI that reaches chance): the arm has no "
                   f"learned ranking to lose, so this control cannot show its answer on this profile. A positive "
                   "control that fails says the instrument lacks power, not that the effect is absent.")
    else:
        out.append(f"The baseline learned {key} (AUROC {base}, above chance); without a single positive label of it "
                   f"the arm scores {results.number_text(target['other AUROC'])}: {target['verdict']}, because "
                   f"{target['reason']}.")
    out.append(f"{rest['comparison'].capitalize()}: {results.number_text(rest['base AUROC'])} against "
               f"{results.number_text(rest['other AUROC'])}, {rest['verdict']}, because {rest['reason']}.")
    return "\n".join(out)


def arm_seeds(profile, n: int) -> tuple[int, ...]:
    """The training seeds of the noisy-label arm: the first ``n`` of the profile's variant
    seeds, all of them for ``n`` 0 (a budget can spend its seeds on the positive control)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"NOISY_SEEDS={n!r}: expected a whole number of seeds >= 0 (0: all the variant seeds)")
    seeds = tuple(profile.seeds.variants)
    return seeds if n == 0 else seeds[:n]


def lesson_plan(profile, sensitivity: float | Mapping[str, float] = 0.8,
                specificity: float | Mapping[str, float] = 0.98, train_noise: bool = True,
                noisy_seeds: int = 0, never_reported: str = "") -> list:
    """Notebook 10's runs, each with its seeds: the baseline it re-scores (the baseline's
    seeds); with ``train_noise``, the baseline trained on this labeller's train/val labels
    (:func:`arm_seeds` of ``noisy_seeds``); with ``never_reported`` (a finding), the positive
    control :func:`cxrlib.label_noise.never_reported_config` (the variant seeds)."""
    base = profile.baseline
    plan = seed_configs(base, profile.seeds)
    if train_noise:
        noisy = label_noise.noisy_training_config(base, sensitivity, specificity)
        plan += seed_configs(noisy, arm_seeds(profile, noisy_seeds))
    if never_reported:
        plan += seed_configs(label_noise.never_reported_config(base, never_reported), profile.seeds)
    return plan
