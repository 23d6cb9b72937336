"""Two DistributedDataParallel processes against one: DenseNet-121's forward and one optimizer step.

gpu_check's ``ddp`` part and ``tests/test_ddp.py`` both run :func:`compare`. Two processes
(gloo, on the CPU: it needs neither two GPUs nor NCCL) each take half of a batch through
the model as ``fit`` prepares it under ``torchrun`` (:func:`cxrlib.distributed.setup`, then
:func:`cxrlib.distributed.sync_batchnorm`); one process takes the whole batch through the
plain model. The forward must agree image for image: a conversion that lost the activation
inside timm's ``BatchNormAct2d`` (every ReLU of DenseNet-121's BN layers) changes it. Then
one SGD step under DDP on each half must leave the weights of the one step on the whole.

BatchNorm runs on its running statistics (eval mode) on both sides: ``SyncBatchNorm``
computes batch statistics across processes only on GPUs, and DDP takes SyncBatchNorm
layers only in GPU modules, so the step runs on the model as ``fit`` trains it on CPUs.
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_and_batch(name: str, size: int, batch: int):
    import torch

    from cxrlib.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=14, in_chans=1).eval()  # BN on running statistics (see above)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 1, size, size, generator=g)
    y = (torch.rand(batch, 14, generator=g) < 0.3).float()
    return model, x, y


def _step(net, params, x, y) -> None:
    import torch

    # SGD: the update is linear in the gradient, so it shows a gradient difference as it is (Adam
    # divides near-zero gradients by their own size and turns rounding into a full-size step)
    opt = torch.optim.SGD(params, lr=0.1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _worker(rank: int, world: int, port: int, name: str, size: int, batch: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import cxrlib  # noqa: F401  (before timm/torchvision)
    import torch

    from cxrlib import distributed

    torch.set_num_threads(1)
    try:
        distributed.setup("cpu")
        part = slice(rank * batch // world, (rank + 1) * batch // world)
        model, x, y = _model_and_batch(name, size, batch)
        synced = distributed.sync_batchnorm(model)  # what fit does under torchrun on GPUs
        kinds = sorted({type(m).__name__ for m in synced.modules() if "BatchNorm" in type(m).__name__})
        with torch.no_grad():
            out = synced(x[part])
        # DDP accepts SyncBatchNorm on GPU modules only: the step runs as fit runs on CPUs
        model, x, y = _model_and_batch(name, size, batch)
        _step(torch.nn.parallel.DistributedDataParallel(model), model.parameters(), x[part], y[part])
        torch.save({"out": out, "weights": model.state_dict(), "kinds": kinds}, Path(folder) / f"rank{rank}.pt")
    finally:
        distributed.cleanup()


def compare(name: str = "densenet121", size: int = 64, batch: int = 4, world: int = 2) -> dict:
    """Largest differences between ``world`` DDP processes and one process (forward, weights after a step)."""
    import cxrlib  # noqa: F401
    import torch
    import torch.multiprocessing as mp

    model, x, y = _model_and_batch(name, size, batch)
    with torch.no_grad():
        ref = model(x)
    _step(model, model.parameters(), x, y)
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_worker, args=(world, _free_port(), name, size, batch, folder), nprocs=world, join=True)
        ranks = [torch.load(Path(folder) / f"rank{r}.pt", weights_only=True) for r in range(world)]
    out = torch.cat([r["out"] for r in ranks])
    weights = model.state_dict()
    return {"model": name, "size": size, "batch": batch, "processes": world, "backend": "gloo",
            "batchnorm_kinds": ranks[0]["kinds"],
            "forward_max_diff": float((out - ref).abs().max()),
            "weights_max_diff": max(float((ranks[0]["weights"][k].float() - v.float()).abs().max())
                                    for k, v in weights.items()),
            "ranks_identical": all(torch.equal(ranks[0]["weights"][k], r["weights"][k])
                                   for r in ranks[1:] for k in weights)}
