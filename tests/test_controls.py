"""The shortcut control: global intensity statistics only, fitted per finding."""
from __future__ import annotations

import numpy as np
import pytest

from cxrlib.config import DataConfig
from cxrlib.controls import (FEATURE_NAMES, control_predictions, cross_validated_scores, fit_control,
                             intensity_features)
from cxrlib.data import load_data
from cxrlib.metrics import auroc


def _images(n: int, size: int, rng: np.random.Generator, shift: np.ndarray) -> np.ndarray:
    """Noise images whose brightness is shifted by ``shift`` (one value per image)."""
    base = rng.normal(110, 35, (n, size, size)) + shift[:, None, None]
    return np.clip(base, 0, 255).astype(np.uint8)


def test_features_carry_no_spatial_information():
    """Permuting an image's pixels leaves its features unchanged: only the histogram counts."""
    rng = np.random.default_rng(0)
    img = np.zeros((32, 32), np.uint8)
    img[8:20, 4:30] = 200  # a bright structure somewhere
    img[24:, :] = rng.integers(0, 255, (8, 32))
    moved = np.roll(img, (9, -5), axis=(0, 1))
    shuffled = rng.permutation(img.ravel()).reshape(img.shape)
    f = intensity_features([img, moved, shuffled, img.T])
    assert f.shape == (4, len(FEATURE_NAMES))
    for k in range(1, 4):
        np.testing.assert_array_equal(f[k], f[0])
    # A different histogram gives different features.
    assert not np.array_equal(intensity_features([img // 2])[0], f[0])
    np.testing.assert_allclose(f[0, :16].sum(), 1.0, rtol=1e-6)


def test_a_finding_that_shifts_the_histogram_is_found():
    """Where a finding brightens the whole image, the control detects it; where it does not, chance."""
    rng = np.random.default_rng(1)
    n = 600
    y = np.stack([rng.random(n) < 0.3, rng.random(n) < 0.3], axis=1).astype(np.float32)
    images = _images(n, 24, rng, 25.0 * y[:, 0])  # finding 0 brightens, finding 1 changes nothing
    x = intensity_features(images)
    control = fit_control(x[:400], y[:400], ["bright", "invisible"])
    aucs = auroc(y[400:], control.predict_features(x[400:]))
    assert aucs[0] > 0.9, aucs
    assert abs(aucs[1] - 0.5) < 0.12, aucs


def test_cross_validation_keeps_patients_apart_and_scores_everyone():
    rng = np.random.default_rng(2)
    n = 300
    patients = np.repeat(np.arange(100), 3)
    y = np.repeat(rng.random(100) < 0.4, 3)[:, None].astype(np.float32)
    x = intensity_features(_images(n, 16, rng, 30.0 * y[:, 0]))
    scores = cross_validated_scores(x, y, patients, folds=5, seed=0)
    assert scores.shape == (n, 1) and np.isfinite(scores).all()
    assert auroc(y, scores)[0] > 0.85
    with pytest.raises(ValueError, match="folds"):
        cross_validated_scores(x, y, patients, folds=1)


def test_undefined_finding_scores_its_prevalence_and_bad_input_is_named():
    x = intensity_features(np.full((10, 8, 8), 100, np.uint8))
    control = fit_control(x, np.zeros((10, 1)), ["Hernia"])
    assert np.all(control.predict_features(x) == 0.0)
    with pytest.raises(ValueError, match="2-D uint8"):
        intensity_features([np.zeros((4, 4), np.float32)])
    with pytest.raises(ValueError, match="targets shape"):
        fit_control(x, np.zeros((9, 1)))


def test_control_predictions_look_like_a_runs_test_predictions(tmp_path):
    b = load_data(DataConfig(source="phantoms", num_phantoms=60, image_size=16, cache_dir=str(tmp_path), workers=1),
                  progress=False)
    pred = control_predictions(b)
    assert set(pred) == {"ids", "patient_ids", "targets", "scores", "label_names"}
    assert pred["scores"].shape == (len(b.test), 14) and pred["scores"].dtype == np.float32
    np.testing.assert_array_equal(pred["ids"], b.test.image_ids)
    np.testing.assert_array_equal(pred["targets"], b.test.targets)
    assert ((pred["scores"] >= 0) & (pred["scores"] <= 1)).all()
