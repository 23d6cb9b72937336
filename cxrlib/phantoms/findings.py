"""The 14 findings, one drawing function each, in ChestX-ray14's label order.

Each function draws its finding into a :class:`Scene` (density ``D``, marking weight) and
sets its mask ``sc.masks[k]``: lung findings only inside the lung mask, Cardiomegaly the
(enlarged) heart, Hernia behind the heart at the diaphragm. Cardiomegaly's enlargement and
Emphysema's hyperinflation change the patient's geometry before anything is drawn
(``anatomy.geometry``); their functions here only mark or thin what is already there.
"""
from __future__ import annotations

import math

import numpy as np

from cxrlib.labels import FINDINGS
from cxrlib.phantoms.anatomy import diaphragm, lung_rho, sample_point
from cxrlib.phantoms.canvas import Scene, aa_gauss, aa_line, soft

# Findings drawn inside the lung fields (their masks are a subset of the lung mask).
# Cardiomegaly (the heart) and Hernia (behind the heart, at the diaphragm) are not.
LUNG_FINDINGS: tuple[str, ...] = tuple(f for f in FINDINGS if f not in ("Cardiomegaly", "Hernia"))


def _side(rng: np.random.Generator) -> int:
    return int(rng.choice([-1, 1]))


def atelectasis(sc: Scene, k: int, rng: np.random.Generator) -> None:
    g, cv, L, C = sc.g, sc.cv, sc.spec.lesion_scale, sc.spec.contrast
    s = _side(rng)
    length, thick = rng.uniform(0.08, 0.14) * L, rng.uniform(0.012, 0.02) * L
    x0, y0 = sample_point(g, rng, s, "lower", thick * 2)
    ang = rng.uniform(-0.45, 0.45)
    ext = length * 0.6 + thick * 3
    win = cv.window(x0 - ext, x0 + ext, y0 - ext, y0 + ext)
    if win is None:
        return
    dx, dy = cv.X[win] - x0, cv.Y[win] - y0
    along = (math.cos(ang) * dx + math.sin(ang) * dy) * s  # > 0 toward the chest wall
    across = -math.sin(ang) * dx + math.cos(ang) * dy
    tk = thick * (1 + 0.7 * np.clip(along / length + 0.5, 0, 1))  # wedge: wider laterally
    w, f = aa_line(float(thick), cv.pix)
    prof = np.exp(-((across / (tk * w / thick)) ** 2)) * soft(length / 2 - np.abs(along), 0.015)
    sc.D[win] += 0.2 * C * f * prof * sc.lung_soft[win]
    sc.mask(k, prof, win, 0.35)


def cardiomegaly(sc: Scene, k: int, rng: np.random.Generator) -> None:
    sc.masks[k] |= sc.heart  # the heart itself was enlarged in anatomy.geometry


def effusion(sc: Scene, k: int, rng: np.random.Generator) -> None:
    g, cv, L, C = sc.g, sc.cv, sc.spec.lesion_scale, sc.spec.contrast
    s = _side(rng)
    h = rng.uniform(0.07, 0.14) * L
    men = rng.uniform(0.04, 0.08) * L
    if s not in sc.rho:
        return
    win, rho = sc.rho[s]
    x, y = cv.X[win], cv.Y[win]
    lat = np.clip((x - g[f"cx{s}"]) * s / g["ax"], -1, 1)
    y_fluid = g["y_cp"][s] - h - men * np.clip(lat, 0, 1) ** 2  # meniscus climbs the wall
    prof = soft(y - y_fluid, 0.012) * (rho < 1.02)
    dens = prof * (0.75 + 0.25 * np.clip((y - y_fluid) / 0.08, 0, 1))
    sc.D[win] += 0.32 * C * dens * sc.lung_soft[win]
    sc.mark_w[win] *= 1 - prof
    sc.mask(k, prof, win, 0.5)


