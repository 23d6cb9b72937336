"""Checkpoints as plain data: atomic writes, ``weights_only`` loads, every RNG state.

A checkpoint holds tensors, numbers, strings, lists and dicts only, so that
``torch.load(path, weights_only=True)`` can read it: loading a checkpoint never runs code.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Collection, Mapping

import numpy as np
import torch

from cxrlib.fileio import atomic_file


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename."""
    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` onto the CPU; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which one
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err


# float16's largest finite value: a parameter beyond it would become infinite when halved
_FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def as_stored(weights: Mapping[str, torch.Tensor], dtype: str, parameters: Collection[str]) -> dict[str, torch.Tensor]:
    """The weights as a run's ``best.pt`` keeps them: the named ``parameters`` that are floating
    point in ``dtype`` ("float16" halves a run on disk; "float32" keeps them as they are).

    Buffers (batch-norm statistics, counters) stay as they are: they are few, and a running
    variance is divided by, where float16's coarser steps near zero would matter. A parameter
    float16 cannot hold (a value beyond +-65504) stays in float32 rather than become infinite.
    The trainer evaluates a run with exactly these values (loaded back into its float32 model),
    so what is reloaded later scores the test set as the run itself did.
    """
    if dtype == "float32":
        return dict(weights)
    if dtype != "float16":
        raise ValueError(f"unknown weights dtype {dtype!r} (train.weights_dtype): expected float16 or float32")
    out = {}
    for name, value in weights.items():
        halve = (name in parameters and value.is_floating_point() and value.dtype != torch.float16
                 and (value.numel() == 0 or float(value.detach().abs().max()) <= _FLOAT16_MAX))
        out[name] = value.to(torch.float16) if halve else value
    return out


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors and lists."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
