"""The data layer: one call, :func:`load_data`, gives train/val/test datasets over the cache.

Three sources share it: ``phantoms`` (synthetic chest phantoms, built in, offline),
``chestxray14`` (NIH's release in its own layout), and ``chestmnist`` / ``pneumoniamnist``
(MedMNIST npz files). Each becomes a plan (which images, which parts, how to decode one),
the plan's images are decoded once into the cache, and the datasets read only the cache.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cxrlib.data.cache import FileLoader, ImageCache, SlotLoader, build_cache, ids_fingerprint, resize_image
from cxrlib.data.chestxray14 import Box
from cxrlib.data.datasets import GRAY_MEAN, GRAY_STD, CachedDataset, preprocess, to_model_input
from cxrlib.data.imageio import ImageError, read_image
from cxrlib.labels import FINDINGS, canonical, targets_with_no_finding

__all__ = [
    "load_data", "DataBundle", "CachedDataset", "ImageCache", "Box", "ImageError", "read_image",
    "resize_image", "preprocess", "to_model_input", "GRAY_MEAN", "GRAY_STD", "SOURCES",
    "PHANTOM_FULL_SIZE",
]

SOURCES = ("phantoms", "chestxray14", "chestmnist", "pneumoniamnist")
PARTS = ("train", "val", "test")
# DataConfig has no field for it: the size at which full_image() renders a phantom.
PHANTOM_FULL_SIZE = 512


@dataclass
class _Part:
    image_ids: np.ndarray
    patient_ids: np.ndarray
    targets: np.ndarray


@dataclass
class _Plan:
    """What load_data will read: the parts, the images to cache and how to make one."""

    source: str
    split_name: str
    label_names: list[str]
    parts: dict[str, _Part]
    cache_key: str
    cache_ids: list[str]
    loader: SlotLoader
    missing: int = 0
    missing_by_part: dict[str, int] = field(default_factory=dict)
    full_image: Callable[[str], np.ndarray] | None = None
    boxes: Callable[[str], list[Box]] | None = None
    has_masks: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class DataBundle:
    """Datasets of one experiment and what the notebooks need beside them."""

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
    _plan: Any = field(default=None, repr=False)

    def full_image(self, image_id: str) -> np.ndarray:
        """The original-resolution ``uint8 [H,W]`` image (for overlays and the demo)."""
        return self._plan.full_image(str(image_id))

    def boxes(self, image_id: str) -> list[Box]:
        """Ground-truth boxes in :meth:`full_image` pixels (empty when there are none)."""
        return self._plan.boxes(str(image_id)) if self._plan.boxes is not None else []

    def mask(self, image_id: str, finding: str | int) -> np.ndarray | None:
        """Ground-truth ``bool [S,S]`` mask at the cache size (phantoms), else None."""
        if not self.cache.has_masks:
            return None
        k = finding if isinstance(finding, int) else FINDINGS.index(canonical(finding))
        bits = self.cache.masks[self.cache.index_of(str(image_id))]
        return (np.asarray(bits) >> np.uint16(k)) & np.uint16(1) != 0

    def dataset(self, part: str) -> CachedDataset:
        return {"train": self.train, "val": self.val, "test": self.test}[part]

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "split": self.split_name, "image_size": self.image_size,
                "sizes": {p: len(self.dataset(p)) for p in PARTS}, "missing": self.missing,
                "skipped": len(self.skipped), "labels": len(self.label_names)}


def _short_hash(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:10]


def _cache_ids(plan_parts: dict[str, _Part], all_ids: list[str] | None, limited: bool) -> tuple[list[str], str]:
    """All of the dataset's images (shared by every split) or, when capped, just those used."""
    if not limited and all_ids is not None:
        return sorted(all_ids), ""
    used = sorted(set().union(*(set(p.image_ids.tolist()) for p in plan_parts.values())))
    return used, "-subset-" + ids_fingerprint(used)[:8]


