"""Experiments: variants of a profile's baseline, and the comparison a notebook shows."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from cxrlib import experiments, profiles, runs
from cxrlib.results import format_results, results_table
from cxrlib.labels import FINDINGS
from cxrlib.project import NOTEBOOKS_DIR


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
    assert experiments.notebook_configs(profile, "13_results", {}) == []


def test_compare_shows_summary_paired_difference_per_class_and_figure(fake_runs):
    results = {name: runs.load_run(fake_runs / name, with_model=False) for name in ("baseline", "fpn", "other_split")}
    cmp = experiments.compare(results, n_bootstrap=200)
    assert cmp.baseline == "baseline"  # the first run, as variants() lists it
    assert list(cmp.summary["experiment"]) == ["baseline", "fpn", "other_split"]
    assert list(cmp.paired["experiment"]) == ["fpn", "other_split"]
    fpn, other = cmp.paired.iloc[0], cmp.paired.iloc[1]
    table = results_table(fake_runs, n_bootstrap=200)
    # the same numbers as the report's results table, to the last digit
    pd.testing.assert_frame_equal(cmp.table.drop(columns="run_dir"), table.drop(columns="run_dir"))
    assert fpn["vs baseline [95% CI]"] == format_results(table).loc[1, "vs baseline [95% CI]"]
    assert fpn["vs baseline [95% CI]"].startswith("+0.") and other["vs baseline [95% CI]"] == ""
    assert other["verdict"] == "not compared"
    assert fpn["verdict"] == "not tested: 1 seed"  # one seed each: the seed spread is not measured
    assert list(cmp.per_class.index) == list(FINDINGS) + ["mean (14)"]
    assert list(cmp.per_class.columns) == ["baseline", "fpn", "other_split"]
    roc = cmp.figure.axes[1]
    assert len(cmp.figure.axes) == 2 and len(roc.get_lines()) == 5  # 3 runs, diagonal, prevalence-only
    with pytest.raises(ValueError, match="'nope' is not among the runs"):
        experiments.compare(results, baseline="nope")


def test_compare_draws_the_training_loss_of_every_step_beside_the_validation_points(fake_runs):
    """The comparison's left panel: a run's step log (light, with its running mean) and its
    validation mean AUROC at each epoch's end; runs without a step log show what they have."""
    runs.write_history(fake_runs / "baseline", [{"epoch": 1, "stage": "", "step": 4, "lr": 1e-3, "train_loss": 0.5,
                                                 "val_loss": 0.4, "val_mean_auroc": 0.61, "best": True}])
    runs.write_steps(fake_runs / "baseline", [{"step": s, "epoch": 1, "stage": "", "samples": 8,
                                               "train_loss": loss, "lr": 1e-3}
                                              for s, loss in zip(range(1, 5), [0.7, 0.5, 0.45, 0.35])])
    results = {name: runs.load_run(fake_runs / name, with_model=False) for name in ("baseline", "fpn")}
    curve = experiments.compare(results, n_bootstrap=50).figure.axes[0]
    raw, mean = curve.get_lines()
    assert raw.get_ydata().tolist() == [0.7, 0.5, 0.45, 0.35] and len(mean.get_ydata()) == 4
    (twin,) = [a for a in curve.figure.axes[2:] if a.bbox.bounds == curve.bbox.bounds]
    auroc = {line.get_label(): list(line.get_xdata()) for line in twin.get_lines()}
    assert auroc == {"baseline": [4], "chance": [0, 1]}  # fpn has no history: nothing to show


def test_compare_takes_every_seed_of_each_experiment(seeded_runs):
    groups = runs.experiment_runs(seeded_runs)
    results = {name: [runs.load_run(d, with_model=False) for d in dirs] for name, dirs in groups.items()}
    cmp = experiments.compare(results, n_bootstrap=100)
    pd.testing.assert_frame_equal(cmp.table, results_table(seeded_runs, n_bootstrap=100, controls=False))
    assert list(cmp.summary["seeds"]) == ["3", "3", "3"]
    assert cmp.paired["verdict"].iloc[0] == "better"
    assert cmp.paired["verdict"].iloc[1].startswith("no difference larger than")
    seed_means = [np.mean([r.metrics["per_class"]["Effusion"]["auroc"] for r in results["mixed"]])]
    assert cmp.per_class.loc["Effusion", "mixed"] == pytest.approx(seed_means[0])  # mean over seeds
    assert "(first seed)" in cmp.figure.axes[1].get_title()
    assert "seed variance" in cmp.rule


