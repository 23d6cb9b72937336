"""Torch datasets over the cache: uint8 samples, their augmentation parameters, batches.

A training sample is a uint8 image ``[S,S]``, its target float32 ``[K]`` and, when
``augment`` is on, its augmentation parameters ``[5]`` (see :mod:`cxrlib.augment`), drawn
from a generator seeded by ``(seed, epoch, index)``, never from a global RNG, so DataLoader
workers, resumed runs and several GPUs see identical images. The float image the model
sees is made from them on the model's device, batched (:func:`cxrlib.augment.model_input`).
"""
from __future__ import annotations

import copy
from typing import NamedTuple, Sequence

import numpy as np
import torch

from cxrlib.augment import (GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, check_channels, crop_size,
                            draw_params, model_input, ten_crop, to_model_input)
from cxrlib.data.cache import ImageCache, resize_image

__all__ = ["CachedDataset", "Batch", "Resident", "preprocess", "to_model_input", "GRAY_MEAN", "GRAY_STD",
           "IMAGENET_MEAN", "IMAGENET_STD"]


def preprocess(img, size: int, channels: int = 1) -> torch.Tensor:
    """An image of any size as the model sees it: :func:`resize_image` + :func:`to_model_input`."""
    return to_model_input(resize_image(np.asarray(img), size), channels)


class Batch(NamedTuple):
    """Samples ready to travel to the device: nothing here is float image data."""

    images: torch.Tensor  # uint8 [B, S, S]
    targets: torch.Tensor  # float32 [B, K]
    params: torch.Tensor | None  # float32 [B, 5] augmentation parameters; None when augmentation is off


class Resident(NamedTuple):
    """A dataset's images and targets held in memory, in sample order (see :meth:`CachedDataset.resident`)."""

    images: torch.Tensor  # uint8 [N, S, S], pinned host memory or on a device
    targets: torch.Tensor  # float32 [N, K], beside the images


class _ArrayImages:
    """The part of an :class:`~cxrlib.data.cache.ImageCache` a dataset reads, over an array in memory."""

    def __init__(self, images: np.ndarray):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
            raise ValueError(f"images must be uint8 [N, S, S] (square), got {images.dtype} {images.shape}")
        self.images, self.size, self.masks = images, int(images.shape[1]), None


