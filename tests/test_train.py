"""The training engine on small stand-in data and models (no cache, no registry needed).

The stand-in datasets are real :class:`CachedDataset` s over uint8 arrays in memory, so the
engine's whole feed runs (resident store, augmentation on the device, ten-crop). The real
DataBundle and model registry are exercised by the integration test at the end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch._dynamo.exc import BackendCompilerFailed
from torch._dynamo.utils import counters

import cxrlib.step as step
import cxrlib.train as train
from cxrlib import experiments, progress, runs
from cxrlib.augment import model_input, ten_crop
from cxrlib.config import ExperimentConfig
from cxrlib.data.datasets import CachedDataset
from cxrlib.runs import load_run
from cxrlib.train import FAULT_ENV, evaluate, fit, run_experiment

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def toy_dataset(n: int, k: int = 3, seed: int = 0, size: int = 8) -> CachedDataset:
    """uint8 images where class c brightens the horizontal band of rows 2c..2c+1 (plus noise).

    Bands, not quadrants: the training augmentation flips left-right, which keeps a band
    where it is. Samples come with ids, patient ids (two images each) and the data seed.
    """
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < 0.4).astype(np.float32)
    img = rng.normal(0, 1, (n, size, size))
    for c in range(k):
        band = 2 * (c % (size // 2))
        img[:, band:band + 2, :] += 2.0 * targets[:, c, None, None]
    u8 = np.clip(100 + 30 * img, 0, 255).astype(np.uint8)
    return CachedDataset.from_arrays(u8, targets, [f"F{c}" for c in range(k)],
                                     image_ids=[f"toy_{seed}_{i:04d}.png" for i in range(n)],
                                     patient_ids=np.arange(n) // 2, seed=seed)


class ToyNet(nn.Module):
    stages = None

    def __init__(self, k: int = 3, dropout: float = 0.3):
        super().__init__()
        # pooled to 4 rows x 1 column (32 features): row bands survive, left-right flips do not matter
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((4, 1)),
                                      nn.Flatten())
        self.drop = nn.Dropout(dropout)  # uses the global torch RNG: resume must restore it
        self.fc = nn.Linear(32, k)

    def forward(self, x):
        return self.fc(self.drop(self.features(x)))


class StagedToyNet(ToyNet):
    stages = ("global", "fusion")

    def __init__(self, k: int = 3):
        super().__init__(k)
        self.head2 = nn.Linear(32, k)
        self.stage = "global"

    def set_stage(self, name):
        self.stage = name
        for p in self.features.parameters():
            p.requires_grad_(name == "global")
        for p in self.fc.parameters():
            p.requires_grad_(name == "global")
        for p in self.head2.parameters():
            p.requires_grad_(name == "fusion")

    def forward(self, x):
        f = self.features(x)
        return self.fc(f) if self.stage == "global" else self.fc(f) + self.head2(f)


def toy_data(k=3, n_train=64, n_val=30, n_test=40):
    return SimpleNamespace(train=toy_dataset(n_train, k, seed=1), val=toy_dataset(n_val, k, seed=2),
                           test=toy_dataset(n_test, k, seed=3), label_names=[f"F{c}" for c in range(k)],
                           split_name="toy patient-wise split", source="toy")


def toy_cfg(run_dir: Path, **train) -> ExperimentConfig:
    base = {"epochs": 3, "batch_size": 8, "lr": 1e-2, "early_stopping_patience": 10, "n_bootstrap": 50, "device": "cpu",
            "augment": True, "threads": 1}
    base.update(train)
    return ExperimentConfig.from_dict({"name": run_dir.name, "runs_dir": str(run_dir.parent), "train": base})


def _train_main(run_dir: str, checkpoint_every: str) -> None:
    """Entry point of the subprocess that gets killed (see test_killed_run_resumes_exactly)."""
    torch.manual_seed(0)
    cfg = toy_cfg(Path(run_dir))
    fit(cfg, data=toy_data(), model=ToyNet(), progress=False, checkpoint_every=int(checkpoint_every) or None)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_run_experiment_writes_contract_files(tmp_path):
    cfg = toy_cfg(tmp_path / "toy")
    torch.manual_seed(0)
    res = run_experiment(cfg, data=toy_data(), model=ToyNet(), progress=False)
    d = tmp_path / "toy"
    for name in ("config.json", "history.csv", "metrics.json", "test_predictions.npz", "best.pt"):
        assert (d / name).is_file(), name
    assert not (d / "last.pt").exists()  # a finished run keeps what reloading needs, not the loop's state
    m = json.loads((d / "metrics.json").read_text())
    for key in ("experiment", "split", "source", "n_images", "label_names", "per_class", "mean_auroc",
                "mean_auroc_ci", "undefined", "train_seconds", "tta", "model", "fingerprint"):
        assert key in m, key
    assert m["split"] == "toy patient-wise split" and m["n_images"] == 40 and m["fingerprint"] == cfg.fingerprint()
    assert m["mean_auroc"] > 0.75  # the toy task is learnable in three epochs
    lo, hi = m["mean_auroc_ci"]
    assert lo <= m["mean_auroc"] <= hi
    with np.load(d / "test_predictions.npz", allow_pickle=False) as z:
        assert set(z.files) >= {"ids", "patient_ids", "targets", "scores", "label_names"}
        assert z["scores"].shape == (40, 3) and ((z["scores"] >= 0) & (z["scores"] <= 1)).all()
        assert z["ids"][0] == "toy_3_0000.png"
    hist = res.history
    assert list(hist["epoch"]) == [1, 2, 3] and {"train_loss", "val_loss", "val_mean_auroc", "lr"} <= set(hist)
    # checkpoints are plain data
    ck = torch.load(d / "best.pt", weights_only=True)
    assert isinstance(ck["config"], dict)
    again = load_run(d, with_model=False)
    assert again.metrics["mean_auroc"] == m["mean_auroc"] and len(again.history) == 3


def test_the_step_log_holds_every_optimizer_step(tmp_path):
    """steps.csv: one row per step, its loss the mean over the step's images, so the epoch's
    steps weighted by their images give history.csv's train_loss; 64 images in batches of 12
    end each epoch with a batch of 4."""
    torch.manual_seed(0)
    res = run_experiment(toy_cfg(tmp_path / "steps", batch_size=12), data=toy_data(), model=ToyNet(), progress=False)
    log = runs.read_steps(res.run_dir)
    hist = runs.read_history(res.run_dir)
    assert list(log.columns) == list(runs.STEP_COLUMNS)
    assert log["step"].tolist() == list(range(1, int(hist["step"].iloc[-1]) + 1)) == list(range(1, 19))
    assert log["epoch"].tolist() == [1] * 6 + [2] * 6 + [3] * 6
    assert log["samples"].tolist() == [12, 12, 12, 12, 12, 4] * 3
    assert np.isfinite(log["train_loss"]).all() and (log["train_loss"] > 0).all() and (log["stage"] == "").all()
    weighted = (log["train_loss"] * log["samples"]).groupby(log["epoch"]).sum() / log.groupby("epoch")["samples"].sum()
    assert weighted.to_numpy() == pytest.approx(hist["train_loss"].to_numpy(), rel=1e-12)
    assert log.groupby("epoch")["lr"].first().to_numpy() == pytest.approx(hist["lr"].to_numpy())
    assert log["train_loss"].nunique() == len(log)  # each step its own loss, not the epoch's mean repeated
    pd.testing.assert_frame_equal(res.steps, log)  # what run_experiment returns is what the folder holds
    pd.testing.assert_frame_equal(load_run(res.run_dir, with_model=False).steps, log)


def test_step_losses_leave_the_device_once_per_epoch(tmp_path, monkeypatch):
    """Each step's loss stays where the step left it (on a GPU: no wait for the device after
    every step); the epoch's losses come to the host in one copy, at its end."""
    from cxrlib.step_log import StepLog

    copies = []
    original = StepLog.to_host

    def counted(self):
        copies.append(len(self._on_device))
        original(self)

    monkeypatch.setattr(StepLog, "to_host", counted)
    torch.manual_seed(0)
    res = fit(toy_cfg(tmp_path / "copies"), data=toy_data(), model=ToyNet(), progress=False)
    assert [n for n in copies if n] == [8, 8, 8] and len(res.steps) == 24


