"""Label noise as report mining makes it, and the AUROC cap it implies, against simulation on phantom truth."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cxrlib import label_noise, label_noise_lesson, phantoms
from cxrlib.config import DataConfig, ExperimentConfig, TrainConfig
from cxrlib.labels import FINDINGS, NO_FINDING
from cxrlib.metrics import auroc


def _truth(n: int = 20000, finding: str = "Effusion"):
    table = phantoms.phantom_table(n, seed=3)
    return table["image_id"].to_numpy(), table[finding].to_numpy(dtype=np.float32)


def test_flips_miss_more_than_invent_at_the_asked_rates():
    ids, y = _truth()
    noisy = label_noise.flip_labels(y[:, None], ids, 0.7, 0.95, seed=1, label_names=["Effusion"])[:, 0]
    kept = noisy[y == 1].mean()
    invented = noisy[y == 0].mean()
    assert abs(kept - 0.7) < 0.03 and abs(invented - 0.05) < 0.01
    assert (noisy != y).any()


def test_flips_depend_on_seed_image_and_finding_only():
    ids, y = _truth(3000)
    y2 = np.stack([y, y], axis=1)
    a = label_noise.flip_labels(y2, ids, 0.6, 0.9, seed=5, label_names=["Effusion", "Edema"])
    again = label_noise.flip_labels(y2, ids, 0.6, 0.9, seed=5, label_names=["Effusion", "Edema"])
    np.testing.assert_array_equal(a, again)
    # a subset in another order gets the same labels image by image
    order = np.random.default_rng(0).permutation(len(ids))[:500]
    sub = label_noise.flip_labels(y2[order], ids[order], 0.6, 0.9, seed=5, label_names=["Effusion", "Edema"])
    np.testing.assert_array_equal(sub, a[order])
    # two findings of one image draw independently, and another seed draws again
    assert (a[:, 0] != a[:, 1]).any()
    other = label_noise.flip_labels(y2, ids, 0.6, 0.9, seed=6, label_names=["Effusion", "Edema"])
    assert (other != a).any()


def test_per_finding_rates_and_no_finding_recomputed():
    ids, _ = _truth(2000)
    y = np.zeros((2000, 15), np.float32)
    y[:, FINDINGS.index("Edema")] = 1
    names = list(FINDINGS) + [NO_FINDING]
    noisy = label_noise.flip_labels(y, ids, {"Edema": 0.5}, 1.0, seed=0, label_names=names)
    edema = noisy[:, FINDINGS.index("Edema")]
    assert 0.4 < edema.mean() < 0.6
    assert noisy[:, FINDINGS.index("Effusion")].sum() == 0  # a finding not named keeps sensitivity 1, sp 1
    np.testing.assert_array_equal(noisy[:, -1], 1 - edema)


def test_observed_auroc_matches_simulation_on_phantom_truth():
    ids, y = _truth()
    rng = np.random.default_rng(0)
    for d in (0.8, 1.6, 8.0):  # weak, good, near-perfect models
        scores = y * d + rng.normal(size=len(y))
        true_auc = auroc(y[:, None], scores[:, None])[0]
        for se, sp in ((0.8, 0.98), (0.6, 0.9), (0.95, 0.99)):
            noisy = label_noise.flip_labels(y[:, None], ids, se, sp, seed=int(d * 10), label_names=["Effusion"])
            measured = auroc(noisy, scores[:, None])[0]
            predicted = label_noise.observed_auroc(true_auc, se, sp, y.mean())
            assert abs(measured - predicted) < 0.015, (d, se, sp, measured, predicted)
            back = label_noise.corrected_auroc(measured, se, sp, y.mean())
            assert abs(back - true_auc) < 0.03


def test_cap_is_what_a_perfect_model_measures():
    ids, y = _truth()
    noisy = label_noise.flip_labels(y[:, None], ids, 0.8, 0.95, seed=2, label_names=["Effusion"])
    measured = auroc(noisy, y[:, None])[0]  # the truth itself as the score
    cap = label_noise.auroc_cap(0.8, 0.95, y.mean())
    assert abs(measured - cap) < 0.015
    assert cap < 0.85


def test_cap_by_hand():
    # prevalence 0.1, se 0.8, sp 0.9: PPV = .08 / (.08 + .09), NPV = .81 / (.81 + .02)
    ppv, npv = 0.08 / 0.17, 0.81 / 0.83
    assert label_noise.auroc_cap(0.8, 0.9, 0.1) == pytest.approx((ppv + npv) / 2)
    assert label_noise.observed_auroc(0.5, 0.8, 0.9, 0.1) == pytest.approx(0.5)
    assert label_noise.auroc_cap(1.0, 1.0, 0.3) == pytest.approx(1.0)
    np.testing.assert_allclose(label_noise.auroc_cap([1.0, 0.8], [1.0, 0.9], [0.3, 0.1]), [1.0, (ppv + npv) / 2])
    assert label_noise.noisy_prevalence(0.8, 0.9, 0.1) == pytest.approx(0.17)
    with pytest.raises(ValueError, match="prevalence"):
        label_noise.auroc_cap(0.8, 0.9, 0.0)


def test_config_checks_and_fingerprint():
    clean = ExperimentConfig()
    noisy = clean.with_overrides({"data.label_noise": ["train"], "data.label_sensitivity": 0.8})
    assert noisy.fingerprint() != clean.fingerprint()
    other = clean.with_overrides({"data.label_noise": ["train"], "data.label_sensitivity": 0.7})
    assert other.fingerprint() != noisy.fingerprint()
    again = ExperimentConfig.from_dict(json.loads(noisy.to_json()))
    assert again.fingerprint() == noisy.fingerprint() and again.data.label_noise == ["train"]
    # a clean config hashes as it did before the label-noise fields existed, so its runs are
    # reused (the value computed by the code without them, on real data: no phantom code in it;
    # with float32 weights, as every run stored them then)
    real = ExperimentConfig(data=DataConfig(source="chestxray14", data_dir="x"), train=TrainConfig(weights_dtype="float32"))
    assert real.fingerprint() == "2245c95c66b51b4f"
    with pytest.raises(ValueError, match="label_noise"):
        DataConfig(label_noise=["training"], label_sensitivity=0.8)
    with pytest.raises(ValueError, match="nothing would flip"):
        DataConfig(label_noise=["test"])
    with pytest.raises(ValueError, match="names no part"):
        DataConfig(label_specificity=0.9)
    with pytest.raises(ValueError, match="label_sensitivity"):
        DataConfig(label_noise=["test"], label_sensitivity=1.2)
    with pytest.raises(ValueError, match="not one of the 14 findings"):
        DataConfig(label_noise=["test"], label_sensitivity={"Edemma": 0.5})


def test_load_data_flips_only_the_named_parts(tmp_path):
    from cxrlib.data import load_data

    cfg = DataConfig(num_phantoms=400, image_size=16, cache_dir=str(tmp_path), workers=1)
    clean = load_data(cfg, progress=False)
    noisy = load_data(dataclasses.replace(cfg, label_noise=["train"], label_sensitivity=0.5,
                                          label_specificity=0.9), progress=False)
    assert (noisy.train.targets != clean.train.targets).any()
    np.testing.assert_array_equal(noisy.clean_targets["train"], clean.train.targets)
    np.testing.assert_array_equal(noisy.test.targets, clean.test.targets)
    np.testing.assert_array_equal(noisy.val.targets, clean.val.targets)
    assert clean.clean_targets == {}
    # the images are the same cache: noise is in the labels only
    assert noisy.cache.folder == clean.cache.folder


def test_lesson_table_rescoring_one_run():
    ids, y = _truth(8000)
    rng = np.random.default_rng(4)
    ys = np.stack([y, 1 - y], axis=1)
    pred = {"ids": ids, "targets": ys, "scores": ys * 1.5 + rng.normal(size=ys.shape),
            "label_names": np.array(["Effusion", "Edema"])}
    table = label_noise.test_noise_table(pred, {"Effusion": 0.7}, 0.95, seed=1)
    assert list(table.index) == ["Effusion", "Edema", "mean"]
    row = table.loc["Effusion"]
    assert row["AUROC vs noisy labels"] < row["AUROC vs truth"]
    assert abs(row["AUROC vs noisy labels"] - row["predicted"]) < 0.02
    assert row["cap"] == pytest.approx(label_noise.auroc_cap(0.7, 0.95, y.mean()))
    caps = label_noise.cap_table(0.8, 0.98)
    assert caps["cap"].idxmin() == 0.002 and caps.loc[0.002, "cap"] < 0.6  # rare findings are capped hardest


def test_noisy_training_config_lives_apart():
    base = ExperimentConfig(runs_dir="runs/x")
    cfg = label_noise.noisy_training_config(base, 0.8, 0.98)
    assert cfg.runs_dir == "runs/x/label_noise" and cfg.data.label_noise == ["train", "val"]
    assert cfg.model == base.model and cfg.seed == base.seed and cfg.train == base.train
    assert cfg.fingerprint() != dataclasses.replace(base, name=cfg.name).fingerprint()


def test_a_finding_never_reported_loses_every_positive_and_nothing_else():
    """The positive control's labels: no positive of the finding left, every other label as it was."""
    table = phantoms.phantom_table(3000, seed=3)
    y = table[list(FINDINGS)].to_numpy(dtype=np.float32)
    base = ExperimentConfig(runs_dir="runs/x")
    cfg = label_noise.never_reported_config(base, "Effusion")
    assert cfg.name == "never_reported_effusion" and cfg.runs_dir == "runs/x/label_noise"
    assert cfg.data.label_noise == ["train", "val"] and cfg.data.label_sensitivity == {"Effusion": 0.0}
    assert cfg.model == base.model and cfg.train == base.train and cfg.seed == base.seed
    noisy = label_noise.flip_labels(y, table["image_id"].to_numpy(), cfg.data.label_sensitivity,
                                    cfg.data.label_specificity, seed=cfg.data.seed)
    k = FINDINGS.index("Effusion")
    assert y[:, k].sum() > 100 and noisy[:, k].sum() == 0
    np.testing.assert_array_equal(np.delete(noisy, k, axis=1), np.delete(y, k, axis=1))
    assert cfg.fingerprint() != label_noise.never_reported_config(base, "Edema").fingerprint()
    with pytest.raises(ValueError, match="never-reported finding 'Efusion'"):
        label_noise.never_reported_config(base, "Efusion")
    groups = label_noise.positive_control_groups("Effusion")
    assert list(groups)[:2] == ["Effusion (never reported)", "the other 13 (labels untouched)"]
    assert groups["Effusion (never reported)"] == ["Effusion"] and "Effusion" not in groups[list(groups)[1]]
    assert len(groups[list(groups)[1]]) == 13 and list(groups)[2:] == list(FINDINGS)