def test_run_all_trains_each_seed_once_and_reuses_finished_ones(monkeypatch, tmp_path):
    trained = []

    def fake_run_experiment(cfg, data=None, redo=False, progress=False, global_stage_from=None):
        folder = runs.run_folder(cfg)
        if not redo and runs.is_finished(folder, cfg):
            return "reused"
        trained.append((cfg.name, cfg.seed))
        folder.mkdir(parents=True, exist_ok=True)
        for name in (runs.PREDICTIONS, runs.BEST):
            (folder / name).write_bytes(b"x")
        (folder / runs.METRICS).write_text(json.dumps({"fingerprint": cfg.fingerprint()}))
        return "trained"

    monkeypatch.setattr(experiments, "run_experiment", fake_run_experiment)
    profile = profiles.load("smoke", runs_dir=tmp_path, overrides=["seeds.baseline=[0, 1, 2]", "seeds.variants=[0, 1]"])
    configs = experiments.variants(profile, {"focal": {"train.loss": "focal"}})
    out = experiments.run_all(configs, seeds=profile.seeds)
    assert trained == [("baseline", 0), ("baseline", 1), ("baseline", 2), ("focal", 0), ("focal", 1)]
    assert {k: len(v) for k, v in out.items()} == {"baseline": 3, "focal": 2}
    assert (tmp_path / "baseline" / "seed2" / runs.METRICS).is_file()
    # one more seed: only the new one trains; the test split is the data config's, not the seed's
    trained.clear()
    more = profiles.load("smoke", runs_dir=tmp_path, overrides=["seeds=[0, 1, 2]"])
    out = experiments.run_all(experiments.variants(more, {"focal": {"train.loss": "focal"}}), seeds=more.seeds)
    assert trained == [("focal", 2)] and out["focal"][:2] == ["reused", "reused"]
    assert {c.data.seed for c in experiments.seed_configs(configs[1], more.seeds)} == {configs[1].data.seed}
    assert [c.seed for c in experiments.seed_configs(configs[0], None)] == [0]  # no seeds given: the config's own


