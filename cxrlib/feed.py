"""Batches ready for the model: a dataset's uint8 samples moved to the device and augmented there.

One seeded order per epoch, the same on every rank and after a resume (the permutation of
``DistributedSampler``: seed + epoch, padded to a multiple of the ranks, rank ``r`` taking
every ``world``-th index), then one of two sources for the batches:

* **resident**: the dataset's images live in memory, on the GPU or in pinned host memory,
  and each batch is sliced from there inside the training process, with no worker processes;
* **stream**: persistent DataLoader workers read whole batches from the cache memmap
  (one read per batch), pinned and prefetched.

Either way only uint8 images travel to the device per batch, where
:func:`cxrlib.augment.model_input` makes the model's input. What else a batch needs is
made once per epoch on the device and sliced from there: the epoch's order goes over in one
copy, the targets are gathered from a copy of all of them kept on the device, and the
augmentation parameters of the whole epoch are drawn there (:func:`cxrlib.augment.draw_params`
on a device tensor: the same (seed, epoch, index) draws as anywhere else). At CheXNet's
batch of 16 a step under CUDA graphs takes a few milliseconds, so a per-batch host draw,
pinning and small copies would be 10-15% of it. Both sources give bit-identical batches;
which one is used changes speed, never results.
"""
from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from cxrlib.augment import draw_params, model_input, ten_crop
from cxrlib.config import TrainConfig

