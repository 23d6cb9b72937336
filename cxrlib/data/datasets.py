"""Torch datasets over the cache: normalisation, training augmentation, ten-crop.

A sample is ``(image float32 [C,H,W], target float32 [K])``. Random augmentation draws
from a generator seeded by ``(seed, epoch, index)``, never from a global RNG, so DataLoader
workers, resumed runs and several GPUs see identical images.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cxrlib.data.cache import ImageCache, resize_image
from cxrlib.seed import derive_seed

# ImageNet's mean/std averaged over R, G, B: a 1-channel model made by timm from an RGB one
# sums the first conv's weights over RGB, which matches gray input normalised this way.
GRAY_MEAN = 0.449
GRAY_STD = 0.226
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Small affine for training: X-rays are taken upright and centred, so only a little play.
MAX_ROTATE_DEG = 5.0
MAX_SCALE = 0.05
MAX_TRANSLATE = 0.05
TENCROP_FRACTION = 7 / 8  # 224 from 256, as CheXNet re-implementations crop


def _stats(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    if channels == 1:
        return torch.tensor([GRAY_MEAN]), torch.tensor([GRAY_STD])
    if channels == 3:
        return torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    raise ValueError(f"channels must be 1 (gray) or 3 (gray repeated, ImageNet statistics), got {channels}")


def to_model_input(img, channels: int = 1) -> torch.Tensor:
    """uint8 ``[H,W]`` (or ``[B,H,W]``) to normalised float32 ``[C,H,W]`` (or ``[B,C,H,W]``)."""
    t = torch.as_tensor(np.asarray(img) if not isinstance(img, torch.Tensor) else img)
    if t.dtype != torch.uint8:
        raise ValueError(f"to_model_input expects uint8 pixels, got {t.dtype}")
    if t.ndim not in (2, 3):
        raise ValueError(f"to_model_input expects [H,W] or [B,H,W], got shape {tuple(t.shape)}")
    mean, std = _stats(channels)
    x = t.to(torch.float32).div_(255.0).unsqueeze(-3)  # [.., 1, H, W]
    x = x.expand(*x.shape[:-3], channels, *x.shape[-2:])
    shape = (channels, 1, 1)
    return (x - mean.view(shape)) / std.view(shape)


def preprocess(img, size: int, channels: int = 1) -> torch.Tensor:
    """An image of any size as the model sees it: :func:`resize_image` + :func:`to_model_input`."""
    return to_model_input(resize_image(np.asarray(img), size), channels)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Horizontal flip + small rotate/scale/translate of one ``[1,H,W]`` image in [0, 1]."""
    u = torch.rand(5, generator=g, dtype=torch.float64)
    if u[0] < 0.5:
        x = x.flip(-1)
    angle = math.radians((2 * float(u[1]) - 1) * MAX_ROTATE_DEG)
    scale = 1.0 + (2 * float(u[2]) - 1) * MAX_SCALE
    tx, ty = ((2 * float(u[3]) - 1) * MAX_TRANSLATE * 2, (2 * float(u[4]) - 1) * MAX_TRANSLATE * 2)
    # affine_grid maps output to input coordinates in [-1, 1] (so translation x2 = fraction).
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[[c, -s, tx], [s, c, ty]]], dtype=torch.float32)
    grid = F.affine_grid(theta, [1, 1, *x.shape[-2:]], align_corners=False)
    # border padding: a black wedge at the edge would be a cue that no real film has.
    return F.grid_sample(x.unsqueeze(0), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def ten_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """``[C,H,W]`` -> ``[10,C,crop,crop]``: four corners + centre, and their mirror images."""
    h, w = x.shape[-2:]
    if crop > min(h, w):
        raise ValueError(f"crop {crop} larger than image {h}x{w}")
    top, left = (h - crop) // 2, (w - crop) // 2
    crops = [x[..., :crop, :crop], x[..., :crop, w - crop:], x[..., h - crop:, :crop],
             x[..., h - crop:, w - crop:], x[..., top:top + crop, left:left + crop]]
    crops += [c.flip(-1) for c in crops]
    return torch.stack(crops)


class CachedDataset(torch.utils.data.Dataset):
    """Samples ``(image [C,H,W], target [K])`` read from an :class:`ImageCache`.

    ``slots[i]`` is the cache slot of sample ``i``. ``augment`` adds a flip and a small
    affine (training); ``tencrop`` returns ``[10, C, crop, crop]`` with crop = 7/8 of the
    size (evaluation). ``set_epoch`` changes the augmentation draws deterministically.
    """

    def __init__(self, cache: ImageCache, slots: Sequence[int], image_ids, patient_ids, targets,
                 label_names: Sequence[str], channels: int = 1, augment: bool = False,
                 tencrop: bool = False, seed: int = 0):
        self.cache = cache
        self.slots = np.asarray(slots, dtype=np.int64)
        self.image_ids = np.asarray(image_ids, dtype=str)
        self.patient_ids = np.asarray(patient_ids)
        self.targets = np.asarray(targets, dtype=np.float32)
        n = len(self.slots)
        if not (len(self.image_ids) == len(self.patient_ids) == len(self.targets) == n):
            raise ValueError("slots, image_ids, patient_ids and targets must have one entry per sample")
        if self.targets.ndim != 2 or self.targets.shape[1] != len(label_names):
            raise ValueError(f"targets shape {self.targets.shape} does not match {len(label_names)} label names")
        self.label_names = list(label_names)
        self.image_size = cache.size
        _stats(channels)
        self.channels = int(channels)
        self.augment = bool(augment)
        self.tencrop = bool(tencrop)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.slots)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def crop_size(self) -> int:
        return int(round(self.image_size * TENCROP_FRACTION))

    def raw(self, i: int) -> np.ndarray:
        """The cached ``uint8 [S,S]`` image of sample ``i`` (no augmentation)."""
        return np.array(self.cache.images[self.slots[i]])

    def mask_bits(self, i: int) -> np.ndarray | None:
        masks = self.cache.masks
        return None if masks is None else np.array(masks[self.slots[i]])

    def with_channels(self, channels: int) -> "CachedDataset":
        """The same samples for a model with ``channels`` input channels (1 or 3)."""
        _stats(channels)
        other = copy.copy(self)
        other.channels = int(channels)
        return other

    def subset(self, indices) -> "CachedDataset":
        """A dataset of the samples at ``indices`` (same cache, same settings)."""
        idx = np.asarray(indices, dtype=np.int64)
        other = copy.copy(self)
        other.slots, other.image_ids = self.slots[idx], self.image_ids[idx]
        other.patient_ids, other.targets = self.patient_ids[idx], self.targets[idx]
        return other

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        u8 = torch.from_numpy(np.array(self.cache.images[self.slots[i]]))
        if self.augment:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, i))
            x = _augment(u8.to(torch.float32).div_(255.0)[None], g)
            mean, std = _stats(self.channels)
            x = (x.expand(self.channels, -1, -1) - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
        elif self.channels == 1:
            # The hot path of training and evaluation: one fused scale-and-shift.
            x = u8.to(torch.float32).mul_(1.0 / (255.0 * GRAY_STD)).sub_(GRAY_MEAN / GRAY_STD)[None]
        else:
            x = to_model_input(u8, self.channels)
        if self.tencrop:
            x = ten_crop(x, self.crop_size)
        return x.contiguous(), torch.from_numpy(self.targets[i].copy())

    def __repr__(self) -> str:
        flags = [f for f in ("augment", "tencrop") if getattr(self, f)]
        return (f"CachedDataset(n={len(self)}, size={self.image_size}, channels={self.channels}, "
                f"labels={len(self.label_names)}{', ' + ', '.join(flags) if flags else ''})")
