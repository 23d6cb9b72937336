"""Render one phantom: cohort row -> anatomy -> findings -> acquisition -> picture and masks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrlib.labels import FINDINGS, NUM_FINDINGS
from cxrlib.phantoms.acquisition import expose, sample_pose
from cxrlib.phantoms.anatomy import draw_anatomy, draw_markings, geometry, patient_anatomy
from cxrlib.phantoms.canvas import Canvas, Scene
from cxrlib.phantoms.cohort import TAG_IMAGE, TAG_LESION, phantom_image_id, phantom_rows
from cxrlib.phantoms.findings import LUNG_FINDINGS, draw_finding
from cxrlib.phantoms.spec import PhantomSpec, check_int, check_spec
from cxrlib.seed import derive_seed


@dataclass
class Phantom:
    """One rendered synthetic phantom.

    image: uint8 [S, S]; labels: float32 [14] (FINDINGS order); masks: bool [14, S, S]
    (non-empty exactly where the label is 1); patient_id; plus image_id, index, follow_up,
    lung_mask (bool [S, S], both lung fields) and heart_mask.
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


def render_phantom(index: int, size: int, seed: int = 0, spec: PhantomSpec | None = None) -> Phantom:
    """Render synthetic phantom ``index`` at ``size`` x ``size`` pixels.

    Depends only on (seed, index, size, spec); labels equal ``phantom_table``'s row.
    """
    index = check_int(index, "index", 0, 10_000_000 - 1)
    size = check_int(size, "size", 16, 4096)
    seed = check_int(seed, "seed", 0)
    spec = check_spec(spec)
    row = phantom_rows(seed, index + 1, spec, start=index)
    patient, follow_up, episode = int(row["patient"][0]), int(row["follow_up"][0]), int(row["episode"][0])
    labels = row["labels"][0].astype(np.float32)

    anat = patient_anatomy(seed, patient, float(spec.anatomy_variation))
    # Lesions are seeded by (patient, episode): a follow-up that keeps its findings keeps them
    # where they were.
    les_rng = {name: np.random.default_rng(derive_seed(seed, TAG_LESION, patient, episode, k))
               for k, name in enumerate(FINDINGS)}
    g = geometry(anat, labels, les_rng, spec)

    rng = np.random.default_rng(derive_seed(seed, TAG_IMAGE, index))
    pose = sample_pose(rng, spec, g)
    sc = Scene(g, Canvas(size, pose.theta, pose.tx, pose.ty, pose.scale), spec)
    draw_anatomy(sc)
    for k, name in enumerate(FINDINGS):
        if labels[k]:
            draw_finding(sc, name, les_rng[name])
    draw_markings(sc, spec.texture)
    image = expose(sc.D, sc.body, rng, spec)

    masks = sc.masks
    for k in range(NUM_FINDINGS):  # a finding pushed off the image by pose has no mask left
        if labels[k] and not masks[k].any():
            masks[k] = _fallback_mask(sc, k)
    return Phantom(image=image, labels=labels, masks=masks, patient_id=patient, image_id=phantom_image_id(index),
                   index=index, follow_up=follow_up, lung_mask=sc.lung, heart_mask=sc.heart)


def _fallback_mask(sc: Scene, k: int) -> np.ndarray:
    """A one-pixel mask at the lung pixel nearest the image centre (keeps labels and masks consistent)."""
    m = np.zeros_like(sc.lung)
    pool = sc.lung if (FINDINGS[k] in LUNG_FINDINGS and sc.lung.any()) else np.ones_like(sc.lung)
    rows, cols = np.nonzero(pool)
    c = (sc.cv.S - 1) / 2
    i = int(np.argmin((rows - c) ** 2 + (cols - c) ** 2))
    m[rows[i], cols[i]] = True
    return m
