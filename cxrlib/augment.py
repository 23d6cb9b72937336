"""Augmentation and normalisation, batched, on the device the model runs on.

The data side hands over uint8 images ``[B,H,W]``; for training, five numbers per image
(:data:`PARAMS`) come from a generator keyed by (seed, epoch, index), drawn for a whole epoch
on the device (:func:`draw_params`). Here they become the
model's float input: one ``affine_grid``/``grid_sample`` for the whole batch (the flip folded
into the affine), one scale-and-shift for normalisation, then channels_last where asked.
Ten-crop evaluation is ten views of the same normalised batch.

This module owns pixel normalisation: :func:`normalize` is the one place the statistics are
applied. Datasets, the demo, prediction and Grad-CAM reach it through :func:`to_model_input`
(no augmentation) or :func:`model_input` (a batch, optionally warped).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from cxrlib.seed import derive_seeds_torch, uniforms_torch

# ImageNet's mean/std averaged over R, G, B: a 1-channel model made by timm from an RGB one
# sums the first conv's weights over RGB, which matches gray input normalised this way.
GRAY_MEAN = 0.449
GRAY_STD = 0.226
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Small affine for training: X-rays are taken upright and centred, so only a little play.
MAX_ROTATE_DEG = 5.0
MAX_SCALE = 0.05
MAX_TRANSLATE = 0.05  # fraction of the image side
TENCROP_FRACTION = 7 / 8  # 224 from 256, as CheXNet re-implementations crop

# One row of augmentation parameters: flip (0 or 1, left-right), angle (radians), scale,
# tx and ty (shift as a fraction of the image side).
PARAMS = ("flip", "angle", "scale", "tx", "ty")


def check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (gray repeated, ImageNet statistics), got {channels}")
    return int(channels)


@functools.lru_cache(maxsize=16)
def _scale_shift(channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # cached per device: building them per batch would be a blocking host-to-GPU copy each step
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((GRAY_MEAN,), (GRAY_STD,))
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32, device=device)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32, device=device)
    return scale.view(-1, 1, 1), shift.view(-1, 1, 1)


def normalize(x: torch.Tensor, channels: int = 1) -> torch.Tensor:
    """Float pixels on the 0..255 scale ``[..., 1, H, W]`` -> the model's input ``[..., C, H, W]``.

    ``(x / 255 - mean) / std`` as one scale-and-shift; 3 channels repeat the gray image
    with ImageNet's per-channel statistics.
    """
    check_channels(channels)
    if not x.is_floating_point() or x.ndim < 3 or x.shape[-3] != 1:
        raise ValueError(f"normalize expects float pixels [..., 1, H, W], got {x.dtype} {tuple(x.shape)}")
    scale, shift = _scale_shift(channels, x.device)
    return torch.addcmul(-shift, x, scale)


def to_model_input(img, channels: int = 1) -> torch.Tensor:
    """uint8 ``[H,W]`` (or ``[B,H,W]``) to normalised float32 ``[C,H,W]`` (or ``[B,C,H,W]``)."""
    t = img if isinstance(img, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(img))
    if t.dtype != torch.uint8:
        raise ValueError(f"to_model_input expects uint8 pixels, got {t.dtype}")
    if t.ndim not in (2, 3):
        raise ValueError(f"to_model_input expects [H,W] or [B,H,W], got shape {tuple(t.shape)}")
    return normalize(t.unsqueeze(-3).float(), channels)


def affine_matrices(params: torch.Tensor) -> torch.Tensor:
    """``[B,5]`` parameters -> ``[B,2,3]`` matrices for ``affine_grid`` (output -> input coordinates).

    A left-right flip negates the input x coordinate, so it folds into the first row; with
    ``align_corners=False`` that is exact (pixel centres are symmetric about 0).
    """
    flip, angle, scale, tx, ty = params.unbind(-1)
    c, s = torch.cos(angle) / scale, torch.sin(angle) / scale
    sign = 1.0 - 2.0 * flip
    # affine_grid's coordinates span [-1, 1]: a shift by a fraction f of the side is 2f
    row0 = torch.stack([c, -s, 2.0 * tx], -1) * sign.unsqueeze(-1)
    row1 = torch.stack([s, c, 2.0 * ty], -1)
    return torch.stack([row0, row1], -2)


def model_input(images: torch.Tensor, params: torch.Tensor | None = None, channels: int = 1,
                channels_last: bool = False) -> torch.Tensor:
    """uint8 ``[B,H,W]`` -> normalised float32 ``[B,C,H,W]`` on the images' device.

    ``params`` ``[B,5]`` (see :func:`draw_params`) warps each image (bilinear, border
    padding) in one ``grid_sample`` for the batch; ``None`` leaves the images as they are.
    """
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"model_input expects uint8 images [B,H,W], got {images.dtype} {tuple(images.shape)}")
    x = images.unsqueeze(1).float()
    if params is not None:
        if params.shape != (len(images), len(PARAMS)):
            raise ValueError(f"params must be [B, {len(PARAMS)}] for {len(images)} images, got {tuple(params.shape)}")
        theta = affine_matrices(params.to(device=x.device, dtype=torch.float32))
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # border padding: a black wedge at the edge would be a cue that no real film has
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = normalize(x, channels)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def crop_size(image_size: int) -> int:
    """Side of the ten-crop crops for images of ``image_size`` (7/8 of it)."""
    return int(round(image_size * TENCROP_FRACTION))


def ten_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """``[..., C,H,W]`` -> ``[..., 10, C, crop, crop]``: four corners + centre, and their mirror images."""
    h, w = x.shape[-2:]
    if crop > min(h, w):
        raise ValueError(f"crop {crop} larger than image {h}x{w}")
    top, left = (h - crop) // 2, (w - crop) // 2
    crops = [x[..., :crop, :crop], x[..., :crop, w - crop:], x[..., h - crop:, :crop],
             x[..., h - crop:, w - crop:], x[..., top:top + crop, left:left + crop]]
    crops += [c.flip(-1) for c in crops]
    return torch.stack(crops, dim=-4)


def draw_params(seed: int, epoch: int, indices) -> torch.Tensor:
    """Augmentation parameters ``float32 [B,5]`` for dataset ``indices`` in ``epoch``.

    Each row depends only on ``derive_seed(seed, epoch, index)`` (five counter-based draws,
    :func:`cxrlib.seed.uniforms`), so a sample gets the same draw in any batch, worker, rank
    or resumed run. ``indices`` given as a tensor are drawn for on its device: the feed draws
    a whole epoch's parameters on the GPU at once, leaving no per-batch host work.
    """
    if isinstance(indices, torch.Tensor):
        idx = indices.reshape(-1).to(torch.int64)
    else:
        idx = torch.from_numpy(np.asarray(indices, dtype=np.int64).reshape(-1))
    if not len(idx):
        return torch.empty((0, len(PARAMS)), dtype=torch.float32, device=idx.device)
    u = uniforms_torch(derive_seeds_torch(seed, epoch, idx), len(PARAMS))
    v = 2.0 * u - 1.0  # uniform in [-1, 1)
    flip = (u[:, 0] < 0.5).double()
    angle = v[:, 1] * math.radians(MAX_ROTATE_DEG)
    scale = 1.0 + v[:, 2] * MAX_SCALE
    shift = v[:, 3:5] * MAX_TRANSLATE
    return torch.cat([flip[:, None], angle[:, None], scale[:, None], shift], 1).float()