def test_finished_run_is_reused(tmp_path, monkeypatch):
    cfg = toy_cfg(tmp_path / "reuse", epochs=1)
    run_experiment(cfg, data=toy_data(), model=ToyNet(), progress=False)
    import cxrlib.train as train

    monkeypatch.setattr(runs, "load_model", lambda run_dir, device="cpu": SimpleNamespace(module="loaded"))
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("a finished run must not be retrained"))
    res = run_experiment(cfg, data=toy_data(), model=ToyNet(), progress=False)
    assert res.model == "loaded" and res.metrics["fingerprint"] == cfg.fingerprint()


def test_same_seed_same_weights_and_numbers(tmp_path):
    out = []
    for name in ("a", "b"):
        torch.manual_seed(123)  # the config seed, not this, must decide: fit reseeds
        res = fit(toy_cfg(tmp_path / name, epochs=2), data=toy_data(), model=None or ToyNet(), progress=False)
        out.append(res)
    wa, wb = _weights(out[0].model), _weights(out[1].model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    cols = ["train_loss", "val_loss", "val_mean_auroc"]
    assert out[0].history[cols].equals(out[1].history[cols])


def test_seed_changes_the_weights(tmp_path):
    r0 = fit(toy_cfg(tmp_path / "s0", epochs=1), data=toy_data(), model=ToyNet(), progress=False)
    cfg1 = toy_cfg(tmp_path / "s1", epochs=1)
    cfg1.seed = 1
    torch.manual_seed(0)
    r1 = fit(cfg1, data=toy_data(), model=ToyNet(), progress=False)
    assert not torch.equal(r0.model.fc.weight, r1.model.fc.weight)


@pytest.mark.slow
@pytest.mark.parametrize("fault_step,every", [(13, 3), (11, 0)], ids=["mid-epoch", "epoch-end"])
def test_killed_run_resumes_exactly(tmp_path, fault_step, every):
    """A training process dies (os._exit, no cleanup); the rerun resumes and matches an uninterrupted run."""
    torch.manual_seed(0)
    ref = fit(toy_cfg(tmp_path / "ref"), data=toy_data(), model=ToyNet(), progress=False)

    run_dir = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
               **{FAULT_ENV: str(fault_step)})
    code = f"import test_train; test_train._train_main({str(run_dir)!r}, {str(every)!r})"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 75, proc.stderr[-2000:]  # it really died at the fault
    state = torch.load(run_dir / "last.pt", weights_only=True)["state"]
    assert 0 < state["step"] < fault_step and not state["done"]
    assert (state["batch_in_epoch"] > 0) == bool(every)  # mid-epoch checkpoint vs epoch-end one

    torch.manual_seed(999)  # a different process state: everything must come from the checkpoint
    resumed = fit(toy_cfg(run_dir), data=toy_data(), model=ToyNet(), progress=False)
    wr, wk = _weights(ref.model), _weights(resumed.model)
    assert all(torch.equal(wr[k], wk[k]) for k in wr)
    cols = ["epoch", "step", "lr", "train_loss", "val_loss", "val_mean_auroc", "best"]
    assert ref.history[cols].equals(resumed.history[cols])
    # the step log too, the steps before the crash included (from last.pt), written the same
    assert len(ref.steps) == 24 and ref.steps.equals(resumed.steps)
    pd.testing.assert_frame_equal(runs.read_steps(ref.run_dir), runs.read_steps(run_dir))
    m_ref, _ = evaluate(ref.model, toy_data().test, n_bootstrap=20)
    m_res, _ = evaluate(resumed.model, toy_data().test, n_bootstrap=20)
    assert m_ref == m_res


