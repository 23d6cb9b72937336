"""What a finished run keeps on disk: best.pt and what the report reads, each weight once."""
from __future__ import annotations

import dataclasses

import torch

from cxrlib import runs
from cxrlib.models import create_model
from cxrlib.train import run_experiment
from test_train import ToyNet, toy_cfg, toy_data


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
