"""The run folder: the one finished-run rule, listing, the results table, reloading offline."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlib import runs
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


def test_results_table_pairs_runs_with_the_baseline(fake_runs):
    table = runs.results_table(fake_runs, n_bootstrap=200)
    assert list(table["experiment"]) == ["baseline", "fpn", "other_split"]
    base, fpn, other = (table.iloc[i] for i in range(3))
    assert 0 <= base["CI low"] <= base["mean AUROC"] <= base["CI high"] <= 1
    assert np.isnan(base["diff vs baseline"])
    assert fpn["head"] == "fpn" and fpn["mean AUROC"] > base["mean AUROC"]
    assert fpn["diff vs baseline"] == pytest.approx(fpn["mean AUROC"] - base["mean AUROC"], abs=1e-9)
    assert fpn["diff CI low"] > 0 and fpn["p-value"] < 0.05
    assert np.isnan(other["diff vs baseline"])  # another test set: no paired difference
    text = runs.format_results(table)
    assert text.loc[1, "vs baseline [95% CI]"].startswith("+0.")
    assert text.loc[2, "split"].startswith("official")
    assert "[" in text.loc[0, "mean AUROC [95% CI]"]


def test_unreadable_predictions_name_the_file(tmp_path):
    (tmp_path / runs.PREDICTIONS).write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=f"{runs.PREDICTIONS}.*--redo"):
        runs.load_predictions(tmp_path)


# ----------------------------------------------------------------------------- reloading never downloads


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No network at all, the hub offline and its cache empty: a download attempt fails."""
    import huggingface_hub.constants as hub

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))


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
    runs.write_config(cfg.run_dir, cfg)
    runs.save_best(cfg.run_dir, weights, cfg, list(FINDINGS), epoch=1, score=0.5, stage=None)
    return cfg.run_dir, weights


def test_load_model_of_a_pretrained_run_needs_no_network(tmp_path, offline):
    run_dir, weights = _pretrained_run(tmp_path)
    model = runs.load_model(run_dir)
    assert model.label_names == list(FINDINGS) and model.image_size == 32 and not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
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
    import pandas as pd

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