def infiltration(sc: Scene, k: int, rng: np.random.Generator) -> None:
    g, cv, L, C = sc.g, sc.cv, sc.spec.lesion_scale, sc.spec.contrast
    s = _side(rng)
    R = rng.uniform(0.05, 0.085) * L
    x0, y0 = sample_point(g, rng, s, "any", R * 0.5)
    ext = R + 0.08 * L
    win = cv.window(x0 - ext, x0 + ext, y0 - ext, y0 + ext)
    if win is None:
        return
    x, y = cv.X[win], cv.Y[win]
    acc = np.zeros(x.shape, np.float32)
    for _ in range(int(rng.integers(5, 9))):
        r, t = R * math.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        sig = rng.uniform(0.012, 0.024) * L
        sig_e, f = aa_gauss(sig, cv.pix)
        acc += f * np.exp(-((x - x0 - r * math.cos(t)) ** 2 + (y - y0 - r * math.sin(t)) ** 2) / (sig_e**2))
    prof = 1 - np.exp(-1.6 * acc)
    sc.D[win] += 0.15 * C * prof * sc.lung_soft[win]
    sc.mask(k, prof, win, 0.3)


def _round(sc: Scene, k: int, rng: np.random.Generator, R: float, amp: float, lobulated: bool) -> None:
    g, cv = sc.g, sc.cv
    s = _side(rng)
    x0, y0 = sample_point(g, rng, s, "any", R * 1.3)
    win = cv.window(x0 - 2 * R - 4 * cv.pix, x0 + 2 * R + 4 * cv.pix, y0 - 2 * R - 4 * cv.pix, y0 + 2 * R + 4 * cv.pix)
    if win is None:
        return
    dx, dy = cv.X[win] - x0, cv.Y[win] - y0
    if lobulated:
        th = np.arctan2(dy, dx)
        r_eff = R * (1 + 0.1 * np.sin(3 * th + rng.uniform(0, 6.3)) + 0.06 * np.sin(5 * th + rng.uniform(0, 6.3)))
        d = np.hypot(dx, dy)
        prof = np.sqrt(np.clip(1 - (d / r_eff) ** 2, 0, 1)) * 0.7 + 0.3 * soft(r_eff - d, max(0.004, cv.pix))
        sc.D[win] += amp * prof * sc.lung_soft[win]
        sc.mask(k, r_eff - d, win, 0.0)
    else:
        sig_e, f = aa_gauss(0.6 * R, cv.pix)  # a sphere is close to a Gaussian of sd 0.6 R
        r2 = dx * dx + dy * dy
        sc.D[win] += amp * f * np.exp(-r2 / (2 * sig_e * sig_e))
        sc.mask(k, R * R - r2, win, 0.0)


def mass(sc: Scene, k: int, rng: np.random.Generator) -> None:
    L, C = sc.spec.lesion_scale, sc.spec.contrast
    _round(sc, k, rng, rng.uniform(0.028, 0.045) * L, 0.2 * C, lobulated=True)


def nodule(sc: Scene, k: int, rng: np.random.Generator) -> None:
    L, C = sc.spec.lesion_scale, sc.spec.contrast
    # Diameter 1-1.5% of the image width: visible at 256 px, sub-pixel at 64 px.
    _round(sc, k, rng, rng.uniform(0.005, 0.0075) * L, 0.3 * C, lobulated=False)


def pneumonia(sc: Scene, k: int, rng: np.random.Generator) -> None:
    g, cv, L, C = sc.g, sc.cv, sc.spec.lesion_scale, sc.spec.contrast
    s = _side(rng)
    sx, sy = rng.uniform(0.05, 0.075) * L, rng.uniform(0.045, 0.07) * L
    x0, y0 = sample_point(g, rng, s, "lower" if rng.uniform() < 0.6 else "mid", 0.02)
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
    prof = (1 - np.exp(-1.5 * acc)) * soft(y - y_f, max(0.003, cv.pix))
    sc.D[win] += 0.2 * C * prof * sc.lung_soft[win]
    sc.mask(k, prof, win, 0.35 * float(prof.max()))


