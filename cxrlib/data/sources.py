"""The registry of data sources: what each offers and how it plans the images to read.

A source is registered once, by the module that knows it (``chestxray14_source``,
``medmnist_source``, ``phantom_source``), with what it offers: per-finding masks, boxes,
real patient ids, whether it needs a data folder. ``load_data`` asks the registry for the
plan of a config and hands the source's :class:`Offers` to the :class:`DataBundle`, so that
callers decide by capability (``bundle.offers.masks``), never by the source's name.

A plan says which images make the train/val/test parts, which images the cache holds and
how to make one (a ``SlotLoader``), and how to read an original image and its boxes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:  # the cache builds from plans, so it imports this module, not the reverse
    from cxrlib.data.cache import SlotLoader

PARTS = ("train", "val", "test")
# What a source may know of an image beside its pixels and labels (a plan's ``metadata``):
# view position (AP/PA), age in years, sex (M/F), follow-up number. A source gives those it has.
METADATA_COLUMNS = ("view_position", "age", "sex", "follow_up")


@dataclass(frozen=True)
class Offers:
    """What a source gives beside images and labels."""

    masks: bool = False  # per-finding pixel masks at the cache size (DataBundle.mask)
    boxes: bool = False  # ground-truth boxes in full-image pixels (DataBundle.boxes)
    patient_ids: bool = False  # real patient ids; without them every image is its own patient
    needs_data_dir: bool = False  # reads a folder the user names (DataConfig.data_dir)


@dataclass
class Part:
    """One part of a split: its images, their patients and targets."""

    image_ids: np.ndarray
    patient_ids: np.ndarray
    targets: np.ndarray


@dataclass
class Plan:
    """What load_data will read: the parts, the images to cache and how to make one."""

    source: str
    split_name: str
    label_names: list[str]
    parts: dict[str, Part]
    cache_key: str
    cache_ids: list[str]
    loader: SlotLoader
    full_image: Callable[[str], np.ndarray]
    offers: Offers = field(default_factory=Offers)
    boxes: Callable[[str], list] | None = None  # only where offers.boxes
    # image ids -> a DataFrame of those images' METADATA_COLUMNS (the ones the source has), or None
    metadata: Callable[[np.ndarray], Any] | None = None
    missing: int = 0
    missing_by_part: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Source:
    """A registered data source: its name, what it offers, and its planner."""

    name: str
    offers: Offers
    plan: Callable[[Any], Plan]  # DataConfig -> Plan
    description: str = ""


_REGISTRY: dict[str, Source] = {}


def register_source(source: Source) -> Source:
    """Add a source to the registry (once per name)."""
    if source.name in _REGISTRY and _REGISTRY[source.name] is not source:
        raise ValueError(f"data source {source.name!r} is registered twice")
    _REGISTRY[source.name] = source
    return source


def source_names() -> tuple[str, ...]:
    """The registered sources' names, in registration order."""
    return tuple(_REGISTRY)


def get_source(name: str) -> Source:
    """The registered source ``name``; a clear error naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown data source {name!r}; expected one of {source_names()}") from None


def make_plan(cfg) -> Plan:
    """The plan of a ``DataConfig``: the checks every source shares, then its planner."""
    source = get_source(cfg.source)
    if int(cfg.image_size) < 8:
        raise ValueError(f"image_size {cfg.image_size} is too small (at least 8 pixels)")
    if cfg.on_corrupt not in ("error", "skip"):
        raise ValueError(f"on_corrupt must be 'error' or 'skip', got {cfg.on_corrupt!r}")
    if source.offers.needs_data_dir and not cfg.data_dir:
        raise ValueError(f"source {source.name!r} needs data_dir: {source.description}")
    plan = source.plan(cfg)
    if plan.offers != source.offers:
        raise RuntimeError(f"source {source.name!r}: its plan offers {plan.offers}, its entry {source.offers}")
    return plan


# ---------------------------------------------------------------------- helpers for planners

def short_hash(*parts: Any) -> str:
    """Ten hex digits naming a cache by what it was made from."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:10]

