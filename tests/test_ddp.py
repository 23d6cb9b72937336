"""Two processes with DistributedDataParallel (gloo, CPU) give the result of one process.

With the global batch split over the ranks (8 = 2 x 4) and the distributed sampler's
interleaved shards, every optimizer step sees the same 8 images as the single process, and
DDP's gradient average equals the single-process mean: weights agree to float rounding.
The validation and test sets have odd sizes, so the sampler pads one rank with a duplicate
that the gathering must drop.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from cxrlib import runs
from cxrlib.train import run_experiment
from test_train import ToyNet, toy_cfg, toy_data

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    return toy_data(n_train=64, n_val=31, n_test=41)


def _worker(rank: int, world: int, port: int, run_dir: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from cxrlib import distributed
    from pathlib import Path

    try:
        res = run_experiment(toy_cfg(Path(run_dir), epochs=2, augment=True), data=_data(),
                             model=ToyNet(dropout=0.0), progress=False)
        torch.save({"weights": res.model.state_dict(), "scores": torch.from_numpy(res.predictions["scores"]),
                    "history": torch.from_numpy(res.history[["val_loss", "val_mean_auroc", "train_loss"]].to_numpy(np.float64))},
                   f"{out}.rank{rank}")
    finally:
        distributed.cleanup()


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    torch.manual_seed(0)
    single = run_experiment(toy_cfg(tmp_path / "single", epochs=2, augment=True), data=_data(),
                            model=ToyNet(dropout=0.0), progress=False)
    out = str(tmp_path / "ddp_result")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), out), nprocs=2, join=True)

    r0 = torch.load(f"{out}.rank0", weights_only=True)
    r1 = torch.load(f"{out}.rank1", weights_only=True)
    for k, v in single.model.state_dict().items():
        assert torch.allclose(r0["weights"][k], v, atol=1e-5), k
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k  # DDP keeps the ranks identical
    # every test image scored once, in dataset order, on every rank
    assert r0["scores"].shape == (41, 3) and torch.equal(r0["scores"], r1["scores"])
    assert np.allclose(r0["scores"].numpy(), single.predictions["scores"], atol=1e-5)
    assert np.allclose(r0["history"].numpy(), single.history[["val_loss", "val_mean_auroc", "train_loss"]].to_numpy(),
                       atol=1e-5)
    m_ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m_ddp["n_images"] == 41
    assert m_ddp["mean_auroc"] == pytest.approx(single.metrics["mean_auroc"], abs=1e-4)
    with np.load(tmp_path / "ddp" / "test_predictions.npz") as z:
        assert list(z["ids"]) == list(single.predictions["ids"])
    # each step's loss is its global batch's (both ranks' images), as one process computes it
    steps = runs.read_steps(tmp_path / "ddp")
    assert steps[["step", "epoch", "samples"]].equals(single.steps[["step", "epoch", "samples"]])
    assert steps["samples"].tolist() == [8] * 16
    assert np.allclose(steps["train_loss"], single.steps["train_loss"], atol=1e-5)


def test_gather_rows_drops_padding_duplicates():
    from cxrlib.distributed import gather_rows

    # what two ranks of DistributedSampler(shuffle=False) hold for 5 items: [0,2,4] and [1,3,0]
    idx = np.array([0, 2, 4, 1, 3, 0])
    rows = np.array([[0.0], [2.0], [4.0], [1.0], [3.0], [0.0]])
    assert gather_rows(idx, rows, 5).ravel().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(RuntimeError, match="miss 1"):
        gather_rows(np.array([0, 1]), np.zeros((2, 1)), 3)


@pytest.mark.slow
def test_two_gloo_processes_run_densenet121_as_one(monkeypatch):
    """DDP as fit sets it up on GPUs (distributed.sync_batchnorm, then DDP) keeps DenseNet-121's
    forward image for image and, after one step on the averaged gradient, its weights. torch's
    own converter turns timm's BatchNormAct2d into a plain SyncBatchNorm whose ReLU is never
    called: the forward then differs by far more than rounding."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))  # spawned workers import the module by name
    from gpu_check_ddp import compare

    res = compare("densenet121", size=64, batch=4)
    assert res["forward_max_diff"] < 1e-4
    assert res["batchnorm_kinds"] == ["SyncBatchNormAct"]  # every BN kept its activation
    assert res["weights_max_diff"] < 1e-5 and res["ranks_identical"]


def test_cxrlib_check_warns_when_torch_cannot_use_the_gpu_as_pinned():
    from cxrlib import distributed

    assert distributed.build_warnings(gpu=False, torch_cuda=None) == []  # no GPU: a CPU build is right
    (cpu_build,) = distributed.build_warnings(gpu=True, torch_cuda=None)
    assert "CPU-only build" in cpu_build[0] and "GPU machine" in cpu_build[1]
    (old,) = distributed.build_warnings(gpu=True, torch_cuda="11.8", cuda_available=True)
    assert "CUDA 11.8, older than the CUDA 12.8" in old[0]
    (driver,) = distributed.build_warnings(gpu=True, torch_cuda="12.8", cuda_available=False)
    assert "driver" in driver[0] and "nvidia-smi" in driver[1]
    assert distributed.build_warnings(gpu=True, torch_cuda="12.9", cuda_available=True) == []


def test_the_check_reports_those_warnings(monkeypatch):
    from cxrlib import distributed, preflight
    from cxrlib.config import ExperimentConfig

    monkeypatch.setattr(distributed, "nvidia_gpu_present", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", None)
    found = preflight.check_device([ExperimentConfig.from_dict({"name": "x", "train": {"device": "cpu"}})])
    assert any(f.status == preflight.WARNING and "CPU-only build" in f.what and "GPU machine" in f.todo for f in found)


def test_a_gpu_rank_binds_its_gpu_before_joining_the_group(monkeypatch):
    """set_device first, then init_process_group(nccl, device_id=that GPU)."""
    from cxrlib import distributed

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls.append(("set_device", str(dev))))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(calls and calls[-1][0] == "init"))
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, device_id=None: calls.append(("init", backend, str(device_id))))
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    info, dev = distributed.setup("cuda")
    assert calls == [("set_device", "cuda:1"), ("init", "nccl", "cuda:1")]
    assert str(dev) == "cuda:1" and info.rank == 1 and info.world_size == 2
