"""Seeds derived from (seed, epoch, index) keys: vectorised, and equal to NumPy's SeedSequence."""
from __future__ import annotations

import os

import numpy as np
import torch
import pytest

from cxrlib.seed import derive_seed, derive_seeds, uniforms


def _reference(*parts: int) -> int:
    words = [int(p) & 0xFFFFFFFF for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) & (2**63 - 1)


@pytest.mark.parametrize("n_parts", [1, 2, 3, 4, 6])
def test_derive_seed_is_seedsequence(n_parts):
    rng = np.random.default_rng(n_parts)
    for _ in range(100):
        parts = [int(x) for x in rng.integers(0, 2**40, n_parts)]
        parts[0] = 0 if rng.random() < 0.2 else parts[0]
        assert derive_seed(*parts) == _reference(*parts)


def test_derive_seeds_vectorises_over_indices():
    idx = np.arange(5000)
    seeds = derive_seeds(7, 3, idx)
    assert seeds.shape == (5000,) and seeds.dtype == np.uint64
    assert all(int(seeds[i]) == _reference(7, 3, i) for i in range(0, 5000, 97))
    assert len(np.unique(seeds)) == 5000
    assert derive_seeds(7, 3, idx.reshape(50, 100)).shape == (50, 100)
    with pytest.raises(ValueError):
        derive_seeds()


def _splitmix64(state: int, k: int) -> int:
    """SplitMix64's k-th output (k = 0, 1, ...) from ``state``, in plain Python integers."""
    m = 2**64 - 1
    z = (state + 0x9E3779B97F4A7C15 * (k + 1)) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_uniforms_are_splitmix64_draws():
    assert _splitmix64(0, 0) == 0xE220A8397B1DCDAF  # the generator's published first output from 0
    seeds = derive_seeds(3, 1, np.arange(200))
    u = uniforms(seeds, 5)
    assert u.shape == (200, 5) and u.dtype == np.float64
    for j in (0, 17, 199):
        for k in range(5):
            assert u[j, k] == (_splitmix64(int(seeds[j]), k) >> 11) * 2.0**-53
    many = uniforms(derive_seeds(0, 0, np.arange(20000)), 5)
    assert many.min() >= 0 and many.max() < 1
    assert np.allclose(many.mean(0), 0.5, atol=0.01) and abs(np.corrcoef(many.T)[0, 1]) < 0.03


def test_the_torch_hash_and_draws_equal_numpys_bit_for_bit():
    """The feed draws a whole epoch's parameters on the device with the torch versions."""
    from cxrlib.seed import derive_seeds_torch, uniforms_torch

    idx = np.concatenate([np.arange(3000), [2**31 - 1, 2**32 + 5, 2**40 + 7]])
    for seed, epoch in [(0, 0), (7, 3), (2**40 + 3, 99), (12345, 2**33)]:
        want = derive_seeds(seed, epoch, idx)
        got = derive_seeds_torch(seed, epoch, torch.from_numpy(idx))
        assert np.array_equal(want.astype(np.int64), got.numpy())
        assert np.array_equal(uniforms(want, 5), uniforms_torch(got, 5).numpy())


def test_deterministic_kernels_cover_every_op_and_cublas(monkeypatch):
    """train.deterministic: not only cuDNN's switches but torch's deterministic algorithms and
    cuBLAS's fixed workspace (set before cuBLAS starts; an explicit setting is kept)."""
    from cxrlib.seed import CUBLAS_WORKSPACE, select_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        select_kernels(deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        select_kernels(deterministic=True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
        select_kernels(deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        select_kernels(deterministic=False)
        torch.backends.cudnn.benchmark = False
        torch.set_float32_matmul_precision("highest")
