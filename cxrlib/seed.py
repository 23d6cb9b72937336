"""One place that seeds every random number generator cxrlib uses."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); ask torch for deterministic kernels.

    Datasets never draw from these global generators: they derive their own from
    (seed, epoch, index), so that workers, resumes and several GPUs see the same numbers.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (seed, epoch, index, ...), the same on every process."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint64)
    return int(state[0]) & (2**63 - 1)
