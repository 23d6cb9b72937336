"""The feed: one seeded order per epoch for every rank and resume; resident and streamed batches identical."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from cxrlib.augment import model_input, ten_crop
from cxrlib.data.cache import ArrayLoader, build_cache
from cxrlib.data.datasets import CachedDataset
from cxrlib.feed import Feed, epoch_order, placement


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A training dataset over a real memmap cache: 37 images of 24 px, augmentation on."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(37, 24, 24), dtype=np.uint8)
    cache = build_cache("feed", [f"img{i}" for i in range(37)], 24, ArrayLoader(images),
                        cache_dir=tmp_path_factory.mktemp("cache"), workers=1, progress=False)
    targets = (rng.random((37, 3)) < 0.4).astype(np.float32)
    return CachedDataset(cache, np.arange(37)[::-1], cache.ids[::-1], np.arange(37), targets, ["a", "b", "c"],
                         augment=True, seed=5)


@pytest.mark.parametrize("n,world", [(37, 1), (37, 2), (10, 3)])
def test_epoch_order_is_distributed_samplers(n, world):
    for epoch in (0, 4):
        for rank in range(world):
            s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=9)
            s.set_epoch(epoch)
            assert epoch_order(n, 9, epoch, rank, world).tolist() == list(s)
    assert epoch_order(5, 0, 0, shuffle=False).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="rank"):
        epoch_order(5, 0, 0, rank=2, world=2)


def _all(feed: Feed, epoch: int, skip: int = 0):
    return [(x.clone(), y.clone()) for x, y in feed.epoch(epoch, skip)]


def test_resident_and_streamed_batches_are_identical(cached):
    resident = Feed(cached, 8, shuffle=True, seed=1, resident="host")
    inline = Feed(cached, 8, shuffle=True, seed=1, resident="off")
    workers = Feed(cached, 8, shuffle=True, seed=1, resident="off", workers=2)
    assert (resident.placement, inline.placement, workers.placement) == ("host", "stream", "stream")
    assert len(resident) == 5
    try:
        for epoch in (0, 1, 2):  # persistent workers must follow the epoch (it travels with each request)
            want = _all(resident, epoch)
            for other in (inline, workers):
                got = _all(other, epoch)
                assert len(got) == len(want) == 5
                assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(want, got))
            assert not torch.equal(want[0][0], _all(resident, epoch + 1)[0][0])
            # a resumed epoch continues with exactly the batches the interrupted one had left
            assert all(torch.equal(a[0], b[0]) for a, b in zip(want[2:], _all(workers, epoch, skip=2)))
    finally:
        workers.close()


def test_batches_are_the_datasets_samples(cached):
    feed = Feed(cached, 8, shuffle=True, seed=1)
    idx = feed.indices(3)[:8]
    x, y = next(iter(feed.epoch(3)))
    cached.set_epoch(3)
    try:
        want = torch.stack([cached[int(i)][0] for i in idx])
    finally:
        cached.set_epoch(0)
    assert torch.equal(x, want) and torch.equal(y, torch.from_numpy(cached.targets[idx]))


def test_ranks_split_each_global_batch(cached):
    single = Feed(cached, 8, shuffle=True, seed=2)
    ranks = [Feed(cached, 4, shuffle=True, seed=2, rank=r, world=2) for r in range(2)]
    one = single.indices(1)
    two = [f.indices(1) for f in ranks]
    for j in range(4):  # 37 images: 19 per rank, the last padded with a repeat
        assert sorted(np.concatenate([t[4 * j:4 * j + 4] for t in two])) == sorted(one[8 * j:8 * j + 8])
    xs = [next(iter(f.epoch(1)))[0] for f in ranks]
    x1 = next(iter(single.epoch(1)))[0]
    # each image is augmented the same whichever rank holds it
    for r in range(2):
        for k, i in enumerate(two[r][:4]):
            assert torch.equal(xs[r][k], x1[list(one[:8]).index(i)])


def test_ten_crop_feed(cached):
    ds = cached.subset(np.arange(10))
    ds.augment = False
    feed = Feed(ds, 4, tencrop=True)
    x, y = next(iter(feed.epoch(0)))
    c = ds.crop_size
    assert x.shape == (40, 1, c, c) and y.shape == (4, 3)
    plain = model_input(ds.batch(np.arange(4)).images)
    assert torch.equal(x.view(4, 10, 1, c, c), ten_crop(plain, c))


def test_placement_rules(cached):
    cpu = torch.device("cpu")
    assert placement(cached, cpu) == "host"
    assert placement(cached, cpu, "off") == "stream"
    assert placement(cached, cpu, "auto", budget_gb=0) == "stream"
    with pytest.warns(UserWarning, match="resident_gb"):
        assert placement(cached, cpu, "host", budget_gb=1e-6) == "stream"
    with pytest.raises(ValueError, match="train.resident"):
        placement(cached, cpu, "gpu")
    with pytest.raises(ValueError, match="resident_gb"):
        placement(cached, cpu, "auto", budget_gb=-1)
    with pytest.raises(TypeError, match="uint8 batches"):
        Feed(torch.utils.data.TensorDataset(torch.zeros(4, 1, 8, 8)), 2)
    r = cached.resident()
    assert r.images.shape == (37, 24, 24) and r.images.dtype == torch.uint8
    assert np.array_equal(r.images[3].numpy(), cached.raw(3)) and cached.nbytes == 37 * 24 * 24 + 37 * 3 * 4


def test_an_epochs_parameters_are_drawn_once_not_per_batch(cached, monkeypatch):
    """One draw for the epoch (on the feed's device), none per batch; the images are the same."""
    import cxrlib.data.datasets as datasets_module
    import cxrlib.feed as feed_module

    want = _all(Feed(cached, 8, shuffle=True, seed=1, resident="host"), 2)
    draws = []
    real = feed_module.draw_params

    def counted(seed, epoch, indices):
        draws.append(len(indices))
        assert isinstance(indices, torch.Tensor)  # drawn where the indices are: the device
        return real(seed, epoch, indices)

    def no_host_draw(*args, **kwargs):
        raise AssertionError("a batch drew its parameters on the host")

    monkeypatch.setattr(feed_module, "draw_params", counted)
    monkeypatch.setattr(datasets_module, "draw_params", no_host_draw)
    for resident in ("host", "off"):
        draws.clear()
        got = _all(Feed(cached, 8, shuffle=True, seed=1, resident=resident), 2)
        assert draws == [37]  # the whole epoch at once
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(want, got))
