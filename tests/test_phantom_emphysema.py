"""Emphysema on phantoms must be read from the chest's shape, not from the image's histogram.

Its hyperinflation, extra air and thinned markings each darken the whole image; at 64 px the
histogram control read Emphysema at 0.74 with them at their first strength
(bench/results/phantom_emphysema_control*.md). A small, seeded version of that bench.
"""
from __future__ import annotations

import numpy as np

from cxrlib import phantoms
from cxrlib.controls import cross_validated_scores, intensity_features
from cxrlib.metrics import auroc


def test_the_histogram_does_not_read_emphysema_at_64px():
    spec = phantoms.PhantomSpec(contrast=2.0)  # the cpu profile's phantoms
    table = phantoms.phantom_table(6000, seed=0, spec=spec)
    y = table["Emphysema"].to_numpy()
    pos = np.flatnonzero(y == 1)[:80]
    neg = np.flatnonzero(y == 0)[:320]
    rows = np.concatenate([pos, neg])
    x = intensity_features(phantoms.render_phantom(int(r), 64, seed=0, spec=spec).image for r in rows)
    target = y[rows][:, None].astype(np.float32)
    scores = cross_validated_scores(x, target, table["patient_id"].to_numpy()[rows], folds=5, seed=0)
    assert auroc(target, scores)[0] < 0.65