def test_early_stopping_keeps_best_weights(tmp_path):
    cfg = toy_cfg(tmp_path / "es", epochs=6, early_stopping_patience=1, lr=0.5, scheduler="none")
    res = fit(cfg, data=toy_data(), model=ToyNet(), progress=False)
    h = res.history
    best_row = h.loc[h["val_mean_auroc"].idxmax()]
    assert len(h) < 6 or h["best"].iloc[-1] or h["best"].iloc[-2]  # stopped after one epoch without gain
    best = torch.load(tmp_path / "es" / "best.pt", weights_only=True)
    assert best["epoch"] == int(best_row["epoch"])
    assert all(torch.equal(v, res.model.state_dict()[k]) for k, v in best["model"].items())


def test_plateau_divides_lr_by_ten(tmp_path):
    """A validation loss that stalls divides the learning rate by ten at every epoch (patience 0).

    The stall is exact on any machine: the model trains normally but answers every
    validation image with the logit 0 (its eval-mode output times zero), so the validation
    loss is log 2 every epoch. The lr the history records is the one each epoch trained with.
    """

    class StalledOnValidation(ToyNet):
        def forward(self, x):
            logits = super().forward(x)
            return logits if self.training else logits * 0.0

    model = StalledOnValidation()
    before = model.fc.weight.detach().clone()
    cfg = toy_cfg(tmp_path / "pl", epochs=4, lr=1e-3, plateau_patience=0, early_stopping_patience=10)
    res = fit(cfg, data=toy_data(), model=model, progress=False)
    assert list(res.history["val_loss"]) == pytest.approx([np.log(2)] * 4, abs=1e-6)
    assert not torch.equal(res.model.fc.weight, before)  # it did train
    # Epoch 1 sets the best loss; each later epoch fails to beat it and divides the lr.
    assert list(res.history["lr"]) == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5], rel=1e-6)


