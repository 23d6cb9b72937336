"""Every numbered notebook runs under the smoke profile, and what it produced is checked.

The notebooks run once, in order, through the report runner (papermill, this interpreter's
kernel) into a temporary folder with their own runs folder, as in a real report: the
baseline trains in 01 and is reused by 02-07. Each test then checks one notebook's products:
its run folders, the values in metrics.json, its tables.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxrlib import conclusions, experiments, label_noise, localization, references, report, results, runs
from cxrlib.labels import FINDINGS

from executed_notebooks import RUN_FILES, RUNS, injected_parameters
from executed_notebooks import images as _images, result as _result, text as _text

REPO = Path(__file__).resolve().parent.parent
# 08_demo has its own tests; the results notebook runs last, as in the report.
STEMS = ["00_data_exploration", "01_baselines", "02_fpn", "03_psp", "04_multiscale", "05_two_stage",
         "06_losses", "07_heatmaps", "13_results", "12_shortcuts", "09_clinical_evaluation",
         "10_label_noise", "11_external_site"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke_report")
    result = report.run_report("smoke", only=STEMS, out_dir=root / "reports", runs_dir=root / "runs", echo=None)
    return result


@pytest.mark.parametrize("stem", STEMS)
def test_notebook_ran_and_exported(smoke, stem):
    assert 'PROFILE = "smoke"' in injected_parameters(_result(smoke, stem))


def _check_run(run_dir: Path, n_labels: int = 14) -> dict:
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), f"{run_dir} lacks {name}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["experiment"] == run_dir.name
    assert 0.0 <= metrics["mean_auroc"] <= 1.0
    lo, hi = metrics["mean_auroc_ci"]
    assert 0.0 <= lo <= hi <= 1.0
    assert len(metrics["label_names"]) == n_labels
    for name, per in metrics["per_class"].items():
        if per["auroc"] is not None:
            assert 0.0 <= per["auroc"] <= 1.0, (run_dir.name, name)
    with np.load(run_dir / "test_predictions.npz") as z:
        scores, targets = z["scores"], z["targets"]
        assert scores.shape == targets.shape == (metrics["n_images"], n_labels)
        assert np.isfinite(scores).all() and scores.min() >= 0.0 and scores.max() <= 1.0
    return metrics


@pytest.mark.parametrize("stem", sorted(RUNS))
def test_training_notebook_runs(smoke, stem):
    assert _result(smoke, stem).ok
    for name in RUNS[stem]:
        metrics = _check_run(smoke.runs_dir / name, n_labels=15 if name == "15labels" else 14)
        assert metrics["split"] == "synthetic phantoms, patient-wise 70/10/20"
        assert name in _text(_result(smoke, stem).executed)  # the notebook shows its runs


def test_variants_are_what_they_claim(smoke):
    def cfg(name):
        return json.loads((smoke.runs_dir / name / "config.json").read_text())

    base = cfg("baseline")
    assert cfg("fpn")["model"]["head"] == "fpn" and cfg("psp")["model"]["head"] == "psp"
    assert cfg("multiscale")["model"]["wrapper"] == "multiscale"
    assert cfg("multiscale")["data"]["image_size"] == 2 * base["data"]["image_size"]
    assert cfg("two_stage")["model"]["wrapper"] == "two_stage"
    assert cfg("focal")["train"]["loss"] == "focal"
    assert cfg("densenet121")["model"]["name"] == "densenet121"
    assert cfg("15labels")["data"]["include_no_finding"] is True
    # every variant differs from the baseline in its own setting only
    for name in ("fpn", "psp", "focal", "densenet121"):
        assert cfg(name)["train"]["epochs"] == base["train"]["epochs"]
        assert cfg(name)["data"] == base["data"]


def test_baseline_trained_once_and_shared(smoke):
    """02-07 reuse 01's baseline: its metrics.json predates the later notebooks' runs."""
    base = (smoke.runs_dir / "baseline" / "metrics.json").stat().st_mtime
    assert base < (smoke.runs_dir / "fpn" / "metrics.json").stat().st_mtime
    assert base < (smoke.runs_dir / "focal" / "metrics.json").stat().st_mtime


def test_data_exploration(smoke):
    r = _result(smoke, "00_data_exploration")
    text = _text(r.executed)
    assert "synthetic phantoms, patient-wise 70/10/20" in text
    assert "shared patients" in text and "train / test" in text
    assert _images(r.executed) >= 6  # prevalence, co-occurrence, counts, examples, phantoms vs real, knobs
    assert "real images from" in text  # the tests run with the shared sample present


def test_heatmaps(smoke):
    r = _result(smoke, "07_heatmaps")
    text = _text(r.executed)
    # Phantoms offer lesion masks: scored against them, never against boxes.
    assert "scored against lesion masks (what the phantoms data offers)" in text
    assert localization.WANG_RULE.describe() in text  # the rule, from the library's constant
    assert "pointing_game" in text and "random_baseline" in text and localization.RANDOM_MAPS in text
    assert references.WANG_CVPR in text  # the published box figures, in their own table
    summary = runs.read_localization(smoke.runs_dir / "fpn")  # the profile's HEAD: fpn
    assert summary is not None
    assert not [c for c in summary.columns if "Wang" in c], "phantom mask scores beside published box scores"
    notes = summary.attrs["notes"]
    assert notes["method"] == "gradcam" and notes["ground truth"] == "lesion masks" and notes["CAM grid"] == "4x4"
    assert notes["images"] == 4  # N_IMAGES images with a lesion
    assert summary.loc["All", "images"] == 4 and 0 <= summary.loc["All", "pointing game, random maps"] <= 1
    assert notes["verdict"] in text  # the verdict kept is the one the notebook shows
    # the exact test speaks twice: the trained model's maps, then its randomised-weights copy's
    assert text.count("(the same maps, re-paired)") >= 2
    assert _images(r.executed) >= 1  # the overlay grid


def test_shortcut_lesson(smoke):
    """10 trains a clean and a drained model on one split; drains lie on training
    pneumothoraces only, in the very cache the drained run trained on; both test splits shown."""
    from cxrlib import phantoms, shortcuts
    from cxrlib.config import ExperimentConfig
    from cxrlib.data import load_data
    from cxrlib.data.phantom_source import phantom_spec

    r = _result(smoke, "12_shortcuts")
    lesson = smoke.runs_dir / shortcuts.LESSON_DIR
    clean, drain = (_check_run(lesson / name) for name in ("clean", shortcuts.RUN_NAME))
    cfg = {name: json.loads((lesson / name / "config.json").read_text()) for name in ("clean", "drain")}
    assert cfg["drain"]["data"]["phantom_options"] == {"confounder": 0.9}
    assert cfg["clean"]["data"]["phantom_options"] == {}
    for section in ("model", "train"):
        assert cfg["clean"][section] == cfg["drain"][section]
    assert clean["n_images"] == drain["n_images"]
    # the study's results table leaves the lesson's runs out
    assert not {"clean", "drain", shortcuts.LESSON_DIR} & set(runs.experiment_runs(smoke.runs_dir))

    dcfg = ExperimentConfig.from_dict(cfg["drain"]).data
    data = load_data(dcfg, progress=False)
    k = FINDINGS.index("Pneumothorax")
    spec = phantom_spec(dcfg)
    for part in ("train", "val", "test"):
        ds = data.dataset(part)
        drains = shortcuts.has_drains(dcfg, ds, training=part == "train")
        assert not (drains & (ds.targets[:, k] == 0)).any()
        if part != "train":
            assert not drains.any()
        for i in np.flatnonzero(ds.targets[:, k] > 0)[:6]:  # the cache holds what the census says
            p = phantoms.render_phantom(phantoms.phantom_index(ds.image_ids[i]), dcfg.image_size, seed=dcfg.seed,
                                        spec=spec, training=part == "train")
            assert p.drain == drains[i]
            np.testing.assert_array_equal(ds.raw(int(i)), p.image)
    assert shortcuts.has_drains(dcfg, data.train, training=True).sum() >= 3

    text = _text(r.executed)
    assert shortcuts.WITH_DRAINS in text and shortcuts.WITHOUT_DRAINS in text
    assert "trained clean" in text and "trained with drains" in text
    assert "hottest pixel on the drain" in text and "positives with a drain" in text
    # ONE test set stratified: both strata against the same negatives, kept for 13 and the index
    strata = shortcuts.read_strata(smoke.runs_dir)
    assert strata is not None and set(strata.index.get_level_values("model")) == {"trained clean", "trained with drains"}
    counts = strata.loc["trained with drains"]
    assert counts.loc[shortcuts.WITH_DRAINS, "positives"] + counts.loc[shortcuts.WITHOUT_DRAINS, "positives"] == \
        counts.loc[shortcuts.ALL_POSITIVES, "positives"] > 0
    assert counts["negatives"].nunique() == 1
    for line in conclusions.strata_words(strata):
        assert line in text
    assert _images(r.executed) >= 2  # training images with drains, heatmaps


def test_clinical_evaluation(smoke):
    """11 reuses 01's baseline seeds and 06's losses (trains nothing), thresholds each finding on
    validation, and shows the operating points, PR beside ROC, calibration before and after a
    temperature, each loss's calibration, the worst errors, the seed ensemble and the checks."""
    from cxrlib import clinical, error_analysis

    r = _result(smoke, "09_clinical_evaluation")
    text = _text(r.executed)
    # the runs it shows were finished before it ran (by 01 and 06), not trained by it
    for run_dir in (smoke.runs_dir / "baseline", smoke.runs_dir / "baseline" / "seed1", smoke.runs_dir / "focal"):
        assert (run_dir / "metrics.json").stat().st_mtime < r.executed.stat().st_mtime
    assert "'baseline': '2 seed(s)" in text and "'focal': '1 seed(s)" in text
    assert clinical.ThresholdRule().describe() in text and "bootstrap resamples of patients" in text
    for column in ("ppv at clinic", "npv at clinic", "AUPRC / prevalence", "ECE after T", "mean AUROC after T"):
        assert column in text
    assert "Hernia: AUROC" in text and "where 1.0% of patients have it" in text  # CLINICAL_PREVALENCE 0.01
    assert "temperature T=" in text and "2 seeds: ensemble mean AUROC" in text
    assert error_analysis.FALSE_POSITIVE in text or error_analysis.FALSE_NEGATIVE in text
    # the four student exercises run, each showing its check's explanation of the first attempt
    for name, words in (("check_weighted_bce", "wrong way round"), ("check_leakage", "image ids were compared"),
                        ("check_auroc", "counts as 0"), ("check_threshold", "below the target")):
        assert name in text and words in text, name
    assert _images(r.executed) >= 5  # ROC/PR, reliability, by loss, errors, disagreement


