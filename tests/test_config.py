"""ExperimentConfig.validate: the one validation, asked by the CLI, the notebooks' runs and fit."""
from __future__ import annotations

import pytest

from cxrlib import experiments
from cxrlib.config import ExperimentConfig
from cxrlib.train import fit


def test_a_valid_config_passes_and_is_returned():
    cfg = ExperimentConfig()
    assert cfg.validate() is cfg
    staged = cfg.with_overrides({"model.wrapper": "two_stage", "train.tta": "tencrop", "model.in_chans": 3,
                                 "train.device": "cuda:1", "train.max_steps": 2})
    assert staged.validate() is staged


@pytest.mark.parametrize("override,needle", [
    ({"data.source": "mnist"}, "'mnist' (data.source)"),
    ({"model.name": "alexnet9"}, "'alexnet9' (model.name)"),
    ({"model.head": "bigpool"}, "'bigpool' (model.head)"),
    ({"model.wrapper": "threestage"}, "'threestage' (model.wrapper): expected none or one of"),
    ({"model.in_chans": 2}, "model.in_chans"),
    ({"train.loss": "hinge"}, "'hinge' (train.loss)"),
    ({"train.tta": "fivecrop"}, "'fivecrop' (train.tta)"),
    ({"train.device": "tpu"}, "'tpu'"),
    ({"train.device": "cuda:x"}, "'cuda:x'"),
    ({"data.image_size": 0}, "data.image_size=0"),
    ({"train.epochs": 0}, "train.epochs=0"),
    ({"train.batch_size": 0}, "train.batch_size=0"),
    ({"train.n_bootstrap": -1}, "train.n_bootstrap=-1"),
    ({"train.max_steps": 0}, "train.max_steps=0"),
    ({"data.limit": 0}, "data.limit=0"),
    ({"data.val_fraction": 1.0}, "data.val_fraction=1.0"),
])
def test_each_bad_value_is_named_with_its_key(override, needle):
    with pytest.raises(ValueError) as err:
        ExperimentConfig().with_overrides(override).validate()
    assert needle in str(err.value)


def test_fit_validates_before_it_trains(tmp_path):
    """A model handed to fit does not excuse a config naming a model that does not exist."""
    cfg = ExperimentConfig.from_dict({"name": "bad", "runs_dir": str(tmp_path),
                                      "model": {"name": "alexnet9"}, "train": {"device": "cpu"}})

    class Untouched:
        def __getattr__(self, name):
            pytest.fail(f"fit read the data ({name}) before validating the config")

    with pytest.raises(ValueError, match="alexnet9"):
        fit(cfg, data=Untouched(), model=None, progress=False)
    assert not (tmp_path / "bad").exists()


def test_a_notebooks_run_validates_before_looking_for_the_run(tmp_path, monkeypatch):
    cfg = ExperimentConfig.from_dict({"name": "bad", "runs_dir": str(tmp_path), "train": {"loss": "hinge"}})
    monkeypatch.setattr(experiments.runs, "finished_at", lambda *_: pytest.fail("the run folder was asked first"))
    with pytest.raises(ValueError, match="hinge"):
        experiments.run(cfg)
