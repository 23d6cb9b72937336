"""SYNTHETIC frontal chest phantoms with ground-truth lesion masks: the offline built-in data.

Everything this module produces is synthetic: procedurally drawn pictures that look like a
frontal (PA) chest radiograph, made from a seed. They are not patient data, not derived
from any patient image, and no result on them says anything about real radiographs. Image
ids start with ``phantom_`` and tables carry ``attrs["synthetic"] = True`` so that the
word travels with the data.

What a phantom holds
--------------------
Anatomy (per patient, shared by that patient's follow-ups): body outline with neck and
shoulders, two lung fields, mediastinum and heart, aortic knob, hila, posterior and
anterior ribs, clavicles, spine, diaphragm domes, a gastric air bubble, and vessel-like
lung markings. Per image: pose (small rotation, shift, scale), exposure (gain, offset,
gamma) and quantum noise. Each of the 14 ChestX-ray14 findings (``cxrlib.labels.FINDINGS``
order) is its own localized pattern with a boolean mask; masks of findings in the lung
fields lie inside the lung mask (``Phantom.lung_mask``).

Labels, patients and follow-ups (``phantom_table``) follow ChestX-ray14's statistics: a
label set is drawn from the empirical distribution of the 801 label combinations of the
full Data_Entry table (so prevalences and co-occurrences match in expectation), the number
of images per patient from its empirical histogram (capped), and a follow-up keeps the
previous label set (and lesions, at the same place) with probability
``PhantomSpec.followup_keep``: so a patient-wise split matters.

Geometry lives in normalised patient coordinates and is rendered at any requested size.
Small structures are anti-aliased the way area-averaging a large render would do it (a
Gaussian pixel footprint): a nodule (1-1.5% of the image width) keeps its peak contrast at
256 px but loses most of it at 64 px, where it drowns in the anatomical clutter (ribs,
lung markings) that survives downsampling. Quantum noise is white at a reference detector
of 512 px: a phantom rendered at size S has the noise that area-averaging a 512 px render
to S would leave, so ``render(S)`` and ``resize(render(512), S)`` agree in distribution.

Output depends only on (seed, index, size, spec): every random number comes from a
``numpy.random.Generator`` seeded through ``cxrlib.seed.derive_seed``; no global RNG.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from cxrlib.labels import FINDINGS, NUM_FINDINGS
from cxrlib.seed import derive_seed

__all__ = [
    "SYNTHETIC_NOTICE",
    "PhantomSpec",
    "Phantom",
    "phantom_table",
    "render_phantom",
    "phantom_split",
    "phantom_image_id",
    "CXR14_PREVALENCE",
    "CXR14_COOCCURRENCE",
    "LUNG_FINDINGS",
]

SYNTHETIC_NOTICE = (
    "synthetic chest phantoms: procedurally generated images, not patient data"
)

# Findings drawn inside the lung fields (their masks are a subset of the lung mask).
# Cardiomegaly (the heart) and Hernia (behind the heart, at the diaphragm) are not.
LUNG_FINDINGS: tuple[str, ...] = tuple(f for f in FINDINGS if f not in ("Cardiomegaly", "Hernia"))

# Fixed tags, so that the random streams for different purposes never coincide.
_TAG_PATIENTS, _TAG_ANATOMY, _TAG_IMAGE, _TAG_LESION, _TAG_SPLIT = 7101, 7102, 7103, 7104, 7105
_PATIENTS_PER_CHUNK = 1024
_GRID = 160  # texture grid (lung markings, fibrosis net) over [-0.6, 0.6]^2 patient units
_GRID_EXTENT = 0.6
_NOISE_REFERENCE_SIZE = 512


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


def phantom_image_id(index: int) -> str:
    """The image id of phantom ``index``: ``phantom_00000123.png``."""
    return f"phantom_{int(index):08d}.png"


# --------------------------------------------------------------------------------------
# Labels, patients, splits (cheap: no rendering)
# --------------------------------------------------------------------------------------


def _check_spec(spec: PhantomSpec | None) -> PhantomSpec:
    if spec is None:
        return PhantomSpec()
    if not isinstance(spec, PhantomSpec):
        raise TypeError(f"spec={spec!r}: expected a cxrlib.data.phantoms.PhantomSpec or None")
    return spec


def _check_int(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}={value!r}: expected an integer")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name}={value!r}: expected an integer from {low}" + (f" to {high}" if high else " up"))
    return int(value)


def _combo_table() -> tuple[np.ndarray, np.ndarray]:
    masks, counts = [], []
    for item in _CXR14_LABEL_COMBOS.split():
        m, c = item.split(":")
        masks.append(int(m, 16))
        counts.append(int(c))
    return np.array(masks, dtype=np.int64), np.array(counts, dtype=np.float64)




@functools.lru_cache(maxsize=4096)
def _chunk(seed: int, chunk: int, cap: int, keep: float) -> dict[str, np.ndarray]:
    """Patients ``chunk*1024 ...`` and their images: sizes, label sets, lesion episodes."""
    rng = np.random.default_rng(derive_seed(seed, _TAG_PATIENTS, chunk))
    hist = _CXR14_IMAGES_PER_PATIENT[:cap].astype(np.float64).copy()
    hist[cap - 1] += _CXR14_IMAGES_PER_PATIENT[cap:].sum()  # the tail piles up at the cap
    sizes = rng.choice(np.arange(1, cap + 1), size=_PATIENTS_PER_CHUNK, p=hist / hist.sum())
    n = int(sizes.sum())
    patient = np.repeat(np.arange(_PATIENTS_PER_CHUNK), sizes) + chunk * _PATIENTS_PER_CHUNK
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    follow_up = np.arange(n) - np.repeat(starts, sizes)
    fresh = np.searchsorted(_COMBO_CDF, rng.random(n), side="right")
    fresh = np.minimum(fresh, len(_COMBO_MASKS) - 1)
    redraw = (rng.random(n) >= keep) | (follow_up == 0)
    # episode = follow-up number of the last fresh draw: the lesions of a kept label set
    # stay where they were, because lesion geometry is seeded by (patient, episode).
    episode = np.where(redraw, follow_up, 0)
    for i in np.flatnonzero(~redraw):  # sequential: a kept set chains back to its draw
        episode[i] = episode[i - 1]
    combo = fresh[starts.repeat(sizes) + episode]
    bits = _COMBO_MASKS[combo]
    labels = ((bits[:, None] >> np.arange(NUM_FINDINGS)) & 1).astype(np.uint8)
    return {"patient": patient, "follow_up": follow_up, "episode": episode, "labels": labels}


def _rows(seed: int, stop: int, spec: PhantomSpec, start: int = 0) -> dict[str, np.ndarray]:
    """Table rows ``start:stop`` (images are numbered across chunks in order)."""
    parts, first, chunk = [], 0, 0
    while first < stop:
        c = _chunk(seed, chunk, spec.max_images_per_patient, float(spec.followup_keep))
        n = len(c["patient"])
        if first + n > start:
            lo, hi = max(start - first, 0), min(stop - first, n)
            parts.append({k: v[lo:hi] for k, v in c.items()})
        first += n
        chunk += 1
    if not parts:
        return {"patient": np.zeros(0, int), "follow_up": np.zeros(0, int), "episode": np.zeros(0, int),
                "labels": np.zeros((0, NUM_FINDINGS), np.uint8)}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def phantom_table(n: int, seed: int = 0, spec: PhantomSpec | None = None) -> pd.DataFrame:
    """Labels and patients of the first ``n`` synthetic phantoms, without rendering.

    Columns: image_id (``phantom_00000123.png``), patient_id (int), the 14 findings (0/1,
    FINDINGS order). A table of n rows is the first n rows of any larger one (same seed and
    spec). ``attrs``: synthetic=True, description, seed.
    """
    n = _check_int(n, "n", 0, 10_000_000)
    seed = _check_int(seed, "seed", 0)
    spec = _check_spec(spec)
    rows = _rows(seed, n, spec)
    df = pd.DataFrame({"image_id": [phantom_image_id(i) for i in range(n)],
                       "patient_id": rows["patient"].astype(np.int64)})
    for k, name in enumerate(FINDINGS):
        df[name] = rows["labels"][:, k].astype(np.int64)
    df.attrs.update(synthetic=True, description=SYNTHETIC_NOTICE, seed=seed)
    return df


def phantom_split(table: pd.DataFrame, seed: int = 0) -> dict[str, np.ndarray]:
    """Patient-wise 70/10/20 train/val/test split: row positions (sorted int arrays).

    Patients are shuffled with ``seed`` and assigned in turn until a part holds its share of
    the images; no patient is in two parts.
    """
    if not isinstance(table, pd.DataFrame) or "patient_id" not in table.columns:
        raise ValueError("phantom_split: expected a DataFrame with a patient_id column (from phantom_table)")
    seed = _check_int(seed, "seed", 0)
    patients = table["patient_id"].to_numpy()
    unique, inverse, counts = np.unique(patients, return_inverse=True, return_counts=True)
    order = np.random.default_rng(derive_seed(seed, _TAG_SPLIT)).permutation(len(unique))
    share = np.cumsum(counts[order]) / max(len(patients), 1)
    # A patient goes to the part in which its first image falls (by cumulative share).
    start = share - counts[order] / max(len(patients), 1)
    part_of = np.empty(len(unique), dtype=np.int64)
    part_of[order] = np.where(start < 0.7 - 1e-9, 0, np.where(start < 0.8 - 1e-9, 1, 2))
    row_part = part_of[inverse]
    return {name: np.flatnonzero(row_part == i) for i, name in enumerate(("train", "val", "test"))}


# --------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------


def _bandpass_grid(rng: np.random.Generator, wavelength: float, width: float) -> np.ndarray:
    """Unit-variance band-pass noise on the texture grid, centred on ``wavelength`` units."""
    white = rng.standard_normal((_GRID, _GRID))
    f = np.fft.fftfreq(_GRID, d=2 * _GRID_EXTENT / _GRID)
    fr = np.hypot(f[:, None], f[None, :])
    f0 = 1.0 / wavelength
    filt = np.exp(-0.5 * ((fr - f0) / (width * f0)) ** 2)
    out = np.fft.ifft2(np.fft.fft2(white) * filt).real
    return (out / (out.std() + 1e-12)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _anatomy(seed: int, patient: int, variation: float) -> dict:
    """Patient geometry (normalised patient units, x right in the image, y down) + textures."""
    rng = np.random.default_rng(derive_seed(seed, _TAG_ANATOMY, patient))
    v = variation

    def jit(mean: float, spread: float) -> float:
        return float(mean + v * spread * rng.uniform(-1, 1))

    a: dict = {}
    a["W"] = jit(0.38, 0.03)  # lateral lung edge |x|
    a["m"] = jit(0.05, 0.01)  # medial lung edge |x| (half the mediastinum)
    a["y_apex"] = jit(-0.40, 0.03)
    a["y_cp"] = {-1: jit(0.25, 0.025), +1: 0.0}
    a["y_cp"][+1] = a["y_cp"][-1] + jit(0.025, 0.01)  # the left hemidiaphragm sits lower
    a["dome_h"] = {s: jit(0.09, 0.02) for s in (-1, 1)}
    a["heart"] = dict(x=jit(0.05, 0.015), a=jit(0.165, 0.015), b=jit(0.135, 0.012), angle=jit(-0.35, 0.1))
    a["knob"] = dict(x=jit(0.075, 0.01), y=jit(-0.19, 0.02), r=jit(0.035, 0.006))
    a["hilum_y"] = jit(-0.06, 0.02)
    a["body_w"] = jit(0.47, 0.03)
    a["neck_w"] = jit(0.12, 0.015)
    a["y_shoulder"] = jit(-0.47, 0.03)
    a["soft"] = jit(0.64, 0.05)  # soft-tissue density (body habitus)
    a["air"] = jit(0.42, 0.035)  # density removed by lung air
    a["spine_x"] = jit(0.0, 0.01)
    a["rib_spacing"] = jit(0.064, 0.005)
    a["rib_phase"] = float(rng.uniform(0, 1))
    a["clav_y"] = jit(-0.36, 0.025)
    # Vessel-like lung markings: zero crossings of band-pass noise (ridges); the fibrosis net
    # is the same construction at a finer scale.
    # One grid for both (one resampling per image): vessel ridges + slow density variation.
    a["markings"] = _ridges(_bandpass_grid(rng, 0.035, 0.35), 0.35) + 0.5 * _bandpass_grid(rng, 0.08, 0.5)
    a["net"] = _ridges(_bandpass_grid(rng, 0.022, 0.25), 0.25)
    return a


def _ridges(noise: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-((noise / width) ** 2)).astype(np.float32)


def _geometry(a: dict, labels: np.ndarray, les_rng: dict[str, np.random.Generator], spec: PhantomSpec) -> dict:
    """Per-image geometry: the anatomy changed by the findings that change anatomy."""
    g = {k: (dict(v) if isinstance(v, dict) else v) for k, v in a.items()}
    lab = dict(zip(FINDINGS, labels))
    if lab["Cardiomegaly"]:
        r = les_rng["Cardiomegaly"]
        grow = 1 + r.uniform(0.28, 0.42) * spec.lesion_scale * min(spec.contrast, 1.5)
        g["heart"]["a"] *= grow
        g["heart"]["b"] *= 1 + (grow - 1) * 0.45
        g["heart"]["x"] += (grow - 1) * 0.12
    if lab["Emphysema"]:
        r = les_rng["Emphysema"]
        c = min(spec.contrast, 1.5)
        for s in (-1, 1):
            g["y_cp"][s] += r.uniform(0.03, 0.05) * c
            g["dome_h"][s] *= max(1 - 0.65 * c, 0.1)  # flattened diaphragm
        g["heart"]["a"] *= 1 - 0.08 * c  # narrow, vertical heart
        g["air"] *= 1 + r.uniform(0.22, 0.32) * c
    for s in (-1, 1):
        g[f"cx{s}"] = s * (g["W"] + g["m"]) / 2
        g["ax"] = (g["W"] - g["m"]) / 2
        g[f"ay{s}"] = g["y_cp"][s] - g["y_apex"]
        g[f"dome_x{s}"] = s * 0.14
        g[f"dome_w{s}"] = g["W"] - 0.14
    h = g["heart"]
    h["y"] = _diaphragm(h["x"], g, 1) - 0.7 * h["b"]
    return g


def _diaphragm(x, g: dict, s: int):
    t = (x - g[f"dome_x{s}"]) / g[f"dome_w{s}"]
    return g["y_cp"][s] - g["dome_h"][s] * (1 - t * t)


def _lung_rho(x, y, g: dict, s: int):
    """Radial coordinate of lung ``s`` (< 1 inside its outline, before diaphragm and heart)."""
    dx = (x - g[f"cx{s}"]) * s / g["ax"]  # > 0 lateral
    dy = np.minimum(y - g["y_cp"][s], 0) / g[f"ay{s}"]
    dx2 = dx * dx
    fx = np.where(dx > 0, dx2, dx2 * dx2)  # squarer medial border
    return np.sqrt(fx + dy * dy)


def _heart_rho(x, y, g: dict):
    h = g["heart"]
    c, s_ = math.cos(h["angle"]), math.sin(h["angle"])
    dx, dy = x - h["x"], y - h["y"]
    u = (c * dx + s_ * dy) / h["a"]
    w = (-s_ * dx + c * dy) / h["b"]
    return np.sqrt(u * u + w * w)


def _inside_lung(x: float, y: float, g: dict, s: int, margin: float = 0.0) -> bool:
    """Whether a point lies inside lung ``s`` with a margin (patient units)."""
    rho = float(_lung_rho(x, y, g, s))
    if rho > 1 - margin / g["ax"] * 1.2:
        return False
    if y > float(_diaphragm(x, g, s)) - margin:
        return False
    if float(_heart_rho(x, y, g)) < 1 + margin / g["heart"]["b"]:
        return False
    k = g["knob"]
    return math.hypot(x - k["x"], y - k["y"]) > k["r"] + margin


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


class _Canvas:
    """Pixel grid in patient coordinates, plus windows so local patterns cost local time."""

    def __init__(self, size: int, theta: float, tx: float, ty: float, scale: float):
        self.S = size
        self.theta, self.tx, self.ty, self.scale = theta, tx, ty, scale
        c, s = math.cos(theta), math.sin(theta)
        # patient (x, y) = R(-theta) ((u, v) - centre) / scale, u = (j + 0.5) / S
        k = 1.0 / (size * scale)
        self.Ax = (c * k, s * k, (c * (0.5 / size - 0.5 - tx) + s * (0.5 / size - 0.5 - ty)) / scale)
        self.Ay = (-s * k, c * k, (-s * (0.5 / size - 0.5 - tx) + c * (0.5 / size - 0.5 - ty)) / scale)
        j = np.arange(size, dtype=np.float32)
        self.X = (self.Ax[0] * j[None, :] + self.Ax[1] * j[:, None] + self.Ax[2]).astype(np.float32)
        self.Y = (self.Ay[0] * j[None, :] + self.Ay[1] * j[:, None] + self.Ay[2]).astype(np.float32)
        self.pix = k  # one pixel in patient units

    def to_pixel(self, x, y):
        """Patient coordinates to (col, row) pixel coordinates."""
        c, s = math.cos(self.theta), math.sin(self.theta)
        u = 0.5 + self.tx + self.scale * (c * x - s * y)
        v = 0.5 + self.ty + self.scale * (s * x + c * y)
        return u * self.S - 0.5, v * self.S - 0.5

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice] | None:
        """Rows/cols covering the patient box (plus 2 px), or None when off the image."""
        xs = np.array([x0, x1, x0, x1])
        ys = np.array([y0, y0, y1, y1])
        cols, rows = self.to_pixel(xs, ys)
        r0, r1 = int(math.floor(rows.min())) - 2, int(math.ceil(rows.max())) + 3
        c0, c1 = int(math.floor(cols.min())) - 2, int(math.ceil(cols.max())) + 3
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, self.S), min(c1, self.S)
        if r1 <= r0 or c1 <= c0:
            return None
        return slice(r0, r1), slice(c0, c1)

    def grid(self, field: np.ndarray, win: tuple[slice, slice]) -> np.ndarray:
        """Sample a texture-grid field (bilinear, prefiltered when the pixel is coarser)."""
        cell = 2 * _GRID_EXTENT / _GRID  # patient units per grid cell
        ratio = self.pix / cell  # grid cells per pixel
        if ratio > 0.7:
            field = ndimage.gaussian_filter(field, 0.45 * ratio, mode="wrap")
        rs, cs = win
        # grid index = (coord + extent) / cell - 0.5, coord affine in (row, col)
        def coeffs(A):
            return (A[1] / cell, A[0] / cell, (A[0] * cs.start + A[1] * rs.start + A[2] + _GRID_EXTENT) / cell - 0.5)
        gy, gx = coeffs(self.Ay), coeffs(self.Ax)
        matrix = np.array([[gy[0], gy[1]], [gx[0], gx[1]]])
        offset = np.array([gy[2], gx[2]])
        out_shape = (rs.stop - rs.start, cs.stop - cs.start)
        return ndimage.affine_transform(field, matrix, offset=offset, output_shape=out_shape, order=1,
                                        mode="nearest").astype(np.float32)


def _soft(d, width: float):
    """0 -> 1 step across a boundary at d = 0 (d in patient units, > 0 inside)."""
    return np.clip(0.5 + d / width, 0.0, 1.0)


def _aa_gauss(sigma: float, pix: float) -> tuple[float, float]:
    """(blurred sigma, amplitude factor) of a 2-D Gaussian seen through a pixel footprint."""
    sp = 0.42 * pix
    s2 = sigma * sigma + sp * sp
    return math.sqrt(s2), sigma * sigma / s2


def _aa_line(width: float, pix: float) -> tuple[float, float]:
    """(blurred width, amplitude factor) of a thin 1-D Gaussian line through a pixel footprint."""
    sp = 0.42 * pix
    w = math.sqrt(width * width + sp * sp)
    return w, width / w


def _sample_point(g: dict, rng: np.random.Generator, s: int, zone: str, margin: float) -> tuple[float, float]:
    """A point inside lung ``s`` in a zone (upper / mid / lower / periph / any)."""
    cx, ax, ay = g[f"cx{s}"], g["ax"], g[f"ay{s}"]
    y_top, y_bot = g["y_apex"], g["y_cp"][s]
    h = y_bot - y_top
    lo, hi = {"upper": (0.08, 0.4), "mid": (0.3, 0.7), "lower": (0.55, 0.95), "any": (0.1, 0.9),
              "periph": (0.2, 0.9)}[zone]
    for attempt in range(400):
        m = margin if attempt < 300 else margin * 0.3
        x = cx + rng.uniform(-1, 1) * ax
        y = y_top + rng.uniform(lo, hi) * h
        if zone == "periph" and float(_lung_rho(x, y, g, s)) < 0.6:
            continue
        if _inside_lung(x, y, g, s, m):
            return float(x), float(y)
    return float(cx + 0.3 * s * ax), float(y_top + 0.5 * h)  # lung centre: always inside


class _Renderer:
    def __init__(self, g: dict, canvas: _Canvas, spec: PhantomSpec):
        self.g, self.cv, self.spec = g, canvas, spec
        S = canvas.S
        self.D = np.zeros((S, S), np.float32)  # density (brighter = more attenuation)
        self.mark_w = np.zeros((S, S), np.float32)  # weight of lung markings
        self.masks = np.zeros((NUM_FINDINGS, S, S), bool)
        self.edge = max(0.004, canvas.pix)  # anatomical edge blur
        self.lung_soft = np.zeros((S, S), np.float32)
        self.lung = np.zeros((S, S), bool)
        self.rho: dict[int, tuple[tuple[slice, slice], np.ndarray]] = {}
        self.thorax: tuple[slice, slice] | None = None

    # ---- anatomy ----
    def anatomy(self) -> None:
        g, cv, D = self.g, self.cv, self.D
        X, Y = cv.X, cv.Y
        # Body: elliptic thickness profile, narrower at the neck above the shoulders.
        yl = np.clip((Y - g["y_shoulder"]) / 0.09, 0, 1)
        wb = g["neck_w"] + (g["body_w"] - g["neck_w"]) * (yl * yl * (3 - 2 * yl))
        q = X / wb
        t = np.clip(1 - q * q, 0, 1)
        D += g["soft"] * np.sqrt(t)
        self.body = t > 0
        # Heart (mask) and the rest of the thorax.
        h = g["heart"]
        ext = max(h["a"], h["b"]) * 1.05
        self.heart_win = cv.window(h["x"] - ext, h["x"] + ext, h["y"] - ext, h["y"] + ext)
        self.heart = np.zeros_like(self.lung)
        if self.heart_win:
            hw = self.heart_win
            rho_h = _heart_rho(X[hw], Y[hw], g)
            self.heart[hw] = rho_h < 1
            D[hw] += 0.05 * _soft((1 - rho_h) * h["b"], self.edge)
        self.thorax = cv.window(-g["W"] - 0.03, g["W"] + 0.03, g["y_apex"] - 0.03, max(g["y_cp"].values()) + 0.04)
        k = g["knob"]
        for s in (-1, 1):
            win = cv.window(min(s * g["m"], s * g["W"]) - 0.01, max(s * g["m"], s * g["W"]) + 0.01,
                            g["y_apex"] - 0.01, g["y_cp"][s] + 0.01)
            if win is None:
                continue
            x, y = X[win], Y[win]
            rho = _lung_rho(x, y, g, s)
            d_out = (1 - rho) * g["ax"]
            d_dia = _diaphragm(x, g, s) - y
            d_heart = (_heart_rho(x, y, g) - 1) * h["b"]
            d_knob = np.hypot(x - k["x"], y - k["y"]) - k["r"]
            d = np.minimum(np.minimum(d_out, d_dia), np.minimum(d_heart, d_knob))
            soft = _soft(d, self.edge)
            self.lung_soft[win] = np.maximum(self.lung_soft[win], soft)
            self.lung[win] |= d > 0
            depth = np.sqrt(np.clip(1 - rho * rho, 0, 1))
            D[win] -= g["air"] * soft * (0.55 + 0.45 * depth)
            self.rho[s] = (win, rho)
        self.lung &= self.body
        # Hila: pulmonary arteries as soft blobs.
        for s in (-1, 1):
            self._blob(s * (g["m"] + 0.045), g["hilum_y"], 0.03, 0.06)
        self._ribs()
        self._clavicles()
        self._spine()
        # Gastric air bubble under the left dome.
        bx, by = 0.17, float(_diaphragm(0.17, self.g, 1)) + 0.05
        self._blob(bx, by, 0.035, -0.12, aspect=0.6)
        # Markings: denser at the hila, fading to the periphery.
        if self.thorax:
            tw = self.thorax
            x, y = X[tw], Y[tw]
            dh = np.minimum((np.abs(x) - g["m"] - 0.04) ** 2, 1) + (y - g["hilum_y"]) ** 2
            self.mark_w[tw] = self.lung_soft[tw] * (0.45 + 0.55 * np.exp(-dh / 0.03))

    def _blob(self, x0: float, y0: float, sigma: float, amp: float, aspect: float = 1.0, to=None) -> None:
        cv = self.cv
        sig, f = _aa_gauss(sigma, cv.pix)
        ext = 3.2 * sig
        win = cv.window(x0 - ext, x0 + ext, y0 - ext * aspect, y0 + ext * aspect)
        if win is None:
            return
        r2 = ((cv.X[win] - x0) ** 2 + ((cv.Y[win] - y0) / aspect) ** 2) / (sig * sig)
        (self.D if to is None else to)[win] += amp * f * np.exp(-r2)

    def _ribs(self) -> None:
        g, cv = self.g, self.cv
        if not self.thorax:
            return
        tw = self.thorax
        x, y = cv.X[tw], cv.Y[tw]
        a = np.abs(x - g["spine_x"])
        sp = g["rib_spacing"]
        lat = _soft(g["W"] + 0.02 - a, 0.02) * _soft(y - g["y_apex"] + 0.04, 0.03)
        lat *= _soft(max(g["y_cp"].values()) + 0.03 - y, 0.04)
        # Posterior ribs: rise a little from the spine, then curve down to the chest wall.
        t = y + 0.25 * a - 1.3 * a * a
        phase = (t - g["y_apex"]) / sp * (1 - 0.12 * (t - g["y_apex"])) + g["rib_phase"]
        post = (1 + np.cos(2 * np.pi * phase)) * 0.5
        post *= post
        # Anterior ribs: fainter, sloping down toward the midline.
        t2 = y + 0.42 * a
        ant = (1 + np.cos(2 * np.pi * (t2 / (sp * 1.25) + g["rib_phase"] * 0.7))) * 0.5
        ant = ant * ant * ant
        att = float(np.clip((sp * cv.scale * cv.S - 2.0) / 3.0, 0, 1))  # no aliasing near Nyquist
        bone = 0.11 * (att * post + (1 - att) * 0.375) + 0.05 * (att * ant + (1 - att) * 0.31)
        self.D[tw] += bone * lat

    def _clavicles(self) -> None:
        g, cv = self.g, self.cv
        for s in (-1, 1):
            win = cv.window(min(s * 0.03, s * 0.4), max(s * 0.03, s * 0.4), g["clav_y"] - 0.1, g["clav_y"] + 0.06)
            if win is None:
                continue
            x, y = cv.X[win], cv.Y[win]
            a = s * x
            a_med, a_lat = 0.04, 0.36
            f = np.clip((a - a_med) / (a_lat - a_med), 0, 1)
            yc = g["clav_y"] - 0.05 * f + 0.018 * np.sin(2 * np.pi * f)
            th = 0.014
            q = (y - yc) / th
            q *= q
            band = np.exp(-q * q) * _soft(a - a_med, 0.01) * _soft(a_lat - a, 0.02)
            self.D[win] += 0.13 * band

    def _spine(self) -> None:
        g, cv = self.g, self.cv
        win = cv.window(g["spine_x"] - 0.06, g["spine_x"] + 0.06, -0.6, 0.6)
        if win is None:
            return
        x, y = cv.X[win], cv.Y[win]
        c = np.cos(np.pi * y / 0.045)
        q = (x - g["spine_x"]) / 0.032
        q *= q
        self.D[win] += 0.09 * np.exp(-q * q) * (0.75 + 0.25 * c * c) * self.body[win]

    def markings(self, texture: float) -> None:
        if not self.thorax or texture == 0:
            return
        tw = self.thorax
        m = self.cv.grid(self.g["markings"], tw)
        self.D[tw] += 0.075 * texture * self.mark_w[tw] * m

    # ---- findings ----
    def mask(self, k: int, prof: np.ndarray, win, thr: float, in_lung: bool = True) -> None:
        """Finding mask = profile above ``thr`` (inside the lungs); never empty when drawn."""
        inside = self.lung[win] if in_lung else np.ones(prof.shape, bool)
        m = (prof > thr) & inside
        if not m.any():
            score = np.where(inside, prof, -1)
            m = np.zeros_like(m)
            m.flat[int(np.argmax(score))] = True
            if not inside.any():  # lung not in this window at all: fall back to lung pixels nearest
                m[:] = False
        self.masks[k][win] |= m

    def draw(self, name: str, rng: np.random.Generator) -> None:
        getattr(self, "_" + name.lower())(FINDINGS.index(name), rng)

    def _side(self, rng) -> int:
        return int(rng.choice([-1, 1]))

    def _atelectasis(self, k, rng):
        g, cv, L, C = self.g, self.cv, self.spec.lesion_scale, self.spec.contrast
        s = self._side(rng)
        length, thick = rng.uniform(0.08, 0.14) * L, rng.uniform(0.012, 0.02) * L
        x0, y0 = _sample_point(g, rng, s, "lower", thick * 2)
        ang = rng.uniform(-0.45, 0.45)
        ext = length * 0.6 + thick * 3
        win = cv.window(x0 - ext, x0 + ext, y0 - ext, y0 + ext)
        if win is None:
            return
        dx, dy = cv.X[win] - x0, cv.Y[win] - y0
        along = (math.cos(ang) * dx + math.sin(ang) * dy) * s  # > 0 toward the chest wall
        across = -math.sin(ang) * dx + math.cos(ang) * dy
        tk = thick * (1 + 0.7 * np.clip(along / length + 0.5, 0, 1))  # wedge: wider laterally
        w, f = _aa_line(float(thick), cv.pix)
        prof = np.exp(-((across / (tk * w / thick)) ** 2)) * _soft(length / 2 - np.abs(along), 0.015)
        self.D[win] += 0.2 * C * f * prof * self.lung_soft[win]
        self.mask(k, prof, win, 0.35)

    def _cardiomegaly(self, k, rng):
        self.masks[k] |= self.heart  # the heart itself was enlarged in _geometry

    def _effusion(self, k, rng):
        g, cv, L, C = self.g, self.cv, self.spec.lesion_scale, self.spec.contrast
        s = self._side(rng)
        h = rng.uniform(0.07, 0.14) * L
        men = rng.uniform(0.04, 0.08) * L
        if s not in self.rho:
            return
        win, rho = self.rho[s]
        x, y = cv.X[win], cv.Y[win]
        lat = np.clip((x - g[f"cx{s}"]) * s / g["ax"], -1, 1)
        y_fluid = g["y_cp"][s] - h - men * np.clip(lat, 0, 1) ** 2  # meniscus climbs the wall
        prof = _soft(y - y_fluid, 0.012) * (rho < 1.02)
        dens = prof * (0.75 + 0.25 * np.clip((y - y_fluid) / 0.08, 0, 1))
        self.D[win] += 0.32 * C * dens * self.lung_soft[win]
        self.mark_w[win] *= 1 - prof
        self.mask(k, prof, win, 0.5)

    def _infiltration(self, k, rng):
        g, cv, L, C = self.g, self.cv, self.spec.lesion_scale, self.spec.contrast
        s = self._side(rng)
        R = rng.uniform(0.05, 0.085) * L
        x0, y0 = _sample_point(g, rng, s, "any", R * 0.5)
        ext = R + 0.08 * L
        win = cv.window(x0 - ext, x0 + ext, y0 - ext, y0 + ext)
        if win is None:
            return
        x, y = cv.X[win], cv.Y[win]
        acc = np.zeros(x.shape, np.float32)
        for _ in range(int(rng.integers(5, 9))):
            r, t = R * math.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            sig = rng.uniform(0.012, 0.024) * L
            sig_e, f = _aa_gauss(sig, cv.pix)
            acc += f * np.exp(-((x - x0 - r * math.cos(t)) ** 2 + (y - y0 - r * math.sin(t)) ** 2) / (sig_e**2))
        prof = 1 - np.exp(-1.6 * acc)
        self.D[win] += 0.15 * C * prof * self.lung_soft[win]
        self.mask(k, prof, win, 0.3)

    def _round(self, k, rng, R, amp, lobulated: bool):
        g, cv = self.g, self.cv
        s = self._side(rng)
        x0, y0 = _sample_point(g, rng, s, "any", R * 1.3)
        win = cv.window(x0 - 2 * R - 4 * cv.pix, x0 + 2 * R + 4 * cv.pix, y0 - 2 * R - 4 * cv.pix, y0 + 2 * R + 4 * cv.pix)
        if win is None:
            return
        dx, dy = cv.X[win] - x0, cv.Y[win] - y0
        if lobulated:
            th = np.arctan2(dy, dx)
            r_eff = R * (1 + 0.1 * np.sin(3 * th + rng.uniform(0, 6.3)) + 0.06 * np.sin(5 * th + rng.uniform(0, 6.3)))
            d = np.hypot(dx, dy)
            prof = np.sqrt(np.clip(1 - (d / r_eff) ** 2, 0, 1)) * 0.7 + 0.3 * _soft(r_eff - d, max(0.004, cv.pix))
            self.D[win] += amp * prof * self.lung_soft[win]
            self.mask(k, r_eff - d, win, 0.0)
        else:
            sig_e, f = _aa_gauss(0.6 * R, cv.pix)  # a sphere is close to a Gaussian of sd 0.6 R
            r2 = dx * dx + dy * dy
            self.D[win] += amp * f * np.exp(-r2 / (2 * sig_e * sig_e))
            self.mask(k, R * R - r2, win, 0.0)

    def _mass(self, k, rng):
        L, C = self.spec.lesion_scale, self.spec.contrast
        self._round(k, rng, rng.uniform(0.028, 0.045) * L, 0.2 * C, lobulated=True)

    def _nodule(self, k, rng):
        L, C = self.spec.lesion_scale, self.spec.contrast
        # Diameter 1-1.5% of the image width: visible at 256 px, sub-pixel at 64 px.
        self._round(k, rng, rng.uniform(0.005, 0.0075) * L, 0.3 * C, lobulated=False)

    def _pneumonia(self, k, rng):
        g, cv, L, C = self.g, self.cv, self.spec.lesion_scale, self.spec.contrast
        s = self._side(rng)
        sx, sy = rng.uniform(0.05, 0.075) * L, rng.uniform(0.045, 0.07) * L
        x0, y0 = _sample_point(g, rng, s, "lower" if rng.uniform() < 0.6 else "mid", 0.02)
        ext = 2.5 * max(sx, sy)
        win = cv.window(x0 - ext, x0 + ext, y0 - ext, y0 + ext)
        if win is None:
            return
        x, y = cv.X[win], cv.Y[win]
        acc = np.zeros(x.shape, np.float32)
        for _ in range(3):
            ox, oy = rng.normal(0, 0.4) * sx, rng.normal(0, 0.4) * sy
            acc += np.exp(-(((x - x0 - ox) / sx) ** 2 + ((y - y0 - oy) / sy) ** 2))
        # Lobar: sharply bounded by a fissure above (a gently sloping line).
        y_f = y0 - rng.uniform(0.3, 0.8) * sy + rng.uniform(-0.2, 0.2) * (x - x0)
        prof = (1 - np.exp(-1.5 * acc)) * _soft(y - y_f, max(0.003, cv.pix))
        self.D[win] += 0.2 * C * prof * self.lung_soft[win]
        self.mask(k, prof, win, 0.35 * float(prof.max()))

    def _pneumothorax(self, k, rng):
        g, cv, L, C = self.g, self.cv, self.spec.lesion_scale, self.spec.contrast
        s = self._side(rng)
        if s not in self.rho:
            return
        win, rho = self.rho[s]
        x, y = cv.X[win], cv.Y[win]
        d0 = rng.uniform(0.12, 0.22) * L
        # Thickest at the apex / upper chest wall, tapering toward the base.
        ang = np.arctan2(y - g["y_cp"][s], (x - g[f"cx{s}"]) * s * g[f"ay{s}"] / g["ax"])
        w = np.clip(np.cos(ang - (-1.2)) * 1.3 - 0.15, 0, 1)
        edge = 1 - d0 * w  # collapsed-lung edge in rho units
        band = _soft(rho - edge, 0.004 / g["ax"]) * (w > 0.05) * (rho < 1.05)
        self.D[win] -= 0.14 * C * band * self.lung_soft[win]
        self.mark_w[win] *= 1 - band
        # Visceral pleural line: thin, so it fades at low resolution like the nodule.
        gy, gx = np.gradient(rho)
        grad = np.hypot(gx, gy) + 1e-6  # rho per pixel
        lw, f = _aa_line(0.0025, cv.pix)
        dist_pix = (rho - edge) / grad
        self.D[win] += 0.12 * C * f * np.exp(-((dist_pix * cv.pix / lw) ** 2)) * (w > 0.05) * self.lung_soft[win]
        self.mask(k, band, win, 0.5)

    def _consolidation(self, k, rng):
        g, cv, L, C = self.g, self.cv, self.spec.lesion_scale, self.spec.contrast
        s = self._side(rng)
        R = rng.uniform(0.04, 0.06) * L
        x0, y0 = _sample_point(g, rng, s, "any", R)
        ext = 2.6 * R
        win = cv.window(x0 - ext, x0 + ext, y0 - ext, y0 + ext)
        if win is None:
            return
        x, y = cv.X[win], cv.Y[win]
        acc = np.zeros(x.shape, np.float32)
        for _ in range(3):
            ox, oy = rng.normal(0, 0.35) * R, rng.normal(0, 0.35) * R
            acc += np.exp(-((x - x0 - ox) ** 2 + (y - y0 - oy) ** 2) / (R * R))
        prof = np.clip((acc - 0.35) / 0.3, 0, 1)  # dense and homogeneous, soft rim
        # Air bronchograms: dark branching tubes inside the opacity.
        air = np.zeros_like(acc)
        lw, f = _aa_line(0.003, cv.pix)
        hx = s * (g["m"] + 0.04) - x0
        base = math.atan2(g["hilum_y"] - y0, hx) + math.pi  # pointing away from the hilum
        for _ in range(3):
            t = base + rng.uniform(-0.7, 0.7)
            sx, sy = x0 - math.cos(t) * R, y0 - math.sin(t) * R
            dx, dy = x - sx, y - sy
            along = dx * math.cos(t) + dy * math.sin(t)
            across = -dx * math.sin(t) + dy * math.cos(t)
            air = np.maximum(air, np.exp(-((across / lw) ** 2)) * ((along > 0) & (along < 2 * R)))
        self.D[win] += 0.28 * C * prof * (1 - 0.55 * f * air) * self.lung_soft[win]
        self.mark_w[win] *= 1 - prof
        self.mask(k, prof, win, 0.5)

    def _edema(self, k, rng):
        g, cv, L, C = self.g, self.cv, self.spec.lesion_scale, self.spec.contrast
        if not self.thorax:
            return
        tw = self.thorax
        x, y = cv.X[tw], cv.Y[tw]
        sx, sy = rng.uniform(0.1, 0.14) * L, rng.uniform(0.08, 0.11) * L
        haze = np.zeros(x.shape, np.float32)
        for s in (-1, 1):  # bilateral, perihilar ("bat wing")
            hx = s * (g["m"] + 0.06)
            haze = np.maximum(haze, np.exp(-(((x - hx) / sx) ** 2 + ((y - g["hilum_y"] - 0.02) / sy) ** 2)))
        self.D[tw] += 0.13 * C * haze * self.lung_soft[tw]
        self.mark_w[tw] *= 1 + 0.8 * min(C, 1.5) * haze  # thickened interstitium
        self.mask(k, haze, tw, 0.4)

    def _emphysema(self, k, rng):
        # Hyperlucency and the flat diaphragm were set in _geometry; markings thin out.
        self.mark_w *= 1 - 0.5 * min(self.spec.contrast, 1.0)
        self.masks[k] |= self.lung

    def _fibrosis(self, k, rng):
        g, cv, L, C = self.g, self.cv, self.spec.lesion_scale, self.spec.contrast
        if not self.thorax:
            return
        tw = self.thorax
        x, y = cv.X[tw], cv.Y[tw]
        net = cv.grid(g["net"], tw)
        zone = np.zeros(x.shape, np.float32)
        lo = rng.uniform(0.5, 0.62)
        for s in (-1, 1):  # bilateral, peripheral and basal
            rho = _lung_rho(x, y, g, s)
            zone = np.maximum(zone, np.clip((rho - lo) / 0.15, 0, 1) * (rho < 1.05))
        zone *= np.clip((y - (g["y_apex"] + 0.3 * (g["y_cp"][-1] - g["y_apex"]))) / 0.1, 0, 1)
        self.D[tw] += 0.13 * C * net * zone * self.lung_soft[tw]
        self.mask(k, zone, tw, 0.5)

    def _pleural_thickening(self, k, rng):
        g, cv, L, C = self.g, self.cv, self.spec.lesion_scale, self.spec.contrast
        s = self._side(rng)
        if s not in self.rho:
            return
        win, rho = self.rho[s]
        x, y = cv.X[win], cv.Y[win]
        t = rng.uniform(0.05, 0.08) * L
        top = g["y_apex"]
        if rng.uniform() < 0.6:  # apical cap
            sector = _soft(top + 0.16 - y, 0.03)
        else:  # along the lateral chest wall
            yc = top + rng.uniform(0.3, 0.6) * (g["y_cp"][s] - top)
            sector = _soft(0.09 - np.abs(y - yc), 0.03) * ((x - g[f"cx{s}"]) * s > 0)
        band = _soft(rho - (1 - t), 0.01) * (rho < 1.02)
        prof = band * sector
        self.D[win] += 0.16 * C * prof * self.lung_soft[win]
        self.mask(k, prof, win, 0.5)

    def _hernia(self, k, rng):
        g, cv, L, C = self.g, self.cv, self.spec.lesion_scale, self.spec.contrast
        R = rng.uniform(0.035, 0.055) * L
        x0 = rng.uniform(-0.02, 0.06)
        y0 = float(_diaphragm(x0, g, 1)) - rng.uniform(0.3, 0.7) * R
        win = cv.window(x0 - 1.5 * R, x0 + 1.5 * R, y0 - 1.5 * R, y0 + 1.5 * R)
        if win is None:
            return
        x, y = cv.X[win], cv.Y[win]
        d = np.hypot(x - x0, y - y0)
        prof = _soft(R - d, max(0.004, cv.pix))
        sphere = np.sqrt(np.clip(1 - (d / R) ** 2, 0, 1))
        level = y0 - rng.uniform(0.1, 0.4) * R  # air-fluid level
        air = _soft(level - y, max(0.002, cv.pix)) * prof
        self.D[win] += 0.16 * C * (sphere * 0.7 + 0.3 * prof) - 0.2 * C * air * sphere
        self.mask(k, prof, win, 0.5, in_lung=False)


def render_phantom(index: int, size: int, seed: int = 0, spec: PhantomSpec | None = None) -> Phantom:
    """Render synthetic phantom ``index`` at ``size`` x ``size`` pixels.

    Depends only on (seed, index, size, spec); labels equal ``phantom_table``'s row.
    """
    index = _check_int(index, "index", 0, 10_000_000 - 1)
    size = _check_int(size, "size", 16, 4096)
    seed = _check_int(seed, "seed", 0)
    spec = _check_spec(spec)
    row = _rows(seed, index + 1, spec, start=index)
    patient, follow_up, episode = int(row["patient"][0]), int(row["follow_up"][0]), int(row["episode"][0])
    labels = row["labels"][0].astype(np.float32)

    anat = _anatomy(seed, patient, float(spec.anatomy_variation))
    les_rng = {name: np.random.default_rng(derive_seed(seed, _TAG_LESION, patient, episode, k))
               for k, name in enumerate(FINDINGS)}
    g = _geometry(anat, labels, les_rng, spec)

    rng = np.random.default_rng(derive_seed(seed, _TAG_IMAGE, index))
    v = spec.anatomy_variation
    theta = float(rng.normal(0, 0.035) * v)
    tx, ty = (float(t) for t in rng.normal(0, 0.015, 2) * v)
    scale = float(0.97 * (1 + 0.03 * v * rng.uniform(-1, 1)) * (0.4 / g["W"]) ** 0.5)
    cv = _Canvas(size, theta, tx, ty, scale)

    r = _Renderer(g, cv, spec)
    r.anatomy()
    for k, name in enumerate(FINDINGS):
        if labels[k]:
            r.draw(name, les_rng[name])
    r.markings(spec.texture)

    # Exposure (gain, offset, gamma) and quantum noise, white at the 512 px reference.
    img = r.D
    gain = 1.0 + 0.1 * v * rng.uniform(-1, 1)
    offset = 0.06 + 0.04 * v * rng.uniform(-1, 1)
    gamma = float(np.exp(0.15 * v * rng.uniform(-1, 1)))
    img *= np.float32(gain)
    img += np.float32(offset) * r.body
    # Gamma through a lookup table: a pow over every pixel costs more than the rest.
    lut = (np.linspace(0, 1, 4096, dtype=np.float32) ** np.float32(gamma)).astype(np.float32)
    np.clip(img, 0, 1, out=img)
    img = lut[(img * 4095 + 0.5).astype(np.int16)]
    sigma = 0.045 * spec.noise * size / _NOISE_REFERENCE_SIZE
    if sigma > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    image = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)

    masks = r.masks
    for k in range(NUM_FINDINGS):  # a finding pushed off the image by pose has no mask left
        if labels[k] and not masks[k].any():
            masks[k] = _fallback_mask(r, k)
    return Phantom(image=image, labels=labels, masks=masks, patient_id=patient, image_id=phantom_image_id(index),
                   index=index, follow_up=follow_up, lung_mask=r.lung, heart_mask=r.heart)


def _fallback_mask(r: _Renderer, k: int) -> np.ndarray:
    """A one-pixel mask at the lung pixel nearest the image centre (keeps labels and masks consistent)."""
    m = np.zeros_like(r.lung)
    pool = r.lung if (FINDINGS[k] in LUNG_FINDINGS and r.lung.any()) else np.ones_like(r.lung)
    rows, cols = np.nonzero(pool)
    c = (r.cv.S - 1) / 2
    i = int(np.argmin((rows - c) ** 2 + (cols - c) ** 2))
    m[rows[i], cols[i]] = True
    return m


# --------------------------------------------------------------------------------------
# ChestX-ray14 statistics, computed once from the full NIH Data_Entry_2017_v2020.csv
# (112,120 images, 30,805 patients; ../shared/data/chestxray14-sample in this project).
# --------------------------------------------------------------------------------------

_CXR14_N_IMAGES = 112120

# Positive images per finding (FINDINGS order) and pairwise co-occurrence counts (the
# diagonal repeats the positives). Prevalence = count / 112,120.
_CXR14_POSITIVES = np.array([11559, 2776, 13317, 19894, 5782, 6331, 1431, 5302, 4667, 2303, 2516, 1686, 3385, 227])
CXR14_PREVALENCE = _CXR14_POSITIVES / _CXR14_N_IMAGES
CXR14_COOCCURRENCE = np.array([
    [11559, 370, 3275, 3264, 739, 590, 262, 774, 1223, 221, 424, 220, 496, 40],
    [370, 2776, 1063, 587, 102, 108, 41, 49, 169, 127, 44, 52, 111, 7],
    [3275, 1063, 13317, 4000, 1254, 912, 269, 996, 1287, 593, 359, 188, 849, 21],
    [3264, 587, 4000, 19894, 1159, 1546, 605, 946, 1221, 981, 449, 345, 750, 33],
    [739, 102, 1254, 1159, 5782, 906, 71, 431, 610, 129, 215, 117, 452, 25],
    [590, 108, 912, 1546, 906, 6331, 70, 341, 428, 131, 115, 166, 411, 10],
    [262, 41, 269, 605, 71, 70, 1431, 41, 123, 340, 23, 11, 48, 3],
    [774, 49, 996, 946, 431, 341, 41, 5302, 223, 33, 747, 80, 289, 9],
    [1223, 169, 1287, 1221, 610, 428, 123, 223, 4667, 162, 103, 79, 251, 4],
    [221, 127, 593, 981, 129, 131, 340, 33, 162, 2303, 30, 9, 64, 3],
    [424, 44, 359, 449, 215, 115, 23, 747, 103, 30, 2516, 36, 151, 4],
    [220, 52, 188, 345, 117, 166, 11, 80, 79, 9, 36, 1686, 176, 8],
    [496, 111, 849, 750, 452, 411, 48, 289, 251, 64, 151, 176, 3385, 8],
    [40, 7, 21, 33, 25, 10, 3, 9, 4, 3, 4, 8, 8, 227],
])  # fmt: skip

# Images per patient: patients with 1, 2, ..., 10 images, then all with more than 10.
# The last bucket (more than 10) is counted at 11 images; PhantomSpec's cap piles the tail
# beyond the cap onto the cap.
_CXR14_IMAGES_PER_PATIENT = np.zeros(200, dtype=np.int64)
_CXR14_IMAGES_PER_PATIENT[:11] = [17503, 4113, 2100, 1330, 938, 787, 608, 494, 387, 320, 2225]

# Every label combination of the table as "<bitmask in hex>:<images>" (bit k = FINDINGS[k];
# 0 = No Finding). Sampling whole combinations reproduces prevalence and co-occurrence.
_CXR14_LABEL_COMBOS = """
0:60361 8:9547 1:4215 4:3955 20:2705 80:2194 10:2139 c:1604 9:1350 100:1310 5:1167 1000:1126
2:1093 400:892 28:829 d:739 800:727 200:628 6:484 108:441 18:420 84:403 14:402 101:398
30:396 208:392 88:347 104:337 480:337 40:322 1004:251 24:250 81:241 1008:210 a:201 21:201
105:200 48:199 204:189 808:185 90:179 11:178 110:151 1020:141 248:138 10c:134 1010:132
a0:130 120:128 20c:127 408:126 e:120 401:117 1001:117 2000:110 41:108 2c:106 109:104 801:104
1c:99 85:99 404:96 3:88 8c:88 240:83 10d:81 1080:79 15:72 89:72 488:72 100c:71 1800:70 7:68
19:67 38:67 410:66 820:66 34:65 114:65 804:59 29:57 f:54 44:54 481:54 180:49 300:49 201:48
128:47 484:47 1005:47 1100:46 1400:46 1009:45 8d:44 25:43 4c:42 118:42 100d:41 102:40 409:40
1d:38 1014:38 115:37 140:36 202:35 209:35 49:34 111:34 810:34 1006:34 1084:34 b:31 a8:31
228:31 1024:31 490:30 1030:30 420:29 1028:29 124:28 220:28 489:27 405:26 308:25 1018:25
31:24 94:24 130:24 20d:24 40c:24 900:24 45:23 181:23 218:23 880:23 22:22 3c:22 106:22 184:22
205:22 1088:22 2d:21 24c:21 809:21 2001:21 188:20 4a0:20 500:20 1108:20 60:19 244:19 402:19
12:18 4d:18 b0:18 206:18 210:18 40d:18 1081:18 102c:17 91:16 121:16 135:16 418:16 80c:16
828:16 101c:16 1101:16 1808:16 1820:16 26:15 35:15 98:15 a4:15 11c:15 12c:15 141:15 214:15
411:15 485:15 805:15 1090:15 1200:15 2008:15 2010:15 16:14 1002:14 138:13 13d:13 148:13
600:13 c00:13 1404:13 1480:13 10a:12 10f:12 48c:12 1021:12 2e:11 50:11 68:11 134:11 304:11
830:11 1040:11 1104:11 1115:11 ac:10 b4:10 103:10 119:10 20a:10 20e:10 224:10 414:10 501:10
580:10 806:10 884:10 1019:10 110c:10 1110:10 120c:10 3d:9 58:9 82:9 9c:9 a1:9 107:9 125:9
22c:9 305:9 406:9 888:9 908:9 1034:9 1105:9 39:8 42:8 b8:8 10e:8 144:8 230:8 428:8 581:8
814:8 821:8 1038:8 103c:8 1801:8 1804:8 2a:7 46:7 a9:7 13c:7 185:7 190:7 802:7 819:7 1011:7
111d:7 1408:7 1880:7 1900:7 2f:6 70:6 9d:6 a5:6 c8:6 1a0:6 249:6 258:6 280:6 301:6 498:6
803:6 80a:6 920:6 100a:6 100f:6 1089:6 10a0:6 110d:6 1118:6 1120:6 1130:6 1248:6 1488:6
2020:6 61:5 99:5 c0:5 11d:5 14c:5 18c:5 18d:5 30c:5 424:5 430:5 440:5 486:5 505:5 508:5
818:5 840:5 100e:5 1015:5 1025:5 1085:5 1094:5 140c:5 1410:5 2004:5 2081:5 17:4 1e:4 27:4
8a:4 8e:4 95:4 ad:4 c4:4 10b:4 129:4 149:4 194:4 21c:4 22a:4 250:4 2c8:4 30d:4 314:4 31c:4
349:4 491:4 4a8:4 4a9:4 509:4 510:4 51d:4 648:4 905:4 c80:4 1007:4 101d:4 1029:4 1048:4
104c:4 10ac:4 1134:4 1401:4 1405:4 1489:4 1910:4 2005:4 1f:3 36:3 43:3 54:3 6c:3 86:3 c5:3
117:3 136:3 142:3 145:3 189:3 198:3 203:3 207:3 212:3 219:3 221:3 229:3 234:3 24a:3 24d:3
24e:3 260:3 302:3 306:3 348:3 416:3 499:3 50d:3 5a4:3 80d:3 80e:3 811:3 838:3 901:3 928:3
1003:3 1012:3 1027:3 1031:3 108c:3 108d:3 10a4:3 1114:3 1119:3 1121:3 1415:3 1420:3 1484:3
1500:3 1810:3 1818:3 1824:3 1888:3 1a:2 3a:2 47:2 4a:2 51:2 5c:2 87:2 8f:2 96:2 cc:2 116:2
12d:2 131:2 139:2 154:2 159:2 191:2 21d:2 225:2 22e:2 236:2 264:2 284:2 2c5:2 30f:2 318:2
328:2 341:2 415:2 419:2 421:2 441:2 449:2 482:2 48d:2 48e:2 494:2 4a1:2 4a4:2 4c0:2 515:2
588:2 604:2 680:2 816:2 81d:2 822:2 826:2 82c:2 844:2 881:2 890:2 8a0:2 910:2 921:2 980:2
a00:2 a1c:2 1016:2 1026:2 102d:2 103d:2 1049:2 105c:2 1091:2 1098:2 10b8:2 10bd:2 1102:2
111f:2 1128:2 1135:2 1148:2 1188:2 1198:2 1208:2 1209:2 1240:2 124c:2 1307:2 1409:2 1421:2
1481:2 148c:2 1805:2 180e:2 1830:2 1886:2 2002:2 2006:2 2009:2 200c:2 2018:2 2021:2 2080:2
2100:2 2800:2 3000:2 1b:1 32:1 37:1 4e:1 4f:1 59:1 5e:1 62:1 64:1 6a:1 71:1 74:1 78:1 7c:1
83:1 8b:1 9f:1 aa:1 b1:1 bc:1 cd:1 d4:1 f0:1 112:1 11e:1 11f:1 122:1 12e:1 137:1 13e:1 146:1
14d:1 14f:1 150:1 151:1 160:1 161:1 168:1 170:1 187:1 196:1 19c:1 19d:1 1a5:1 1a8:1 1b0:1
1b1:1 1b4:1 1b5:1 1bd:1 1c0:1 1d0:1 20b:1 20f:1 211:1 222:1 226:1 235:1 238:1 241:1 245:1
246:1 25c:1 268:1 26f:1 278:1 288:1 28c:1 28f:1 294:1 295:1 298:1 2a0:1 2c0:1 2d8:1 303:1
309:1 30a:1 30e:1 317:1 31f:1 320:1 334:1 33f:1 344:1 345:1 34d:1 380:1 384:1 3c1:1 40e:1
41c:1 42c:1 434:1 43c:1 448:1 44c:1 493:1 495:1 4ac:1 4b0:1 4c1:1 4c9:1 4d0:1 504:1 50c:1
514:1 528:1 52d:1 538:1 540:1 582:1 584:1 585:1 589:1 590:1 591:1 595:1 5a5:1 601:1 60c:1
61c:1 61d:1 621:1 658:1 681:1 688:1 690:1 807:1 80f:1 81c:1 824:1 827:1 829:1 82d:1 834:1
839:1 848:1 868:1 882:1 885:1 893:1 8a9:1 909:1 914:1 915:1 91d:1 925:1 960:1 a08:1 a0e:1
a18:1 a38:1 c01:1 c06:1 c08:1 c09:1 c10:1 c11:1 c21:1 c34:1 c88:1 c91:1 c94:1 ca4:1 ca9:1
d35:1 1017:1 101f:1 103e:1 1044:1 1058:1 1060:1 107c:1 1086:1 109c:1 10a1:1 10a8:1 10b4:1
1106:1 1107:1 1109:1 110e:1 1111:1 1117:1 111c:1 111e:1 1129:1 112d:1 112f:1 1131:1 1136:1
1138:1 113d:1 117c:1 1180:1 1181:1 1184:1 1189:1 118c:1 118d:1 1190:1 1191:1 11a1:1 11b1:1
11bc:1 1201:1 1202:1 1204:1 1206:1 120d:1 120f:1 1210:1 1211:1 1228:1 1229:1 122d:1 1238:1
1244:1 125e:1 12c4:1 12c8:1 1300:1 1305:1 1306:1 1311:1 1336:1 1348:1 137d:1 140d:1 1414:1
1418:1 1424:1 142c:1 1430:1 1438:1 1448:1 1485:1 148d:1 1491:1 1499:1 14a0:1 14a8:1 14b0:1
1511:1 1528:1 15a8:1 15b1:1 1803:1 1807:1 1809:1 180c:1 1814:1 1828:1 1834:1 184c:1 1884:1
18ac:1 1905:1 190d:1 1918:1 191d:1 1934:1 19bd:1 1c01:1 1c90:1 1ca1:1 200a:1 200d:1 2011:1
2012:1 2014:1 2028:1 2044:1 2048:1 2088:1 20b9:1 2110:1 2148:1 220c:1 220d:1 2400:1 2801:1
2808:1 2810:1 2a06:1 2c10:1 3001:1 3004:1 3008:1 3014:1 3400:1 3c08:1
"""

_COMBO_MASKS, _COMBO_COUNTS = _combo_table()
_COMBO_CDF = np.cumsum(_COMBO_COUNTS) / _COMBO_COUNTS.sum()