class CachedDataset(torch.utils.data.Dataset):
    """Samples of an :class:`~cxrlib.data.cache.ImageCache`: uint8 images, targets, augmentation parameters.

    ``slots[i]`` is the cache slot of sample ``i``. :meth:`batch` reads many samples as one
    :class:`Batch`, the unit the training feed moves to the device; :meth:`resident` copies
    the whole dataset into memory once. ``augment`` adds the parameters of a flip and a small
    affine (training), changing deterministically with ``set_epoch``; ``tencrop`` marks
    evaluation with ten crops of 7/8 the size.

    ``ds[i]`` is sample ``i`` as the model sees it, ``(float [C,S,S] or [10,C,c,c], target)``,
    made on the CPU by the same :mod:`cxrlib.augment` functions the device runs: for looking at
    images, Grad-CAM and plain DataLoaders. Training and evaluation read :meth:`batch`.
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
        self.channels = check_channels(channels)
        self.augment = bool(augment)
        self.tencrop = bool(tencrop)
        self.seed = int(seed)
        self.epoch = 0

    @classmethod
    def from_arrays(cls, images, targets, label_names: Sequence[str], image_ids=None, patient_ids=None,
                    **options) -> "CachedDataset":
        """A dataset over uint8 images ``[N,S,S]`` already in memory (small data, tests).

        Without ``image_ids`` they are ``image_000000`` ...; without ``patient_ids`` each image
        is its own patient. ``options`` are the constructor's (channels, augment, seed ...).
        """
        store = _ArrayImages(images)
        n = len(store.images)
        ids = [f"image_{i:06d}" for i in range(n)] if image_ids is None else image_ids
        patients = np.arange(n) if patient_ids is None else patient_ids
        return cls(store, np.arange(n), ids, patients, targets, label_names, **options)

    def __len__(self) -> int:
        return len(self.slots)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def crop_size(self) -> int:
        return crop_size(self.image_size)

    @property
    def nbytes(self) -> int:
        """Bytes the images and targets take in memory (what :meth:`resident` allocates)."""
        return len(self) * self.image_size ** 2 + self.targets.nbytes

    def raw(self, i: int) -> np.ndarray:
        """The cached ``uint8 [S,S]`` image of sample ``i`` (no augmentation)."""
        return np.array(self.cache.images[self.slots[i]])

    def mask_bits(self, i: int) -> np.ndarray | None:
        masks = self.cache.masks
        return None if masks is None else np.array(masks[self.slots[i]])

    def with_channels(self, channels: int) -> "CachedDataset":
        """The same samples for a model with ``channels`` input channels (1 or 3)."""
        other = copy.copy(self)
        other.channels = check_channels(channels)
        return other

    def subset(self, indices) -> "CachedDataset":
        """A dataset of the samples at ``indices`` (same cache, same settings)."""
        idx = np.asarray(indices, dtype=np.int64)
        other = copy.copy(self)
        other.slots, other.image_ids = self.slots[idx], self.image_ids[idx]
        other.patient_ids, other.targets = self.patient_ids[idx], self.targets[idx]
        return other

    def batch(self, indices, epoch: int | None = None, resident: Resident | None = None,
              with_params: bool = True) -> Batch:
        """Samples ``indices`` as one :class:`Batch` (augmentation parameters of ``epoch``, default the current one).

        Images come from one read of the cache, or of ``resident`` (:meth:`resident`), in
        which case images and targets stay where it keeps them (pinned memory, a GPU).
        ``with_params=False`` leaves the parameters out (the feed draws a whole epoch's on the device).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices {idx.min()}..{idx.max()} out of range for {len(self)} samples")
        if resident is None:
            images = torch.from_numpy(np.asarray(self.cache.images[self.slots[idx]]))
            targets = torch.from_numpy(self.targets[idx])
        else:
            store = resident.images
            if store.is_cuda:
                where = torch.from_numpy(idx).pin_memory().to(store.device, non_blocking=True)
                images, targets = store.index_select(0, where), resident.targets.index_select(0, where)
            else:
                # NumPy's take copies whole rows (torch's CPU index_select on uint8 is ~100x slower);
                # a pinned store is gathered straight into pinned memory: one copy to the GPU left.
                # mode="clip": the indices are checked above, and "raise" would buffer the output.
                images = torch.empty((len(idx),) + tuple(store.shape[1:]), dtype=store.dtype,
                                     pin_memory=store.is_pinned())
                np.take(store.numpy(), idx, axis=0, out=images.numpy(), mode="clip")
                targets = torch.from_numpy(resident.targets.numpy()[idx])
        draw = self.augment and with_params
        params = draw_params(self.seed, self.epoch if epoch is None else epoch, idx) if draw else None
        return Batch(images, targets, params)

    def resident(self, device: str | torch.device = "cpu", pin: bool = False, chunk: int = 1024) -> Resident:
        """Every image and target of the dataset, copied once into memory in sample order.

        On ``device`` (a GPU), or in host memory, pinned when ``pin`` (so batches sliced from it
        travel to the GPU asynchronously). Reads the cache in chunks: no second full copy.
        """
        device = torch.device(device)
        pin = bool(pin) and device.type == "cpu"
        n, s = len(self), self.image_size
        images = torch.empty((n, s, s), dtype=torch.uint8, device=device, pin_memory=pin)
        for a in range(0, n, chunk):
            images[a:a + chunk].copy_(torch.from_numpy(np.asarray(self.cache.images[self.slots[a:a + chunk]])))
        targets = torch.from_numpy(self.targets)
        targets = targets.pin_memory() if pin else targets.to(device, copy=True)
        return Resident(images, targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        b = self.batch([i])
        x = model_input(b.images, b.params, self.channels)[0]
        if self.tencrop:
            x = ten_crop(x, self.crop_size)
        return x, b.targets[0]

    def __repr__(self) -> str:
        flags = [f for f in ("augment", "tencrop") if getattr(self, f)]
        return (f"CachedDataset(n={len(self)}, size={self.image_size}, channels={self.channels}, "
                f"labels={len(self.label_names)}{', ' + ', '.join(flags) if flags else ''})")
