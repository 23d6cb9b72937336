"""Another hospital: the second phantom site, a second real folder, and the AUROC drop with its CI."""
from __future__ import annotations

import numpy as np
import pytest

from cxrlib import external, experiments, profiles, results
from cxrlib.config import DataConfig
from cxrlib.data.phantom_source import phantom_spec
from cxrlib.metrics import auroc

from second_site import make_second_site


def _preds(n, signal, seed, k=3):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.3).astype(np.float32)
    return {"targets": y, "scores": y * signal + rng.normal(size=(n, k)), "patient_ids": np.arange(n) // 2,
            "ids": np.arange(n).astype(str), "label_names": np.array(["a", "b", "c"])}


def test_phantom_site_has_other_knobs_and_other_patients():
    base = DataConfig(num_phantoms=500, phantom_options={"confounder": 0.9}, limit=50)
    site = external.site_config(base)
    spec = phantom_spec(site)
    assert site.seed == base.seed + external.SITE_SEED_OFFSET and site.limit is None
    assert spec.devices == external.SITE_B["devices"] and spec.processing == external.SITE_B["processing"]
    assert spec.confounder == 0.0 and site.image_size == base.image_size
    assert external.site_config(base, num_phantoms=80).num_phantoms == 80
    with pytest.raises(ValueError, match="drawn, not read"):
        external.site_config(base, site_dir="/tmp")
    with pytest.raises(ValueError, match="unknown PhantomSpec knob"):
        external.site_config(base, knobs={"detector": 2})


def test_drop_by_hand_and_its_ci():
    strong, weak = _preds(600, 2.0, 0), _preds(600, 0.3, 1)
    table = external.site_drop(strong, weak, n_bootstrap=200)
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "internal AUROC"], auroc(strong["targets"], strong["scores"]))
    np.testing.assert_allclose(table.loc[["a", "b", "c"], "external AUROC"], auroc(weak["targets"], weak["scores"]))
    assert (table["drop CI low"].iloc[:3] > 0).all() and table.loc["mean", "drop CI low"] > 0
    words = external.drop_words(table)
    assert words.endswith("worse at the other site (the 95% CI excludes 0)"), words
    m = table.loc["mean"]
    assert f"drop {results.estimate_text(m['drop'], m['drop CI low'], m['drop CI high'], signed=True)}" in words
    same = external.site_drop(strong, _preds(600, 2.0, 2), n_bootstrap=200)
    assert same.loc["mean", "drop CI low"] < 0 < same.loc["mean", "drop CI high"]
    assert external.drop_words(same).endswith("no difference shown (the 95% CI includes 0)")
    # a finding without positives at the other site has an AUROC there but no drop CI
    none = _preds(600, 2.0, 3)
    none["targets"][:, 2] = 0
    t = external.site_drop(strong, none, n_bootstrap=50)
    assert np.isnan(t.loc["c", "external AUROC"]) and np.isnan(t.loc["c", "drop CI low"])
    with pytest.raises(ValueError, match="different labels"):
        external.site_drop(strong, {**weak, "label_names": np.array(["a", "b", "x"])})


def test_a_smoke_run_rescored_at_the_second_phantom_site(tmp_path):
    prof = profiles.load("smoke", runs_dir=str(tmp_path / "runs"), overrides=[f"data.cache_dir={tmp_path}"])
    run = experiments.run(prof.baseline)
    bundle = external.external_bundle(run.config.data, num_phantoms=120)
    images = external.all_images(bundle)
    assert len(images) == 120
    pred = external.predict(run.run_dir, images)
    assert pred["scores"].shape == (120, 14) and np.isfinite(pred["scores"]).all()
    np.testing.assert_array_equal(pred["ids"], images.image_ids)
    # the site's images differ from the training site's, drawn from other patients
    own = external.all_images(external.external_bundle(run.config.data, knobs={}, num_phantoms=120))
    assert (np.asarray(images.cache.images[images.slots[:5]]) != np.asarray(own.cache.images[own.slots[:5]])).any()


def test_a_second_real_folder_is_the_external_site(cxr14_sample, sample_cache, tmp_path):
    site = make_second_site(cxr14_sample, tmp_path)
    prof = profiles.load("sample", data_dir=str(cxr14_sample), overrides=[f"data.cache_dir={sample_cache}"])
    cfg = external.site_config(prof.baseline.data, site)
    assert cfg.data_dir == str(site.resolve())
    with pytest.warns(UserWarning, match="not downloaded"):
        images = external.all_images(external.external_bundle(prof.baseline.data, site))
    assert len(images) == 60
    with pytest.raises(ValueError, match="another archive"):
        external.site_config(prof.baseline.data, cxr14_sample)
    with pytest.raises(ValueError, match="give the second site's folder"):
        external.site_config(prof.baseline.data, None)