def pneumothorax(sc: Scene, k: int, rng: np.random.Generator) -> None:
    g, cv, L, C = sc.g, sc.cv, sc.spec.lesion_scale, sc.spec.contrast
    s = _side(rng)
    sc.sides["Pneumothorax"] = s  # where a drain would go (the confounder)
    if s not in sc.rho:
        return
    win, rho = sc.rho[s]
    x, y = cv.X[win], cv.Y[win]
    d0 = rng.uniform(0.12, 0.22) * L
    # Thickest at the apex / upper chest wall, tapering toward the base.
    ang = np.arctan2(y - g["y_cp"][s], (x - g[f"cx{s}"]) * s * g[f"ay{s}"] / g["ax"])
    w = np.clip(np.cos(ang - (-1.2)) * 1.3 - 0.15, 0, 1)
    edge = 1 - d0 * w  # collapsed-lung edge in rho units
    band = soft(rho - edge, 0.004 / g["ax"]) * (w > 0.05) * (rho < 1.05)
    # The collapsed lung's lucency keeps its calibrated strength above contrast 1: a darker band
    # over this much lung made the finding readable from the histogram alone (the shortcut
    # control reached 0.85 on 6,000 phantoms at contrast 2); the pleural line below still scales.
    sc.D[win] -= 0.14 * min(C, 1.0) * band * sc.lung_soft[win]
    sc.mark_w[win] *= 1 - band
    # Visceral pleural line: thin, so it fades at low resolution like the nodule.
    gy, gx = np.gradient(rho)
    grad = np.hypot(gx, gy) + 1e-6  # rho per pixel
    lw, f = aa_line(0.0025, cv.pix)
    dist_pix = (rho - edge) / grad
    sc.D[win] += 0.12 * C * f * np.exp(-((dist_pix * cv.pix / lw) ** 2)) * (w > 0.05) * sc.lung_soft[win]
    sc.mask(k, band, win, 0.5)


def consolidation(sc: Scene, k: int, rng: np.random.Generator) -> None:
    g, cv, L, C = sc.g, sc.cv, sc.spec.lesion_scale, sc.spec.contrast
    s = _side(rng)
    R = rng.uniform(0.04, 0.06) * L
    x0, y0 = sample_point(g, rng, s, "any", R)
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
    lw, f = aa_line(0.003, cv.pix)
    hx = s * (g["m"] + 0.04) - x0
    base = math.atan2(g["hilum_y"] - y0, hx) + math.pi  # pointing away from the hilum
    for _ in range(3):
        t = base + rng.uniform(-0.7, 0.7)
        sx, sy = x0 - math.cos(t) * R, y0 - math.sin(t) * R
        dx, dy = x - sx, y - sy
        along = dx * math.cos(t) + dy * math.sin(t)
        across = -dx * math.sin(t) + dy * math.cos(t)
        air = np.maximum(air, np.exp(-((across / lw) ** 2)) * ((along > 0) & (along < 2 * R)))
    sc.D[win] += 0.28 * C * prof * (1 - 0.55 * f * air) * sc.lung_soft[win]
    sc.mark_w[win] *= 1 - prof
    sc.mask(k, prof, win, 0.5)


def edema(sc: Scene, k: int, rng: np.random.Generator) -> None:
    g, cv, L, C = sc.g, sc.cv, sc.spec.lesion_scale, sc.spec.contrast
    if not sc.thorax:
        return
    tw = sc.thorax
    x, y = cv.X[tw], cv.Y[tw]
    sx, sy = rng.uniform(0.1, 0.14) * L, rng.uniform(0.08, 0.11) * L
    haze = np.zeros(x.shape, np.float32)
    for s in (-1, 1):  # bilateral, perihilar ("bat wing")
        hx = s * (g["m"] + 0.06)
        haze = np.maximum(haze, np.exp(-(((x - hx) / sx) ** 2 + ((y - g["hilum_y"] - 0.02) / sy) ** 2)))
    sc.D[tw] += 0.13 * C * haze * sc.lung_soft[tw]
    sc.mark_w[tw] *= 1 + 0.8 * min(C, 1.5) * haze  # thickened interstitium
    sc.mask(k, haze, tw, 0.4)


def emphysema(sc: Scene, k: int, rng: np.random.Generator) -> None:
    # Hyperlucency and the flat diaphragm were set in anatomy.geometry; markings thin out.
    sc.mark_w *= 1 - 0.25 * min(sc.spec.contrast, 1.0)  # half its first strength (see anatomy.geometry)
    sc.masks[k] |= sc.lung


