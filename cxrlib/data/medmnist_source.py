"""The ``chestmnist`` and ``pneumoniamnist`` sources: MedMNIST npz files, planned for the cache.

They offer neither masks nor boxes, and no patient ids (MedMNIST ships none): each image
counts as its own patient. The npz is found in ``data_dir`` or the default places.
"""
from __future__ import annotations

import numpy as np

from cxrlib.data import medmnist as mm
from cxrlib.data.cache import ArrayLoader, select_cache_ids
from cxrlib.data.sources import PARTS, Offers, Part, Plan, Source, register_source, short_hash
from cxrlib.labels import targets_with_no_finding

OFFERS = Offers(masks=False, boxes=False, patient_ids=False, needs_data_dir=False)

def plan_medmnist(cfg) -> Plan:
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
    for part in PARTS:
        s = splits[part]
        ids = np.array([f"{part}_{i:06d}" for i in range(len(s.images))])
        pats = np.arange(offset, offset + len(ids), dtype=np.int64)  # one patient per image
        offset += len(ids)
        ys = s.labels.astype(np.float32)
        if cfg.include_no_finding:
            ys = targets_with_no_finding(ys)
        sel = np.arange(len(ids)) if cfg.limit is None else np.arange(min(cfg.limit, len(ids)))
        parts[part] = Part(ids[sel], pats[sel], ys[sel])
        images.update(zip(ids.tolist(), s.images))
        all_ids += ids.tolist()
    ids_cached, suffix = select_cache_ids([p.image_ids for p in parts.values()], all_ids, cfg.limit is not None)
    stat = path.stat()
    key = f"{name}-{short_hash(path, stat.st_size, stat.st_mtime_ns)}{suffix}"

    def full_image(image_id: str) -> np.ndarray:
        if image_id not in images:
            raise KeyError(f"{image_id!r} is not in {path}")
        return np.array(images[image_id])

    return Plan(
        source=name, split_name=f"MedMNIST {name} official train/val/test", label_names=names, parts=parts,
        cache_key=key, cache_ids=ids_cached,
        loader=ArrayLoader(np.stack([images[i] for i in ids_cached]), ids_cached),
        full_image=full_image, offers=OFFERS)

CHESTMNIST = register_source(Source(
    "chestmnist", OFFERS, plan_medmnist, "ChestMNIST's chestmnist.npz (a file, or a folder holding it)"))
PNEUMONIAMNIST = register_source(Source(
    "pneumoniamnist", OFFERS, plan_medmnist, "PneumoniaMNIST's pneumoniamnist.npz (a file, or a folder holding it)"))
