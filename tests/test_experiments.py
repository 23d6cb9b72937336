"""Experiments: variants of a profile's baseline, and the comparison a notebook shows."""
from __future__ import annotations

import dataclasses
import json

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


def test_the_notebooks_variants_change_one_setting_each():
    profile = profiles.load("smoke")
    size = profile.baseline.data.image_size
    fifteen = experiments.backbones(profile, ["resnet18"], fifteen_labels=True)
    assert [c.name for c in fifteen] == ["baseline", "15labels"] and fifteen[1].data.include_no_finding
    fpn = experiments.head_variants(profile, "fpn")
    assert [c.name for c in fpn] == ["baseline", "fpn"] and fpn[1].model.head == "fpn"
    assert fpn[0].fingerprint() == profile.config().fingerprint()  # the shared baseline
    on = experiments.head_variants(profile, "psp", backbone="densenet121")
    assert [c.name for c in on] == ["baseline_densenet121", "psp"]
    assert {c.model.name for c in on} == {"densenet121"} and on[0].model.head == "gap"
    ms = experiments.multiscale_variants(profile, 3)[1]
    assert ms.data.image_size == 3 * size and ms.model.wrapper == "multiscale"
    assert ms.model.options["low_res"] == pytest.approx(1 / 3)  # the deep branch sees the baseline's size
    with pytest.raises(ValueError, match="SCALE must be a whole number"):
        experiments.multiscale_variants(profile, 1.5)
    two = experiments.two_stage_variants(profile, (3, 1, 2))[1]
    assert two.model.wrapper == "two_stage" and list(two.train.stage_epochs) == [3, 1, 2]
    losses = experiments.loss_variants(profile, ["bce", "focal", "asymmetric"])
    assert [(c.name, c.train.loss) for c in losses] == [("baseline", "bce"), ("focal", "focal"),
                                                         ("asymmetric", "asymmetric")]


def test_the_check_plans_with_the_calls_the_notebooks_make():
    """notebook_configs maps each notebook to the function its code cell calls, once per seed."""
    profile = profiles.load("smoke")
    calls = {
        "01_baselines": ({"MODELS": ["resnet18", "densenet121"], "FIFTEEN_LABELS": True},
                         experiments.backbones(profile, ["resnet18", "densenet121"], fifteen_labels=True)),
        "02_fpn": ({"HEAD": "fpn", "BACKBONE": ""}, experiments.head_variants(profile, "fpn")),
        "03_psp": ({"HEAD": "psp", "BACKBONE": "densenet121"},
                   experiments.head_variants(profile, "psp", "densenet121")),
        "04_multiscale": ({"SCALE": 2}, experiments.multiscale_variants(profile, 2)),
        "05_two_stage": ({"STAGE_EPOCHS": [1, 1, 1]}, experiments.two_stage_variants(profile, [1, 1, 1])),
        "06_losses": ({"LOSSES": ["bce", "focal"]}, experiments.loss_variants(profile, ["bce", "focal"])),
    }
    for stem, (params, configs) in calls.items():
        planned = experiments.notebook_configs(profile, stem, params)
        expected = [(c.name, s, dataclasses.replace(c, seed=s).fingerprint()) for c in configs
                    for s in profile.seeds.of(c)]
        assert [(c.name, c.seed, c.fingerprint()) for c in planned] == expected, stem
    assert experiments.notebook_configs(profile, "09_results", {}) == []


def test_the_clinical_lesson_plans_the_runs_of_06():
    """11 trains nothing of its own: with LOSSES empty it plans exactly what 06 plans with the
    same profile (the profile's 06 LOSSES, else the study's default), so every run is reused."""
    smoke = profiles.load("smoke")  # smoke.yaml sets 06's LOSSES: [bce, focal]
    assert experiments.clinical_losses(smoke, {"LOSSES": []}) == ["bce", "focal"]
    assert experiments.clinical_losses(smoke, {"LOSSES": ["bce", "weighted_bce"]}) == ["bce", "weighted_bce"]
    bare = dataclasses.replace(smoke, notebooks={})
    assert experiments.clinical_losses(bare, {"LOSSES": []}) == profiles.NOTEBOOK_DEFAULTS["06_losses"]["LOSSES"]
    for profile in (smoke, profiles.load("cpu"), bare):
        losses = profile.notebook_value("06_losses", "LOSSES")
        planned = experiments.notebook_configs(profile, "11_clinical_evaluation", {"LOSSES": []})
        assert [c.fingerprint() for c in planned] == [
            c.fingerprint() for c in experiments.notebook_configs(profile, "06_losses", {"LOSSES": losses})]
