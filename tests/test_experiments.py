"""Experiments: variants of a profile's baseline, and the comparison a notebook shows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlib import experiments, profiles, runs
from cxrlib.labels import FINDINGS


def test_variants_share_the_baseline():
    profile = profiles.load("smoke", overrides=["train.epochs=2"])
    configs = experiments.variants(profile, {"bce": {"train.loss": "bce"}, "focal": {"train.loss": "focal"}})
    assert [c.name for c in configs] == ["baseline", "focal"]
    assert all(c.train.epochs == 2 for c in configs)
    assert profile.config().fingerprint() == configs[0].fingerprint()
    named = experiments.backbones(profiles.load("smoke"), ["resnet18", "inception_v3"], max_steps={"inception_v3": 7})
    assert [c.name for c in named] == ["baseline", "inception_v3"]
    assert named[1].train.max_steps == 7 and named[1].data.image_size >= 75  # its stem's minimum
    with pytest.raises(ValueError, match="both named 'baseline'"):
        experiments.variants(profile, {"baseline": {"train.loss": "focal"}})


def test_compare_shows_summary_paired_difference_per_class_and_figure(fake_runs):
    results = {name: runs.load_run(fake_runs / name, with_model=False) for name in ("baseline", "fpn", "other_split")}
    cmp = experiments.compare(results, n_bootstrap=200)
    assert cmp.baseline == "baseline"  # the first run, as variants() lists it
    assert list(cmp.summary["experiment"]) == ["baseline", "fpn", "other_split"]
    assert list(cmp.paired["experiment"]) == ["fpn", "other_split"]
    fpn, other = cmp.paired.iloc[0], cmp.paired.iloc[1]
    table = runs.results_table(fake_runs, n_bootstrap=200)
    assert fpn["diff"] == pytest.approx(table.set_index("experiment").loc["fpn", "diff vs baseline"], abs=1e-4)
    assert 0 <= fpn["p-value"] < 0.05 and np.isnan(other["diff"]) and other["95% CI"] == "other test set"
    assert list(cmp.per_class.index) == list(FINDINGS) + ["mean (14)"]
    assert list(cmp.per_class.columns) == ["baseline", "fpn", "other_split"]
    roc = cmp.figure.axes[1]
    assert len(cmp.figure.axes) == 2 and len(roc.get_lines()) == 4  # three runs and the diagonal
    with pytest.raises(ValueError, match="'nope' is not among the runs"):
        experiments.compare(results, baseline="nope")


def test_compare_displays_every_part_once(fake_runs, monkeypatch):
    shown = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    results = {name: runs.load_run(fake_runs / name, with_model=False) for name in ("baseline", "fpn")}
    cmp = experiments.compare(results, n_bootstrap=50)
    cmp._ipython_display_()
    assert [type(x).__name__ for x in shown] == ["DataFrame", "DataFrame", "DataFrame", "Figure"]
    assert all(isinstance(x, pd.DataFrame) for x in shown[:3]) and shown[3] is cmp.figure
