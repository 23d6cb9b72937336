"""The heatmap overlay: where a model looks, drawn on the full-resolution X-ray.

One picture serves the notebooks (:func:`cxrlib.cam.overlay` shows it in a matplotlib Axes)
and the demo (it is sent to the browser as a JPEG), so both show the same thing:

1. **Resize** (:func:`resize_heatmap`): a model sees the whole image squeezed to a square
   (cxrlib.data.cache.resize_image), so its heatmap maps back onto the image by resizing it
   to the image's own shape, whatever the aspect ratio. Ground-truth masks, which also
   cover the whole image, go through the same resize.
2. **Blend** (:func:`blend`): the gray image and the heatmap through a colour map, as RGB.
   The colour's opacity grows with the heat, from a faint tint to ``alpha``, so the cold
   parts of the radiograph stay readable. A lookup table ``[gray, heat] -> RGB`` makes it
   one indexing per pixel: tens of milliseconds at 1024 px, against a few hundred for a
   matplotlib figure, which matters for a demo that redraws on every click.
3. **Ground truth on top** (:func:`draw_truth`): annotated boxes as rectangles, lesion masks
   (the synthetic phantoms have them) as their outlines, both in :data:`TRUTH_COLOUR`.

:func:`render` does the three steps, optionally capped at ``max_side`` pixels.
"""
from __future__ import annotations

import functools
from typing import Iterable, Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy import ndimage

DEFAULT_ALPHA = 0.5  # the heat's opacity at its hottest
DEFAULT_CMAP = "jet"
FAINT_ALPHA = 0.15  # the opacity of the coldest colour
TRUTH_COLOUR = (0, 255, 0)  # green: jet's hot end is red, its cold end blue


