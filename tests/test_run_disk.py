"""What a finished run keeps on disk: best.pt and what the report reads, each weight once."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cxrlib import checkpoint as ckpt_io
from cxrlib import experiments, runs
from cxrlib.config import ExperimentConfig
from cxrlib.models import create_model
from cxrlib.train import run_experiment
from test_train import ToyNet, toy_cfg, toy_data, toy_dataset


def test_a_finished_run_drops_last_pt_unless_asked_to_keep_it(tmp_path):
    torch.manual_seed(0)
    pruned = run_experiment(toy_cfg(tmp_path / "pruned", epochs=1), data=toy_data(), model=ToyNet(), progress=False)
    assert runs.is_finished(pruned.run_dir) and not (pruned.run_dir / runs.LAST).exists()
    for name in (runs.HISTORY, runs.STEPS, runs.BEST):  # the learning curve and the weights stay
        assert (pruned.run_dir / name).is_file(), name
    torch.manual_seed(0)
    kept_cfg = toy_cfg(tmp_path / "kept", epochs=1, keep_last=True)
    kept = run_experiment(kept_cfg, data=toy_data(), model=ToyNet(), progress=False)
    assert (kept.run_dir / runs.LAST).is_file()
    # keeping it is about disk, not the experiment: the same run either way
    assert kept_cfg.fingerprint() == dataclasses.replace(kept_cfg, train=dataclasses.replace(
        kept_cfg.train, keep_last=False)).fingerprint()
    assert runs.prune(kept.run_dir) > 0 and not (kept.run_dir / runs.LAST).exists()
    assert len(runs.read_steps(kept.run_dir)) == 8  # 64 images in batches of 8


def test_prune_leaves_an_unfinished_run_what_it_resumes_from(tmp_path):
    run_dir = tmp_path / "unfinished"
    run_dir.mkdir()
    runs.save_last(run_dir, {"state": {"step": 3}})
    assert runs.prune(run_dir) == 0 and (run_dir / runs.LAST).is_file()


def test_a_backbone_stores_each_weight_once_and_older_checkpoints_still_load():
    model = create_model("resnet18", num_classes=14, in_chans=1)
    state = model.state_dict()
    assert not [k for k in state if "_last_stage" in k]
    assert model.branch.backbone.last_stage() is model.branch.backbone.body.layer4  # still the module CAM hooks
    # a checkpoint written when the last stage was registered twice holds its weights under both names
    older = dict(state)
    older.update({k.replace("body.layer4.", "_last_stage."): v for k, v in state.items() if "body.layer4." in k})
    assert len(older) > len(state)
    fresh = create_model("resnet18", num_classes=14, in_chans=1)
    fresh.load_state_dict(older)  # strict: the duplicate names are dropped, nothing else is missing
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


def _resnet_run(tmp_path, **train):
    """A ResNet-18 (batch norm, so buffers beside parameters) trained one epoch on 32 px toys."""
    cfg = toy_cfg(tmp_path / f"resnet_{train.get('weights_dtype', 'default')}", epochs=1, **train)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="resnet18", pretrained=False),
                              data=dataclasses.replace(cfg.data, image_size=32))
    data = toy_data()
    data.train, data.val, data.test = (toy_dataset(n, 3, seed=s, size=32) for n, s in ((64, 1), (30, 2), (40, 3)))
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, in_chans=1)
    return run_experiment(cfg, data=data, model=model, progress=False), data


def test_best_pt_keeps_parameters_in_half_precision_and_reloads_to_the_runs_own_scores(tmp_path):
    result, data = _resnet_run(tmp_path)
    assert result.config.train.weights_dtype == "float16"  # the default
    stored = ckpt_io.load(result.run_dir / runs.BEST)["model"]
    params = {n for n, _ in create_model("resnet18", num_classes=3, in_chans=1).named_parameters()}
    assert {stored[n].dtype for n in params} == {torch.float16}
    assert all(v.dtype != torch.float16 for n, v in stored.items() if n not in params)  # batch-norm statistics
    full = _resnet_run(tmp_path, weights_dtype="float32")[0]
    half_bytes, full_bytes = ((r.run_dir / runs.BEST).stat().st_size for r in (result, full))
    assert half_bytes < 0.55 * full_bytes
    # the run was evaluated with exactly what it stores: reloaded, it scores its test set as it did
    # (at the run's own batch size: the CPU's kernels sum in another order for another batch size)
    again = experiments.score(runs.load_model(result.run_dir), data.test, batch_size=result.config.train.batch_size)
    assert np.array_equal(again["scores"], result.predictions["scores"])


def test_weights_dtype_is_part_of_the_experiment_and_float32_keeps_older_fingerprints(tmp_path):
    half = toy_cfg(tmp_path / "a", epochs=1)
    full = toy_cfg(tmp_path / "a", epochs=1, weights_dtype="float32")
    assert half.fingerprint() != full.fingerprint()
    # float32 weights are what every run stored before the choice existed: such a run keeps the
    # fingerprint it was written with (this one, computed by the code of that time), so it is reused
    older = ExperimentConfig.from_dict({"name": "a", "data": {"source": "chestxray14"},
                                        "train": {"weights_dtype": "float32"}})
    assert older.fingerprint() == "cf505711520a0b7f"
    with pytest.raises(ValueError, match=r"train\.weights_dtype.*float16"):
        toy_cfg(tmp_path / "a", weights_dtype="bfloat16").validate()


def test_as_stored_keeps_what_float16_cannot_hold():
    weights = {"w": torch.tensor([1.0e5, 1.0]), "v": torch.tensor([0.1, 3.0]), "bn.running_var": torch.tensor([1e-7])}
    out = ckpt_io.as_stored(weights, "float16", {"w", "v"})
    assert out["w"].dtype == torch.float32 and out["v"].dtype == torch.float16
    assert out["bn.running_var"].dtype == torch.float32
    assert ckpt_io.as_stored(weights, "float32", {"w", "v"})["v"].dtype == torch.float32
