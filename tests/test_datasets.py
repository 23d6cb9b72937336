"""Torch datasets over the cache: normalisation, seeded augmentation, ten-crop, phantoms."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrlib.config import DataConfig
from cxrlib.data import load_data
from cxrlib.data.cache import ArrayLoader, build_cache, resize_image
from cxrlib.data.datasets import (GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, CachedDataset,
                                  preprocess, to_model_input)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 40, 40), dtype=np.uint8)
    cache = build_cache("toy", [f"img{i}" for i in range(12)], 32, ArrayLoader(images),
                        cache_dir=tmp_path_factory.mktemp("c"), workers=1, progress=False)
    targets = (rng.random((12, 14)) < 0.3).astype(np.float32)
    ds = CachedDataset(cache, np.arange(12), cache.ids, np.arange(12) // 2, targets,
                       [f"f{k}" for k in range(14)], seed=3)
    ds.images_src = images
    return ds


def test_normalisation_constants():
    assert GRAY_MEAN == pytest.approx(np.mean(IMAGENET_MEAN), abs=1e-3)
    assert GRAY_STD == pytest.approx(np.mean(IMAGENET_STD), abs=1e-3)
    x = to_model_input(np.full((4, 5), 255, np.uint8))
    assert x.shape == (1, 4, 5) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, (1 - GRAY_MEAN) / GRAY_STD))
    x3 = to_model_input(np.zeros((2, 4, 5), np.uint8), channels=3)
    assert x3.shape == (2, 3, 4, 5)
    assert torch.allclose(x3[0, :, 0, 0], -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))
    with pytest.raises(ValueError, match="channels"):
        to_model_input(np.zeros((4, 4), np.uint8), channels=2)


def test_sample_matches_preprocess(dataset):
    x, y = dataset[4]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y.shape == (14,)
    assert torch.allclose(x, preprocess(dataset.images_src[4], 32), atol=1e-5)
    assert np.array_equal(dataset.raw(4), resize_image(dataset.images_src[4], 32))
    assert torch.equal(y, torch.from_numpy(dataset.targets[4]))
    x3, _ = dataset.with_channels(3)[4]
    assert x3.shape == (3, 32, 32) and dataset.channels == 1
    assert dataset.image_ids[4] == "img4" and dataset.patient_ids[4] == 2


def test_augmentation_is_seeded_not_global(dataset):
    aug = dataset.subset(np.arange(12))
    aug.augment = True
    torch.manual_seed(1)
    a = aug[5][0]
    torch.manual_seed(99)  # the global RNG must not matter
    assert torch.equal(aug[5][0], a)
    assert not torch.equal(aug[6][0], dataset[6][0])
    changes = 0
    for epoch in range(1, 4):
        aug.set_epoch(epoch)
        changes += not torch.equal(aug[5][0], a)
    assert changes == 3
    aug.set_epoch(0)
    assert torch.equal(aug[5][0], a)
    # Small affine: the image stays close to the original (or its mirror image).
    plain = dataset[5][0]
    diff = min((a - plain).abs().mean(), (a - plain.flip(-1)).abs().mean())
    assert diff < (plain - plain.roll(8, -1)).abs().mean()


def test_tencrop(dataset):
    tc = dataset.subset(np.arange(12))
    tc.tencrop = True
    x, _ = tc[2]
    assert x.shape == (10, 1, 28, 28)
    full = dataset[2][0]
    assert torch.equal(x[0], full[:, :28, :28]) and torch.equal(x[5], full[:, :28, :28].flip(-1))
    assert torch.equal(x[4], full[:, 2:30, 2:30])


def test_dataloader_batches(dataset):
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=0)
    xb, yb = next(iter(loader))
    assert xb.shape == (5, 1, 32, 32) and yb.shape == (5, 14)


def test_phantoms_bundle(tmp_path):
    cfg = DataConfig(source="phantoms", num_phantoms=40, image_size=32, cache_dir=str(tmp_path), workers=1)
    b = load_data(cfg, progress=False)
    assert b.source == "phantoms" and "synthetic" in b.split_name and b.missing == 0
    assert len(b.train) + len(b.val) + len(b.test) == 40 and len(b.label_names) == 14
    assert not set(b.train.patient_ids) & set(b.test.patient_ids)
    from cxrlib.phantoms import render_phantom

    k = int(np.flatnonzero(b.train.targets.sum(1) > 0)[0])
    image_id = b.train.image_ids[k]
    f = int(np.flatnonzero(b.train.targets[k])[0])
    index = int(image_id.split("_")[1].split(".")[0])
    ph = render_phantom(index, 32, seed=0, spec=b._plan.loader.spec)
    assert np.array_equal(b.train.raw(k), ph.image)
    mask = b.mask(image_id, b.label_names[f])
    assert mask.shape == (32, 32) and np.array_equal(mask, ph.masks[f])
    # Phantoms offer masks, not boxes: a box around a mask would claim more than the mask.
    assert b.offers.masks and not b.offers.boxes and b.boxes(image_id) == []
    assert b.full_image(image_id).shape == (512, 512)
    again = load_data(cfg, progress=False)
    assert np.array_equal(again.train.raw(k), b.train.raw(k))