def test_max_steps_and_single_class(tmp_path):
    data = toy_data(k=1)
    data.label_names = ["Pneumonia"]
    for ds in (data.train, data.val, data.test):
        ds.label_names = ["Pneumonia"]
    cfg = toy_cfg(tmp_path / "k1", max_steps=5, loss="multilabel_margin")
    res = run_experiment(cfg, data=data, model=ToyNet(k=1), progress=False)
    assert int(res.history["step"].iloc[-1]) == 5 and len(res.history) == 1
    assert res.predictions["scores"].shape == (40, 1) and list(res.metrics["per_class"]) == ["Pneumonia"]


@pytest.mark.parametrize("loss", ["weighted_bce", "focal", "asymmetric"])
def test_every_loss_trains(tmp_path, loss):
    res = fit(toy_cfg(tmp_path / loss, epochs=1, loss=loss), data=toy_data(), model=ToyNet(), progress=False)
    assert np.isfinite(res.history["train_loss"]).all()


def test_staged_model_trains_each_stage(tmp_path):
    model = StagedToyNet()
    before = _weights(model)
    cfg = toy_cfg(tmp_path / "staged", stage_epochs=[2, 1])
    res = fit(cfg, data=toy_data(), model=model, progress=False)
    assert list(res.history["stage"]) == ["global", "global", "fusion"]
    after = _weights(res.model)
    assert not torch.equal(before["head2.weight"], after["head2.weight"])
    last = torch.load(tmp_path / "staged" / "last.pt", weights_only=True)
    assert last["state"]["done"] and last["state"]["stage_index"] == 1
    with pytest.raises(ValueError, match="stage_epochs"):
        fit(toy_cfg(tmp_path / "bad", stage_epochs=[1]), data=toy_data(), model=StagedToyNet(), progress=False)


