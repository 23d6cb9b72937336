"""Nuisance variation, the real sickness pattern, and the optional confounder of the phantoms."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cxrlib.config import DataConfig, ExperimentConfig
from cxrlib.data import load_data
from cxrlib.labels import FINDINGS
from cxrlib.phantoms import LUNG_FINDINGS, PhantomSpec, phantom_devices, phantom_table, render_phantom
from cxrlib.phantoms.spec import NUISANCE_KNOBS

PTX = FINDINGS.index("Pneumothorax")
# Knobs that change how the image is taken or what lies over the patient, not where the
# anatomy is: masks must stay exactly where they were.
IN_PLACE = ("processing", "exposure", "collimation", "overlying", "markers", "devices", "noise", "texture")
# Knobs whose effect is drawn by chance: at 4 it is near certain.
LIKELY = {"collimation": 4.0, "markers": 4.0, "devices": 4.0}


@pytest.fixture(scope="module")
def table():
    return phantom_table(400, seed=0)


def _sick_rows(table, n=3):
    return [int(i) for i in np.flatnonzero(table[list(FINDINGS)].to_numpy().sum(1) > 0)[:n]]


@pytest.mark.parametrize("knob", NUISANCE_KNOBS)
def test_each_knob_changes_the_image_and_leaves_labels_and_masks_where_they_say(knob, table):
    off = PhantomSpec(**{knob: 0.0})
    on = PhantomSpec(**{knob: LIKELY.get(knob, 1.0)})
    changed = 0
    for i in _sick_rows(table):
        a, b = render_phantom(i, 64, spec=off), render_phantom(i, 64, spec=on)
        changed += not np.array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.labels, b.labels)
        for p in (a, b):
            np.testing.assert_array_equal(p.masks.any(axis=(1, 2)), p.labels == 1)
            for k, name in enumerate(FINDINGS):
                if name in LUNG_FINDINGS and p.labels[k]:
                    assert not (p.masks[k] & ~p.lung_mask).any(), (knob, name)
        if knob in IN_PLACE:
            np.testing.assert_array_equal(a.masks, b.masks)
            np.testing.assert_array_equal(a.lung_mask, b.lung_mask)
    assert changed == 3, f"{knob} changed {changed} of 3 images"


def test_collimation_and_burned_in_marks_stay_off_the_lungs(table):
    off = PhantomSpec(collimation=0.0, markers=0.0)
    on = PhantomSpec(collimation=4.0, markers=4.0)
    touched = 0
    for i in range(0, 40, 4):
        a, b = render_phantom(i, 128, spec=off), render_phantom(i, 128, spec=on)
        diff = a.image != b.image
        touched += diff.any()
        assert not (diff & a.lung_mask).any(), i
    assert touched >= 8


def test_devices_do_not_depend_on_the_labels():
    t = phantom_table(4000, seed=0)
    sick = t[list(FINDINGS)].to_numpy().sum(1) > 0
    carried = np.array([bool(phantom_devices(i, seed=0)) for i in range(len(t))])
    # Same rate with and without findings (4 binomial standard errors).
    se = np.sqrt(carried.mean() * (1 - carried.mean()) * (1 / sick.sum() + 1 / (~sick).sum()))
    assert abs(carried[sick].mean() - carried[~sick].mean()) < 4 * se
    assert 0.3 < carried.mean() < 0.55
    # The devices of an image are those of its index: labels, contrast or lesions never enter.
    assert phantom_devices(7, 0, PhantomSpec(contrast=0.0)) == phantom_devices(7, 0, PhantomSpec(contrast=2.0))
    assert phantom_devices(7, 0, PhantomSpec(devices=0.0)) == []
    p = render_phantom(int(np.flatnonzero(carried)[0]), 64)
    assert p.devices


def test_patients_with_more_images_are_sicker_as_in_chestxray14():
    def by_size(spec):
        t = phantom_table(40000, seed=2, spec=spec)
        sick = t[list(FINDINGS)].to_numpy().sum(1) > 0
        n = t.groupby("patient_id")["image_id"].transform("count").to_numpy()
        return sick.mean(), sick[n == 1].mean(), sick[n >= 10].mean()

    overall, one, many = by_size(PhantomSpec())
    assert many - one > 0.2 and one < 0.35 and many > 0.55  # ChestX-ray14: 0.27 vs 0.57
    assert abs(overall - 0.46) < 0.02
    overall, one, many = by_size(PhantomSpec(sickness_pattern=0.0))
    assert abs(many - one) < 0.05 and abs(overall - 0.46) < 0.02


def _first_ptx(table) -> int:
    return int(np.flatnonzero(table["Pneumothorax"].to_numpy() == 1)[0])


def test_confounder_is_a_drain_on_training_pneumothorax_only(table):
    i = _first_ptx(table)
    spec = PhantomSpec(confounder=1.0)
    train, test = render_phantom(i, 64, spec=spec, training=True), render_phantom(i, 64, spec=spec, training=False)
    assert train.drain and not test.drain
    assert np.abs(train.image.astype(int) - test.image.astype(int)).sum() > 200
    np.testing.assert_array_equal(train.masks, test.masks)  # the drain is no finding
    # its own mask covers what it changed, and exists only where it is drawn
    changed = np.abs(train.image.astype(int) - test.image.astype(int)) > 20
    assert train.drain_mask.sum() >= 20 and not (changed & ~train.drain_mask).any()
    assert not test.drain_mask.any()
    np.testing.assert_array_equal(test.image, render_phantom(i, 64, training=True).image)  # off by default
    healthy = int(np.flatnonzero(table["Pneumothorax"].to_numpy() == 0)[0])
    assert not render_phantom(healthy, 64, spec=spec, training=True).drain


def test_confounder_in_a_bundle_appears_only_in_the_train_split(tmp_path):
    cfg = DataConfig(source="phantoms", num_phantoms=300, image_size=32, cache_dir=str(tmp_path), workers=1,
                     phantom_options={"confounder": 1.0})
    b = load_data(cfg, progress=False)
    spec = PhantomSpec(confounder=1.0)
    drains = {}
    for part in ("train", "val", "test"):
        ds = b.dataset(part)
        rows = np.flatnonzero(ds.targets[:, PTX] > 0)
        drains[part] = 0
        for r in rows:
            index = int(str(ds.image_ids[r]).split("_")[1].split(".")[0])
            with_drain = render_phantom(index, 32, spec=spec, training=True)
            without = render_phantom(index, 32, spec=spec, training=False)
            cached = ds.raw(int(r))
            expected = with_drain if part == "train" else without
            np.testing.assert_array_equal(cached, expected.image)
            drains[part] += expected.drain
    assert drains["train"] >= 3 and drains["val"] == drains["test"] == 0
    # The knob reaches the config and the cache key; an unknown knob is named.
    other = load_data(dataclasses.replace(cfg, phantom_options={}), progress=False)
    assert other.cache.key != b.cache.key
    with pytest.raises(ValueError, match="unknown PhantomSpec knob.*'drain'"):
        load_data(dataclasses.replace(cfg, phantom_options={"drain": 1}), progress=False)
    cfg2 = ExperimentConfig().with_overrides(["data.phantom_options.confounder=0.8"])
    assert cfg2.data.phantom_options == {"confounder": 0.8}


def test_knob_values_are_checked():
    with pytest.raises(ValueError, match="exposure"):
        PhantomSpec(exposure=-0.5)
    with pytest.raises(ValueError, match="devices.*at most 4"):
        PhantomSpec(devices=9)
    with pytest.raises(ValueError, match="confounder"):
        PhantomSpec(confounder=1.5)


def test_figures_of_knobs_and_of_phantoms_beside_real_images(cxr14_sample):
    import matplotlib

    matplotlib.use("Agg")
    from cxrlib import plots

    fig = plots.plot_phantom_knobs(size=48)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert len(titles) == len(NUISANCE_KNOBS) + 3 and "confounder" in titles[-1]
    assert plots.real_sample_dir(cxr14_sample) == cxr14_sample
    assert plots.real_sample_dir("/nonexistent") in (None, cxr14_sample)  # falls back to the shared sample
    real = plots.real_examples(cxr14_sample, 3, size=48)
    assert len(real) == 3 and all(r.shape == (48, 48) and r.dtype == np.uint8 for r in real)
    fig = plots.plot_side_by_side(plots.phantom_examples(3, 48), real)
    assert sum(bool(ax.images) for ax in fig.axes) == 6
    assert sum(bool(ax.images) for ax in plots.plot_side_by_side(plots.phantom_examples(2, 48)).axes) == 2


def test_with_confounder_turns_the_knob_and_keeps_the_rest():
    from cxrlib.data.phantom_source import phantom_spec, with_confounder

    cfg = DataConfig(num_phantoms=500, phantom_options={"devices": 0.5})
    on = with_confounder(cfg, 0.8)
    assert on.phantom_options == {"devices": 0.5, "confounder": 0.8} and cfg.phantom_options == {"devices": 0.5}
    assert phantom_spec(on) == PhantomSpec(devices=0.5, confounder=0.8)
    assert phantom_spec(cfg).confounder == 0.0