def test_the_lesson_plans_each_arm_with_its_seeds():
    from cxrlib import profiles

    profile = profiles.load("cpu", overrides=["seeds.variants=[0, 1, 2]", "seeds.baseline=[0, 1, 2]"])
    plan = label_noise_lesson.lesson_plan(profile, 0.8, 0.98, True, noisy_seeds=1, never_reported="Effusion")
    seeds = {}
    for cfg in plan:
        seeds.setdefault(cfg.name, []).append(cfg.seed)
    assert seeds == {"baseline": [0, 1, 2], "noisy_labels": [0], "never_reported_effusion": [0, 1, 2]}
    assert label_noise_lesson.arm_seeds(profile, 0) == (0, 1, 2) and label_noise_lesson.arm_seeds(profile, 2) == (0, 1)
    assert [c.name for c in label_noise_lesson.lesson_plan(profile, train_noise=False)] == ["baseline"] * 3
    with pytest.raises(ValueError, match="NOISY_SEEDS"):
        label_noise_lesson.arm_seeds(profile, -1)


def _control_table(base_low: float, verdict: str) -> "pd.DataFrame":
    import pandas as pd

    row = {"base AUROC": 0.9, "base CI low": base_low, "base CI high": 0.97, "other AUROC": 0.6,
           "verdict": verdict, "reason": "the 95% CI of the difference excludes 0"}
    return pd.DataFrame([{**row, "comparison": "Effusion (never reported)"},
                         {**row, "comparison": "the other 13 (labels untouched)", "base AUROC": 0.6,
                          "verdict": "no difference larger than 0.050 shown"}])


def test_the_control_says_when_its_answer_is_known():
    learned = label_noise_lesson.positive_control_words(_control_table(0.83, "worse"), "Effusion")
    assert "The baseline learned Effusion (AUROC 0.900 [0.830, 0.970], above chance)" in learned
    assert "the arm scores 0.600: worse, because" in learned and "The other 13" in learned
    assert "not known" not in learned and "lacks power" not in learned
    null = _control_table(0.45, "no difference larger than 0.200 shown")
    blind = label_noise_lesson.positive_control_words(null, "Effusion")
    assert "did not learn Effusion" in blind and "lacks power, not that the effect is absent" in blind
    real = label_noise_lesson.positive_control_words(_control_table(0.83, "worse"), "Effusion", "chestxray14")
    assert real.startswith("The labels of this chestxray14 data are mined from reports, not known to be true")
