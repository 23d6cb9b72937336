"""The shortcut lesson's pieces: its runs, the drained test split, where heatmaps point."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cxrlib import conclusions, phantoms, results, runs, shortcuts
from cxrlib.config import ExperimentConfig
from cxrlib.data import load_data
from cxrlib.labels import FINDINGS

PTX = FINDINGS.index("Pneumothorax")


def _base(tmp_path, n=400):
    return ExperimentConfig().with_overrides({
        "runs_dir": str(tmp_path / "runs"), "data.source": "phantoms", "data.num_phantoms": n,
        "data.image_size": 32, "data.cache_dir": str(tmp_path / "cache"), "data.workers": 1})


def test_lesson_configs_differ_from_the_clean_run_in_the_drains_only(tmp_path):
    base = _base(tmp_path)
    clean, drain = shortcuts.lesson_configs(base, 0.8)
    assert clean is base  # the study's baseline is reused
    assert drain.data.phantom_options == {"confounder": 0.8}
    assert runs.run_folder(drain) == tmp_path / "runs" / "shortcuts" / "drain"
    assert dataclasses.replace(drain.data, phantom_options={}) == base.data
    assert drain.model == base.model and drain.train == base.train
    clean, drain = shortcuts.lesson_configs(base, 0.8, num_phantoms=600)
    assert clean.name == "clean" and runs.run_folder(clean).parent == runs.run_folder(drain).parent
    assert clean.data.num_phantoms == drain.data.num_phantoms == 600
    # a profile on real data gets phantoms at its size for both runs
    clean, drain = shortcuts.lesson_configs(base.with_overrides({"data.source": "chestxray14"}), 0.8)
    assert clean.name == "clean" and clean.data.source == drain.data.source == "phantoms"
    assert clean.data.num_phantoms == base.data.num_phantoms


def test_phantom_index_inverts_the_image_id():
    assert phantoms.phantom_index(phantoms.phantom_image_id(1234)) == 1234
    with pytest.raises(ValueError, match="not a phantom image id"):
        phantoms.phantom_index("00000001_000.png")


def test_drained_part_draws_drains_on_test_pneumothoraces_as_training_would(tmp_path, monkeypatch):
    _, drain = shortcuts.lesson_configs(_base(tmp_path, 700), 1.0)
    data = load_data(drain.data, progress=False)
    part = shortcuts.drained_part(drain.data, data.test, rate=1.0)
    positives = part.targets[:, PTX] > 0
    assert positives.sum() >= 3 and (part.drains == positives).all()  # rate 1: every one
    assert (part.drain_masks.any(axis=(1, 2)) == part.drains).all()
    # the cached test split itself has none: same images where there is no drain
    for i in range(len(part.drains)):
        same = np.array_equal(data.test.raw(i), part.images[i])
        assert same != part.drains[i]
    census = shortcuts.drain_census(drain.data, data)
    assert census.loc["train", "with a drain"] == census.loc["train", "Pneumothorax positives"] > 0
    assert census.loc["test", "with a drain"] == census.loc["val", "with a drain"] == 0
    assert (census["drains on negatives"] == 0).all()

    # Heatmaps hot on the drain point at the drain every time; hot on the lesion, at the lesion.
    run = SimpleNamespace(model=None, config=drain)
    for hot, column in ((part.drain_masks, "hottest pixel on the drain"), (part.lesion_masks, "on the lesion")):
        on = np.flatnonzero(part.drains)
        fake = lambda run, images, method, hot=hot, on=on: hot[on].astype(np.float32)
        monkeypatch.setattr(shortcuts, "_heat", fake)
        table = shortcuts.drain_pointing({"m": run}, part)
        assert table.loc["m", column] == 1.0
        assert table.loc["m", "images with a drain"] == len(on)
        assert 0 < table.loc["m", "chance (drain area share)"] < 0.3


def _fake_run(part, pneumothorax_scores: np.ndarray) -> SimpleNamespace:
    """A run whose model gives ``pneumothorax_scores`` to the part's images (in its order)."""
    def probabilities(images):
        assert len(images) == len(part.image_ids)
        scores = np.zeros((len(images), len(FINDINGS)), np.float32)
        scores[:, PTX] = pneumothorax_scores
        return scores
    return SimpleNamespace(predictions={"ids": part.image_ids}, predictor=SimpleNamespace(probabilities=probabilities))


