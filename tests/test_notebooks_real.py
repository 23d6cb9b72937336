"""Every numbered notebook on real ChestX-ray14 files, under the ``sample`` profile.

The real sample beside the checkout (the release's full metadata table and split lists,
621 of its images, 12 of them boxed) goes through the report runner exactly as a user's
partial download would: 00 shows the release's statistics and the split's leakage check,
01-06 train and evaluate on real images on the official split, 07 scores heatmaps against
the real boxes beside random maps, 08's demo opens on a boxed image, 13 builds the table.
Each test checks a notebook's products (run folders, metrics, tables, what is shown), not
only that it ran. The image cache is the session's (``sample_cache``), built once.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from cxrlib import experiments, localization, profiles, references, report, results, runs
from cxrlib.data import chestxray14 as cx
from cxrlib.labels import canonical

from executed_notebooks import RUN_FILES, RUNS, injected_parameters
from second_site import make_second_site
from executed_notebooks import images as _images, outputs as _outputs, result as _result, text as _text

OFFICIAL = "official patient-wise split (test_list.txt)"
STEMS = ["00_data_exploration", "01_baselines", "02_fpn", "03_psp", "04_multiscale", "05_two_stage",
         "06_losses", "07_heatmaps", "08_demo", "13_results", "09_clinical_evaluation",
         "10_label_noise", "11_external_site"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample(tmp_path_factory, cxr14_sample, sample_cache):
    root = tmp_path_factory.mktemp("sample_report")
    # 11's other hospital: a second folder in the release's layout, from 60 of the sample's images
    site = make_second_site(cxr14_sample, root)
    profile = profiles.load("sample", data_dir=cxr14_sample, overrides=[f"data.cache_dir={sample_cache}",
                                                                        f"notebooks.11_external_site.SITE_DIR={site}"])
    return report.run_report(profile, only=STEMS, out_dir=root / "reports", runs_dir=root / "runs", echo=None)


@pytest.fixture(scope="module")
def release(cxr14_sample):
    """What the sample holds, read straight from its files: present images, the official
    test list, and the boxes of the present test images by (image, finding)."""
    present = set(cx.find_images(cxr14_sample))
    test = {line.strip() for line in (cxr14_sample / "test_list.txt").read_text().splitlines() if line.strip()}
    boxes = cx.read_boxes(cxr14_sample / "BBox_List_2017.csv")
    boxed = {i: b for i, b in boxes.items() if i in present and i in test}
    regions = {(i, canonical(b.finding)) for i, bs in boxed.items() for b in bs}
    return {"present": present, "test": test & present, "boxed": boxed, "regions": regions}


def test_release_sample_is_what_the_checks_assume(release):
    assert len(release["present"]) == 621 and len(release["test"]) == 75
    assert len(release["boxed"]) == 12  # every boxed image is in the official test list


@pytest.mark.parametrize("stem", STEMS)
def test_notebook_ran_on_real_files(sample, stem):
    injected = injected_parameters(_result(sample, stem))
    assert 'PROFILE = "sample"' in injected and "chestxray14-sample" in injected


def test_data_exploration_shows_the_release(sample):
    r = _result(sample, "00_data_exploration")
    text = _text(r.executed)
    # The full metadata table, not the 621 images on disk.
    assert "112,120 images, 30,805 patients" in text
    assert f"split: {OFFICIAL}" in text and "not on disk: 111499" in text
    nb = nbformat.read(str(r.executed), as_version=4)
    leak = next(o for c in nb.cells if "leakage_check" in c.source for o in c.outputs)
    table = leak["data"]["text/plain"]
    assert "train / test" in table and "shared patients" in table
    assert [line.split()[-2:] for line in table.splitlines()[1:]] == [["0", "0"]] * 3
    assert _images(r.executed) >= 5  # prevalence, co-occurrence, counts, demographics (real only), examples


def _check_run(run_dir: Path, n_test: int, n_labels: int = 14) -> dict:
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), f"{run_dir} lacks {name}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["experiment"] == run_dir.name and metrics["source"] == "chestxray14"
    assert metrics["split"] == OFFICIAL and metrics["n_images"] == n_test
    assert len(metrics["label_names"]) == n_labels
    lo, hi = metrics["mean_auroc_ci"]
    assert 0.0 <= lo <= metrics["mean_auroc"] <= hi <= 1.0
    return metrics


@pytest.mark.parametrize("stem", sorted(RUNS))
def test_training_notebooks_train_and_evaluate_on_real_images(sample, release, stem):
    assert _result(sample, stem).ok
    for name in RUNS[stem]:
        run_dir = sample.runs_dir / name
        _check_run(run_dir, len(release["test"]), 15 if name == "15labels" else 14)
        pred = runs.load_predictions(run_dir)
        assert set(map(str, pred["ids"])) == release["test"]  # the official test images on disk
        assert np.isfinite(pred["scores"]).all()
        config = json.loads((run_dir / "config.json").read_text())
        assert config["data"]["source"] == "chestxray14" and config["model"]["pretrained"] is False
        assert name in _text(_result(sample, stem).executed)


def test_heatmaps_against_real_boxes_and_random_maps(sample, release):
    r = _result(sample, "07_heatmaps")
    text = _text(r.executed)
    n_images, n_regions = len(release["boxed"]), len(release["regions"])
    assert f"scored against boxes (what the chestxray14 data offers): {n_images} images, {n_regions} " in text
    assert localization.WANG_RULE.describe() in text  # the rule, from the library's constant
    assert references.WANG_CVPR in text and references.WANG_V5 in text
    # The table kept for the report: the FPN run's heatmaps against random maps on the real boxes.
    summary = runs.read_localization(sample.runs_dir / "fpn")
    assert summary is not None
    notes = summary.attrs["notes"]
    assert notes["method"] == "gradcam" and notes["ground truth"] == localization.BOXES
    assert (notes["images"], notes["regions"]) == (n_images, n_regions)
    assert notes["verdict"] in text  # the verdict kept is the one the notebook shows
    assert (summary.loc["All", "images"], summary.loc["All", "n"]) == (n_images, n_regions)
    expected = pd.Series([f for _, f in release["regions"]]).value_counts()
    per_finding = summary.drop(index="All")["n"]
    assert per_finding.sort_index().to_dict() == expected.sort_index().to_dict()
    for column in ("pointing game", "T(IoBB) > 0.1", "T(IoBB) > 0.5"):
        assert summary[column].between(0, 1).all() and summary[f"{column}, {localization.RANDOM_MAPS}"].between(0, 1).all()
    assert summary["T(IoBB) > 0.1 AFP, random maps"].between(0, 3).all()  # at most 3 boxes per map
    for finding in per_finding.index:  # Wang et al. beside each finding, from the paper version named
        k = references.WANG_FINDINGS.index(finding)
        assert summary.loc[finding, f"{references.WANG_CVPR}, T(IoBB) > 0.1"] == references.WANG_IOBB_CVPR[0.1][k]
        assert summary.loc[finding, f"{references.WANG_V5}, T(IoBB) > 0.1"] == references.WANG_IOBB_V5[0.1][k]
    # Random-map rows beside the methods' rows in the notebook's table; the verdict in words.
    assert localization.RANDOM_MAPS in text and "random_baseline" in text
    assert ": too few images (p" in text  # 1-3 images per finding: the exact test cannot reach 0.05
    assert _images(r.executed) >= 1


def test_demo_opens_on_a_boxed_real_image(sample, release):
    r = _result(sample, "08_demo")
    shown = next(o["data"]["text/html"] for o in _outputs(r.executed) if "text/html" in o.get("data", {}))
    caption = re.search(r"<b>([^<]+)</b> \((\d+) x (\d+), dataset\).*?<br>([A-Za-z_]+): p = [0-9.]+ · "
                        r"gradcam heatmap · (\d+) annotated box", shown)
    assert caption, "the demo's caption names no boxed image"
    image_id, width, height, finding, n_boxes = caption.groups()
    assert image_id in release["boxed"]
    assert int(n_boxes) == sum(canonical(b.finding) == finding for b in release["boxed"][image_id])
    assert (int(width), int(height)) in ((512, 512), (1024, 1024))  # shown at the file's own size
    assert "Untrained model" not in shown  # a trained run of this report is offered first
    assert "data:image/jpeg;base64," in shown  # the picture itself


def test_results_table_of_the_real_runs(sample):
    r = _result(sample, "13_results")
    text = _text(r.executed)
    every = [n for names in RUNS.values() for n in names] + [experiments.CONTROL]  # 01 fits the control
    table = results.results_table(sample.runs_dir, n_bootstrap=20)
    assert sorted(table["experiment"]) == sorted(every + [experiments.METADATA_CONTROL])  # 13 fits it after 09
    # the shortcut control on real images too: fitted on the official train part, its own kind
    assert table.set_index("experiment").loc[experiments.CONTROL, "kind"] == runs.CONTROL
    assert set(table["split"]) == {OFFICIAL}
    assert table["mean AUROC"].between(0, 1).all()
    for name in every:
        assert name in text
    assert OFFICIAL in text
    assert "Hidden stratification: not measured" in text  # 12 did not run here, and 13 says so
    index = (sample.out_dir / "index.html").read_text()
    for name in every + STEMS:
        assert name in index
    # the heatmap run's localization summary on the real boxes, beside random maps and Wang et al.
    assert "Localization: model vs random maps (and Wang et al. where scored against boxes)" in index and "random maps" in index
    assert _images(r.executed) >= 3


def test_label_noise_lesson_on_real_labels(sample):
    r = _result(sample, "10_label_noise")
    text = _text(r.executed)
    assert "AUROC vs noisy labels" in text and "cap" in text
    noisy = runs.experiment_runs(sample.runs_dir / "label_noise")["noisy_labels"]
    assert runs.load_config(noisy[0]).data.label_noise == ["train", "val"]
    # the positive control on real labels: still trained and compared, its answer not claimed as known
    control = runs.experiment_runs(sample.runs_dir / "label_noise")["never_reported_effusion"]
    assert runs.load_config(control[0]).data.label_sensitivity == {"Effusion": 0.0}
    assert "Effusion (never reported)" in text and "the other 13 (labels untouched)" in text
    assert "mined from reports, not known to be true" in text


def test_external_site_is_the_second_folder(sample):
    """13 on real files: the second folder's 60 images re-scored by every baseline seed, and the
    metadata control fitted on the official train part from view position, age, sex, follow-up."""
    r = _result(sample, "11_external_site")
    text = _text(r.executed)
    assert "site_b" in injected_parameters(r)
    assert "at its own site" in text and "external AUROC" in text
    meta = runs.load_run(sample.runs_dir / experiments.METADATA_CONTROL, with_model=False)
    assert meta.metrics["model"]["sees"] == "no pixel: only view_position, age, sex, follow_up"
    assert meta.metrics["split"] == OFFICIAL


def test_clinical_evaluation_on_real_images(sample, release):
    """11 on the real sample: thresholds from the official split's validation patients, the
    operating points on the official test images present, one seed (the sample profile's),
    so no ensemble, said in words."""
    from cxrlib import clinical

    r = _result(sample, "09_clinical_evaluation")
    text = _text(r.executed)
    assert OFFICIAL in text and f"{len(release['test'])} test images" in text
    assert clinical.ThresholdRule().describe() in text and "bootstrap resamples of patients" in text
    assert "ppv at clinic" in text and "AUPRC / prevalence" in text and "temperature T=" in text
    assert "1 training seed: no ensemble" in text
    for name in ("check_weighted_bce", "check_leakage", "check_auroc", "check_threshold"):
        assert name in text
    assert _images(r.executed) >= 4  # ROC/PR, reliability, by loss, errors
