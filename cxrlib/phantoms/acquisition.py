"""How a phantom is taken: pose, inspiration, exposure, collimation, noise, burned-in marks.

Everything here varies from image to image (a follow-up is a new acquisition). Each
concern draws from its own random stream, always the same number of draws whatever its
knob, so that turning one knob changes nothing else and an image depends only on
(seed, index, size, spec). Collimation borders and burned-in marks stay off the lungs, so
no finding is ever hidden under them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cxrlib.phantoms.spec import PhantomSpec

# Quantum noise is white at a reference detector of 512 px: a phantom rendered at size S
# has the noise that area-averaging a 512 px render to S would leave, so render(S) and
# resize(render(512), S) agree in distribution.
NOISE_REFERENCE_SIZE = 512
# Above this level the response rolls off smoothly toward white instead of clipping.
_SHOULDER = 0.8
# The tone scale maps these percentiles of the body's grey levels to these levels (the
# medians of unprocessed phantoms), so the processed look stays that of the phantoms.
_LANDMARKS = np.array([2, 10, 25, 50, 75, 90, 98], dtype=np.float64)
_TARGETS = np.array([0.16, 0.25, 0.33, 0.51, 0.69, 0.79, 0.87], dtype=np.float64)


@dataclass(frozen=True)
class Pose:
    """Rotation (radians), shift (image fractions) and scale of the patient on the detector."""

    theta: float
    tx: float
    ty: float
    scale: float


def sample_pose(rng: np.random.Generator, spec: PhantomSpec, g: dict) -> Pose:
    """A small rotation, a shift and a zoom; wide chests and big patients framed to fit."""
    p = spec.pose
    theta = float(rng.normal(0, 0.0225) * p)
    tx, ty = (float(t) for t in rng.normal(0, 0.011, 2) * p)
    zoom = 1 + 0.03 * p * rng.uniform(-1, 1)
    scale = float(0.97 * zoom * g.get("zoom", 1.0) * (0.4 / g["W"]) ** 0.5)
    return Pose(theta, tx, ty, scale)


def sample_inspiration(rng: np.random.Generator, spec: PhantomSpec) -> float:
    """Depth of inspiration, -1 (shallow) .. +1 (deep), scaled by its knob."""
    return float(rng.uniform(-1, 1) * spec.inspiration)


def tone_scale(img: np.ndarray, body: np.ndarray, strength: float) -> np.ndarray:
    """The detector's processing: map landmarks of the body's grey-level histogram to
    standard levels, as exposure recognition in computed and digital radiography does.

    So a processed radiograph's overall brightness says little about what is in it; what
    a finding changes is where, not how much. ``strength`` blends raw (0) and processed (1).
    """
    if strength == 0 or not body.any():
        return img
    step = max(1, img.shape[0] // 64)  # landmarks from a 64 px grid: the same at every size
    sample = img[::step, ::step][body[::step, ::step]]
    if sample.size < 16:
        return img
    q = np.percentile(sample, _LANDMARKS)
    q = np.maximum.accumulate(q + 1e-4 * np.arange(len(q)))  # strictly increasing for interp
    # Linear through the landmarks; beyond them, the slopes of the first and last segments.
    xs = np.concatenate([[q[0] - 1.0], q, [q[-1] + 1.0]])
    lo_slope = (_TARGETS[1] - _TARGETS[0]) / (q[1] - q[0])
    hi_slope = (_TARGETS[-1] - _TARGETS[-2]) / (q[-1] - q[-2])
    ys = np.concatenate([[_TARGETS[0] - lo_slope], _TARGETS, [_TARGETS[-1] + hi_slope]])
    mapped = np.interp(img, xs, ys).astype(np.float32)
    if strength >= 1:
        return mapped
    return (np.float32(1 - strength) * img + np.float32(strength) * mapped).astype(np.float32)


def expose(density: np.ndarray, body: np.ndarray, rng: np.random.Generator, spec: PhantomSpec) -> np.ndarray:
    """Density to a picture in 0..1: the detector's tone scale (``processing``), then gain,
    offset, heel-effect ramp, display window and gamma varying per image by the ``exposure``
    knob; a soft shoulder instead of a hard clip, so that bright regions keep their detail
    as processed radiographs do."""
    e = spec.exposure
    size = density.shape[0]
    u = rng.uniform(-1, 1, 6)
    img = density + np.float32(0.06) * body
    img = tone_scale(img, body, spec.processing)
    img *= np.float32(1.0 + 0.15 * e * u[0])
    img += np.float32(0.04 * e * u[1]) * body
    # The anode heel effect: a gentle ramp of exposure across the detector.
    ang = math.pi * u[2]
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    heel = np.float32(math.cos(ang)) * ramp[None, :] + np.float32(math.sin(ang)) * ramp[:, None]
    img *= 1 + np.float32(0.1 * e) * heel
    # The display window lifts the blacks and stretches the rest a little.
    lo, hi = 0.04 * e * (1 + u[4]) / 2, 1 - 0.06 * e * (1 + u[5]) / 2
    # Shoulder and gamma through one lookup table over 0..2: a pow over every pixel costs more
    # than the rest of the rendering.
    gamma = float(np.exp(0.25 * e * u[3]))
    x = np.linspace(0, 2, 4096, dtype=np.float32)
    x = np.clip((x - np.float32(lo)) / np.float32(hi - lo), 0, None)
    k = np.float32(_SHOULDER)
    x = np.where(x < k, x, k + (1 - k) * np.tanh((x - k) / (1 - k)))
    lut = (x ** np.float32(gamma)).astype(np.float32)
    np.clip(img, 0, 2, out=img)
    return lut[(img * (4095 / 2) + 0.5).astype(np.int16)]


def add_noise(img: np.ndarray, rng: np.random.Generator, spec: PhantomSpec) -> None:
    """Quantum noise, white at the 512 px reference detector (in place)."""
    sigma = 0.045 * spec.noise * img.shape[0] / NOISE_REFERENCE_SIZE
    if sigma > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)


def _lung_box(lung: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(lung.any(axis=1)), np.flatnonzero(lung.any(axis=0))
    if not len(rows):
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def collimate(img: np.ndarray, lung: np.ndarray, rng: np.random.Generator, spec: PhantomSpec) -> None:
    """Collimation borders (mostly dark, sometimes bright) on some sides, never over the lungs."""
    c = spec.collimation
    size = img.shape[0]
    framed = rng.uniform() < min(0.25 * c, 1.0)
    sides = rng.uniform(size=4) < 0.5
    widths = rng.uniform(0.005, 0.04, 4) * min(c, 4.0) * size
    bright = rng.uniform() < 0.15
    value = float(rng.uniform(0.85, 1.0) if bright else rng.uniform(0.0, 0.08))
    if not framed or c == 0:
        return
    box = _lung_box(lung)
    top, bottom, left, right = box if box is not None else (size, -1, size, -1)
    limits = (top - 1, size - 2 - bottom, left - 1, size - 2 - right)  # room outside the lungs
    for k, (on, w, room) in enumerate(zip(sides, widths, limits)):
        n = int(min(round(w), max(room, 0)))
        if not on or n <= 0:
            continue
        if k == 0:
            img[:n] = value
        elif k == 1:
            img[size - n:] = value
        elif k == 2:
            img[:, :n] = value
        else:
            img[:, size - n:] = value


# 5 x 4 bitmaps of the laterality letters; text glyphs are random 5 x 3 bitmaps.
_LETTERS = {
    "A": ["0110", "1001", "1111", "1001", "1001"],
    "P": ["1110", "1001", "1110", "1000", "1000"],
    "L": ["1000", "1000", "1000", "1000", "1111"],
    "R": ["1110", "1001", "1110", "1010", "1001"],
}


def _bitmap(rows: list[str]) -> np.ndarray:
    return np.array([[ch == "1" for ch in r] for r in rows], dtype=bool)


def _stamp(img: np.ndarray, bitmap: np.ndarray, top: float, left: float, height: float, value: float) -> None:
    """Burn ``bitmap`` into ``img`` as a box ``height`` pixels tall at (top, left), anti-aliased
    by 4 x 4 supersampling so that it keeps its ink at every image size."""
    rows, cols = bitmap.shape
    width = height * cols / rows
    r0, c0 = int(math.floor(top)), int(math.floor(left))
    r1, c1 = int(math.ceil(top + height)), int(math.ceil(left + width))
    if r0 < 0 or c0 < 0 or r1 > img.shape[0] or c1 > img.shape[1] or r1 <= r0 or c1 <= c0:
        return
    sub = (np.arange(4) + 0.5) / 4
    ys = (np.arange(r0, r1)[:, None] + sub[None, :]).ravel()
    xs = (np.arange(c0, c1)[:, None] + sub[None, :]).ravel()
    bi = np.floor((ys - top) / height * rows).astype(int)
    bj = np.floor((xs - left) / width * cols).astype(int)
    inside_r, inside_c = (bi >= 0) & (bi < rows), (bj >= 0) & (bj < cols)
    ink = bitmap[np.clip(bi, 0, rows - 1)][:, np.clip(bj, 0, cols - 1)] & inside_r[:, None] & inside_c[None, :]
    cover = ink.reshape(r1 - r0, 4, c1 - c0, 4).mean(axis=(1, 3)).astype(np.float32)
    patch = img[r0:r1, c0:c1]
    patch += cover * (np.float32(value) - patch)


def burn_in(img: np.ndarray, lung: np.ndarray, rng: np.random.Generator, spec: PhantomSpec) -> None:
    """A laterality marker and a line of text burned into the corners, off the lungs."""
    m = spec.markers
    size = img.shape[0]
    has_marker, has_text = rng.uniform(size=2) < (min(0.7 * m, 1.0), min(0.35 * m, 1.0))
    letter = "L" if rng.uniform() < 0.6 else "R"
    marker = (rng.uniform(0.035, 0.055) * size, rng.uniform(0.015, 0.07) * size, rng.uniform(0.015, 0.08) * size,
              bool(rng.uniform() < 0.5), float(rng.uniform(0.9, 1.0)))
    glyphs = [rng.uniform(size=(5, 3)) < 0.55 for _ in range(int(rng.integers(4, 11)))]
    text = (rng.uniform(0.018, 0.03) * size, rng.uniform(0.015, 0.05) * size, rng.uniform(0.015, 0.06) * size,
            int(rng.integers(4)), float(rng.uniform(0.8, 1.0)))
    if m == 0:
        return
    free = ~lung
    if has_marker:
        h, dy, dx, right, value = marker
        w = h * 4 / 5
        left = size - dx - w if right else dx
        if free[int(dy):int(math.ceil(dy + h)), int(left):int(math.ceil(left + w))].all():
            _stamp(img, _bitmap(_LETTERS[letter]), dy, left, h, value)
    if has_text:
        h, dy, dx, corner, value = text
        w = h * 0.8 * len(glyphs)
        top = dy if corner < 2 else size - dy - h
        left = dx if corner % 2 == 0 else size - dx - w
        r0, c0 = max(int(top), 0), max(int(left), 0)
        if free[r0:int(math.ceil(top + h)), c0:int(math.ceil(left + w))].all():
            for j, glyph in enumerate(glyphs):
                _stamp(img, glyph, top, left + j * h * 0.8, h, value)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def burn_in_view(img: np.ndarray, lung: np.ndarray, rng: np.random.Generator) -> None:
    """The "AP" marker of a portable film, burned into an upper corner off the lungs."""
    size = img.shape[0]
    h = rng.uniform(0.04, 0.06) * size
    dy, dx = rng.uniform(0.015, 0.05) * size, rng.uniform(0.015, 0.06) * size
    left = dx if rng.uniform() < 0.5 else size - dx - 2 * h * 0.9
    value = float(rng.uniform(0.9, 1.0))
    if (~lung)[int(dy):int(math.ceil(dy + h)), max(int(left), 0):int(math.ceil(left + 1.8 * h))].all():
        for j, letter in enumerate("AP"):
            _stamp(img, _bitmap(_LETTERS[letter]), dy, left + j * h * 0.9, h, value)
