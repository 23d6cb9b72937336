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
    """Difficulty and cohort knobs. Defaults are calibrated (bench/phantom_difficulty.py).

    contrast: multiplier on every finding's contrast (and on the enlargement of the heart
        and the hyperlucency of emphysema), 0 makes the findings invisible.
    lesion_scale: multiplier on every finding's size.
    noise: multiplier on the quantum noise.
    texture: multiplier on anatomical clutter (lung markings).
    anatomy_variation: multiplier on patient-to-patient variation of size and shape, and
        on the pose and exposure variation between images.
    max_images_per_patient: cap on the images per patient (ChestX-ray14 has up to 184).
    followup_keep: probability that a follow-up keeps the previous image's findings.
    """

    contrast: float = 1.0
    lesion_scale: float = 1.0
    noise: float = 1.0
    texture: float = 1.0
    anatomy_variation: float = 1.0
    max_images_per_patient: int = 10
    followup_keep: float = 0.5

    def __post_init__(self) -> None:
        for name in ("contrast", "lesion_scale", "noise", "texture", "anatomy_variation"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"PhantomSpec.{name}={value!r}: expected a finite number >= 0")
        if not 0.2 <= self.lesion_scale <= 4:
            raise ValueError(f"PhantomSpec.lesion_scale={self.lesion_scale!r}: expected 0.2 to 4")
        if not isinstance(self.max_images_per_patient, int) or not 1 <= self.max_images_per_patient <= 200:
            raise ValueError(
                f"PhantomSpec.max_images_per_patient={self.max_images_per_patient!r}: expected an integer 1 to 200"
            )
        if not 0 <= self.followup_keep <= 1:
            raise ValueError(f"PhantomSpec.followup_keep={self.followup_keep!r}: expected a probability 0 to 1")


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
