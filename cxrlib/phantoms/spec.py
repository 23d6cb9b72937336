"""The knobs of the synthetic phantoms, and the checks every public entry point shares."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SYNTHETIC_NOTICE = (
    "synthetic chest phantoms: procedurally generated images, not patient data"
)


@dataclass(frozen=True)
class PhantomSpec:
    """The knobs of the phantoms. Defaults are calibrated (bench/phantom_difficulty.py).

    Findings:
    contrast: multiplier on every finding's contrast (and on the enlargement of the heart
        and the hyperinflation of emphysema, up to 1.5), 0 makes the findings invisible. The
        lucencies that darken much of the lung (a pneumothorax's collapsed lung, emphysema's
        extra air) stay at their calibrated strength above 1: darker, they would make the
        finding readable from the image's histogram alone.
    lesion_scale: multiplier on every finding's size.

    Nuisance variation like real chest X-rays (each a multiplier on its calibrated
    strength; 0 turns it off). None of it depends on the labels, and none of it moves a
    finding off its mask:
    anatomy_variation: patient-to-patient variation of the organs' size and shape.
    body: body size and habitus (width, soft-tissue thickness, how dark the lungs are).
    pose: rotation, shift and zoom of the patient on the detector, per image.
    inspiration: depth of inspiration per image (diaphragm height, lung height).
    processing: how strongly the detector's tone scale maps landmarks of the image's
        histogram to standard levels (exposure recognition of digital radiography).
    exposure: gain, offset, gamma, window and a heel-effect gradient, per image.
    collimation: how often and how wide collimation borders frame the image.
    overlying: clavicles, scapulae and breast shadows over the lungs.
    markers: how often laterality markers and burned-in text appear.
    devices: how often ECG leads, central lines, tubes and pacemakers appear.
    noise: multiplier on the quantum noise.
    texture: multiplier on anatomical clutter (lung markings).

    Cohort:
    max_images_per_patient: cap on the images per patient (ChestX-ray14 has up to 184).
    followup_keep: probability that a follow-up keeps the previous image's findings.
    sickness_pattern: 1 gives ChestX-ray14's pattern (patients with more images are
        sicker: P(any finding) 0.27 with one image, 0.57 with ten or more), 0 the same
        P(any finding) for every patient; the overall prevalence stays ChestX-ray14's.

    Shortcut lesson (off by default):
    confounder: share of the training split's Pneumothorax images that carry a chest
        drain; the other parts never do. See ``cxrlib.phantoms.devices.draw_drain``.

    Metadata lesson (off by default):
    ap_confound: how often films are portable AP films, taken more often of sicker patients
        (AP on 0.6 x ap_confound of images with a finding, 0.25 x ap_confound of the others,
        in every part), drawn as AP films look: a magnified heart, clavicles projected higher,
        the scapulae over the lungs, an "AP" marker. The view position is then in the
        phantoms' metadata (``DataBundle.metadata``), for the metadata control.
    """

    contrast: float = 1.0
    lesion_scale: float = 1.0
    anatomy_variation: float = 1.0
    body: float = 1.0
    pose: float = 1.0
    inspiration: float = 1.0
    processing: float = 1.0
    exposure: float = 1.0
    collimation: float = 1.0
    overlying: float = 1.0
    markers: float = 1.0
    devices: float = 1.0
    noise: float = 1.0
    texture: float = 1.0
    max_images_per_patient: int = 10
    followup_keep: float = 0.5
    sickness_pattern: float = 1.0
    confounder: float = 0.0
    ap_confound: float = 0.0

    def __post_init__(self) -> None:
        for name in MULTIPLIERS:
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0:
                raise ValueError(f"PhantomSpec.{name}={value!r}: expected a finite number >= 0")
            if value > 4:
                raise ValueError(f"PhantomSpec.{name}={value!r}: expected at most 4 (1 is the calibrated default)")
        if not 0.2 <= self.lesion_scale <= 4:
            raise ValueError(f"PhantomSpec.lesion_scale={self.lesion_scale!r}: expected 0.2 to 4")
        if not isinstance(self.max_images_per_patient, int) or not 1 <= self.max_images_per_patient <= 200:
            raise ValueError(
                f"PhantomSpec.max_images_per_patient={self.max_images_per_patient!r}: expected an integer 1 to 200"
            )
        for name in ("followup_keep", "sickness_pattern", "confounder", "ap_confound"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"PhantomSpec.{name}={value!r}: expected a number from 0 to 1")


# The knobs that scale a calibrated strength (0 = off, 1 = default).
MULTIPLIERS = ("contrast", "lesion_scale", "anatomy_variation", "body", "pose", "inspiration", "processing",
               "exposure", "collimation", "overlying", "markers", "devices", "noise", "texture")
# The nuisance knobs, for figures that show one picture per knob.
NUISANCE_KNOBS = ("anatomy_variation", "body", "pose", "inspiration", "processing", "exposure", "collimation",
                  "overlying", "markers", "devices", "noise", "texture")


def check_spec(spec: PhantomSpec | None) -> PhantomSpec:
    if spec is None:
        return PhantomSpec()
    if not isinstance(spec, PhantomSpec):
        raise TypeError(f"spec={spec!r}: expected a cxrlib.phantoms.PhantomSpec or None")
    return spec


def check_int(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}={value!r}: expected an integer")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name}={value!r}: expected an integer from {low}" + (f" to {high}" if high else " up"))
    return int(value)
