"""Patient anatomy: its random geometry, the geometry's changes by findings, and its drawing.

Per patient (shared by that patient's follow-ups): body outline with neck and shoulders, two
lung fields, mediastinum and heart, aortic knob, hila, posterior and anterior ribs,
clavicles, spine, diaphragm domes, a gastric air bubble, and vessel-like lung markings.
Functions of one patient's geometry ``g`` (patient units) answer where things are, so that
findings can be placed inside the lungs.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from cxrlib.labels import FINDINGS
from cxrlib.phantoms.canvas import GRID, GRID_EXTENT, Scene, soft
from cxrlib.phantoms.cohort import TAG_ANATOMY, TAG_HABITUS
from cxrlib.phantoms.spec import PhantomSpec
from cxrlib.seed import derive_seed


def bandpass_grid(rng: np.random.Generator, wavelength: float, width: float) -> np.ndarray:
    """Unit-variance band-pass noise on the texture grid, centred on ``wavelength`` units."""
    white = rng.standard_normal((GRID, GRID))
    f = np.fft.fftfreq(GRID, d=2 * GRID_EXTENT / GRID)
    fr = np.hypot(f[:, None], f[None, :])
    f0 = 1.0 / wavelength
    filt = np.exp(-0.5 * ((fr - f0) / (width * f0)) ** 2)
    out = np.fft.ifft2(np.fft.fft2(white) * filt).real
    return (out / (out.std() + 1e-12)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def patient_anatomy(seed: int, patient: int, variation: float, body: float = 1.0) -> dict:
    """Patient geometry (normalised patient units, x right in the image, y down) + textures.

    ``variation`` scales the organs' variation, ``body`` the habitus (width, soft tissue,
    lung darkness, how much of the detector the patient fills) and the overlying soft
    tissue and bones (breasts, scapulae, clavicles), which come from their own stream.
    """
    rng = np.random.default_rng(derive_seed(seed, TAG_ANATOMY, patient))
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
    a["markings"] = ridges(bandpass_grid(rng, 0.035, 0.35), 0.35) + 0.5 * bandpass_grid(rng, 0.08, 0.5)
    a["net"] = ridges(bandpass_grid(rng, 0.022, 0.25), 0.25)
    _habitus(a, np.random.default_rng(derive_seed(seed, TAG_HABITUS, patient)), body)
    return a


def _habitus(a: dict, rng: np.random.Generator, body: float) -> None:
    """Body size and habitus, and what lies over the lungs: breasts, scapulae, clavicles."""
    u = rng.uniform(-1, 1, 5)
    size = u[0]  # thin (-1) .. broad (+1): a broad body is wider and its soft tissue thicker
    a["body_w"] += 0.025 * body * size
    a["soft"] *= 1 + 0.1 * body * (0.6 * size + 0.4 * u[1])
    a["air"] *= 1 + 0.075 * body * u[2]  # how dark the lungs come out
    a["zoom"] = 1 + 0.025 * body * u[3]  # how much of the detector the chest fills
    female = rng.uniform() < 0.45
    a["breast"] = float(rng.uniform(0.4, 1.0) * (1 + 0.3 * max(size, 0))) if female else 0.0
    a["breast_dy"] = float(rng.uniform(-0.04, 0.04))
    a["scapula"] = float(rng.uniform(0.2, 1.0))  # how far the scapulae overlap the lungs
    a["clavicle"] = float(rng.uniform(0.7, 1.3))


def ridges(noise: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-((noise / width) ** 2)).astype(np.float32)


def geometry(a: dict, labels: np.ndarray, les_rng: dict[str, np.random.Generator], spec: PhantomSpec,
             inspiration: float = 0.0, ap: bool = False) -> dict:
    """Per-image geometry: the anatomy at this image's depth of ``inspiration`` (-1 shallow ..
    +1 deep, already scaled by its knob), changed by the findings that change anatomy."""
    g = {k: (dict(v) if isinstance(v, dict) else v) for k, v in a.items()}
    for s in (-1, 1):  # a deep breath lowers and flattens the diaphragm
        g["y_cp"][s] += 0.02 * inspiration
        g["dome_h"][s] *= 1 - 0.075 * inspiration
    g["heart"]["a"] *= 1 - 0.02 * inspiration  # and narrows the heart's shadow
    if ap:  # a portable AP film (PhantomSpec.ap_confound): the heart, far from the detector, is
        # magnified; the clavicles project higher; the scapulae, not rotated out of the way as
        # a standing patient's are for a PA film, lie over the lungs
        g["heart"]["a"] *= 1.12
        g["heart"]["b"] *= 1.06
        g["clav_y"] -= 0.04
        g["scapula"] = 1.8
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
        # Hyperinflation, hyperlucency and thinned markings (findings.emphysema) each darken the
        # whole image; at their first strength the histogram control read Emphysema from any two
        # of them (0.72-0.74 at 64 px) and from all three (0.74 at 64 px, 0.68 at 48 px, all 123
        # positives of 6,000 phantoms). Each is now half as strong (0.58 at both sizes), and the
        # flat diaphragm's shape stays for a model that looks
        # (bench/results/phantom_emphysema_control*.md).
        for s in (-1, 1):
            g["y_cp"][s] += r.uniform(0.015, 0.025) * c
            g["dome_h"][s] *= max(1 - 0.325 * c, 0.1)  # flattened diaphragm
        g["heart"]["a"] *= 1 - 0.08 * c  # narrow, vertical heart
        # the lungs' extra air darkens the whole image: above contrast 1 it stays at its
        # calibrated strength, or the histogram alone would read it (see findings.pneumothorax)
        g["air"] *= 1 + r.uniform(0.11, 0.16) * min(c, 1.0)
    for s in (-1, 1):
        g[f"cx{s}"] = s * (g["W"] + g["m"]) / 2
        g["ax"] = (g["W"] - g["m"]) / 2
        g[f"ay{s}"] = g["y_cp"][s] - g["y_apex"]
        g[f"dome_x{s}"] = s * 0.14
        g[f"dome_w{s}"] = g["W"] - 0.14
    h = g["heart"]
    h["y"] = diaphragm(h["x"], g, 1) - 0.7 * h["b"]
    return g


def diaphragm(x, g: dict, s: int):
    t = (x - g[f"dome_x{s}"]) / g[f"dome_w{s}"]
    return g["y_cp"][s] - g["dome_h"][s] * (1 - t * t)


def lung_rho(x, y, g: dict, s: int):
    """Radial coordinate of lung ``s`` (< 1 inside its outline, before diaphragm and heart)."""
    dx = (x - g[f"cx{s}"]) * s / g["ax"]  # > 0 lateral
    dy = np.minimum(y - g["y_cp"][s], 0) / g[f"ay{s}"]
    dx2 = dx * dx
    fx = np.where(dx > 0, dx2, dx2 * dx2)  # squarer medial border
    return np.sqrt(fx + dy * dy)


def heart_rho(x, y, g: dict):
    h = g["heart"]
    c, s_ = math.cos(h["angle"]), math.sin(h["angle"])
    dx, dy = x - h["x"], y - h["y"]
    u = (c * dx + s_ * dy) / h["a"]
    w = (-s_ * dx + c * dy) / h["b"]
    return np.sqrt(u * u + w * w)


def inside_lung(x: float, y: float, g: dict, s: int, margin: float = 0.0) -> bool:
    """Whether a point lies inside lung ``s`` with a margin (patient units)."""
    rho = float(lung_rho(x, y, g, s))
    if rho > 1 - margin / g["ax"] * 1.2:
        return False
    if y > float(diaphragm(x, g, s)) - margin:
        return False
    if float(heart_rho(x, y, g)) < 1 + margin / g["heart"]["b"]:
        return False
    k = g["knob"]
    return math.hypot(x - k["x"], y - k["y"]) > k["r"] + margin


def sample_point(g: dict, rng: np.random.Generator, s: int, zone: str, margin: float) -> tuple[float, float]:
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
        if zone == "periph" and float(lung_rho(x, y, g, s)) < 0.6:
            continue
        if inside_lung(x, y, g, s, m):
            return float(x), float(y)
    return float(cx + 0.3 * s * ax), float(y_top + 0.5 * h)  # lung centre: always inside


def draw_anatomy(sc: Scene) -> None:
    """Body, heart, lungs, hila, ribs, clavicles, spine, gastric bubble; lung-marking weights."""
    g, cv, D = sc.g, sc.cv, sc.D
    X, Y = cv.X, cv.Y
    # Body: elliptic thickness profile, narrower at the neck above the shoulders.
    yl = np.clip((Y - g["y_shoulder"]) / 0.09, 0, 1)
    wb = g["neck_w"] + (g["body_w"] - g["neck_w"]) * (yl * yl * (3 - 2 * yl))
    q = X / wb
    t = np.clip(1 - q * q, 0, 1)
    D += g["soft"] * np.sqrt(t)
    sc.body = t > 0
    # Heart (mask) and the rest of the thorax.
    h = g["heart"]
    ext = max(h["a"], h["b"]) * 1.05
    sc.heart_win = cv.window(h["x"] - ext, h["x"] + ext, h["y"] - ext, h["y"] + ext)
    if sc.heart_win:
        hw = sc.heart_win
        rho_h = heart_rho(X[hw], Y[hw], g)
        sc.heart[hw] = rho_h < 1
        D[hw] += 0.05 * soft((1 - rho_h) * h["b"], sc.edge)
    sc.thorax = cv.window(-g["W"] - 0.03, g["W"] + 0.03, g["y_apex"] - 0.03, max(g["y_cp"].values()) + 0.04)
    k = g["knob"]
    for s in (-1, 1):
        win = cv.window(min(s * g["m"], s * g["W"]) - 0.01, max(s * g["m"], s * g["W"]) + 0.01,
                        g["y_apex"] - 0.01, g["y_cp"][s] + 0.01)
        if win is None:
            continue
        x, y = X[win], Y[win]
        rho = lung_rho(x, y, g, s)
        d_out = (1 - rho) * g["ax"]
        d_dia = diaphragm(x, g, s) - y
        d_heart = (heart_rho(x, y, g) - 1) * h["b"]
        d_knob = np.hypot(x - k["x"], y - k["y"]) - k["r"]
        d = np.minimum(np.minimum(d_out, d_dia), np.minimum(d_heart, d_knob))
        edge = soft(d, sc.edge)
        sc.lung_soft[win] = np.maximum(sc.lung_soft[win], edge)
        sc.lung[win] |= d > 0
        depth = np.sqrt(np.clip(1 - rho * rho, 0, 1))
        D[win] -= g["air"] * edge * (0.55 + 0.45 * depth)
        # Lung behind the heart: the heart's shadow is grey, not solid (the lung mask keeps
        # to the lung fields the heart does not cover).
        behind = soft(np.minimum(np.minimum(d_out, d_dia), d_knob), sc.edge) - edge
        D[win] -= 0.3 * g["air"] * behind * depth
        sc.rho[s] = (win, rho)
    sc.lung &= sc.body
    # Hila: pulmonary arteries as soft blobs.
    for s in (-1, 1):
        sc.blob(s * (g["m"] + 0.045), g["hilum_y"], 0.03, 0.06)
    _ribs(sc)
    _spine(sc)
    if sc.spec.overlying > 0:
        _clavicles(sc, sc.spec.overlying)
        _scapulae(sc, sc.spec.overlying)
        _breasts(sc, sc.spec.overlying)
    # Gastric air bubble under the left dome.
    bx, by = 0.17, float(diaphragm(0.17, sc.g, 1)) + 0.05
    sc.blob(bx, by, 0.035, -0.12, aspect=0.6)
    # Markings: denser at the hila, fading to the periphery.
    if sc.thorax:
        tw = sc.thorax
        x, y = X[tw], Y[tw]
        dh = np.minimum((np.abs(x) - g["m"] - 0.04) ** 2, 1) + (y - g["hilum_y"]) ** 2
        sc.mark_w[tw] = sc.lung_soft[tw] * (0.45 + 0.55 * np.exp(-dh / 0.03))


def _ribs(sc: Scene) -> None:
    g, cv = sc.g, sc.cv
    if not sc.thorax:
        return
    tw = sc.thorax
    x, y = cv.X[tw], cv.Y[tw]
    a = np.abs(x - g["spine_x"])
    sp = g["rib_spacing"]
    lat = soft(g["W"] + 0.02 - a, 0.02) * soft(y - g["y_apex"] + 0.04, 0.03)
    lat *= soft(max(g["y_cp"].values()) + 0.03 - y, 0.04)
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
    sc.D[tw] += bone * lat


def _clavicles(sc: Scene, strength: float) -> None:
    g, cv = sc.g, sc.cv
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
        band = np.exp(-q * q) * soft(a - a_med, 0.01) * soft(a_lat - a, 0.02)
        sc.D[win] += 0.065 * strength * g["clavicle"] * band


def _convex(x, y, corners: list[tuple[float, float]], width: float):
    """Soft indicator of a convex polygon given by its corners in order."""
    cx = sum(c[0] for c in corners) / len(corners)
    cy = sum(c[1] for c in corners) / len(corners)
    inside = None
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        nx, ny = y1 - y0, x0 - x1
        norm = math.hypot(nx, ny) * (1 if (cx - x0) * nx + (cy - y0) * ny > 0 else -1)  # normal points in
        d = ((x - x0) * nx + (y - y0) * ny) / norm
        inside = d if inside is None else np.minimum(inside, d)
    return soft(inside, width)


def _scapulae(sc: Scene, strength: float) -> None:
    """The scapulae's bodies over the upper lateral lung fields (arms not fully forward)."""
    g, cv = sc.g, sc.cv
    over = g["scapula"]
    for s in (-1, 1):
        medial = g["W"] - 0.03 - 0.1 * over  # how far in the medial border reaches
        corners = [(s * medial, g["y_apex"] - 0.06), (s * (g["W"] + 0.08), g["y_apex"] - 0.06),
                   (s * (g["W"] + 0.02), g["y_apex"] + 0.42), (s * (medial + 0.03), g["y_apex"] + 0.36)]
        xs, ys = zip(*corners)
        win = cv.window(min(xs) - 0.02, max(xs) + 0.02, min(ys) - 0.02, max(ys) + 0.02)
        if win is None:
            continue
        plate = _convex(cv.X[win], cv.Y[win], corners, 0.012)
        sc.D[win] += 0.03 * strength * plate * sc.body[win]