def test_results_lists_every_run(smoke):
    r = _result(smoke, "13_results")
    text = _text(r.executed)
    # 01 fits the shortcut control, 11 the metadata control; 13 summarises after every other notebook
    every = [n for names in RUNS.values() for n in names] + [experiments.CONTROL, experiments.METADATA_CONTROL]
    for name in every:
        assert name in text
    table = results.results_table(smoke.runs_dir, n_bootstrap=20)
    assert sorted(table.loc[table["kind"] != results.DESIGN_CONTROL, "experiment"]) == sorted(every)
    assert (table["kind"] == results.DESIGN_CONTROL).sum() == 2  # the A/A and planted-loss controls
    # the shortcut control: a row of its own kind right after the baseline, never in the demo's menu
    # the baseline, then the controls: the shortcut control (01) and the metadata control (11)
    assert table["experiment"][0] == "baseline"
    assert set(table["experiment"][1:3]) == {experiments.CONTROL, experiments.METADATA_CONTROL}
    assert set(table.set_index("experiment").loc[[experiments.CONTROL, experiments.METADATA_CONTROL], "kind"]) \
        == {runs.CONTROL}
    assert experiments.CONTROL not in [r.name for r in runs.list_runs(smoke.runs_dir)]
    assert table["mean AUROC"].between(0, 1).all()
    tested = table[(table["experiment"] != "baseline") & ~table["verdict"].str.startswith("not tested")]
    assert len(tested) >= 3 and tested["p-value"].between(0, 1).all()  # the shortcut and design controls
    assert "0.8412" in text and "random patient-wise 70/10/20 (CheXNet)" in text  # references with splits
    # the verdict rule and each comparison in words, from the same table as the index
    assert "A side with fewer than 2 seeds is not tested" in text
    words = conclusions.conclusions(results.results_table(smoke.runs_dir, n_bootstrap=base_bootstrap(smoke)))
    for line in words.comparisons:
        assert line in text
    index = (smoke.out_dir / "index.html").read_text()
    for name in every + STEMS:
        assert name in index
    assert "data:image/png;base64," in index and words.comparisons[0].split(":")[0] in index
    # notebook 12's stratified test set: in 13 (which runs after it) and in the index
    from cxrlib import shortcuts
    assert report.run_order([REPO / "notebooks" / f"{s}.ipynb" for s in STEMS])[-1].stem == "13_results"
    summary = shortcuts.strata_summary(smoke.runs_dir)
    assert shortcuts.read_strata(smoke.runs_dir) is not None and summary.splitlines()[0] in text
    assert "Hidden stratification: one label, two strata" in index and summary.splitlines()[0] in index
    assert _images(r.executed) >= 3  # forest plot, ROC, ROC grid