# --------------------------------------------------------------------------- ChestX-ray14

def _plan_chestxray14(cfg) -> _Plan:
    from cxrlib.data import chestxray14 as cx
    from cxrlib.data.imageio import image_size

    if not cfg.data_dir:
        raise ValueError("source 'chestxray14' needs data_dir: the folder holding Data_Entry_2017*.csv and images/")
    data_dir = Path(cfg.data_dir).expanduser().resolve()
    table = cx.read_data_entry(cx.find_data_entry(data_dir), cfg.include_no_finding)
    split = cx.load_split(data_dir, cfg.split, table, cfg.val_fraction, cfg.seed)
    present = cx.find_images(data_dir)
    if not present:
        raise FileNotFoundError(f"no ChestX-ray14 images (*.png) found in {cx.where_looked(data_dir)}")
    parts, missing_by_part, n_present = {}, {}, 0
    for k, part in enumerate(PARTS):
        ids = split.image_ids[part]
        keep = np.array([i in present for i in ids], dtype=bool)
        missing_by_part[part] = int((~keep).sum())
        ids, pats, ys = ids[keep], split.patient_ids[part][keep], split.targets[part][keep]
        n_present += len(ids)
        sel = cx.limit_part(ids, pats, cfg.limit, cfg.seed + k)
        if len(sel) == 0:
            raise ValueError(
                f"split {split.name!r}: none of the {len(split.image_ids[part])} {part} images is present in "
                f"{cx.where_looked(data_dir)}; download more of the release or choose another split")
        parts[part] = _Part(ids[sel], pats[sel], ys[sel])
    listed = set(table.image_ids.tolist())
    in_table = [i for i in present if i in listed] if cfg.limit is None else None
    cache_ids, suffix = _cache_ids(parts, in_table, cfg.limit is not None)
    boxes_path = data_dir / cx.BOX_LIST_NAME
    box_table: dict[str, list[Box]] | None = None

    def boxes(image_id: str) -> list[Box]:
        nonlocal box_table
        if box_table is None:
            box_table = cx.read_boxes(boxes_path) if boxes_path.is_file() else {}
        found = box_table.get(image_id, [])
        if not found or image_id not in present:
            return list(found)
        side = image_size(present[image_id])[0]  # the sample's files may be downsized
        return [b.to_size(b.image_size, side) for b in found]

    def full_image(image_id: str) -> np.ndarray:
        if image_id not in present:
            raise KeyError(f"image {image_id!r} is not present in {cx.where_looked(data_dir)}")
        return read_image(present[image_id])

    notes = []
    total_missing = sum(missing_by_part.values())
    if total_missing:
        notes.append(f"{total_missing} of {sum(len(v) for v in split.image_ids.values())} listed images are not "
                     f"downloaded in {data_dir}; {n_present} are present and used")
    return _Plan(
        source="chestxray14", split_name=split.name, label_names=list(table.label_names), parts=parts,
        cache_key=f"chestxray14-{_short_hash(data_dir)}{suffix}", cache_ids=cache_ids,
        loader=FileLoader([present[i] for i in cache_ids]), missing=total_missing,
        missing_by_part=missing_by_part, full_image=full_image, boxes=boxes, notes=notes)


# --------------------------------------------------------------------------- phantoms

class PhantomLoader(SlotLoader):
    """Render phantom ``rows[i]`` at the cache size: its image and its masks as bits."""

    has_masks = True

    def __init__(self, rows, seed: int, spec):
        self.rows = [int(r) for r in rows]
        self.seed = seed
        self.spec = spec

    def load(self, i: int, size: int):
        from cxrlib.phantoms import render_phantom

        ph = render_phantom(self.rows[i], size, seed=self.seed, spec=self.spec)
        masks = np.asarray(ph.masks, dtype=bool)
        bits = np.zeros((size, size), dtype=np.uint16)
        for k in range(masks.shape[0]):
            bits |= masks[k].astype(np.uint16) << np.uint16(k)
        return np.asarray(ph.image, dtype=np.uint8), bits

    def describe(self, i: int) -> str:
        return f"phantom {self.rows[i]} (seed {self.seed})"


