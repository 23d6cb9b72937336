"""One place that seeds every random number generator cxrlib uses."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

# cuBLAS's documented setting for reproducible results (4 MiB workspace, 8 buffers)
CUBLAS_WORKSPACE = ":4096:8"


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); with ``deterministic``, also ask torch for
    deterministic kernels (:func:`select_kernels`, process-wide and lasting: a caller that only
    wants its random draws repeated, such as a notebook seeding a random-map baseline, leaves it off).

    Datasets never draw from these global generators: they derive their own from
    (seed, epoch, index), so that workers, resumes and several GPUs see the same numbers.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if deterministic:
        select_kernels(deterministic=True)


def select_kernels(deterministic: bool) -> None:
    """Choose CUDA's kernels: repeatable, or fast. Determinism, when asked for, wins over speed.

    Deterministic: cuDNN's deterministic algorithms, no autotuning (``benchmark`` picks
    kernels by timing them, which can differ from run to run), full float32 precision, and
    ``torch.use_deterministic_algorithms`` for every other op. cuBLAS is repeatable only with
    a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, read when cuBLAS starts: set here before
    the first matmul; an explicit setting is kept). Ops with no deterministic CUDA kernel
    warn (``warn_only``) instead of stopping a run; cxrlib's own bilinear resizes avoid the
    one it would otherwise hit (:func:`cxrlib.models.resize.resize_bilinear`).
    Fast: cuDNN autotunes once per input shape (training shapes are fixed) and float32
    matmuls and convolutions use TF32 tensor cores (under AMP most work is bf16/fp16 anyway).
    Only the legacy switches are used: mixing them with torch's newer ``fp32_precision``
    settings makes ``torch.get_float32_matmul_precision`` (which torch.compile reads) raise.
    """
    deterministic = bool(deterministic)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
    torch.set_float32_matmul_precision("highest" if deterministic else "high")


# NumPy's SeedSequence (O'Neill's seed_seq hash), written out so that a whole batch of
# (seed, epoch, index) keys hashes in a few array operations instead of one Python object
# per image. tests/test_seed.py holds it to np.random.SeedSequence bit for bit.
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _POOL, _MASK32 = 0xCA01F9DD, 0x4973F715, 4, 0xFFFFFFFF


def derive_seeds(*parts) -> np.ndarray:
    """Seeds ``uint64`` (63 bits) from integers or integer arrays (broadcast), one per element.

    Element ``j`` equals ``np.random.SeedSequence([p[j] & 0xFFFFFFFF for p in parts])
    .generate_state(1, np.uint64) & (2**63 - 1)``: the same on every process and machine.
    """
    if not parts:
        raise ValueError("derive_seeds needs at least one integer")
    words = [np.atleast_1d(w).astype(np.uint32) for w in
             np.broadcast_arrays(*[np.asarray(p, dtype=np.int64) & _MASK32 for p in parts])]
    h = _INIT_A

    def hashmix(v):
        nonlocal h
        v = v ^ np.uint32(h)
        h = (h * _MULT_A) & _MASK32
        v = v * np.uint32(h)
        return v ^ (v >> np.uint32(16))

    def mix(x, y):
        r = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
        return r ^ (r >> np.uint32(16))

    with np.errstate(over="ignore"):  # uint32 arithmetic wraps by design
        zero = np.zeros_like(words[0])
        pool = [hashmix(words[i] if i < len(words) else zero) for i in range(_POOL)]
        for src in range(_POOL):
            for dst in range(_POOL):
                if src != dst:
                    pool[dst] = mix(pool[dst], hashmix(pool[src]))
        for src in range(_POOL, len(words)):
            for dst in range(_POOL):
                pool[dst] = mix(pool[dst], hashmix(words[src]))
        out, hb = [], _INIT_B
        for i in range(2):  # two 32-bit words, little end first, make one uint64
            v = pool[i] ^ np.uint32(hb)
            hb = (hb * _MULT_B) & _MASK32
            v = v * np.uint32(hb)
            out.append((v ^ (v >> np.uint32(16))).astype(np.uint64))
    seeds = (out[0] | (out[1] << np.uint64(32))) & np.uint64(2**63 - 1)
    return seeds.reshape(np.broadcast_shapes(*[np.shape(p) for p in parts]))


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (seed, epoch, index, ...), the same on every process."""
    return int(derive_seeds(*[int(p) & _MASK32 for p in parts]))


_GOLDEN, _MIX_1, _MIX_2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def uniforms(seeds, n: int) -> np.ndarray:
    """``n`` uniform draws in [0, 1) per seed: ``float64 [..., n]``, one array operation per draw.

    Draw ``k`` of seed ``s`` is SplitMix64's ``k``-th output from state ``s`` (Steele et al.
    2014), a counter-based generator: it depends on (s, k) alone, so a batch of thousands of
    images gets its augmentation draws without a generator object per image (building and
    seeding one torch generator per image costs ~40 us, which capped a resident dataset's
    delivery at a few thousand images per second).
    """
    s = np.asarray(seeds, dtype=np.uint64)
    out = np.empty(s.shape + (int(n),), dtype=np.float64)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        for k in range(int(n)):
            z = s + np.uint64(_GOLDEN) * np.uint64(k + 1)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX_1)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX_2)
            z = z ^ (z >> np.uint64(31))
            out[..., k] = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return out


# The same two functions in torch int64, for tensors on any device (a whole epoch's draws
# made on the GPU in a few kernels). int64 arithmetic wraps like the unsigned kind, so the
# low 32 (or all 64) bits of a product are the same; right shifts are made logical by masking
# off the sign bits an arithmetic shift drags in. tests/test_seed.py holds them to the NumPy
# versions bit for bit.


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _i64(v: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return v - (1 << 64) if v >= 1 << 63 else v


def derive_seeds_torch(seed: int, epoch: int, indices: torch.Tensor) -> torch.Tensor:
    """:func:`derive_seeds` ``(seed, epoch, indices)`` as int64 on ``indices``' device."""
    idx = indices.to(torch.int64)
    words = [torch.full_like(idx, int(seed) & _MASK32), torch.full_like(idx, int(epoch) & _MASK32), idx & _MASK32]
    h = _INIT_A

    def hashmix(v):
        nonlocal h
        v = v ^ h
        h = (h * _MULT_A) & _MASK32
        v = (v * h) & _MASK32
        return v ^ (v >> 16)

    def mix(x, y):
        r = (_MIX_L * x - _MIX_R * y) & _MASK32
        return r ^ (r >> 16)

    zero = torch.zeros_like(idx)
    pool = [hashmix(words[i] if i < len(words) else zero) for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    out, hb = [], _INIT_B
    for i in range(2):
        v = pool[i] ^ hb
        hb = (hb * _MULT_B) & _MASK32
        v = (v * hb) & _MASK32
        out.append(v ^ (v >> 16))
    return (out[0] | (out[1] << 32)) & _i64(2**63 - 1)


def uniforms_torch(seeds: torch.Tensor, n: int) -> torch.Tensor:
    """:func:`uniforms` for int64 ``seeds`` on their device: ``float64 [..., n]``."""
    cols = []
    for k in range(int(n)):
        z = seeds + _i64((_GOLDEN * (k + 1)) % (1 << 64))
        z = (z ^ _srl(z, 30)) * _i64(_MIX_1)
        z = (z ^ _srl(z, 27)) * _i64(_MIX_2)
        z = z ^ _srl(z, 31)
        cols.append(_srl(z, 11).to(torch.float64) * 2.0**-53)
    return torch.stack(cols, -1)
