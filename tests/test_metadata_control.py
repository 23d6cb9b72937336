"""The metadata control: what view position, age, sex and follow-up number alone achieve."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlib import controls, experiments, profiles, runs
from cxrlib.config import DataConfig
from cxrlib.data import load_data
from cxrlib.metrics import auroc


def _meta(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    ap = rng.random(n) < 0.5
    meta = pd.DataFrame({"view_position": np.where(ap, "AP", "PA"), "age": rng.integers(1, 95, n).astype(float),
                         "sex": np.where(rng.random(n) < 0.5, "M", "F"), "follow_up": rng.integers(0, 30, n)})
    # a finding twice as frequent on AP films, one that depends on nothing
    y = np.stack([rng.random(n) < np.where(ap, 0.3, 0.1), rng.random(n) < 0.2], axis=1).astype(np.float32)
    return meta, y


def test_features_by_hand():
    meta = pd.DataFrame({"view_position": ["AP", "PA"], "age": [50.0, np.nan], "sex": ["M", "F"], "follow_up": [0, 3]})
    with pytest.warns(UserWarning, match="age"):
        x, names = controls.metadata_features(meta)
    assert names == ["AP", "age/100", "(age/100)^2", "male", "log(1+follow_up)"]
    np.testing.assert_allclose(x, [[1, 0.5, 0.25, 1, 0], [0, 0.5, 0.25, 0, np.log(4)]])
    x, names = controls.metadata_features(meta, ["view_position"])
    assert names == ["AP"] and x.shape == (2, 1)
    with pytest.raises(ValueError, match="expected AP or PA"):
        controls.metadata_features(pd.DataFrame({"view_position": ["AP", "LL"]}))
    with pytest.raises(ValueError, match="no such metadata"):
        controls.metadata_features(pd.DataFrame({"follow_up": [1, 2]}), ["age"])


def test_view_position_alone_reads_a_finding_that_travels_with_it():
    meta, y = _meta()
    x, names = controls.metadata_features(meta, ["view_position"])
    fitted = controls.fit_control(x[:3000], y[:3000], n_features=1)
    a = auroc(y[3000:], fitted.predict_features(x[3000:]))
    # P(AP | finding) = 0.75 against P(AP | none) = 0.44: AUROC = 0.5 + (0.75 - 0.44) / 2 ~ 0.65
    assert 0.6 < a[0] < 0.7
    assert abs(a[1] - 0.5) < 0.05


def test_phantoms_offer_the_follow_up_number(tmp_path):
    bundle = load_data(DataConfig(num_phantoms=600, image_size=16, cache_dir=str(tmp_path), workers=1),
                       progress=False)
    meta = bundle.metadata("test")
    assert list(meta.columns) == ["follow_up"] and len(meta) == len(bundle.test)
    assert (meta.index == bundle.test.image_ids).all()
    # follow-ups count up within a patient, from 0
    frame = meta.assign(patient=bundle.test.patient_ids)
    assert (frame.groupby("patient")["follow_up"].min() >= 0).all() and meta["follow_up"].max() > 0
    pred = controls.metadata_control_predictions(bundle)
    assert pred["scores"].shape == bundle.test.targets.shape


def test_real_metadata_and_the_control_row(cxr14_sample, sample_cache, tmp_path):
    prof = profiles.load("sample", data_dir=str(cxr14_sample), runs_dir=str(tmp_path / "runs"),
                         overrides=[f"data.cache_dir={sample_cache}"])
    result = experiments.run_metadata_control(prof)
    assert runs.is_finished(result.run_dir)
    assert result.metrics["model"]["sees"].startswith("no pixel: only view_position, age, sex, follow_up")
    # a control run in the study's runs folder: the results table gives it a row beside the shortcut control
    assert result.run_dir in runs.experiment_runs(prof.runs_dir)[experiments.METADATA_CONTROL]
    assert runs.kind_of(runs.read_metrics(result.run_dir)) == runs.CONTROL
    again = experiments.run_metadata_control(prof)
    assert again.run_dir == result.run_dir


def test_ap_pa_confound_on_phantoms(tmp_path):
    """With PhantomSpec.ap_confound, sicker phantoms are more often AP films, drawn as AP films
    look, and the view position enters the metadata; PA films are drawn as before."""
    from cxrlib import phantoms

    spec = phantoms.PhantomSpec(ap_confound=1.0)
    table = phantoms.phantom_table(3000, spec=spec)
    from cxrlib.labels import FINDINGS
    findings = table[list(FINDINGS)].to_numpy()
    ap = np.array([phantoms.is_ap_film(i, 0, spec, findings[i]) for i in range(len(table))])
    sick = findings.any(axis=1)
    assert abs(ap[sick].mean() - 0.6) < 0.05 and abs(ap[~sick].mean() - 0.25) < 0.05
    assert not any(phantoms.is_ap_film(i, 0, phantoms.PhantomSpec(), findings[i]) for i in range(50))
    first_ap, first_pa = int(np.flatnonzero(ap)[0]), int(np.flatnonzero(~ap)[0])
    drawn = phantoms.render_phantom(first_ap, 64, spec=spec)
    assert drawn.view == "AP"
    assert (drawn.image != phantoms.render_phantom(first_ap, 64).image).any()
    np.testing.assert_array_equal(phantoms.render_phantom(first_pa, 64, spec=spec).image,
                                  phantoms.render_phantom(first_pa, 64).image)
    # the AP film's heart is magnified
    assert drawn.heart_mask.sum() > phantoms.render_phantom(first_ap, 64).heart_mask.sum()
    bundle = load_data(DataConfig(num_phantoms=600, image_size=16, cache_dir=str(tmp_path), workers=1,
                                  phantom_options={"ap_confound": 1.0}), progress=False)
    meta = bundle.metadata("train")
    assert list(meta.columns) == ["view_position", "follow_up"]
    assert set(meta["view_position"]) == {"AP", "PA"}
    pred = controls.metadata_control_predictions(bundle, columns=["view_position"])
    assert pred["scores"].shape == bundle.test.targets.shape