def _mask_boxes(bits: np.ndarray, scale: float, full: int) -> list[Box]:
    from scipy import ndimage

    out = []
    for k, name in enumerate(FINDINGS):
        m = (bits >> np.uint16(k)) & np.uint16(1) != 0
        if not m.any():
            continue
        labels, _ = ndimage.label(m)
        for sl in ndimage.find_objects(labels):
            y, x = sl
            out.append(Box(name, x.start * scale, y.start * scale, (x.stop - x.start) * scale,
                           (y.stop - y.start) * scale, full))
    return out


def _plan_phantoms(cfg) -> _Plan:
    from cxrlib import phantoms as ph

    spec = ph.PhantomSpec(contrast=cfg.phantom_contrast, lesion_scale=cfg.phantom_lesion_scale)
    table = ph.phantom_table(cfg.num_phantoms, seed=cfg.seed, spec=spec)
    split = ph.phantom_split(table, cfg.seed)
    ids_all = table["image_id"].astype(str).to_numpy()
    pats_all = table["patient_id"].to_numpy()
    ys_all = table[list(FINDINGS)].to_numpy(dtype=np.float32)
    if cfg.include_no_finding:
        ys_all = targets_with_no_finding(ys_all)
    from cxrlib.data.chestxray14 import limit_part

    parts = {}
    for k, part in enumerate(PARTS):
        rows = np.sort(np.asarray(split[part], dtype=np.int64))
        sel = rows[limit_part(ids_all[rows], pats_all[rows], cfg.limit, cfg.seed + k)]
        if len(sel) == 0:
            raise ValueError(f"phantoms: the {part} part is empty; raise num_phantoms (now {cfg.num_phantoms})")
        parts[part] = _Part(ids_all[sel], pats_all[sel], ys_all[sel])
    cache_ids, suffix = _cache_ids(parts, ids_all.tolist(), cfg.limit is not None)
    row_of = {i: r for r, i in enumerate(ids_all.tolist())}
    # The whole phantom package's source is part of the key: a change in how phantoms are
    # drawn must never be served from an old cache.
    code = ph.code_fingerprint()
    key = f"phantoms-{_short_hash(cfg.num_phantoms, cfg.seed, repr(spec), code)}{suffix}"
    plan = _Plan(
        source="phantoms", split_name="synthetic phantoms, patient-wise 70/10/20",
        label_names=list(FINDINGS) + (["No Finding"] if cfg.include_no_finding else []), parts=parts,
        cache_key=key, cache_ids=cache_ids, loader=PhantomLoader([row_of[i] for i in cache_ids], cfg.seed, spec),
        has_masks=True)

    def full_image(image_id: str) -> np.ndarray:
        if image_id not in row_of:
            raise KeyError(f"{image_id!r} is not one of the {len(row_of)} phantoms")
        return np.asarray(ph.render_phantom(row_of[image_id], PHANTOM_FULL_SIZE, seed=cfg.seed, spec=spec).image)

    plan.full_image = full_image
    return plan


# --------------------------------------------------------------------------- MedMNIST