def base_bootstrap(smoke) -> int:
    return json.loads((smoke.runs_dir / "baseline" / "config.json").read_text())["train"]["n_bootstrap"]


def test_the_baseline_is_trained_with_the_profiles_seeds(smoke):
    """smoke.yaml gives the baseline two seeds: both trained, in the experiment's folder, on one
    test set; the variants one seed each."""
    seeds = runs.experiment_runs(smoke.runs_dir)
    assert seeds["baseline"] == [smoke.runs_dir / "baseline", smoke.runs_dir / "baseline" / "seed1"]
    assert all(len(seeds[n]) == 1 for n in seeds if n != "baseline")
    a, b = (runs.load_predictions(d) for d in seeds["baseline"])
    assert np.array_equal(a["ids"], b["ids"]) and not np.array_equal(a["scores"], b["scores"])
    table = results.results_table(smoke.runs_dir, n_bootstrap=20).set_index("experiment")
    assert table.loc["baseline", "seeds"] == 2 and table.loc["baseline", "seed SD"] >= 0
    variants = table[table["kind"] == "model"].drop(index="baseline")
    assert set(variants["verdict"]) == {"not tested: 1 seed"}  # one seed each: the design does not guess


def test_every_finding_is_in_the_per_class_tables(smoke):
    text = _text(_result(smoke, "02_fpn").executed)
    for finding in FINDINGS:
        assert finding in text