def test_training_reports_each_epoch_and_stage(tmp_path, monkeypatch):
    """The events the report runner prints while a notebook trains (see cxrlib.progress)."""
    log = tmp_path / "progress.jsonl"
    monkeypatch.setenv(progress.ENV, str(log))
    cfg = toy_cfg(tmp_path / "staged", stage_epochs=[2, 1])
    run_experiment(cfg, data=toy_data(), model=StagedToyNet(), progress=False)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "epoch", "finished"]
    start, *epochs, done = events
    assert start["total"] == 3 and start["stages"] == ["global", "fusion"] and start["done"] == 0
    assert [(e["stage"], e["epoch"], e["epochs"], e["done"], e["total"]) for e in epochs] == [
        ("global", 1, 2, 1, 3), ("global", 2, 2, 2, 3), ("fusion", 1, 1, 3, 3)]
    assert all(e["run"] == "staged" for e in events)
    assert 0 < epochs[0]["seconds"] <= epochs[-1]["seconds"]
    assert done["mean_auroc"] == json.loads((tmp_path / "staged" / "metrics.json").read_text())["mean_auroc"]
    assert progress.describe(epochs[0]).startswith("staged: epoch 1/2 [global, stage 1/2], ")
    assert progress.describe(epochs[0]).endswith(" left")
    monkeypatch.setattr(runs, "load_model", lambda run_dir, device="cpu": SimpleNamespace(module="loaded"))
    run_experiment(cfg, data=toy_data(), model=StagedToyNet(), progress=False)
    assert json.loads(log.read_text().splitlines()[-1])["event"] == "reused"


def test_max_steps_caps_each_stage(tmp_path):
    """A capped staged run (smoke profiles) still trains every stage, max_steps steps each."""
    model = StagedToyNet()
    before = _weights(model)
    res = fit(toy_cfg(tmp_path / "capped", stage_epochs=[2, 1], max_steps=3), data=toy_data(), model=model,
              progress=False)
    assert list(res.history["stage"]) == ["global", "fusion"]
    assert list(res.history["step"]) == [3, 6]
    assert not torch.equal(before["head2.weight"], _weights(res.model)["head2.weight"])


def test_tencrop_averages_crop_probabilities():
    torch.manual_seed(0)
    model = ToyNet().eval()
    ds = toy_dataset(12)
    metrics, preds = evaluate(model, ds, tta="tencrop", n_bootstrap=0, batch_size=5)
    assert metrics["tta"] == "tencrop" and ds.tencrop is False  # the dataset is left as it was
    crops = ten_crop(model_input(ds.batch(np.arange(12)).images), ds.crop_size)  # [12, 10, 1, 7, 7]
    with torch.no_grad():
        want = torch.sigmoid(model(crops.flatten(0, 1))).view(12, 10, -1).mean(1).numpy()
    assert np.allclose(preds["scores"], want, atol=1e-6)
    _, plain = evaluate(model, ds, n_bootstrap=0)
    assert not np.allclose(plain["scores"], want, atol=1e-4)  # ten crops really were scored
    with pytest.raises(ValueError, match="tta"):
        evaluate(model, ds, tta="fivecrop")


def test_resident_and_streamed_batches_train_the_same_weights(tmp_path):
    """Where the images live (resident, streamed in-process, streamed by workers) never changes a result."""
    out = []
    for name, opts in [("resident", {}), ("inline", {"resident": "off"}),
                       ("workers", {"resident": "off", "num_workers": 2})]:
        torch.manual_seed(0)  # the same initial weights
        res = fit(toy_cfg(tmp_path / name, epochs=2, **opts), data=toy_data(), model=ToyNet(), progress=False)
        out.append(res)
    w0 = _weights(out[0].model)
    for other in out[1:]:
        assert all(torch.equal(w0[k], v) for k, v in _weights(other.model).items())
        assert out[0].history["train_loss"].equals(other.history["train_loss"])


