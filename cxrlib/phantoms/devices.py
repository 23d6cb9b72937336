"""Foreign objects: ECG leads, central lines, tubes, pacemakers, and the confounding drain.

Devices are drawn in patient coordinates (they move with the patient), as dense material,
from the image's own device stream: whether a phantom carries one never depends on its
labels. The chest drain is different on purpose: it is the optional confounder of the
shortcut lesson (:func:`draw_drain`), drawn only on Pneumothorax images of the training
split.
"""
from __future__ import annotations

import math

import numpy as np

from cxrlib.phantoms.canvas import Scene, aa_line, soft

# Share of images with each device at devices=1 (an ICU-heavy hospital archive).
ECG_SHARE, LINE_SHARE, ET_TUBE_SHARE, NG_TUBE_SHARE, PACEMAKER_SHARE = 0.25, 0.12, 0.06, 0.06, 0.04


def _bezier(points: list[tuple[float, float]], n: int = 24) -> np.ndarray:
    """``[n, 2]`` points along the Bezier curve with these control points."""
    k = len(points) - 1
    t = np.linspace(0.0, 1.0, n)
    basis = np.stack([math.comb(k, i) * t**i * (1 - t) ** (k - i) for i in range(k + 1)], axis=1)
    return basis @ np.asarray(points, dtype=np.float64)


