"""Several processes (``torchrun``) with PyTorch's own DistributedDataParallel.

``torchrun --nproc_per_node N -m cxrlib train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK;
:func:`setup` joins the process group (NCCL on GPUs, gloo on CPU). Only rank 0 logs and
writes files; predictions are gathered from every rank, with the distributed sampler's
padding duplicates dropped, so metrics are computed on each image exactly once.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


# The CUDA of the torch build README's "GPU machine" installs (the cu128 wheel of the pinned torch)
PINNED_CUDA = (12, 8)
INSTALL_HINT = "install the CUDA build of the pinned torch (README, 'GPU machine': one pip command)"


@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is the GPU when there is one; ``cuda`` under torchrun is this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for but CUDA is not available; use --device cpu")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    elif name != "cpu":
        raise ValueError(f"unknown device {name!r}: expected auto, cpu, cuda or cuda:N")
    return torch.device(name)


def setup(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return rank info and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistInfo(), resolve_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        # the GPU first, then the group bound to it: NCCL then creates its communicator on this
        # rank's GPU at once, instead of guessing (GPU 0 for every rank) at the first collective
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        if dev.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=dev)
        else:
            dist.init_process_group(backend="gloo")
    return DistInfo(dist.get_world_size(), dist.get_rank(), local_rank), dev


def sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every BatchNorm computing its statistics over the global batch of all ranks.

    timm's converter, not ``nn.SyncBatchNorm.convert_sync_batchnorm``: torch's turns timm's
    ``BatchNormAct2d`` (DenseNet-121, EfficientNet) into a plain ``SyncBatchNorm`` whose
    ``act``/``drop`` children stay attached but are never called, so every ReLU inside those
    layers would silently vanish on more than one GPU. timm's keeps them
    (``SyncBatchNormAct``) and converts plain BatchNorms as torch does.
    """
    from timm.layers import convert_sync_batchnorm  # timm only where a model is trained

    return convert_sync_batchnorm(model)


def current() -> DistInfo:
    """Rank info of the running process group (or a single process)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_rows(indices: np.ndarray, rows: np.ndarray, n_total: int) -> np.ndarray:
    """Put every rank's ``rows`` (for dataset ``indices``) together in dataset order.

    DistributedSampler pads the last ranks with repeats of the first indices so that all
    ranks get equal counts; each dataset index is kept once, and every index must be seen.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (np.asarray(indices), np.asarray(rows)))
        indices = np.concatenate([p[0] for p in parts])
        rows = np.concatenate([p[1] for p in parts])
    out = np.empty((n_total,) + rows.shape[1:], dtype=rows.dtype)
    seen = np.zeros(n_total, dtype=bool)
    uniq, first = np.unique(indices, return_index=True)  # drops the sampler's padding duplicates
    out[uniq] = rows[first]
    seen[uniq] = True
    if not seen.all():
        raise RuntimeError(f"gathered predictions miss {int((~seen).sum())} of {n_total} images")
    return out


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum numbers over ranks (identity for one process)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU and its driver on this machine, whatever torch was built for."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def build_warnings(gpu: bool | None = None, torch_cuda: str | None = "from torch",
                   cuda_available: bool | None = None) -> list[tuple[str, str]]:
    """(problem, what to do) when torch cannot use this machine's GPU as the project expects:
    a CPU-only build, or one built for a CUDA older than the pinned build's. Empty without a
    GPU (the arguments are for tests; by default they are read from this machine)."""
    gpu = nvidia_gpu_present() if gpu is None else gpu
    if not gpu:
        return []
    torch_cuda = torch.version.cuda if torch_cuda == "from torch" else torch_cuda
    build = f"torch {torch.__version__}"
    if torch_cuda is None:
        return [(f"this machine has an NVIDIA GPU, but {build} is a CPU-only build: every run would train on the "
                 f"CPU", INSTALL_HINT)]
    have = tuple(int(p) for p in str(torch_cuda).split(".")[:2])
    want = ".".join(map(str, PINNED_CUDA))
    if have < PINNED_CUDA:
        return [(f"{build} is built for CUDA {torch_cuda}, older than the CUDA {want} build the pinned torch is "
                 f"installed as here (slower kernels, and newer GPUs may be unsupported)", INSTALL_HINT)]
    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if not cuda_available:
        return [(f"{build} is built for CUDA {torch_cuda}, but it sees no GPU: the driver may be older than CUDA "
                 f"{torch_cuda}", f"`nvidia-smi` prints the highest CUDA the driver runs; update the driver or "
                 f"install a torch built for that CUDA (README, 'GPU machine')")]
    return []