def _plan_medmnist(cfg) -> _Plan:
    from cxrlib.data import medmnist as mm

    name = cfg.source
    path = mm.find_npz(name, cfg.data_dir).resolve()
    splits = mm.load_npz(path)
    names = list(mm.LABEL_NAMES[name])
    width = splits["train"].labels.shape[1]
    if width != len(names):
        raise ValueError(f"{path}: labels have {width} columns but {name} has {len(names)} ({names}); wrong file?")
    if cfg.include_no_finding:
        if name != "chestmnist":
            raise ValueError(f"include_no_finding applies to the 14 findings; {name} has the labels {names}")
        names.append("No Finding")
    parts, images, all_ids = {}, {}, []
    offset = 0
    for k, part in enumerate(PARTS):
        s = splits[part]
        ids = np.array([f"{part}_{i:06d}" for i in range(len(s.images))])
        # MedMNIST ships no patient ids: each image counts as its own patient.
        pats = np.arange(offset, offset + len(ids), dtype=np.int64)
        offset += len(ids)
        ys = s.labels.astype(np.float32)
        if cfg.include_no_finding:
            ys = targets_with_no_finding(ys)
        sel = np.arange(len(ids)) if cfg.limit is None else np.arange(min(cfg.limit, len(ids)))
        parts[part] = _Part(ids[sel], pats[sel], ys[sel])
        images.update(zip(ids.tolist(), s.images))
        all_ids += ids.tolist()
    cache_ids, suffix = _cache_ids(parts, all_ids, cfg.limit is not None)
    stat = path.stat()
    key = f"{name}-{_short_hash(path, stat.st_size, stat.st_mtime_ns)}{suffix}"
    stacked = np.stack([images[i] for i in cache_ids])
    split_name = f"MedMNIST {name} official train/val/test"
    return _Plan(
        source=name, split_name=split_name, label_names=names, parts=parts, cache_key=key,
        cache_ids=cache_ids, loader=_array_loader(stacked, cache_ids),
        full_image=lambda i: np.array(images[i]) if i in images else _no_image(i, path))


def _array_loader(images: np.ndarray, ids: list[str]) -> SlotLoader:
    from cxrlib.data.cache import ArrayLoader

    return ArrayLoader(images, ids)


def _no_image(image_id: str, path: Path):
    raise KeyError(f"{image_id!r} is not in {path}")


# --------------------------------------------------------------------------- entry point

def _plan(cfg) -> _Plan:
    if cfg.source not in SOURCES:
        raise ValueError(f"unknown data source {cfg.source!r}; expected one of {SOURCES}")
    if int(cfg.image_size) < 8:
        raise ValueError(f"image_size {cfg.image_size} is too small (at least 8 pixels)")
    if cfg.on_corrupt not in ("error", "skip"):
        raise ValueError(f"on_corrupt must be 'error' or 'skip', got {cfg.on_corrupt!r}")
    if cfg.source == "chestxray14":
        return _plan_chestxray14(cfg)
    if cfg.source == "phantoms":
        return _plan_phantoms(cfg)
    return _plan_medmnist(cfg)


def load_data(data_cfg, progress: bool = True) -> DataBundle:
    """Train/val/test :class:`CachedDataset` for ``data_cfg``, building its cache if needed.

    Images listed but absent are counted in ``.missing``; with ``on_corrupt="skip"``,
    unreadable files are left out and listed in ``.skipped`` (and warned about).
    Augmentation and ten-crop are off; the training loop sets ``train.augment``.
    """
    plan = _plan(data_cfg)
    cache = build_cache(plan.cache_key, plan.cache_ids, data_cfg.image_size, plan.loader,
                        cache_dir=data_cfg.cache_dir, workers=data_cfg.workers, progress=progress,
                        on_corrupt=data_cfg.on_corrupt)
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
    if plan.boxes is None and plan.has_masks:
        scale = PHANTOM_FULL_SIZE / cache.size
        plan.boxes = lambda image_id: _mask_boxes(np.asarray(cache.masks[cache.index_of(image_id)]),
                                                  scale, PHANTOM_FULL_SIZE)
    return DataBundle(
        train=datasets["train"], val=datasets["val"], test=datasets["test"], label_names=plan.label_names,
        split_name=plan.split_name, source=plan.source, missing=plan.missing, image_size=cache.size,
        cache=cache, missing_by_part=plan.missing_by_part, skipped=sorted(skipped), _plan=plan)