RESIDENT = ("auto", "device", "host", "off")
# "auto" keeps a dataset on the GPU only while it takes at most this share of the free GPU
# memory: the rest is the model's (activations of a large batch dominate).
DEVICE_SHARE = 0.25


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1, shuffle: bool = True) -> np.ndarray:
    """Dataset indices this rank visits in ``epoch``.

    Shuffled by a generator seeded with ``seed + epoch`` (``DistributedSampler``'s rule, so a
    checkpoint taken by the earlier sampler resumes in the same order); padded with the
    first indices to a multiple of ``world``; rank ``r`` takes positions ``r, r + world, ...``.
    The union of the ranks' ``j``-th batches is the single process's ``j``-th batch.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + int(epoch))).numpy()
    else:
        order = np.arange(n, dtype=np.int64)
    total = -(-n // world) * world
    if total > n:
        order = np.concatenate([order, np.resize(order, total - n)])
    return order[rank:total:world].astype(np.int64)


def placement(ds, device: torch.device, resident: str = TrainConfig.resident,
              budget_gb: float = TrainConfig.resident_gb) -> str:
    """Where ``ds``'s images go: ``"device"`` (GPU memory), ``"host"`` (memory; pinned on CUDA) or ``"stream"``.

    ``resident``: ``auto`` (the GPU if the dataset takes at most a quarter of its free
    memory, else host memory), ``device``, ``host`` or ``off``. A dataset larger than
    ``budget_gb`` GiB, or one that cannot hand out batches (:meth:`resident`), is streamed.
    """
    if resident not in RESIDENT:
        raise ValueError(f"train.resident={resident!r}: expected one of {RESIDENT}")
    if budget_gb is None or float(budget_gb) < 0:
        raise ValueError(f"train.resident_gb={budget_gb!r}: expected a size in GiB (0 streams everything)")
    if resident == "off" or not hasattr(ds, "resident"):
        return "stream"
    if ds.nbytes > float(budget_gb) * 2**30:
        if resident != "auto":
            warnings.warn(f"{ds!r} takes {ds.nbytes / 2**30:.2f} GiB, more than train.resident_gb={budget_gb}: "
                          f"streaming it through DataLoader workers instead of keeping it on {resident}",
                          stacklevel=3)
        return "stream"
    if device.type != "cuda" or resident == "host":
        return "host"
    if resident == "device":
        return "device"
    free, _total = torch.cuda.mem_get_info(device)
    return "device" if ds.nbytes <= DEVICE_SHARE * free else "host"


class _Requests:
    """The stream source's sampler: ``(epoch, indices)`` per batch, so a persistent worker needs no epoch state."""

    def __init__(self):
        self.batches: list[tuple[int, np.ndarray]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _BatchReader(torch.utils.data.Dataset):
    """Runs in the workers: one request, one :meth:`CachedDataset.batch` read."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, request):
        epoch, indices = request
        return self.ds.batch(indices, epoch=epoch, with_params=False)


def _as_is(batch):
    return batch


class Feed:
    """The batches of one dataset for one model: ``for x, y in feed.epoch(e): ...``.

    ``x`` is the normalised float input on ``device`` (augmented when ``ds.augment``; ten
    crops per image, ``[10 B, C, c, c]``, when ``tencrop``), ``y`` the targets ``[B, K]``.
    ``shuffle``/``seed``/``rank``/``world`` fix the order (:func:`epoch_order`);
    ``workers``/``resident``/``budget_gb`` only where the images come from (:func:`placement`).
    """

    def __init__(self, ds, batch_size: int, device: str | torch.device = "cpu", *, shuffle: bool = False,
                 seed: int = 0, rank: int = 0, world: int = 1, channels_last: bool = False, tencrop: bool = False,
                 workers: int = 0, resident: str = TrainConfig.resident, budget_gb: float = TrainConfig.resident_gb,
                 prefetch: int = 2):
        if not hasattr(ds, "batch"):
            raise TypeError(f"{type(ds).__name__} cannot feed the device: a dataset must hand out uint8 batches "
                            f"(cxrlib.data.CachedDataset.batch; CachedDataset.from_arrays wraps arrays in memory)")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.ds, self.batch_size = ds, int(batch_size)
        self.device = torch.device(device)
        self.shuffle, self.seed, self.rank, self.world = bool(shuffle), int(seed), int(rank), int(world)
        self.channels_last, self.tencrop = bool(channels_last), bool(tencrop)
        self.placement = placement(ds, self.device, resident, budget_gb)
        self.store = None
        if self.placement != "stream":
            where = self.device if self.placement == "device" else "cpu"
            self.store = ds.resident(where, pin=self.device.type == "cuda")
        # every target, kept where the model runs: a batch's are sliced there, not copied each step
        self._targets = torch.as_tensor(np.asarray(ds.targets, dtype=np.float32)).to(self.device)
        self._requests = _Requests()
        self._loader = None
        if self.placement == "stream":
            # a private generator: starting workers must not draw from the global torch RNG, or
            # a run resumed mid-epoch would see other dropout masks than an uninterrupted one
            self._loader = DataLoader(
                _BatchReader(ds), batch_size=None, sampler=self._requests, num_workers=int(workers),
                collate_fn=_as_is, pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=int(prefetch) if workers > 0 else None, generator=torch.Generator().manual_seed(0))

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's dataset indices for ``epoch``, in the order the batches hold them."""
        return epoch_order(len(self.ds), self.seed, epoch, self.rank, self.world, self.shuffle)

    def __len__(self) -> int:
        per_rank = -(-len(self.ds) // self.world)
        return -(-per_rank // self.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The model's ``(x, y)`` for ``epoch``, after the first ``skip`` batches (a run resumed mid-epoch)."""
        order = torch.from_numpy(self.indices(epoch)[int(skip) * self.batch_size:])
        if self.device.type == "cuda":
            order = order.pin_memory().to(self.device, non_blocking=True)
        targets = self._targets.index_select(0, order)
        augment = bool(getattr(self.ds, "augment", False))
        params = draw_params(self.ds.seed, epoch, order) if augment else None
        for j, b in enumerate(self.batches(epoch, skip, with_params=False)):
            part = slice(j * self.batch_size, (j + 1) * self.batch_size)
            yield self._model_input(b.images, params[part] if augment else None), targets[part]

    def batches(self, epoch: int, skip: int = 0, with_params: bool = True) -> Iterator:
        """The uint8 :class:`~cxrlib.data.datasets.Batch` es of ``epoch``, before they go to the device."""
        order = self.indices(epoch)[int(skip) * self.batch_size:]
        chunks = [order[a:a + self.batch_size] for a in range(0, len(order), self.batch_size)]
        if self.store is not None:
            for idx in chunks:
                yield self.ds.batch(idx, epoch=epoch, resident=self.store, with_params=with_params)
        elif not with_params:
            self._requests.batches = [(int(epoch), idx) for idx in chunks]
            yield from self._loader
        else:
            for idx in chunks:
                yield self.ds.batch(idx, epoch=epoch)

    def to_device(self, b) -> tuple[torch.Tensor, torch.Tensor]:
        """A :class:`~cxrlib.data.datasets.Batch` -> ``(x, y)`` on the device (copies do not block)."""
        cuda = self.device.type == "cuda"
        targets = b.targets.to(self.device, non_blocking=cuda and b.targets.is_pinned())
        params = None if b.params is None else b.params.to(self.device)
        return self._model_input(b.images, params), targets

    def _model_input(self, images: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        """uint8 images (anywhere; pinned or on the device) and their parameters (on the device) -> ``x``."""
        images = images.to(self.device, non_blocking=self.device.type == "cuda" and images.is_pinned())
        x = model_input(images, params, self.ds.channels, self.channels_last and not self.tencrop)
        if self.tencrop:
            x = ten_crop(x, self.ds.crop_size).flatten(0, 1)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return x

    def close(self) -> None:
        """Stop the workers and free the resident images now rather than at garbage collection."""
        self._loader, self.store = None, None  # the DataLoader's iterator shuts its workers down when dropped

    def __repr__(self) -> str:
        return (f"Feed({self.ds!r}, batch={self.batch_size}, device={self.device}, {self.placement}, "
                f"shuffle={self.shuffle}, rank {self.rank}/{self.world})")

