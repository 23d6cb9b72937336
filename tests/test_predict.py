"""The Predictor: a loaded model with its input contract (size, channels, label names, device)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlib import runs
from cxrlib.config import ExperimentConfig
from cxrlib.data import preprocess
from cxrlib.labels import FINDINGS, label_names
from cxrlib.models import create_model_from_config, get_model_spec
from cxrlib.predict import Predictor, predict_images


def _saved_run(tmp_path, size=32, in_chans=1, no_finding=False):
    """A run folder holding only what load_model reads: best.pt with its config and label names."""
    cfg = ExperimentConfig.from_dict({
        "name": "p", "runs_dir": str(tmp_path / "runs"),
        "data": {"image_size": size, "include_no_finding": no_finding},
        "model": {"name": "resnet18", "in_chans": in_chans}, "train": {"device": "cpu"}})
    names = label_names(no_finding)
    torch.manual_seed(0)
    model = create_model_from_config(cfg.model, num_classes=len(names), pretrained=False)
    run_dir = runs.run_folder(cfg)
    runs.write_config(run_dir, cfg)
    runs.save_best(run_dir, model.state_dict(), cfg, names, epoch=1, score=0.5, stage=None)
    return run_dir, model.eval()


def _pixels(seed, shape=(70, 90)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_a_run_reloads_with_its_size_channels_and_names(tmp_path):
    run_dir, _ = _saved_run(tmp_path, size=40, in_chans=3, no_finding=True)
    predictor = runs.load_model(run_dir)
    assert (predictor.image_size, predictor.channels) == (40, 3)
    assert predictor.label_names == list(FINDINGS) + ["No Finding"]
    assert predictor.inputs([_pixels(0)]).shape == (1, 3, 40, 40)
    assert predictor.probabilities([_pixels(0)]).shape == (1, 15)


def test_files_and_arrays_score_alike_and_as_the_module_does(tmp_path):
    run_dir, module = _saved_run(tmp_path)
    predictor = runs.load_model(run_dir)
    images = [_pixels(1), _pixels(2, (50, 50))]
    png = tmp_path / "x.png"
    Image.fromarray(images[0]).save(png)
    from_arrays = predictor.probabilities(images)
    from_file = predictor.probabilities([str(png)])
    np.testing.assert_allclose(from_file[0], from_arrays[0], atol=1e-6)
    with torch.no_grad():
        direct = torch.sigmoid(module(torch.stack([preprocess(im, 32, 1) for im in images]))).numpy()
    np.testing.assert_allclose(from_arrays, direct, atol=1e-5)
    np.testing.assert_allclose(predict_images(module, images, 32, 1), direct, atol=1e-5)


def test_another_size_is_asked_for_explicitly(tmp_path):
    predictor = runs.load_model(_saved_run(tmp_path)[0])
    assert predictor.at_size(None) is predictor
    bigger = predictor.at_size(64)
    assert bigger.image_size == 64 and predictor.image_size == 32
    assert bigger.inputs([_pixels(3)]).shape == (1, 1, 64, 64)


def test_heatmaps_name_their_finding_by_the_models_own_outputs(tmp_path):
    predictor = runs.load_model(_saved_run(tmp_path)[0])
    maps = predictor.heatmaps([_pixels(4), _pixels(5)], "Effusion")
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert 0.0 <= maps.min() and maps.max() <= 1.0
    with pytest.raises(ValueError, match="no output 'Flu'.*Atelectasis"):
        predictor.heatmaps([_pixels(4)], "Flu")
    probs, every = predictor.analyse(predictor.input(_pixels(4)))
    np.testing.assert_allclose(probs, predictor.probabilities([_pixels(4)])[0], atol=1e-5)
    assert every.shape == (14, 32, 32)


def test_an_untrained_architecture_is_fed_at_its_registry_size():
    predictor = Predictor.untrained("resnet18")
    assert predictor.image_size == get_model_spec("resnet18").input_size
    assert (predictor.channels, predictor.label_names) == (1, list(FINDINGS))
    assert Predictor.untrained("resnet18", image_size=48, module=predictor.module).image_size == 48


@pytest.mark.parametrize("bad,needle", [({"image_size": 0}, "image_size"), ({"channels": 2}, "2")])
def test_a_bad_contract_is_refused(bad, needle):
    values = {"module": torch.nn.Linear(1, 1), "image_size": 32, "channels": 1, "label_names": ["a"], **bad}
    with pytest.raises(ValueError, match=needle):
        Predictor(**values)