def _breasts(sc: Scene, strength: float) -> None:
    """Breast shadows over the lower lung fields: dense toward their sharp lower edge."""
    g, cv = sc.g, sc.cv
    size = g["breast"]
    if size <= 0:
        return
    rx, ry = 0.17 * size + 0.05, 0.12 * size + 0.04
    cy = min(g["y_cp"].values()) - 0.06 - 0.5 * ry + g["breast_dy"]
    for s in (-1, 1):
        cx = s * (0.2 + 0.03 * size)
        win = cv.window(cx - rx, cx + rx, cy - ry, cy + ry)
        if win is None:
            continue
        x, y = cv.X[win], cv.Y[win]
        r2 = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        thick = np.sqrt(np.clip(1 - r2, 0, 1)) * np.clip(0.5 + (y - cy) / ry, 0, 1)
        sc.D[win] += 0.06 * strength * size * thick * sc.body[win]


def _spine(sc: Scene) -> None:
    g, cv = sc.g, sc.cv
    win = cv.window(g["spine_x"] - 0.06, g["spine_x"] + 0.06, -0.6, 0.6)
    if win is None:
        return
    x, y = cv.X[win], cv.Y[win]
    c = np.cos(np.pi * y / 0.045)
    q = (x - g["spine_x"]) / 0.032
    q *= q
    sc.D[win] += 0.09 * np.exp(-q * q) * (0.75 + 0.25 * c * c) * sc.body[win]


def draw_markings(sc: Scene, texture: float) -> None:
    """Vessel-like lung markings, weighted by ``mark_w`` (findings thin or thicken them)."""
    if not sc.thorax or texture == 0:
        return
    tw = sc.thorax
    m = sc.cv.grid(sc.g["markings"], tw)
    sc.D[tw] += 0.075 * texture * sc.mark_w[tw] * m