def test_the_check_plans_what_the_notebooks_trained(smoke):
    """cxrlib check estimates time and weights from the configs it expects each notebook to
    train: they must be the configs the notebooks did train (same names, same fingerprints)."""
    from cxrlib import preflight, profiles

    profile = profiles.load("smoke").with_runs_dir(smoke.runs_dir)
    paths = [REPO / "notebooks" / f"{stem}.ipynb" for stem in STEMS]
    planned = preflight.planned_experiments(profile, paths)
    for stem, names in RUNS.items():
        assert set(names) <= {c.name for c in planned[stem]}, (stem, sorted(c.name for c in planned[stem]))
        for cfg in planned[stem]:  # every seed of every planned run was trained with that very config
            assert cfg.seed in profile.seeds.of(cfg), (stem, cfg.name, cfg.seed)
            assert runs.is_finished(runs.run_folder(cfg), cfg), (stem, cfg.name, cfg.seed)
    assert [c.seed for c in planned["01_baselines"] if c.name == "baseline"] == list(profile.seeds.of("baseline"))
    assert planned["00_data_exploration"] == [] and planned["13_results"] == []
    noisy = [c for c in planned["10_label_noise"] if c.name == label_noise.RUN_NAME]  # one per variant seed
    assert [c.seed for c in noisy] == list(profile.seeds.variants)
    assert all(runs.is_finished(runs.run_folder(c), c) for c in noisy)
    control = [c for c in planned["10_label_noise"] if c.name == "never_reported_effusion"]  # the positive control
    assert [c.seed for c in control] == list(profile.seeds.variants)
    assert all(runs.is_finished(runs.run_folder(c), c) for c in control)
    assert [c.name for c in planned["11_external_site"]] == ["baseline"] * len(profile.seeds.baseline)
    # the clinical lesson plans 06's runs (all finished by 06): it trains nothing of its own
    assert [(c.name, c.seed) for c in planned["09_clinical_evaluation"]] == [
        (c.name, c.seed) for c in planned["06_losses"]]
    lesson = planned["12_shortcuts"]  # the shortcut lesson's two runs, one seed each
    assert [c.name for c in lesson] == ["clean", "drain"]
    assert all(runs.is_finished(runs.run_folder(c), c) for c in lesson)