def test_compile_option(tmp_path, monkeypatch):
    """train.compile: auto leaves the CPU alone; true compiles the training net; a failed compile under auto
    trains uncompiled with a warning; bad values are named."""
    calls = []

    def fake_compile(net, *args, **kwargs):
        calls.append(net)
        return net

    monkeypatch.setattr(torch, "compile", fake_compile)
    fit(toy_cfg(tmp_path / "auto", epochs=1), data=toy_data(), model=ToyNet(), progress=False)
    assert calls == []  # auto on the CPU: not compiled
    model = ToyNet()
    fit(toy_cfg(tmp_path / "on", epochs=1, compile=True), data=toy_data(), model=model, progress=False)
    assert calls == [model]

    def broken(net, *args, **kwargs):
        def fail(*a, **k):
            raise BackendCompilerFailed("inductor", RuntimeError("no compiler here"), None)
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(step, "compile_enabled", lambda setting, device: True)  # as auto does on CUDA
    with pytest.warns(UserWarning, match="no compiler here"):
        res = fit(toy_cfg(tmp_path / "fallback", epochs=1), data=toy_data(), model=ToyNet(), progress=False)
    assert np.isfinite(res.history["train_loss"]).all()
    with pytest.raises(RuntimeError, match="train.compile=false"):
        fit(toy_cfg(tmp_path / "strict", epochs=1, compile=True), data=toy_data(), model=ToyNet(), progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="train.compile"):
        fit(toy_cfg(tmp_path / "bad", compile="sometimes"), data=toy_data(), model=ToyNet(), progress=False)
    assert toy_cfg(tmp_path / "x").fingerprint() == toy_cfg(tmp_path / "x", compile=True, resident="off").fingerprint()


def test_a_dataset_without_uint8_batches_is_refused(tmp_path):
    data = toy_data()
    data.train = torch.utils.data.TensorDataset(torch.zeros(8, 1, 8, 8), torch.zeros(8, 3))
    data.train.targets = np.zeros((8, 3), np.float32)
    with pytest.raises(TypeError, match="uint8 batches"):
        fit(toy_cfg(tmp_path / "generic"), data=data, model=ToyNet(), progress=False)


def test_bad_config_values_are_named(tmp_path):
    with pytest.raises(ValueError, match="sgdx"):
        fit(toy_cfg(tmp_path / "o", optimizer="sgdx"), data=toy_data(), model=ToyNet(), progress=False)
    with pytest.raises(ValueError, match="tpu"):
        fit(toy_cfg(tmp_path / "d", device="tpu"), data=toy_data(), model=ToyNet(), progress=False)