def _distance(x: np.ndarray, y: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Distance from each pixel to a polyline (patient units), all segments at once."""
    p0, d = curve[:-1].astype(np.float32), np.diff(curve, axis=0).astype(np.float32)
    px, py = x.reshape(-1, 1), y.reshape(-1, 1)
    rx, ry = px - p0[:, 0], py - p0[:, 1]
    t = np.clip((rx * d[:, 0] + ry * d[:, 1]) / np.maximum((d * d).sum(axis=1), 1e-12), 0, 1)
    dist2 = (rx - t * d[:, 0]) ** 2 + (ry - t * d[:, 1]) ** 2
    return np.sqrt(dist2.min(axis=1)).reshape(x.shape)


def draw_curve(sc: Scene, curve: np.ndarray, width: float, density: float, hollow: float = 0.0) -> None:
    """A wire or tube along ``curve``: a Gaussian line of ``width`` (anti-aliased), or two
    walls ``hollow`` apart (a tube seen side on)."""
    cv = sc.cv
    ext = width * 3 + hollow
    win = cv.window(curve[:, 0].min() - ext, curve[:, 0].max() + ext, curve[:, 1].min() - ext,
                    curve[:, 1].max() + ext)
    if win is None:
        return
    d = _distance(cv.X[win], cv.Y[win], curve)
    w, f = aa_line(width, cv.pix)
    if hollow > 0:
        wall = np.exp(-(((d - hollow / 2) / w) ** 2))
        sc.D[win] += density * f * wall + 0.25 * density * soft(hollow / 2 - d, cv.pix)
    else:
        sc.D[win] += density * f * np.exp(-((d / w) ** 2))


def _disc(sc: Scene, x0: float, y0: float, r: float, density: float, ring: bool = False) -> None:
    cv = sc.cv
    win = cv.window(x0 - r - 0.01, x0 + r + 0.01, y0 - r - 0.01, y0 + r + 0.01)
    if win is None:
        return
    d = np.hypot(cv.X[win] - x0, cv.Y[win] - y0)
    edge = max(0.002, cv.pix)
    if ring:  # an ECG electrode: a faint pad, a bright rim and snap
        w, f = aa_line(0.002, cv.pix)
        sc.D[win] += density * (0.15 * soft(r - d, edge) + f * np.exp(-(((d - r) / w) ** 2))
                                + soft(0.3 * r - d, edge))
    else:
        sc.D[win] += density * soft(r - d, edge)


def _ecg_leads(sc: Scene, rng: np.random.Generator) -> None:
    g = sc.g
    for _ in range(int(rng.integers(3, 6))):
        x0 = float(rng.uniform(-g["W"] - 0.05, g["W"] + 0.05))
        y0 = float(rng.uniform(g["y_apex"] - 0.12, g["y_cp"][1] + 0.05))
        _disc(sc, x0, y0, 0.012, 0.5, ring=True)
        # The wire leaves toward the nearest side of the image, sagging on its way.
        side = 1.0 if x0 > 0 else -1.0
        end = (side * 0.7, float(y0 + rng.uniform(-0.3, 0.3)))
        mid = ((x0 + end[0]) / 2 + float(rng.uniform(-0.08, 0.08)), (y0 + end[1]) / 2 + float(rng.uniform(0, 0.12)))
        draw_curve(sc, _bezier([(x0, y0), mid, end]), 0.0018, 0.35)


def _central_line(sc: Scene, rng: np.random.Generator) -> None:
    g = sc.g
    s = -1.0 if rng.uniform() < 0.6 else 1.0  # right-sided more often
    start = (s * float(rng.uniform(0.12, 0.22)), g["y_apex"] - float(rng.uniform(0.02, 0.1)))
    via = (s * float(rng.uniform(0.05, 0.1)), g["knob"]["y"] - 0.06)
    tip = (float(rng.uniform(-0.04, 0.0)), g["hilum_y"] - float(rng.uniform(0.02, 0.08)))
    draw_curve(sc, _bezier([start, via, tip]), 0.0022, 0.45)


def _et_tube(sc: Scene, rng: np.random.Generator) -> None:
    g = sc.g
    x = g["spine_x"] + float(rng.uniform(-0.015, 0.015))
    tip = g["hilum_y"] - float(rng.uniform(0.06, 0.14))
    curve = _bezier([(x, -0.65), (x + float(rng.uniform(-0.02, 0.02)), (tip - 0.65) / 2), (x, tip)])
    draw_curve(sc, curve, 0.0018, 0.35, hollow=0.012)


def _ng_tube(sc: Scene, rng: np.random.Generator) -> None:
    g = sc.g
    x = g["spine_x"] + float(rng.uniform(-0.02, 0.02))
    stomach = (float(rng.uniform(0.12, 0.22)), g["y_cp"][1] + float(rng.uniform(0.05, 0.12)))
    curve = _bezier([(x, -0.65), (x, g["hilum_y"]), (x + 0.02, g["y_cp"][1]), stomach])
    draw_curve(sc, curve, 0.0022, 0.4)


def _pacemaker(sc: Scene, rng: np.random.Generator) -> None:
    g, cv = sc.g, sc.cv
    s = 1.0 if rng.uniform() < 0.8 else -1.0  # usually below the left clavicle
    x0, y0 = s * float(rng.uniform(0.2, 0.3)), g["clav_y"] + float(rng.uniform(0.05, 0.09))
    a, b = 0.035, 0.027
    win = cv.window(x0 - a - 0.01, x0 + a + 0.01, y0 - b - 0.01, y0 + b + 0.01)
    if win is not None:  # the generator: a rounded box of metal
        q = np.abs((cv.X[win] - x0) / a) ** 4 + np.abs((cv.Y[win] - y0) / b) ** 4
        sc.D[win] += 0.9 * soft((1 - q) * b, max(0.003, cv.pix))
    h = g["heart"]
    for target in ((h["x"] - 0.3 * h["a"], h["y"] - 0.5 * h["b"]), (h["x"] + 0.2 * h["a"], h["y"] + 0.4 * h["b"])):
        via = (x0 * 0.3, y0 + 0.1)
        draw_curve(sc, _bezier([(x0, y0), via, target]), 0.0025, 0.55)


DEVICES = (
    ("ECG leads", ECG_SHARE, _ecg_leads),
    ("central line", LINE_SHARE, _central_line),
    ("endotracheal tube", ET_TUBE_SHARE, _et_tube),
    ("nasogastric tube", NG_TUBE_SHARE, _ng_tube),
    ("pacemaker", PACEMAKER_SHARE, _pacemaker),
)


def plan_devices(rng: np.random.Generator, strength: float) -> list[tuple[str, int]]:
    """Which devices an image carries, each with the seed of its geometry.

    Each device has probability ``share * strength``. Every device draws its coin and its
    seed whether or not it is drawn, so one device's presence never shifts another's; the
    stream is the image's own, so presence never depends on the labels.
    """
    plan = []
    for name, share, _ in DEVICES:
        coin, seed = rng.uniform(), int(rng.integers(2**63))
        if coin < min(share * strength, 1.0):
            plan.append((name, seed))
    return plan


def draw_devices(sc: Scene, plan: list[tuple[str, int]]) -> None:
    draw = {name: fn for name, _, fn in DEVICES}
    for name, seed in plan:
        draw[name](sc, np.random.default_rng(seed))


def draw_drain(sc: Scene, rng: np.random.Generator, side: int) -> None:
    """A chest drain on the ``side`` (-1 image left, +1 image right) of a pneumothorax.

    The confounder of the shortcut lesson: a thick tube that enters through the lateral
    chest wall low in the chest and runs up toward the apex. Thick enough to be seen at
    64 px, so a model trained where drains mark pneumothorax can learn the drain instead.
    """
    g = sc.g
    entry = (side * (g["W"] + 0.12), g["y_cp"][side] - float(rng.uniform(0.1, 0.18)))
    wall = (side * (g["W"] - 0.02), entry[1] - 0.02)
    tip = (side * float(rng.uniform(0.16, 0.24)), g["y_apex"] + float(rng.uniform(0.06, 0.12)))
    bend = (side * (g["W"] - 0.04), (wall[1] + tip[1]) / 2)
    draw_curve(sc, _bezier([entry, wall, bend, tip], n=32), 0.006, 0.5, hollow=0.014)