def test_label_noise_lesson(smoke):
    """12 re-scores the baseline against a noisy labeller's test labels and trains it once more
    on noisy train/val labels, apart from the study's table."""
    r = _result(smoke, "10_label_noise")
    injected_parameters(r)
    text = _text(r.executed)
    for column in ("AUROC vs truth", "AUROC vs noisy labels", "predicted", "cap", "labeller PPV", "corrected"):
        assert column in text
    assert _images(r.executed) >= 1  # the cap against prevalence
    lesson = smoke.runs_dir / label_noise.LESSON_DIR
    noisy = runs.experiment_runs(lesson)[label_noise.RUN_NAME]
    cfg = runs.load_config(noisy[0])
    assert cfg.data.label_noise == ["train", "val"] and cfg.data.label_sensitivity == 0.8
    assert cfg.data.label_specificity == 0.98
    assert label_noise.RUN_NAME in text and "vs baseline" in text
    assert label_noise.RUN_NAME not in runs.experiment_runs(smoke.runs_dir)  # out of the study's table
    # the positive control: Effusion never reported in train/val, compared finding by finding
    control = runs.experiment_runs(lesson)["never_reported_effusion"]
    assert runs.load_config(control[0]).data.label_sensitivity == {"Effusion": 0.0}
    for row in ["Effusion (never reported)", "the other 13 (labels untouched)", *FINDINGS]:
        assert row in text
    # one variant seed on smoke: the design does not test it, and the sentence says what the control could show
    assert "not tested: 1 seed" in text
    assert "did not learn Effusion" in text or "The baseline learned Effusion" in text


def test_external_site_lesson(smoke):
    """13 re-scores every baseline seed at the second phantom site and fits the metadata control."""
    r = _result(smoke, "11_external_site")
    injected_parameters(r)
    text = _text(r.executed)
    assert "at its own site" in text and "at the other" in text
    for column in ("internal AUROC", "external AUROC", "drop CI low", "external mean AUROC"):
        assert column in text
    assert _images(r.executed) >= 2  # examples from both sites
    meta = runs.load_run(smoke.runs_dir / experiments.METADATA_CONTROL, with_model=False)
    assert meta.metrics["model"]["sees"] == "no pixel: only follow_up"
    assert experiments.METADATA_CONTROL in text and experiments.CONTROL in text
