"""The run folder: the one finished-run rule, listing, the results table, reloading offline."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlib import metrics, profiles, runs
from cxrlib.cli import main
from cxrlib.config import ExperimentConfig
from cxrlib.labels import FINDINGS
from cxrlib.models import create_model_from_config


# ----------------------------------------------------------------------------- finished runs


def test_is_finished_needs_metrics_predictions_and_weights(fake_runs):
    run = fake_runs / "fpn"
    cfg = runs.load_config(run)
    assert runs.is_finished(run) and runs.is_finished(run, cfg)
    assert not runs.is_finished(run, cfg.with_overrides({"train.epochs": cfg.train.epochs + 1}))
    assert not runs.is_finished(fake_runs / "unfinished") and not runs.is_finished(fake_runs / "missing")
    for name in (runs.METRICS, runs.PREDICTIONS, runs.BEST):
        (run / name).rename(run / (name + ".away"))
        assert not runs.is_finished(run), f"finished without {name}"
        (run / (name + ".away")).rename(run / name)
    assert runs.is_finished(run, cfg)


def test_list_runs_gives_what_a_menu_needs(fake_runs):
    (fake_runs / "broken").mkdir()
    for name in (runs.METRICS, runs.PREDICTIONS, runs.BEST):
        (fake_runs / "broken" / name).write_text("{")
    problems: list[str] = []
    listed = {r.name: r for r in runs.list_runs(fake_runs, problems)}
    assert sorted(listed) == ["baseline", "fpn", "other_split"]  # not the unfinished one, not the broken one
    assert len(problems) == 1 and "broken" in problems[0] and runs.CONFIG in problems[0]
    fpn = listed["fpn"]
    assert fpn.run_dir == fake_runs / "fpn" and fpn.architecture == "resnet18+fpn" and fpn.backbone == "resnet18"
    metrics = json.loads((fake_runs / "fpn" / runs.METRICS).read_text())
    assert fpn.mean_auroc == pytest.approx(metrics["mean_auroc"]) and fpn.split == metrics["split"]
    assert runs.list_runs(fake_runs / "nothing here") == []


# ----------------------------------------------------------------------------- seeds


def test_seed_runs_live_inside_the_experiment_folder(tmp_path):
    cfg = profiles.load("smoke", runs_dir=tmp_path).config("fpn", {"model.head": "fpn"})
    assert runs.run_folder(cfg) == tmp_path / "fpn"  # seed 0: where runs were before seeds existed
    assert runs.run_folder(dataclasses.replace(cfg, seed=2)) == tmp_path / "fpn" / "seed2"
    assert runs.run_label(cfg) == "fpn" and runs.run_label(dataclasses.replace(cfg, seed=2)) == "fpn seed 2"
    with pytest.raises(ValueError, match="seed must be a whole number"):
        runs.run_folder(dataclasses.replace(cfg, seed=-1))


def test_experiment_runs_group_finished_seeds_and_leave_out_stale_ones(seeded_runs):
    groups = runs.experiment_runs(seeded_runs)
    assert sorted(groups) == ["baseline", "better", "mixed"]
    better = seeded_runs / "better"
    assert groups["better"] == [better, better / "seed1", better / "seed2"]
    # the demo's menu and list_runs see one run per experiment: its seed-0 run
    assert [r.name for r in runs.list_runs(seeded_runs)] == ["baseline", "better", "mixed"]
    # a seed left from an earlier config of the experiment is not mixed into its seeds
    stale = seeded_runs / "mixed" / "seed2" / runs.CONFIG
    cfg = json.loads(stale.read_text())
    cfg["train"]["epochs"] += 1
    stale.write_text(json.dumps(cfg))
    for d in groups["mixed"][:2]:  # the newest seeds say which config is current
        (d / runs.METRICS).touch()
    problems: list[str] = []
    assert runs.experiment_runs(seeded_runs, problems)["mixed"] == groups["mixed"][:2]
    assert len(problems) == 1 and "mixed/seed2" in problems[0] and "earlier config" in problems[0]


# ----------------------------------------------------------------------------- the shortcut control


def test_control_run_is_finished_without_weights_and_never_in_the_model_menu(seeded_runs, control_run):
    base = runs.load_predictions(seeded_runs / "baseline")
    noise = np.random.default_rng(5).random(base["targets"].shape).astype(np.float32)
    folder, cfg = control_run(seeded_runs, base["targets"], base["ids"], 0.05 * base["targets"] + noise)
    assert not (folder / runs.BEST).exists()
    assert runs.is_finished(folder) and runs.is_finished(folder, cfg)  # the one rule, told the run's kind
    assert json.loads((folder / runs.METRICS).read_text())["kind"] == runs.CONTROL
    assert "shortcut_control" not in [r.name for r in runs.list_runs(seeded_runs)]
    assert [r.name for r in runs.list_runs(seeded_runs, kinds=[runs.CONTROL])] == ["shortcut_control"]
    (folder / runs.PREDICTIONS).unlink()
    assert not runs.is_finished(folder)  # a control still needs its predictions
    # a model run without best.pt is not finished, whatever it holds
    (seeded_runs / "better" / runs.BEST).unlink()
    assert not runs.is_finished(seeded_runs / "better")
    metrics_path = seeded_runs / "mixed" / runs.METRICS
    metrics_path.write_text(json.dumps({**json.loads(metrics_path.read_text()), "kind": "ensemble"}))
    with pytest.raises(ValueError, match="kind 'ensemble'"):
        runs.is_finished(seeded_runs / "mixed")


def test_unreadable_predictions_name_the_file(tmp_path):
    (tmp_path / runs.PREDICTIONS).write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=f"{runs.PREDICTIONS}.*--redo"):
        runs.load_predictions(tmp_path)


# ----------------------------------------------------------------------------- reloading never downloads


def _pretrained_run(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A run folder as training leaves it, whose config asked for ImageNet weights."""
    cfg = ExperimentConfig.from_dict({
        "name": "pretrained", "runs_dir": str(tmp_path / "runs"),
        "data": {"source": "phantoms", "num_phantoms": 40, "image_size": 32, "cache_dir": str(tmp_path / "cache"),
                 "workers": 1},
        "model": {"name": "resnet18", "pretrained": True},
        "train": {"device": "cpu", "batch_size": 8, "n_bootstrap": 0}})
    torch.manual_seed(0)
    model = create_model_from_config(cfg.model, num_classes=len(FINDINGS), pretrained=False)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    runs.write_config(runs.run_folder(cfg), cfg)
    runs.save_best(runs.run_folder(cfg), weights, cfg, list(FINDINGS), epoch=1, score=0.5, stage=None)
    return runs.run_folder(cfg), weights


