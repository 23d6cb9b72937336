"""SYNTHETIC frontal chest phantoms with ground-truth lesion masks: the offline built-in data.

Everything this package produces is synthetic: procedurally drawn pictures that look like a
frontal (PA) chest radiograph, made from a seed. They are not patient data, not derived
from any patient image, and no result on them says anything about real radiographs. Image
ids start with ``phantom_`` and tables carry ``attrs["synthetic"] = True`` so that the
word travels with the data.

The package is split by concern, in the order a phantom is made:

- ``spec``: :class:`PhantomSpec`, the knobs (findings, nuisance variation, cohort, the
  optional confounder).
- ``cohort``: labels, patients and follow-ups with ChestX-ray14's statistics
  (:func:`phantom_table`), and the patient-wise split (:func:`phantom_split`).
- ``anatomy``: a patient's geometry and its drawing; ``canvas``: the pixel grid in patient
  coordinates and anti-aliased primitives.
- ``findings``: one drawing function per finding, each with its mask.
- ``acquisition``: pose, inspiration, exposure, collimation, noise and burned-in marks of
  each image; ``devices``: ECG leads, lines, tubes, pacemakers (never chosen by the
  labels) and the optional confounding drain.
- ``render``: :func:`render_phantom`, which runs the above for one image.

Output depends only on (seed, index, size, spec): every random number comes from a
``numpy.random.Generator`` seeded through ``cxrlib.seed.derive_seed``; no global RNG.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from cxrlib.phantoms.cohort import (
    CXR14_COOCCURRENCE,
    CXR14_PREVALENCE,
    phantom_follow_ups,
    phantom_image_id,
    phantom_index,
    phantom_split,
    phantom_table,
)
from cxrlib.phantoms.findings import LUNG_FINDINGS
from cxrlib.phantoms.render import Phantom, has_drain, is_ap_film, phantom_devices, render_phantom
from cxrlib.phantoms.spec import SYNTHETIC_NOTICE, PhantomSpec

__all__ = [
    "phantom_follow_ups",
    "SYNTHETIC_NOTICE",
    "PhantomSpec",
    "Phantom",
    "phantom_table",
    "render_phantom",
    "phantom_devices",
    "has_drain",
    "is_ap_film",
    "phantom_split",
    "phantom_image_id",
    "phantom_index",
    "code_fingerprint",
    "CXR14_PREVALENCE",
    "CXR14_COOCCURRENCE",
    "LUNG_FINDINGS",
]


@functools.lru_cache(maxsize=None)  # the source does not change under a running process
def code_fingerprint() -> str:
    """A hash of every source file of this package: caches of rendered phantoms key on it,
    so that a change in how phantoms are drawn is never served from an old cache."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.rglob("*.py")):
        h.update(path.relative_to(Path(__file__).resolve().parent).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:10]
