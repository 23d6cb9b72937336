"""Render one phantom: cohort row -> anatomy -> findings -> acquisition -> picture and masks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrlib.labels import FINDINGS, NUM_FINDINGS
from cxrlib.phantoms.acquisition import (add_noise, burn_in, burn_in_view, collimate, expose, sample_inspiration,
                                         sample_pose, to_uint8)
from cxrlib.phantoms.anatomy import draw_anatomy, draw_markings, geometry, patient_anatomy
from cxrlib.phantoms.canvas import Canvas, Scene
from cxrlib.phantoms.cohort import (TAG_COLLIMATION, TAG_CONFOUNDER, TAG_DEVICES, TAG_IMAGE, TAG_INSPIRATION,
                                    TAG_LESION, TAG_MARKERS, TAG_VIEW, phantom_image_id, phantom_rows)
from cxrlib.phantoms.devices import draw_devices, draw_drain, plan_devices
from cxrlib.phantoms.findings import LUNG_FINDINGS, draw_finding
from cxrlib.phantoms.spec import PhantomSpec, check_int, check_spec
from cxrlib.seed import derive_seed

_PNEUMOTHORAX = FINDINGS.index("Pneumothorax")
# Where the drain adds more density than this, it is part of the drain's mask (its walls
# are drawn at 0.5, its lumen at a quarter of that).
_DRAIN_MASK_DENSITY = 0.05
# P(a portable AP film) per unit of PhantomSpec.ap_confound, for images with and without a finding
AP_SHARE_SICK, AP_SHARE_WELL = 0.6, 0.25


@dataclass
class Phantom:
    """One rendered synthetic phantom.

    image: uint8 [S, S]; labels: float32 [14] (FINDINGS order); masks: bool [14, S, S]
    (non-empty exactly where the label is 1); patient_id; plus image_id, index, follow_up,
    lung_mask (bool [S, S], both lung fields), heart_mask, the devices it carries (names;
    never chosen by its labels) and whether it carries the confounding drain.
    """

    image: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    patient_id: int
    image_id: str = ""
    index: int = -1
    follow_up: int = 0
    lung_mask: np.ndarray | None = None
    heart_mask: np.ndarray | None = None
    devices: tuple[str, ...] = ()
    drain: bool = False
    drain_mask: np.ndarray | None = None
    view: str = "PA"  # "AP" where PhantomSpec.ap_confound drew a portable film
    synthetic: bool = True

    def boxes(self) -> list[tuple[str, int, int, int, int]]:
        """(finding, x, y, w, h) bounding boxes of the positive findings' masks, in pixels."""
        out = []
        for k, name in enumerate(FINDINGS):
            m = self.masks[k]
            if not m.any():
                continue
            rows = np.flatnonzero(m.any(axis=1))
            cols = np.flatnonzero(m.any(axis=0))
            out.append((name, int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)))
        return out