def test_load_model_of_a_pretrained_run_needs_no_network(tmp_path, offline):
    run_dir, weights = _pretrained_run(tmp_path)
    predictor = runs.load_model(run_dir)
    assert predictor.label_names == list(FINDINGS) and predictor.image_size == 32 and not predictor.module.training
    assert predictor.channels == 1
    assert all(torch.equal(v, predictor.module.state_dict()[k]) for k, v in weights.items())
    assert runs.load_run(run_dir).model is not None


@pytest.mark.slow
def test_cli_evaluate_and_predict_a_pretrained_run_offline(tmp_path, offline, capsys):
    run_dir, _ = _pretrained_run(tmp_path)
    assert main(["evaluate", "--run", str(run_dir), "--n-bootstrap", "0", "--quiet"]) == 0
    assert runs.is_finished(run_dir) and "mean" in capsys.readouterr().out
    png = tmp_path / "chest.png"
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(png)
    assert main(["predict", str(png), "--run", str(run_dir), "--json", "--device", "cpu"]) == 0
    probs = json.loads(capsys.readouterr().out)[0]["probabilities"]
    assert list(probs) == list(FINDINGS) and all(0 < p < 1 for p in probs.values())


# ----------------------------------------------------------------------------- localization summary


def test_localization_summary_round_trips_beside_the_metrics(fake_runs):
    run = fake_runs / "fpn"
    assert runs.read_localization(run) is None  # nothing written: nothing read
    table = pd.DataFrame({"model": [0.41, np.nan], "random map": [0.12, 0.10], "Wang et al.": [0.69, 0.18],
                          "method": ["gradcam", "gradcam"]},
                         index=pd.Index(["Atelectasis", "Nodule"], name="finding"))
    path = runs.write_localization(run, table, notes={"metric": "T(IoBB>0.1)", "images": 40})
    assert path == run / runs.LOCALIZATION and path.is_file()
    back = runs.read_localization(run)
    pd.testing.assert_frame_equal(back, table)
    assert back.attrs["notes"] == {"metric": "T(IoBB>0.1)", "images": 40}
    assert runs.is_finished(run)  # a summary changes nothing about being finished
    runs.clear(run)
    assert runs.read_localization(run) is None  # --redo takes the summary away with the results
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runs.write_localization(fake_runs / "nope", table)
    (fake_runs / "baseline" / runs.LOCALIZATION).write_text("{")
    with pytest.raises(ValueError, match=runs.LOCALIZATION):
        runs.read_localization(fake_runs / "baseline")


# ----------------------------------------------------------------------------- step log


def test_the_step_log_round_trips_and_goes_with_the_results(fake_runs):
    run = fake_runs / "fpn"
    assert runs.read_steps(run) is None  # trained before the step log existed: nothing to read
    assert runs.load_run(run, with_model=False).steps is None
    rows = [{"step": 1, "epoch": 1, "stage": "", "samples": 32, "train_loss": 0.69, "lr": 1e-3},
            {"step": 2, "epoch": 1, "stage": "", "samples": 12, "train_loss": 0.52, "lr": 1e-3},
            {"step": 3, "epoch": 2, "stage": "fusion", "samples": 32, "train_loss": float("nan"), "lr": 1e-4}]
    runs.write_steps(run, rows)
    back = runs.read_steps(run)
    assert back["stage"].tolist() == ["", "", "fusion"]  # an empty stage stays a string, not NaN
    assert back["step"].tolist() == [1, 2, 3] and back["samples"].tolist() == [32, 12, 32]
    assert back["train_loss"].iloc[:2].tolist() == [0.69, 0.52] and np.isnan(back["train_loss"].iloc[2])
    pd.testing.assert_frame_equal(runs.load_run(run, with_model=False).steps, back)
    assert runs.STEPS in runs.FILES and runs.is_finished(run)
    runs.clear(run)
    assert not (run / runs.STEPS).exists()  # --redo takes it away with the history
    with pytest.raises(ValueError, match="lacks the columns.*'lr'"):
        runs.write_steps(run, pd.DataFrame(rows).drop(columns="lr"))
    (run / runs.STEPS).write_text("step,epoch\n1,1\n")
    with pytest.raises(ValueError, match=f"{runs.STEPS} lacks the columns"):
        runs.read_steps(run)
    (run / runs.STEPS).write_text("")
    with pytest.raises(ValueError, match=f"cannot read .*{runs.STEPS}"):
        runs.read_steps(run)
