"""The pixel grid in patient coordinates, anti-aliased primitives, and the drawing state.

Geometry lives in normalised patient coordinates (x right in the image, y down, the chest
about [-0.5, 0.5]) and is drawn at any pixel size. Small structures are anti-aliased the
way area-averaging a large render would do it (a Gaussian pixel footprint), so a nodule
keeps its peak contrast at 256 px but loses most of it at 64 px.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from cxrlib.labels import NUM_FINDINGS

GRID = 160  # texture grid (lung markings, fibrosis net) over [-0.6, 0.6]^2 patient units
GRID_EXTENT = 0.6


class Canvas:
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
        cell = 2 * GRID_EXTENT / GRID  # patient units per grid cell
        ratio = self.pix / cell  # grid cells per pixel
        if ratio > 0.7:
            field = ndimage.gaussian_filter(field, 0.45 * ratio, mode="wrap")
        rs, cs = win
        # grid index = (coord + extent) / cell - 0.5, coord affine in (row, col)
        def coeffs(A):
            return (A[1] / cell, A[0] / cell, (A[0] * cs.start + A[1] * rs.start + A[2] + GRID_EXTENT) / cell - 0.5)
        gy, gx = coeffs(self.Ay), coeffs(self.Ax)
        matrix = np.array([[gy[0], gy[1]], [gx[0], gx[1]]])
        offset = np.array([gy[2], gx[2]])
        out_shape = (rs.stop - rs.start, cs.stop - cs.start)
        return ndimage.affine_transform(field, matrix, offset=offset, output_shape=out_shape, order=1,
                                        mode="nearest").astype(np.float32)


def soft(d, width: float):
    """0 -> 1 step across a boundary at d = 0 (d in patient units, > 0 inside)."""
    return np.clip(0.5 + d / width, 0.0, 1.0)


def aa_gauss(sigma: float, pix: float) -> tuple[float, float]:
    """(blurred sigma, amplitude factor) of a 2-D Gaussian seen through a pixel footprint."""
    sp = 0.42 * pix
    s2 = sigma * sigma + sp * sp
    return math.sqrt(s2), sigma * sigma / s2


def aa_line(width: float, pix: float) -> tuple[float, float]:
    """(blurred width, amplitude factor) of a thin 1-D Gaussian line through a pixel footprint."""
    sp = 0.42 * pix
    w = math.sqrt(width * width + sp * sp)
    return w, width / w


class Scene:
    """What anatomy and findings draw into: density, lung-marking weight, masks.

    ``D`` is density (brighter = more attenuation); anatomy fills ``lung``, ``lung_soft``,
    ``rho`` (each lung's window and radial coordinate), ``thorax``, ``heart`` and ``body``,
    which the findings then use to stay where their masks say.
    """

    def __init__(self, g: dict, canvas: Canvas, spec):
        self.g, self.cv, self.spec = g, canvas, spec
        S = canvas.S
        self.D = np.zeros((S, S), np.float32)
        self.mark_w = np.zeros((S, S), np.float32)  # weight of lung markings
        self.masks = np.zeros((NUM_FINDINGS, S, S), bool)
        self.edge = max(0.004, canvas.pix)  # anatomical edge blur
        self.lung_soft = np.zeros((S, S), np.float32)
        self.lung = np.zeros((S, S), bool)
        self.heart = np.zeros((S, S), bool)
        self.body = np.zeros((S, S), bool)
        self.rho: dict[int, tuple[tuple[slice, slice], np.ndarray]] = {}
        self.thorax: tuple[slice, slice] | None = None
        self.sides: dict[str, int] = {}  # the side a one-sided finding was drawn on

    def blob(self, x0: float, y0: float, sigma: float, amp: float, aspect: float = 1.0) -> None:
        """Add an anti-aliased Gaussian blob of density ``amp`` at (x0, y0)."""
        cv = self.cv
        sig, f = aa_gauss(sigma, cv.pix)
        ext = 3.2 * sig
        win = cv.window(x0 - ext, x0 + ext, y0 - ext * aspect, y0 + ext * aspect)
        if win is None:
            return
        r2 = ((cv.X[win] - x0) ** 2 + ((cv.Y[win] - y0) / aspect) ** 2) / (sig * sig)
        self.D[win] += amp * f * np.exp(-r2)

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