def render_phantom(index: int, size: int, seed: int = 0, spec: PhantomSpec | None = None,
                   training: bool = False) -> Phantom:
    """Render synthetic phantom ``index`` at ``size`` x ``size`` pixels.

    Depends only on (seed, index, size, spec, training); labels equal ``phantom_table``'s
    row. ``training`` says the image belongs to the training split, the only place where
    the optional confounder (``spec.confounder``) is drawn.
    """
    index = check_int(index, "index", 0, 10_000_000 - 1)
    size = check_int(size, "size", 16, 4096)
    seed = check_int(seed, "seed", 0)
    spec = check_spec(spec)
    row = phantom_rows(seed, index + 1, spec, start=index)
    patient, follow_up, episode = int(row["patient"][0]), int(row["follow_up"][0]), int(row["episode"][0])
    labels = row["labels"][0].astype(np.float32)

    anat = patient_anatomy(seed, patient, float(spec.anatomy_variation), float(spec.body))
    # Lesions are seeded by (patient, episode): a follow-up that keeps its findings keeps them
    # where they were.
    les_rng = {name: np.random.default_rng(derive_seed(seed, TAG_LESION, patient, episode, k))
               for k, name in enumerate(FINDINGS) if labels[k]}
    inspiration = sample_inspiration(_stream(seed, TAG_INSPIRATION, index), spec)
    ap = is_ap_film(index, seed, spec, labels)
    g = geometry(anat, labels, les_rng, spec, inspiration, ap=ap)

    rng = np.random.default_rng(derive_seed(seed, TAG_IMAGE, index))
    pose = sample_pose(rng, spec, g)
    sc = Scene(g, Canvas(size, pose.theta, pose.tx, pose.ty, pose.scale), spec)
    draw_anatomy(sc)
    for k, name in enumerate(FINDINGS):
        if labels[k]:
            draw_finding(sc, name, les_rng[name])
    draw_markings(sc, spec.texture)
    devices = phantom_devices(index, seed, spec)
    draw_devices(sc, devices)
    drain = has_drain(index, seed, spec, labels, training)
    drain_mask = np.zeros((size, size), bool)
    if drain:
        before = sc.D.copy()
        draw_drain(sc, _stream(seed, TAG_CONFOUNDER, index, 1), sc.sides.get("Pneumothorax", 1))
        drain_mask = sc.D - before > _DRAIN_MASK_DENSITY

    img = expose(sc.D, sc.body, rng, spec)
    collimate(img, sc.lung, _stream(seed, TAG_COLLIMATION, index), spec)
    add_noise(img, rng, spec)
    burn_in(img, sc.lung, _stream(seed, TAG_MARKERS, index), spec)
    if ap:
        burn_in_view(img, sc.lung, _stream(seed, TAG_VIEW, index, 1))
    image = to_uint8(img)

    masks = sc.masks
    for k in range(NUM_FINDINGS):  # a finding pushed off the image by pose has no mask left
        if labels[k] and not masks[k].any():
            masks[k] = _fallback_mask(sc, k)
    return Phantom(image=image, labels=labels, masks=masks, patient_id=patient, image_id=phantom_image_id(index),
                   index=index, follow_up=follow_up, lung_mask=sc.lung, heart_mask=sc.heart,
                   devices=tuple(name for name, _ in devices), drain=drain, drain_mask=drain_mask,
                   view="AP" if ap else "PA")


def _stream(seed: int, tag: int, index: int, sub: int = 0) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, tag, index, sub))


def phantom_devices(index: int, seed: int = 0, spec: PhantomSpec | None = None) -> list[tuple[str, int]]:
    """The devices phantom ``index`` carries (name, geometry seed), without rendering.

    Drawn from the image's own stream: never from its labels.
    """
    spec = check_spec(spec)
    return plan_devices(_stream(seed, TAG_DEVICES, index), spec.devices)


def has_drain(index: int, seed: int, spec: PhantomSpec, labels: np.ndarray, training: bool) -> bool:
    """Whether phantom ``index`` carries the confounding chest drain: only a Pneumothorax
    image of the training split, with probability ``spec.confounder``."""
    coin = _stream(seed, TAG_CONFOUNDER, index).uniform()
    return bool(training and spec.confounder > 0 and labels[_PNEUMOTHORAX] > 0 and coin < spec.confounder)


def is_ap_film(index: int, seed: int, spec: PhantomSpec, labels: np.ndarray) -> bool:
    """Whether phantom ``index`` is a portable AP film (``spec.ap_confound``; more often when it
    has a finding, as sicker patients are filmed in bed), decided without rendering."""
    if spec.ap_confound == 0:
        return False
    share = AP_SHARE_SICK if np.asarray(labels)[:NUM_FINDINGS].any() else AP_SHARE_WELL
    return bool(_stream(seed, TAG_VIEW, index).uniform() < spec.ap_confound * share)


def _fallback_mask(sc: Scene, k: int) -> np.ndarray:
    """A one-pixel mask at the lung pixel nearest the image centre (keeps labels and masks consistent)."""
    m = np.zeros_like(sc.lung)
    pool = sc.lung if (FINDINGS[k] in LUNG_FINDINGS and sc.lung.any()) else np.ones_like(sc.lung)
    rows, cols = np.nonzero(pool)
    c = (sc.cv.S - 1) / 2
    i = int(np.argmin((rows - c) ** 2 + (cols - c) ** 2))
    m[rows[i], cols[i]] = True
    return m
