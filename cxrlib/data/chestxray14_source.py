"""The ``chestxray14`` source: NIH's release in its own layout, planned for the cache.

It offers boxes (``BBox_List_2017.csv``, where the box list has some for an image) and real
patient ids, and needs the folder the user downloaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrlib.data import chestxray14 as cx
from cxrlib.data.cache import FileLoader, select_cache_ids
from cxrlib.data.imageio import image_size, read_image
from cxrlib.data.sources import PARTS, Offers, Part, Plan, Source, register_source, short_hash

OFFERS = Offers(masks=False, boxes=True, patient_ids=True, needs_data_dir=True)


def plan_chestxray14(cfg) -> Plan:
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
        parts[part] = Part(ids[sel], pats[sel], ys[sel])
    listed = set(table.image_ids.tolist())
    in_table = [i for i in present if i in listed] if cfg.limit is None else None
    ids_cached, suffix = select_cache_ids([p.image_ids for p in parts.values()], in_table, cfg.limit is not None)
    boxes_path = data_dir / cx.BOX_LIST_NAME
    box_table: dict[str, list[cx.Box]] | None = None

    def boxes(image_id: str) -> list[cx.Box]:
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

    metadata_table = None

    def metadata(image_ids: np.ndarray):
        nonlocal metadata_table
        if metadata_table is None:
            metadata_table = cx.read_metadata(table.path)
        return metadata_table.reindex(np.asarray(image_ids, dtype=str))

    notes = []
    total_missing = sum(missing_by_part.values())
    if total_missing:
        notes.append(f"{total_missing} of {sum(len(v) for v in split.image_ids.values())} listed images are not "
                     f"downloaded in {data_dir}; {n_present} are present and used")
    return Plan(
        source="chestxray14", split_name=split.name, label_names=list(table.label_names), parts=parts,
        cache_key=f"chestxray14-{short_hash(data_dir)}{suffix}", cache_ids=ids_cached,
        loader=FileLoader([present[i] for i in ids_cached]), full_image=full_image, offers=OFFERS, boxes=boxes,
        metadata=metadata,
        missing=total_missing, missing_by_part=missing_by_part, notes=notes)


SOURCE = register_source(Source(
    "chestxray14", OFFERS, plan_chestxray14,
    "the folder holding Data_Entry_2017*.csv and images/ (NIH ChestX-ray14 as released)"))
