"""Shared fixtures: where the real sample data lives and whether it must be there, a machine
with no network, the smoke profile's phantoms, and run folders made to order.

The real ChestX-ray14 sample and the MedMNIST npz sit in ``../shared/data`` beside the
checkout (override with CXRLIB_SHARED_DATA). Locally a missing folder skips the tests that
need it; in CI (CXRLIB_REQUIRE_SHARED_DATA=1 or CI=true) it fails them, so a broken path
can never turn into a green run that tested nothing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

import cxrlib  # noqa: F401  (makes torchvision importable before any test imports it)
from cxrlib import metrics, profiles, runs
from cxrlib.data import load_data
from cxrlib.labels import FINDINGS
from cxrlib.metrics import auroc_report

REPO = Path(__file__).resolve().parent.parent


def _required() -> bool:
    return os.environ.get("CXRLIB_REQUIRE_SHARED_DATA") == "1" or os.environ.get("CI", "").lower() == "true"


def shared_data_dir() -> Path:
    return profiles.shared_data_dir()


def _need(path: Path, what: str) -> Path:
    if path.exists():
        return path
    message = f"{what} not found at {path}; set CXRLIB_SHARED_DATA to the folder holding the shared data"
    if _required():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(shared_data_dir(), "shared data folder")


@pytest.fixture(scope="session")
def cxr14_sample(shared_data) -> Path:
    """The real ChestX-ray14 sample, in the release's own layout."""
    return _need(shared_data / "chestxray14-sample", "ChestX-ray14 sample")


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory, cxr14_sample) -> Path:
    """An image cache of the real sample at the ``sample`` profile's size, built once per test
    session and shared by every test that runs that profile (``data.cache_dir=<it>``)."""
    cache = tmp_path_factory.mktemp("sample_cache")
    profile = profiles.load("sample", data_dir=cxr14_sample, overrides=[f"data.cache_dir={cache}"])
    load_data(profile.baseline.data, progress=False)
    return cache


@pytest.fixture(scope="session")
def pneumoniamnist_npz(shared_data) -> Path:
    return _need(shared_data / "pneumoniamnist" / "pneumoniamnist.npz", "PneumoniaMNIST npz")


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory):
    """The smoke profile's phantom bundle (32 px), its image cache built once per test session
    in a temporary folder. Shared by every test that asks: a test changes it only through
    ``monkeypatch``."""
    cache = tmp_path_factory.mktemp("phantom_cache")
    return load_data(profiles.load("smoke", overrides=[f"data.cache_dir={cache}"]).baseline.data, progress=False)


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """A machine with no network: sockets refuse, the Hugging Face cache and the weights folder
    are empty, and whether the hub answers is asked afresh (it cannot be reached), so any
    download attempt fails."""
    import huggingface_hub.constants as hub

    from cxrlib.models import weights

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)  # not told: the probe must find out
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    weights.forget_hub_state()
    yield
    weights.forget_hub_state()


# ----------------------------------------------------------------------------- run folders


def _fake_run(root: Path, name: str, scores: np.ndarray, targets: np.ndarray, ids: np.ndarray,
              split: str = "synthetic phantoms, patient-wise 70/10/20", seed: int = 0, **cfg_changes) -> Path:
    """A finished run folder as training writes it (numbers from real AUROCs; best.pt a stand-in),
    where :func:`cxrlib.runs.run_folder` puts training seed ``seed`` of experiment ``name``."""
    cfg = dataclasses.replace(profiles.load("smoke", runs_dir=root).config(name, cfg_changes or None), seed=seed)
    d = runs.run_folder(cfg)
    d.mkdir(parents=True, exist_ok=True)
    patients = np.arange(len(ids)) // 2
    metrics = auroc_report(targets, scores, list(FINDINGS), patient_ids=patients, n_bootstrap=50)
    metrics.update({"experiment": name, "split": split, "source": "phantoms", "n_images": len(ids),
                    "train_seconds": 12.5, "fingerprint": cfg.fingerprint()})
    (d / runs.METRICS).write_text(json.dumps(metrics))
    (d / runs.CONFIG).write_text(cfg.to_json())
    np.savez(d / runs.PREDICTIONS, ids=ids, patient_ids=patients, targets=targets, scores=scores,
             label_names=np.array(FINDINGS))
    (d / runs.BEST).write_bytes(b"weights")  # present, as in a finished run; never loaded by these tests
    return d