@pytest.mark.slow
def test_real_data_and_registry_model_same_seed_same_everything(tmp_path):
    """With the real DataBundle (phantoms) and a registry model: same config + seed -> same split and weights."""
    from cxrlib.data import load_data

    results, splits = [], []
    for name in ("r1", "r2"):
        cfg = ExperimentConfig.from_dict({
            "name": name, "runs_dir": str(tmp_path),
            "data": {"source": "phantoms", "num_phantoms": 48, "image_size": 32, "cache_dir": str(tmp_path / "cache"),
                     "workers": 1},
            "model": {"name": "resnet18"},
            "train": {"epochs": 1, "batch_size": 8, "max_steps": 2, "device": "cpu", "threads": 1, "n_bootstrap": 0}})
        data = load_data(cfg.data, progress=False)
        splits.append([list(getattr(data, p).image_ids) for p in ("train", "val", "test")])
        results.append(fit(cfg, data=data, progress=False))
    assert splits[0] == splits[1]
    wa, wb = _weights(results[0].model), _weights(results[1].model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert results[0].history["val_loss"].equals(results[1].history["val_loss"])
    assert torch.load(tmp_path / "r1" / "last.pt", weights_only=True)["state"]["step"] == 2


def test_two_stage_takes_its_global_stage_from_the_finished_baseline(tmp_path):
    """AG-CNN's global stage is the baseline's training. With the baseline finished in the same
    runs folder, a two_stage run loads it instead of training it again, and ends with exactly
    the predictions it gets when it trains every stage itself; any other baseline is not used."""
    from cxrlib.data import load_data

    def config(runs_dir: Path, name: str, **change) -> ExperimentConfig:
        cfg = ExperimentConfig.from_dict({
            "name": name, "runs_dir": str(runs_dir),
            "data": {"source": "phantoms", "num_phantoms": 48, "image_size": 32,
                     "cache_dir": str(tmp_path / "cache"), "workers": 1},
            "model": {"name": "resnet18"},
            "train": {"epochs": 1, "batch_size": 8, "max_steps": 2, "device": "cpu", "threads": 1,
                      "n_bootstrap": 0}})
        return cfg.with_overrides(change)

    two_stage = {"model.wrapper": "two_stage", "train.stage_epochs": [1, 1, 1]}
    data = load_data(config(tmp_path, "x").data, progress=False)
    alone = experiments.run(config(tmp_path / "alone", "two_stage", **two_stage), data=data, progress=False)
    assert "reused_stages" not in alone.metrics  # no baseline there: every stage trains

    with_base = tmp_path / "with_baseline"
    baseline = experiments.run(config(with_base, "baseline"), data=data, progress=False)
    experiments.run(config(with_base, "other_seed", seed=1), data=data, progress=False)
    reused = experiments.run(config(with_base, "two_stage", **two_stage, **{"train.keep_last": True}), data=data, progress=False)
    assert reused.metrics["reused_stages"] == {"global": str(baseline.run_dir)}
    # kept in the checkpoint too, so a run resumed after the reuse still says where its stage came from
    last = torch.load(reused.run_dir / runs.LAST, weights_only=True)
    assert last["state"]["reused_stages"] == {"global": str(baseline.run_dir)}
    assert np.array_equal(reused.predictions["scores"], alone.predictions["scores"])
    assert reused.history["stage"].tolist() == alone.history["stage"].tolist() == ["global", "local", "fusion"]
    assert np.allclose(reused.history["val_loss"], alone.history["val_loss"])
    # the baseline's steps come with its history: the same step log as training every stage here
    assert reused.steps["stage"].tolist() == alone.steps["stage"].tolist() == ["global"] * 2 + ["local"] * 2 + [
        "fusion"] * 2
    assert reused.steps["step"].tolist() == list(range(1, 7))
    assert np.allclose(reused.steps["train_loss"], alone.steps["train_loss"])
    assert reused.steps.iloc[:2].drop(columns="stage").equals(baseline.steps.drop(columns="stage"))
    pd.testing.assert_frame_equal(runs.read_steps(reused.run_dir), reused.steps)

    # a baseline trained otherwise (another seed) is never taken for the global stage
    other = experiments.run(config(with_base, "two_stage_seed1", seed=2, **two_stage), data=data, progress=False)
    assert "reused_stages" not in other.metrics


def test_the_global_stage_is_taken_only_when_the_caller_hands_it_over(tmp_path):
    """Which finished run may stand for a global stage is decided across runs
    (experiments.finished_global_stage); fit only loads what it is given."""
    cfg = toy_cfg(tmp_path / "staged", stage_epochs=[1, 1])
    with pytest.raises(ValueError, match="first stage is not 'global'"):
        fit(toy_cfg(tmp_path / "plain"), data=toy_data(), model=ToyNet(), progress=False,
            global_stage_from=tmp_path)
    assert experiments.finished_global_stage(cfg) is None  # not two_stage: nothing to look for
    assert not hasattr(train, "_finished_global_stage")  # the training loop scans no runs folder


def test_compiled_fit_with_a_partial_last_batch_compiles_once(tmp_path):
    """train.compile=true on the CPU (inductor), 20 images in batches of 8: the last batch of 4
    runs eagerly instead of recompiling, and the compiled run trains what the eager one does."""
    data = toy_data(n_train=20)
    eager = fit(toy_cfg(tmp_path / "eager", epochs=2), data=data, model=ToyNet(dropout=0.0), progress=False)
    torch._dynamo.reset()
    counters.clear()
    compiled = fit(toy_cfg(tmp_path / "compiled", epochs=2, compile=True), data=toy_data(n_train=20),
                   model=ToyNet(dropout=0.0), progress=False)
    assert counters["stats"]["unique_graphs"] == 1  # one graph: the full batch's; no second for the 4 images
    assert np.allclose(compiled.history["train_loss"], eager.history["train_loss"], atol=1e-4)
    assert np.allclose(compiled.history["val_loss"], eager.history["val_loss"], atol=1e-4)


class _RunsOutOfMemory(ToyNet):
    """Its second training forward raises CUDA's out-of-memory error."""

    def __init__(self):
        super().__init__(dropout=0.0)
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls >= 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


@pytest.mark.parametrize("setting", [True, "auto"])
def test_out_of_memory_inside_a_compiled_step_reaches_the_user_as_out_of_memory(tmp_path, monkeypatch, setting):
    import warnings

    monkeypatch.setattr(torch, "compile", lambda net, *a, **k: net)  # the compiled module is the net: no build
    monkeypatch.setattr(step, "compile_enabled", lambda s, device: True)  # auto as on CUDA
    with warnings.catch_warnings(record=True) as caught, pytest.raises(torch.OutOfMemoryError, match="2.00 GiB"):
        warnings.simplefilter("always")
        fit(toy_cfg(tmp_path / str(setting), epochs=1, compile=setting), data=toy_data(), model=_RunsOutOfMemory(),
            progress=False)
    assert not [w for w in caught if "compile" in str(w.message)]  # not taken for a compiler failure


def test_compiler_failures_are_told_apart_from_the_steps_own_errors():
    oom = torch.OutOfMemoryError("CUDA out of memory")
    assert step.is_compiler_failure(BackendCompilerFailed("inductor", RuntimeError("C++ build failed"), None))
    assert not step.is_compiler_failure(BackendCompilerFailed("inductor", oom, None))  # OOM while autotuning: OOM
    assert not step.is_compiler_failure(oom)
    assert not step.is_compiler_failure(RuntimeError("shape mismatch"))


def test_epoch_seconds_include_the_checkpoint_and_history_write(tmp_path, monkeypatch):
    """history.csv's ``seconds`` (read by gpu_check as 'checkpoint included') count each epoch's write."""
    import time

    save_last = runs.save_last

    def slow_save_last(*args, **kwargs):
        time.sleep(0.4)
        return save_last(*args, **kwargs)

    monkeypatch.setattr(runs, "save_last", slow_save_last)
    res = fit(toy_cfg(tmp_path / "timed", epochs=2), data=toy_data(), model=ToyNet(), progress=False)
    seconds = res.history["seconds"].to_numpy()
    assert seconds[0] >= 0.4 and seconds[1] - seconds[0] >= 0.4  # each epoch holds its own checkpoint
    assert runs.read_history(res.run_dir)["seconds"].tolist() == pytest.approx(seconds.tolist())


def test_bf16_only_where_the_gpu_has_it_natively(monkeypatch):
    """A V100/T4 reports bf16 'supported' through emulation: it gets fp16 with loss scaling."""
    cuda = torch.device("cuda", 0)
    emulated = {"bf16": lambda including_emulation=True: including_emulation, "capability": (7, 0)}
    native = {"bf16": lambda including_emulation=True: True, "capability": (9, 0)}
    for gpu, want in ((emulated, (True, torch.float16, True)), (native, (True, torch.bfloat16, False))):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", gpu["bf16"])
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=gpu["capability"]: c)
        assert step.amp_settings(cuda, True) == want
    assert step.amp_settings(cuda, False) == (False, None, False)
    assert step.amp_settings(torch.device("cpu"), True) == (False, None, False)
