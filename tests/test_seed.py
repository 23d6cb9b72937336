"""Seeds derived from (seed, epoch, index) keys: vectorised, and equal to NumPy's SeedSequence."""
from __future__ import annotations

import numpy as np
import pytest

from cxrlib.seed import derive_seed, derive_seeds


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
