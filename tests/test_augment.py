"""Batched augmentation on the device: same images as the per-sample path, seeded per (seed, epoch, index)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrlib.augment import (GRAY_MEAN, GRAY_STD, MAX_ROTATE_DEG, MAX_SCALE, MAX_TRANSLATE, draw_params,
                            model_input, ten_crop, to_model_input)
from cxrlib.data.datasets import CachedDataset
from cxrlib.seed import derive_seed, uniforms


def _per_sample_reference(u8: torch.Tensor, seed: int, epoch: int, index: int) -> torch.Tensor:
    """The per-sample CPU augmentation the batched path replaces, kept verbatim as the oracle:
    the image's own five draws, flip then affine on [0, 1] pixels, then normalisation."""
    u = uniforms(derive_seed(seed, epoch, index), 5)
    x = u8.to(torch.float32).div_(255.0)[None]
    if u[0] < 0.5:
        x = x.flip(-1)
    angle = math.radians((2 * float(u[1]) - 1) * MAX_ROTATE_DEG)
    scale = 1.0 + (2 * float(u[2]) - 1) * MAX_SCALE
    tx, ty = ((2 * float(u[3]) - 1) * MAX_TRANSLATE * 2, (2 * float(u[4]) - 1) * MAX_TRANSLATE * 2)
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[[c, -s, tx], [s, c, ty]]], dtype=torch.float32)
    grid = F.affine_grid(theta, [1, 1, *x.shape[-2:]], align_corners=False)
    x = F.grid_sample(x.unsqueeze(0), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return (x - GRAY_MEAN) / GRAY_STD


def _smooth_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Images with structure at several scales (an asymmetric gradient plus noise blobs), so that a
    wrong flip, angle or shift shows as a large difference."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        blobs = F.interpolate(torch.from_numpy(rng.random((1, 1, 6, 6))), size=(size, size), mode="bicubic",
                              align_corners=False)[0, 0].numpy()
        img = 60 + 120 * xx * (0.5 + yy) + 70 * blobs
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def dataset():
    images = _smooth_images(24, 48)
    targets = np.zeros((24, 2), np.float32)
    return CachedDataset.from_arrays(images, targets, ["a", "b"], augment=True, seed=11)


def test_batched_warp_matches_per_sample_path(dataset):
    for epoch in (0, 3):
        idx = np.arange(len(dataset))
        b = dataset.batch(idx, epoch=epoch)
        x = model_input(b.images, b.params)
        assert x.shape == (24, 1, 48, 48) and x.dtype == torch.float32
        want = torch.stack([_per_sample_reference(torch.from_numpy(dataset.raw(i)), 11, epoch, i) for i in idx])
        # the same warp up to float rounding of the grid: far below one gray level (1/255/std = 0.017)
        assert (x - want).abs().max() < 1e-4
        flipped = b.params[:, 0] > 0.5
        assert 0 < int(flipped.sum()) < len(idx)  # both branches of the flip are exercised


def test_params_depend_only_on_seed_epoch_index():
    idx = np.array([5, 0, 17, 3])
    torch.manual_seed(1)
    p = draw_params(4, 2, idx)
    torch.manual_seed(2)  # the global generator must not matter
    assert torch.equal(draw_params(4, 2, idx), p)
    assert torch.equal(draw_params(4, 2, [17]), p[2:3])  # a sample's draw does not depend on its batch
    assert torch.equal(draw_params(4, 2, idx[::-1].copy()), p.flip(0))
    assert not torch.equal(draw_params(4, 3, idx), p) and not torch.equal(draw_params(5, 2, idx), p)
    many = draw_params(0, 0, np.arange(2000))
    assert set(many[:, 0].tolist()) == {0.0, 1.0} and 0.4 < float(many[:, 0].mean()) < 0.6
    assert many[:, 1].abs().max() <= math.radians(MAX_ROTATE_DEG) + 1e-6
    assert (many[:, 2] - 1).abs().max() <= MAX_SCALE + 1e-6
    assert many[:, 3:].abs().max() <= MAX_TRANSLATE + 1e-6


def test_dataset_batch_and_item_agree(dataset):
    b = dataset.batch([7, 2], epoch=1)
    assert b.images.dtype == torch.uint8 and b.images.shape == (2, 48, 48)
    assert b.targets.shape == (2, 2) and b.params.shape == (2, 5)
    assert np.array_equal(b.images[0].numpy(), dataset.raw(7))
    dataset.set_epoch(1)
    try:
        assert torch.equal(dataset[2][0], model_input(b.images, b.params)[1])
    finally:
        dataset.set_epoch(0)
    plain = dataset.subset(np.arange(4))
    plain.augment = False
    assert plain.batch([1]).params is None
    assert torch.equal(plain[1][0], to_model_input(plain.raw(1)))


def test_no_params_is_normalisation_only_and_one_owner():
    u8 = torch.from_numpy(_smooth_images(3, 16))
    x = model_input(u8)
    assert torch.equal(x, to_model_input(u8))
    assert torch.allclose(x, (u8[:, None].float() / 255 - GRAY_MEAN) / GRAY_STD, atol=1e-5)
    x3 = model_input(u8, channels=3, channels_last=True)
    assert x3.shape == (3, 3, 16, 16) and x3.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x3[:, :1].contiguous(), to_model_input(u8, 3)[:, :1])
    identity = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]] * 3)
    assert (model_input(u8, identity) - x).abs().max() < 1e-4  # the identity warp changes nothing
    with pytest.raises(ValueError, match="uint8"):
        model_input(u8.float())
    with pytest.raises(ValueError, match="params"):
        model_input(u8, identity[:2])


def test_batched_ten_crop_matches_per_image():
    x = model_input(torch.from_numpy(_smooth_images(4, 32)))
    crops = ten_crop(x, 28)
    assert crops.shape == (4, 10, 1, 28, 28)
    for i in range(4):
        assert torch.equal(crops[i], ten_crop(x[i], 28))
    assert torch.equal(crops[2, 4], x[2, :, 2:30, 2:30]) and torch.equal(crops[1, 5], x[1, :, :28, :28].flip(-1))