def test_backbones_leave_out_what_the_profile_leaves_to_the_full_profile(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("experiment:\n  train:\n    epochs: 1\nfull_profile_only:\n  nasnet: at 64 px it stays at chance\n")
    profile = profiles.load(own)
    assert [c.name for c in experiments.backbones(profile, ["resnet18", "nasnet", "densenet121"])] == [
        "baseline", "densenet121"]
    why = experiments.full_profile_only(profile)
    assert why.values.tolist() == [["nasnet", "at 64 px it stays at chance"]]


def test_compare_displays_every_part_once(fake_runs, monkeypatch):
    shown = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    results = {name: runs.load_run(fake_runs / name, with_model=False) for name in ("baseline", "fpn")}
    cmp = experiments.compare(results, n_bootstrap=50)
    cmp._ipython_display_()
    assert [type(x).__name__ for x in shown] == ["DataFrame", "DataFrame", "Markdown", "DataFrame", "Figure"]
    assert shown[2].data == cmp.rule and shown[4] is cmp.figure


@pytest.mark.slow
def test_a_seed_changes_training_not_the_split(tmp_path):
    """Two seeds of one config: the same test images and labels (comparisons stay paired),
    other initial weights, data order and augmentation draws, so other scores."""
    from cxrlib.data import load_data

    profile = profiles.load("smoke", runs_dir=tmp_path, overrides=["train.n_bootstrap=0", "seeds=[0, 1]"])
    cfg = profile.config()
    data = load_data(cfg.data, progress=False)
    out = {}
    for c in experiments.seed_configs(cfg, profile.seeds):
        out[c.seed] = experiments.run_experiment(c, data=data, progress=False)
        assert data.train.seed == c.seed  # the augmentation draws follow the training seed
    a, b = out[0].predictions, out[1].predictions
    assert np.array_equal(a["ids"], b["ids"]) and np.array_equal(a["targets"], b["targets"])
    assert not np.allclose(a["scores"], b["scores"])
    assert out[1].run_dir == tmp_path / "baseline" / "seed1" and runs.is_finished(out[1].run_dir, out[1].config)


def _mean_intensity_control(bundle):
    """A stand-in for the shortcut control's fit: each image's mean grey level as every
    finding's score (no spatial information), shaped like a run's test predictions."""
    test = bundle.test
    means = np.array([test.raw(i).mean() for i in range(len(test))], dtype=np.float32) / 255
    return {"ids": test.image_ids, "patient_ids": test.patient_ids, "targets": test.targets,
            "scores": np.repeat(means[:, None], test.targets.shape[1], axis=1),
            "label_names": np.array(test.label_names)}


def test_run_control_writes_a_control_run_of_its_own_kind(tmp_path):
    calls = []

    def fit(bundle):
        calls.append(bundle.split_name)
        return _mean_intensity_control(bundle)

    profile = profiles.load("smoke", runs_dir=tmp_path)
    control = experiments.run_control(profile, fit=fit)
    folder = tmp_path / experiments.CONTROL
    assert control.run_dir == folder and control.model is None and len(calls) == 1
    assert runs.is_finished(folder, experiments.control_config(profile)) and not (folder / runs.BEST).exists()
    assert json.loads((folder / runs.METRICS).read_text())["kind"] == runs.CONTROL
    again = experiments.run_control(profile, fit=fit)  # finished with the same config: reused, not refitted
    assert len(calls) == 1 and again.metrics["mean_auroc"] == control.metrics["mean_auroc"]
    other = profiles.load("smoke", runs_dir=tmp_path, overrides=["data.num_phantoms=80"])
    experiments.run_control(other, fit=fit)  # the baseline's data changed: the control is fitted again
    assert len(calls) == 2
    assert runs.list_runs(tmp_path) == []  # never offered where a network is loaded


def _notebook_with_plan(tmp_path, plan):
    path = tmp_path / "99_custom.ipynb"
    path.write_text(json.dumps({"cells": [], "metadata": {"cxrlib": {"plan": plan}}, "nbformat": 4,
                                "nbformat_minor": 5}))
    return path


def test_a_notebook_declares_its_plan_as_data(tmp_path):
    """Any notebook (not only the project's own) plans its runs by naming a builder and its parameters."""
    profile = profiles.load("smoke")
    path = _notebook_with_plan(tmp_path, {"builder": "cxrlib.experiments:loss_variants",
                                          "arguments": {"losses": "LOSSES"}, "per_seed": False})
    planned = experiments.notebook_configs(profile, path, {"LOSSES": ["focal"], "OTHER": 1})
    assert [c.name for c in planned] == ["baseline", "focal"]
    seeded = profiles.load("smoke", overrides=["seeds=[0, 1]"])
    path = _notebook_with_plan(tmp_path, {"builder": "cxrlib.experiments:loss_variants",
                                          "arguments": {"losses": "LOSSES"}})
    assert [(c.name, c.seed) for c in experiments.notebook_configs(seeded, path, {"LOSSES": ["focal"]})] == [
        ("baseline", 0), ("baseline", 1), ("focal", 0), ("focal", 1)]
    assert experiments.NotebookPlan.of_notebook(NOTEBOOKS_DIR / "13_results.ipynb") is None


@pytest.mark.parametrize("plan,needle", [
    ({"builder": "os:system"}, "'os:system'"),
    ({"builder": "cxrlib.experiments:no_such_builder"}, "no_such_builder"),
    ({"builder": "cxrlib.experiments:loss_variants", "argumentz": {}}, "argumentz"),
    (["cxrlib.experiments:loss_variants"], "99_custom.ipynb"),
])
def test_a_bad_plan_is_named(tmp_path, plan, needle):
    path = _notebook_with_plan(tmp_path, plan)
    with pytest.raises(ValueError) as err:
        experiments.notebook_configs(profiles.load("smoke"), path, {})
    assert needle in str(err.value)


def test_the_clinical_lesson_plans_the_runs_of_06():
    """11 trains nothing of its own: with LOSSES empty it plans exactly what 06 plans with the
    same profile (the profile's 06 LOSSES, else the study's default), so every run is reused."""
    smoke = profiles.load("smoke")  # smoke.yaml sets 06's LOSSES: [bce, focal]
    assert experiments.clinical_losses(smoke, []) == ["bce", "focal"]
    assert experiments.clinical_losses(smoke, ["bce", "weighted_bce"]) == ["bce", "weighted_bce"]
    bare = dataclasses.replace(smoke, notebooks={})
    assert experiments.clinical_losses(bare) == profiles.NOTEBOOK_DEFAULTS["06_losses"]["LOSSES"]
    for profile in (smoke, profiles.load("cpu"), bare):
        losses = profile.notebook_value("06_losses", "LOSSES")
        planned = experiments.notebook_configs(profile, "09_clinical_evaluation", {"LOSSES": []})
        assert [c.fingerprint() for c in planned] == [
            c.fingerprint() for c in experiments.notebook_configs(profile, "06_losses", {"LOSSES": losses})]
