"""The ``phantoms`` source: the built-in synthetic phantoms (``cxrlib.phantoms``), planned for the cache.

They offer per-finding masks (at the cache size; the cache stores them as bits) and patient
ids, and no boxes: a box drawn around a mask claims more than the mask does, so
localization on phantoms is scored against the masks. They need no data folder.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from cxrlib import phantoms as ph
from cxrlib.data.cache import SlotLoader, select_cache_ids
from cxrlib.data.chestxray14 import limit_part
from cxrlib.data.sources import PARTS, Offers, Part, Plan, Source, register_source, short_hash
from cxrlib.labels import FINDINGS, targets_with_no_finding

OFFERS = Offers(masks=True, boxes=False, patient_ids=True, needs_data_dir=False)
# DataConfig has no field for it: the size at which full_image() renders a phantom.
PHANTOM_FULL_SIZE = 512
SPLIT_NAME = "synthetic phantoms, patient-wise 70/10/20"


class PhantomLoader(SlotLoader):
    """Render phantom ``rows[i]`` at the cache size: its image and its masks as bits.

    ``training[i]`` says the row is in the training split, where the optional confounder
    lives (``PhantomSpec.confounder``).
    """

    has_masks = True

    def __init__(self, rows, seed: int, spec: ph.PhantomSpec, training=None):
        self.rows = [int(r) for r in rows]
        self.seed = seed
        self.spec = spec
        self.training = [False] * len(self.rows) if training is None else [bool(t) for t in training]

    def load(self, i: int, size: int):
        p = ph.render_phantom(self.rows[i], size, seed=self.seed, spec=self.spec, training=self.training[i])
        return np.asarray(p.image, dtype=np.uint8), mask_bits(p.masks)

    def describe(self, i: int) -> str:
        return f"phantom {self.rows[i]} (seed {self.seed})"


def mask_bits(masks: np.ndarray) -> np.ndarray:
    """``bool [14, S, S]`` masks as ``uint16 [S, S]``: bit k set where finding k is."""
    masks = np.asarray(masks, dtype=bool)
    bits = np.zeros(masks.shape[1:], dtype=np.uint16)
    for k in range(masks.shape[0]):
        bits |= masks[k].astype(np.uint16) << np.uint16(k)
    return bits


def phantom_spec(cfg) -> ph.PhantomSpec:
    """The PhantomSpec a DataConfig asks for: its contrast and lesion scale, and any other
    knob named in ``phantom_options``."""
    options = dict(getattr(cfg, "phantom_options", None) or {})
    known = {f.name for f in dataclasses.fields(ph.PhantomSpec)} - {"contrast", "lesion_scale"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"data.phantom_options: unknown PhantomSpec knob(s) {unknown}; known: {sorted(known)} "
                         "(contrast and lesion_scale are data.phantom_contrast and data.phantom_lesion_scale)")
    return ph.PhantomSpec(contrast=cfg.phantom_contrast, lesion_scale=cfg.phantom_lesion_scale, **options)


def with_confounder(data_cfg, share: float = 0.9):
    """The shortcut lesson's data: ``data_cfg`` with a chest drain drawn on ``share`` of the
    training split's Pneumothorax phantoms; validation and test images never carry one.

    Train one model on ``load_data(with_confounder(cfg.data))`` and one on ``cfg.data``
    (same seed, same split): on the drain-free test split the first one's Pneumothorax
    AUROC falls below the second's, and its Pneumothorax heatmap on a training image with a
    drain lights up the drain, not the lung edge. The drain is no finding: masks and
    labels are the same with and without it. From the command line or a profile:
    ``--set data.phantom_options.confounder=0.9``.
    """
    options = {**(getattr(data_cfg, "phantom_options", None) or {}), "confounder": float(share)}
    return dataclasses.replace(data_cfg, phantom_options=options)


def plan_phantoms(cfg) -> Plan:
    spec = phantom_spec(cfg)
    table = ph.phantom_table(cfg.num_phantoms, seed=cfg.seed, spec=spec)
    split = ph.phantom_split(table, cfg.seed)
    ids_all = table["image_id"].astype(str).to_numpy()
    pats_all = table["patient_id"].to_numpy()
    ys_all = table[list(FINDINGS)].to_numpy(dtype=np.float32)
    if cfg.include_no_finding:
        ys_all = targets_with_no_finding(ys_all)
    parts = {}
    for k, part in enumerate(PARTS):
        rows = np.sort(np.asarray(split[part], dtype=np.int64))
        sel = rows[limit_part(ids_all[rows], pats_all[rows], cfg.limit, cfg.seed + k)]
        if len(sel) == 0:
            raise ValueError(f"phantoms: the {part} part is empty; raise num_phantoms (now {cfg.num_phantoms})")
        parts[part] = Part(ids_all[sel], pats_all[sel], ys_all[sel])
    ids_cached, suffix = select_cache_ids([p.image_ids for p in parts.values()], ids_all.tolist(),
                                          cfg.limit is not None)
    row_of = {i: r for r, i in enumerate(ids_all.tolist())}
    # The confounder is drawn on training images only: the planner is what knows them.
    train_rows = set(np.asarray(split["train"]).tolist())
    # The whole phantom package's source is part of the key: a change in how phantoms are
    # drawn must never be served from an old cache.
    key = f"phantoms-{short_hash(cfg.num_phantoms, cfg.seed, repr(spec), ph.code_fingerprint())}{suffix}"

    def full_image(image_id: str) -> np.ndarray:
        if image_id not in row_of:
            raise KeyError(f"{image_id!r} is not one of the {len(row_of)} phantoms")
        row = row_of[image_id]
        return np.asarray(ph.render_phantom(row, PHANTOM_FULL_SIZE, seed=cfg.seed, spec=spec,
                                            training=row in train_rows).image)

    follow_up = ph.phantom_follow_ups(cfg.num_phantoms, cfg.seed, spec)

    def metadata(image_ids: np.ndarray) -> pd.DataFrame:
        # a phantom knows its follow-up number (sicker patients have more images, as in
        # ChestX-ray14: PhantomSpec.sickness_pattern) and, with the AP/PA confound on, its view
        # position; it has no age or sex
        rows = [row_of[str(i)] for i in image_ids]
        out = pd.DataFrame({"follow_up": follow_up[rows]}, index=pd.Index(np.asarray(image_ids, dtype=str),
                                                                           name="image_id"))
        if spec.ap_confound > 0:
            findings = table[list(FINDINGS)].to_numpy()
            out.insert(0, "view_position", ["AP" if ph.is_ap_film(r, cfg.seed, spec, findings[r]) else "PA"
                                            for r in rows])
        return out

    return Plan(
        source="phantoms", split_name=SPLIT_NAME,
        label_names=list(FINDINGS) + (["No Finding"] if cfg.include_no_finding else []), parts=parts,
        cache_key=key, cache_ids=ids_cached, loader=PhantomLoader([row_of[i] for i in ids_cached], cfg.seed, spec,
                                                        [row_of[i] in train_rows for i in ids_cached]),
        full_image=full_image, offers=OFFERS, metadata=metadata)


SOURCE = register_source(Source("phantoms", OFFERS, plan_phantoms, "built-in synthetic phantoms; reads no folder"))