def fibrosis(sc: Scene, k: int, rng: np.random.Generator) -> None:
    g, cv, L, C = sc.g, sc.cv, sc.spec.lesion_scale, sc.spec.contrast
    if not sc.thorax:
        return
    tw = sc.thorax
    x, y = cv.X[tw], cv.Y[tw]
    net = cv.grid(g["net"], tw)
    zone = np.zeros(x.shape, np.float32)
    lo = rng.uniform(0.5, 0.62)
    for s in (-1, 1):  # bilateral, peripheral and basal
        rho = lung_rho(x, y, g, s)
        zone = np.maximum(zone, np.clip((rho - lo) / 0.15, 0, 1) * (rho < 1.05))
    zone *= np.clip((y - (g["y_apex"] + 0.3 * (g["y_cp"][-1] - g["y_apex"]))) / 0.1, 0, 1)
    sc.D[tw] += 0.13 * C * net * zone * sc.lung_soft[tw]
    sc.mask(k, zone, tw, 0.5)


def pleural_thickening(sc: Scene, k: int, rng: np.random.Generator) -> None:
    g, cv, L, C = sc.g, sc.cv, sc.spec.lesion_scale, sc.spec.contrast
    s = _side(rng)
    if s not in sc.rho:
        return
    win, rho = sc.rho[s]
    x, y = cv.X[win], cv.Y[win]
    t = rng.uniform(0.05, 0.08) * L
    top = g["y_apex"]
    if rng.uniform() < 0.6:  # apical cap
        sector = soft(top + 0.16 - y, 0.03)
    else:  # along the lateral chest wall
        yc = top + rng.uniform(0.3, 0.6) * (g["y_cp"][s] - top)
        sector = soft(0.09 - np.abs(y - yc), 0.03) * ((x - g[f"cx{s}"]) * s > 0)
    band = soft(rho - (1 - t), 0.01) * (rho < 1.02)
    prof = band * sector
    sc.D[win] += 0.16 * C * prof * sc.lung_soft[win]
    sc.mask(k, prof, win, 0.5)


def hernia(sc: Scene, k: int, rng: np.random.Generator) -> None:
    g, cv, L, C = sc.g, sc.cv, sc.spec.lesion_scale, sc.spec.contrast
    R = rng.uniform(0.035, 0.055) * L
    x0 = rng.uniform(-0.02, 0.06)
    y0 = float(diaphragm(x0, g, 1)) - rng.uniform(0.3, 0.7) * R
    win = cv.window(x0 - 1.5 * R, x0 + 1.5 * R, y0 - 1.5 * R, y0 + 1.5 * R)
    if win is None:
        return
    x, y = cv.X[win], cv.Y[win]
    d = np.hypot(x - x0, y - y0)
    prof = soft(R - d, max(0.004, cv.pix))
    sphere = np.sqrt(np.clip(1 - (d / R) ** 2, 0, 1))
    level = y0 - rng.uniform(0.1, 0.4) * R  # air-fluid level
    air = soft(level - y, max(0.002, cv.pix)) * prof
    sc.D[win] += 0.16 * C * (sphere * 0.7 + 0.3 * prof) - 0.2 * C * air * sphere
    sc.mask(k, prof, win, 0.5, in_lung=False)


DRAW = {
    "Atelectasis": atelectasis, "Cardiomegaly": cardiomegaly, "Effusion": effusion, "Infiltration": infiltration,
    "Mass": mass, "Nodule": nodule, "Pneumonia": pneumonia, "Pneumothorax": pneumothorax,
    "Consolidation": consolidation, "Edema": edema, "Emphysema": emphysema, "Fibrosis": fibrosis,
    "Pleural_Thickening": pleural_thickening, "Hernia": hernia,
}


def draw_finding(sc: Scene, name: str, rng: np.random.Generator) -> None:
    """Draw finding ``name`` with its own random stream (its lesion geometry)."""
    DRAW[name](sc, FINDINGS.index(name), rng)
