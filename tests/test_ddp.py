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

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from cxrlib.train import run_experiment
from test_train import ToyNet, toy_cfg, toy_data


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


def test_gather_rows_drops_padding_duplicates():
    from cxrlib.distributed import gather_rows

    # what two ranks of DistributedSampler(shuffle=False) hold for 5 items: [0,2,4] and [1,3,0]
    idx = np.array([0, 2, 4, 1, 3, 0])
    rows = np.array([[0.0], [2.0], [4.0], [1.0], [3.0], [0.0]])
    assert gather_rows(idx, rows, 5).ravel().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(RuntimeError, match="miss 1"):
        gather_rows(np.array([0, 1]), np.zeros((2, 1)), 3)