def resize_heatmap(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``[h,w]`` heatmap to ``shape`` (rows, cols), float32 in [0, 1]."""
    h = np.asarray(heatmap, dtype=np.float32)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be 2-D [h,w], got shape {h.shape}")
    shape = tuple(int(s) for s in shape)
    if h.shape == shape:
        return np.clip(h, 0.0, 1.0)
    t = torch.from_numpy(np.ascontiguousarray(h))[None, None]
    out = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0]
    return out.clamp(0, 1).numpy()


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask covering the whole image, resized to ``shape`` like a heatmap.

    Bilinear then thresholded at one half: a 32 px phantom mask drawn on a 512 px image gets
    smooth edges rather than 16-pixel stairs.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"a mask must be 2-D [h,w] (bool), got shape {m.shape}")
    if m.shape == tuple(shape):
        return m.astype(bool)
    return resize_heatmap(m.astype(np.float32), shape) >= 0.5


@functools.lru_cache(maxsize=8)
def _blend_table(alpha: float, cmap: str) -> np.ndarray:
    """``[gray, heat level] -> RGB`` uint8 ``[256, 256, 3]``: every blend computed once."""
    try:
        colours = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255
    except KeyError:
        raise ValueError(f"unknown colour map {cmap!r}: use a matplotlib name such as 'jet' or 'inferno'") from None
    weight = (FAINT_ALPHA + (alpha - FAINT_ALPHA) * np.linspace(0.0, 1.0, 256, dtype=np.float32))[None, :, None]
    gray = np.arange(256, dtype=np.float32)[:, None, None]
    table = gray * (1.0 - weight) + colours.astype(np.float32)[None] * weight
    return np.rint(table).clip(0, 255).astype(np.uint8)


def as_gray_u8(image: np.ndarray) -> np.ndarray:
    """A 2-D image as uint8; other dtypes are stretched from their min to their max."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"the image must be 2-D gray [H,W], got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    img = np.nan_to_num(img.astype(np.float64))
    lo, hi = float(img.min(initial=0.0)), float(img.max(initial=0.0))
    scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return np.rint(scaled * 255).astype(np.uint8)


def blend(image_u8: np.ndarray, heat: np.ndarray, alpha: float = DEFAULT_ALPHA,
          cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """RGB uint8 ``[H,W,3]``: ``heat`` (``[H,W]`` in [0, 1], the image's shape) coloured over the image."""
    image = as_gray_u8(image_u8)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != image.shape:
        raise ValueError(f"heat {heat.shape} must have the image's shape {image.shape}: resize it first "
                         "(resize_heatmap, or render, which does)")
    level = np.rint(np.clip(np.nan_to_num(heat), 0.0, 1.0) * 255).astype(np.uint8)
    return _blend_table(round(float(alpha), 3), cmap)[image, level]


def box_xywh(box) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` in pixels of a Box (anything with x, y, w, h) or a 4-tuple."""
    if all(hasattr(box, a) for a in ("x", "y", "w", "h")):
        return float(box.x), float(box.y), float(box.w), float(box.h)
    try:
        x, y, w, h = box
    except (TypeError, ValueError):
        raise ValueError(f"a box must have x, y, w, h (cxrlib.data Box) or be a tuple (x, y, w, h); got {box!r}") from None
    return float(x), float(y), float(w), float(h)


def _as_masks(masks) -> list[np.ndarray]:
    if masks is None:
        return []
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        return [masks]  # one mask, not a list of rows
    return [np.asarray(m) for m in masks if m is not None]


def line_width(shape: tuple[int, int]) -> int:
    """Outline thickness in pixels for a picture of ``shape``: visible once shown at 512 px."""
    return max(2, round(max(shape[:2]) / 300))


def draw_truth(rgb: np.ndarray, boxes: Iterable = (), masks=None, scale: float = 1.0,
               colour: tuple[int, int, int] = TRUTH_COLOUR) -> np.ndarray:
    """The ground truth drawn on an RGB picture: boxes as rectangles, masks as outlines.

    ``boxes`` are in the pixels of the image the picture was made from; ``scale`` is the
    picture's size over that image's (below 1 when the picture was shrunk). ``masks``
    (one ``[h,w]`` bool array, or several) cover the whole image at any resolution. The
    outline is drawn just inside each mask's edge, as thick as the boxes' lines.
    """
    picture = np.array(rgb, dtype=np.uint8, copy=True)
    if picture.ndim != 3 or picture.shape[2] != 3:
        raise ValueError(f"draw_truth draws on an RGB picture [H,W,3], got shape {picture.shape}")
    line = line_width(picture.shape)
    for mask in _as_masks(masks):
        inside = resize_mask(mask, picture.shape[:2])
        # Pixels outside the picture count as outside the mask: a lesion at the border is closed.
        eroded = ndimage.binary_erosion(inside, structure=np.ones((3, 3), bool), iterations=line, border_value=0)
        picture[inside & ~eroded] = colour
    boxes = list(boxes or ())
    if boxes:
        image = Image.fromarray(picture, mode="RGB")
        draw = ImageDraw.Draw(image)
        for box in boxes:
            x, y, w, h = (v * scale for v in box_xywh(box))
            draw.rectangle([x, y, x + w, y + h], outline=tuple(colour), width=line)
        picture = np.asarray(image)
    return picture


def render(image_u8: np.ndarray, heatmap: np.ndarray, boxes: Sequence = (), masks=None,
           max_side: int | None = None, alpha: float = DEFAULT_ALPHA, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """RGB uint8 picture: the gray image, ``heatmap`` (any size) in colour, the ground truth on top.

    ``image_u8`` is the full-resolution image (not the model's resized input); ``boxes`` are
    in its pixels. With ``max_side`` the picture is shrunk (never enlarged) so that its
    longer side is at most that many pixels; boxes and masks follow.
    """
    image = as_gray_u8(image_u8)
    height, width = image.shape
    scale = 1.0 if not max_side else min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    picture = blend(image, resize_heatmap(heatmap, image.shape), alpha, cmap)
    return draw_truth(picture, boxes, masks, scale)


__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CMAP",
    "TRUTH_COLOUR",
    "as_gray_u8",
    "blend",
    "box_xywh",
    "draw_truth",
    "line_width",
    "render",
    "resize_heatmap",
    "resize_mask",
]
