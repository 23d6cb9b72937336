"""How a phantom is taken: pose on the detector, exposure, and quantum noise.

Everything here varies from image to image (a follow-up is a new acquisition) and draws
from the image's own random stream, in a fixed order, so that an image depends only on
(seed, index, size, spec).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrlib.phantoms.spec import PhantomSpec

# Quantum noise is white at a reference detector of 512 px: a phantom rendered at size S
# has the noise that area-averaging a 512 px render to S would leave, so render(S) and
# resize(render(512), S) agree in distribution.
NOISE_REFERENCE_SIZE = 512


@dataclass(frozen=True)
class Pose:
    """Rotation (radians), shift (image fractions) and scale of the patient on the detector."""

    theta: float
    tx: float
    ty: float
    scale: float


def sample_pose(rng: np.random.Generator, spec: PhantomSpec, g: dict) -> Pose:
    """A small rotation and shift; the scale frames wide chests a little smaller."""
    v = spec.anatomy_variation
    theta = float(rng.normal(0, 0.035) * v)
    tx, ty = (float(t) for t in rng.normal(0, 0.015, 2) * v)
    scale = float(0.97 * (1 + 0.03 * v * rng.uniform(-1, 1)) * (0.4 / g["W"]) ** 0.5)
    return Pose(theta, tx, ty, scale)


def expose(density: np.ndarray, body: np.ndarray, rng: np.random.Generator, spec: PhantomSpec) -> np.ndarray:
    """Density to an 8-bit picture: gain, offset over the body, gamma and quantum noise."""
    v = spec.anatomy_variation
    size = density.shape[0]
    img = density
    gain = 1.0 + 0.1 * v * rng.uniform(-1, 1)
    offset = 0.06 + 0.04 * v * rng.uniform(-1, 1)
    gamma = float(np.exp(0.15 * v * rng.uniform(-1, 1)))
    img *= np.float32(gain)
    img += np.float32(offset) * body
    # Gamma through a lookup table: a pow over every pixel costs more than the rest.
    lut = (np.linspace(0, 1, 4096, dtype=np.float32) ** np.float32(gamma)).astype(np.float32)
    np.clip(img, 0, 1, out=img)
    img = lut[(img * 4095 + 0.5).astype(np.int16)]
    sigma = 0.045 * spec.noise * size / NOISE_REFERENCE_SIZE
    if sigma > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