@pytest.fixture()
def fake_runs(tmp_path):
    """A runs folder: a baseline, a better FPN run on the same test images, a run on another
    test set, and an unfinished run."""
    rng = np.random.default_rng(0)
    n = 60
    targets = (rng.random((n, len(FINDINGS))) < 0.3).astype(np.float32)
    targets[:2] = 1 - targets[2:4]  # every class has both labels
    ids = np.array([f"img_{i:03d}.png" for i in range(n)])
    root = tmp_path / "runs"
    noise = rng.random((n, len(FINDINGS)))
    _fake_run(root, "baseline", 0.15 * targets + noise, targets, ids)
    _fake_run(root, "fpn", 0.6 * targets + noise, targets, ids, **{"model.head": "fpn"})
    _fake_run(root, "other_split", noise, targets, np.array([f"x_{i}" for i in range(n)]),
              split="official patient-wise split (test_list.txt)")
    (root / "unfinished").mkdir()  # no metrics: not listed
    return root


def _control_run(root: Path, targets, ids, scores):
    """A control's run folder written through runs.write_control, as experiments.run_control does."""
    cfg = profiles.load("smoke", runs_dir=root).config("shortcut_control", {"model.name": "intensity_statistics"})
    names = list(FINDINGS)
    patients = np.arange(len(ids)) // 2
    report = metrics.auroc_report(targets, scores, names, patient_ids=patients, n_bootstrap=50)

    class Bundle:
        split_name, source = "synthetic phantoms, patient-wise 70/10/20", "phantoms"

    preds = {"ids": ids, "patient_ids": patients, "targets": targets, "scores": scores, "label_names": np.array(names)}
    runs.write_control(runs.run_folder(cfg), cfg, Bundle(), report, preds, 0.4, {"name": "intensity statistics"})
    return runs.run_folder(cfg), cfg


@pytest.fixture()
def control_run():
    """``control_run(runs_dir, targets, ids, scores)`` writes a shortcut control's run folder."""
    return _control_run


def seeded_scores(targets: np.ndarray, signal: float, seed: int) -> np.ndarray:
    """Scores that carry ``signal`` times the labels plus noise drawn from ``seed``: a stand-in
    for one training seed's predictions (a larger signal, a higher AUROC)."""
    return (signal * targets + np.random.default_rng(1000 + seed).random(targets.shape)).astype(np.float32)


@pytest.fixture()
def seeded_runs(tmp_path):
    """A runs folder of experiments trained with three seeds on one test set of 80 images of
    40 patients: the baseline; ``better`` (more signal in every seed); ``mixed`` (one seed far
    better, two worse: a paired test alone would call it); and an unfinished seed."""
    rng = np.random.default_rng(1)
    n = 80
    targets = (rng.random((n, len(FINDINGS))) < 0.3).astype(np.float32)
    targets[:2] = 1 - targets[2:4]
    ids = np.array([f"img_{i:03d}.png" for i in range(n)])
    root = tmp_path / "runs"
    for seed, (base, better, mixed) in enumerate([(0.30, 0.80, 1.60), (0.35, 0.85, 0.20), (0.25, 0.75, 0.20)]):
        _fake_run(root, "baseline", seeded_scores(targets, base, seed), targets, ids, seed=seed)
        _fake_run(root, "better", seeded_scores(targets, better, 10 + seed), targets, ids, seed=seed,
                  **{"model.head": "fpn"})
        _fake_run(root, "mixed", seeded_scores(targets, mixed, 20 + seed), targets, ids, seed=seed,
                  **{"train.loss": "focal"})
    (root / "better" / "seed7").mkdir()  # a seed still training: not counted
    return root


@pytest.fixture()
def study(seeded_runs, control_run):
    """The seeded runs folder with a shortcut control beside the baseline."""
    base = runs.load_predictions(seeded_runs / "baseline")
    noise = np.random.default_rng(5).random(base["targets"].shape).astype(np.float32)
    control_run(seeded_runs, base["targets"], base["ids"], 0.05 * base["targets"] + noise)
    return seeded_runs
