"""The data layer: one call, :func:`load_data`, gives train/val/test datasets over the cache.

The sources live in a registry (:mod:`cxrlib.data.sources`): ``phantoms`` (synthetic chest
phantoms, built in, offline), ``chestxray14`` (NIH's release in its own layout), and
``chestmnist`` / ``pneumoniamnist`` (MedMNIST npz files). Each plans its images (which
images, which parts, how to decode one), the plan's images are decoded once into the
cache, and the datasets read only the cache. What a source offers beyond images and labels
(masks, boxes, patient ids) travels with the bundle as ``bundle.offers``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The source modules register themselves; their order is the order of SOURCES.
from cxrlib.data import phantom_source, chestxray14_source, medmnist_source  # noqa: F401
from cxrlib.data.cache import ImageCache, build_cache, resize_image
from cxrlib.data.chestxray14 import Box
from cxrlib.data.datasets import GRAY_MEAN, GRAY_STD, CachedDataset, preprocess, to_model_input
from cxrlib.data.imageio import ImageError, read_image
from cxrlib.data.phantom_source import PHANTOM_FULL_SIZE
from cxrlib.data.sources import PARTS, Offers, Plan, get_source, make_plan, source_names
from cxrlib import label_noise
from cxrlib.labels import FINDINGS, canonical

__all__ = [
    "load_data", "DataBundle", "Offers", "CachedDataset", "ImageCache", "Box", "ImageError", "read_image",
    "resize_image", "preprocess", "to_model_input", "GRAY_MEAN", "GRAY_STD", "SOURCES", "get_source",
    "PHANTOM_FULL_SIZE",
]

SOURCES: tuple[str, ...] = source_names()


@dataclass
class DataBundle:
    """Datasets of one experiment and what the notebooks need beside them.

    ``offers`` says what the source gives beside images and labels; ask it instead of the
    source's name (``if bundle.offers.masks: ... bundle.mask(...)``).
    """

    train: CachedDataset
    val: CachedDataset
    test: CachedDataset
    label_names: list[str]
    split_name: str
    source: str
    missing: int  # images listed by the split but absent on disk
    image_size: int
    cache: ImageCache
    missing_by_part: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (on_corrupt="skip")
    offers: Offers = field(default_factory=Offers)
    # the source's targets of the parts whose labels data.label_noise flipped (cxrlib.label_noise)
    clean_targets: dict[str, np.ndarray] = field(default_factory=dict)
    _plan: Any = field(default=None, repr=False)

    def full_image(self, image_id: str) -> np.ndarray:
        """The original-resolution ``uint8 [H,W]`` image (for overlays and the demo)."""
        return self._plan.full_image(str(image_id))

    def boxes(self, image_id: str) -> list[Box]:
        """Ground-truth boxes in :meth:`full_image` pixels; empty where the image has none
        and always where the source offers no boxes (``offers.boxes``; phantoms have masks)."""
        if not self.offers.boxes:
            return []
        return self._plan.boxes(str(image_id))

    def mask(self, image_id: str, finding: str | int) -> np.ndarray | None:
        """Ground-truth ``bool [S,S]`` mask at the cache size where the source offers masks
        (``offers.masks``), else None."""
        if not self.offers.masks:
            return None
        k = finding if isinstance(finding, int) else FINDINGS.index(canonical(finding))
        bits = self.cache.masks[self.cache.index_of(str(image_id))]
        return (np.asarray(bits) >> np.uint16(k)) & np.uint16(1) != 0

    def metadata(self, part: str):
        """The ``part``'s images' metadata as a DataFrame in dataset order (the columns of
        ``cxrlib.data.sources.METADATA_COLUMNS`` the source has), or None where it has none."""
        if self._plan is None or self._plan.metadata is None:
            return None
        return self._plan.metadata(self.dataset(part).image_ids)

    def masks(self, image_id: str) -> dict[str, np.ndarray]:
        """Every finding's non-empty ground-truth mask of an image, by finding name (cache
        size); empty where the source offers no masks (``offers.masks``: boxes come from
        :meth:`boxes`). A figure that promises the ground truth asks both."""
        if not self.offers.masks:
            return {}
        found = {name: self.mask(image_id, k) for k, name in enumerate(FINDINGS)}
        return {name: m for name, m in found.items() if m is not None and m.any()}

    def dataset(self, part: str) -> CachedDataset:
        return {"train": self.train, "val": self.val, "test": self.test}[part]

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "split": self.split_name, "image_size": self.image_size,
                "sizes": {p: len(self.dataset(p)) for p in PARTS}, "missing": self.missing,
                "skipped": len(self.skipped), "labels": len(self.label_names)}


def load_data(data_cfg, progress: bool = True) -> DataBundle:
    """Train/val/test :class:`CachedDataset` for ``data_cfg``, building its cache if needed.

    Images listed but absent are counted in ``.missing``; with ``on_corrupt="skip"``,
    unreadable files are left out and listed in ``.skipped`` (and warned about).
    Augmentation and ten-crop are off; the training loop sets ``train.augment``. The parts that
    ``data_cfg.label_noise`` names get the labels of that noisy labeller; their source labels
    stay in ``.clean_targets``.
    """
    plan: Plan = make_plan(data_cfg)
    cache = build_cache(plan.cache_key, plan.cache_ids, data_cfg.image_size, plan.loader,
                        cache_dir=data_cfg.cache_dir, workers=data_cfg.workers, progress=progress,
                        on_corrupt=data_cfg.on_corrupt)
    if plan.offers.masks and not cache.has_masks:
        raise RuntimeError(f"{cache.folder}: source {plan.source!r} offers masks but its cache holds none; "
                           "delete the folder to rebuild it")
    skipped = set(cache.skipped)
    if skipped:
        warnings.warn(f"{len(skipped)} unreadable image(s) left out (on_corrupt='skip'), e.g. "
                      f"{sorted(skipped)[:3]}; see {cache.folder / 'manifest.json'}", stacklevel=2)
    for note in plan.notes:
        warnings.warn(note, stacklevel=2)
    datasets = {}
    for part, p in plan.parts.items():
        keep = np.array([i not in skipped for i in p.image_ids.tolist()], dtype=bool)
        slots = [cache.index_of(i) for i in p.image_ids[keep].tolist()]
        if not slots:
            raise ValueError(f"{plan.split_name}: every {part} image is unreadable; see {cache.folder}")
        datasets[part] = CachedDataset(cache, slots, p.image_ids[keep], p.patient_ids[keep], p.targets[keep],
                                       plan.label_names, channels=1, seed=data_cfg.seed)
    clean_targets = label_noise.apply_to_datasets(data_cfg, datasets)
    return DataBundle(
        train=datasets["train"], val=datasets["val"], test=datasets["test"], label_names=plan.label_names,
        split_name=plan.split_name, source=plan.source, missing=plan.missing, image_size=cache.size,
        cache=cache, missing_by_part=plan.missing_by_part, skipped=sorted(skipped), offers=plan.offers,
        clean_targets=clean_targets, _plan=plan)