def test_one_test_set_is_stratified_by_the_drain(tmp_path):
    """Oakden-Rayner et al.'s design: drained and undrained positives of ONE test set, each
    against the same negatives. A model that reads the drain ranks the drained positives
    perfectly and the undrained ones at chance; a model that reads the lesion ranks both."""
    _, drain = shortcuts.lesson_configs(_base(tmp_path, 700), 0.9)
    data = load_data(drain.data, progress=False)
    part = shortcuts.drained_part(drain.data, data.test)  # TEST_DRAIN_RATE of the positives
    positive = part.targets[:, PTX] > 0
    assert part.rate == shortcuts.TEST_DRAIN_RATE
    assert (part.drains & positive).sum() >= 2 and (~part.drains & positive).sum() >= 2, "both strata in one test set"
    assert not (part.drains & ~positive).any()
    with pytest.raises(ValueError, match="rate"):
        shortcuts.drained_part(drain.data, data.test, rate=0.0)

    runs_ = {"reads the drain": _fake_run(part, part.drains.astype(float)),
             "reads the lesion": _fake_run(part, positive.astype(float))}
    table = shortcuts.stratified_table(runs_, part, n_bootstrap=50)
    auc = table[f"{shortcuts.FINDING} AUROC"]
    assert auc[("reads the drain", shortcuts.WITH_DRAINS)] == 1.0
    assert auc[("reads the drain", shortcuts.WITHOUT_DRAINS)] == 0.5  # tied with every negative
    assert 0.5 < auc[("reads the drain", shortcuts.ALL_POSITIVES)] < 1.0  # the label's AUROC hides the failure
    assert (auc.loc["reads the lesion"] == 1.0).all()
    counts = table.loc["reads the drain"]
    assert counts.loc[shortcuts.WITH_DRAINS, "positives"] + counts.loc[shortcuts.WITHOUT_DRAINS, "positives"] == \
        counts.loc[shortcuts.ALL_POSITIVES, "positives"] == positive.sum()
    assert (counts["negatives"] == (~positive).sum()).all()  # the same negatives in every stratum

    # kept beside the drained run, read back for 13 and the index, and said in words
    path = runs.write_strata(runs.run_folder(drain), table) if runs.run_folder(drain).is_dir() else None
    assert path is None  # the drained run was never trained here: nothing to keep it beside
    runs.run_folder(drain).mkdir(parents=True)
    path = runs.write_strata(runs.run_folder(drain), table)
    assert path.parent == tmp_path / "runs" / shortcuts.LESSON_DIR / shortcuts.RUN_NAME
    back = shortcuts.read_strata(tmp_path / "runs")
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert back.attrs["notes"]["test drain rate"] == shortcuts.TEST_DRAIN_RATE
    assert set(runs.strata_under(tmp_path / "runs")) == {f"{shortcuts.LESSON_DIR}/{shortcuts.RUN_NAME}"}
    words = shortcuts.strata_summary(tmp_path / "runs").splitlines()
    assert words == conclusions.strata_words(back) and len(words) == 2
    assert words[0].startswith("reads the drain: Pneumothorax AUROC") and "(gap +0.500)" in words[0]
    assert f"1.000 [1.000, 1.000] on the {int((part.drains & positive).sum())} positives with a drain" in words[0]
    assert "not measured" in shortcuts.strata_summary(tmp_path / "elsewhere")
    assert shortcuts.read_strata(tmp_path / "elsewhere") is None
    path.write_text("{")
    with pytest.raises(ValueError, match="strata.json"):
        shortcuts.read_strata(tmp_path / "runs")


def test_a_runs_model_scores_the_drained_split_through_its_predictor(tmp_path):
    """The lesson feeds the one stratified test set to each run's model at the run's own size
    and channels, scores the finding by the model's own output names, and reads every stratum
    from those same scores (the run's saved drain-free predictions are not used)."""
    import torch

    from cxrlib.metrics import auroc
    from cxrlib.models import create_model
    from cxrlib.predict import predict_images

    _, drain = shortcuts.lesson_configs(_base(tmp_path, 700), 1.0)
    drain = drain.with_overrides({"model.in_chans": 3})
    data = load_data(drain.data, progress=False)
    part = shortcuts.drained_part(drain.data, data.test)
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=len(FINDINGS), in_chans=3).eval()
    saved = np.random.default_rng(0).random(part.targets.shape).astype(np.float32)
    run = runs.RunResult(run_dir=tmp_path, config=drain, history=None, metrics=None, train_seconds=0.0, model=model,
                         predictions={"ids": part.image_ids, "scores": saved, "label_names": np.array(FINDINGS)})
    table = shortcuts.stratified_table({"m": run}, part, n_bootstrap=0)
    expected = predict_images(model, list(part.images), 32, 3)
    positive = part.targets[:, PTX] > 0
    for stratum, chosen in ((shortcuts.ALL_POSITIVES, positive), (shortcuts.WITH_DRAINS, positive & part.drains),
                            (shortcuts.WITHOUT_DRAINS, positive & ~part.drains)):
        rows = chosen | ~positive
        assert table.loc[("m", stratum), "Pneumothorax AUROC"] == pytest.approx(
            auroc(part.targets[rows], expected[rows])[PTX])
    pointing = shortcuts.drain_pointing({"m": run}, part)
    assert pointing.loc["m", "images with a drain"] == int(part.drains.sum())
    assert 0.0 <= pointing.loc["m", "hottest pixel on the drain"] <= 1.0
