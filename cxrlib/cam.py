"""Class activation heatmaps for every cxrlib model, and overlays on the full-resolution image.

The weighting of activations and gradients comes from pytorch-grad-cam (``CAM_METHODS``):
each method class's own ``get_cam_image`` turns a target layer's activations and the
gradients of a class score into a map. What this module adds is what a multi-label chest
X-ray model needs around it:

* **One forward pass for all findings.** The library runs one forward *and a full backward
  through the whole network* per call, so 14 findings cost 14 passes. Here the target-layer
  activations are captured once, and the gradient of each class score is taken with
  ``torch.autograd.grad`` with respect to those activations only, so each extra finding
  costs a backward through the head (pooling + classifier), not through the backbone.
* **One target per image** in a batch (a ``ClassifierOutputTarget`` each): a multi-label
  batch asks a different finding of each image.
* **Robust capture.** Activations are captured by a forward hook that hands the rest of the
  network a clone: an in-place op after the target layer (torchvision's DenseNet applies
  ``F.relu(features, inplace=True)`` right after ``features``, which breaks backward hooks)
  then changes the clone, never the captured tensor. The model is put in eval mode (batch
  norm uses running statistics, so images in a batch do not mix) and gradients are enabled
  even when the caller runs under ``torch.no_grad()``; a frozen backbone works too.
* **Clean maps.** ReLU, bilinear upsampling to the input size, min-max normalisation to
  [0, 1] per map; a flat map (no positive evidence) becomes all zeros, never NaN.

Which layer each model family uses comes from ``cxrlib.models.cam_target_layers(model)``
(``model.info.cam_layer`` names it, ``model.info.cam_reason`` says why). The rule is
Grad-CAM's: the last feature map the classifier pools, the most class-specific layer that
still has a spatial grid:

* ``gap`` head (the plain backbones): the backbone's last stage (C5, stride 32).
  ResNet-18/50 ``layer4``; DenseNet-121 ``features.norm5`` (timm's BatchNormAct2d applies
  the final ReLU inside the module, so nothing modifies its output in place; torchvision's
  DenseNet applies ``F.relu(features, inplace=True)`` after ``features``, which the clone
  in the capture hook makes harmless); Inception-v3 ``Mixed_7c``; NASNet its final ``act``.
* ``fpn`` head: ``head.fuse``, the three smoothed pyramid levels on the stride-8 grid:
  every path to the logits passes through it, at the finest resolution.
* ``psp`` head: ``head.fuse``, the 3x3 conv over C5 and the upsampled bins, the only input
  of the classifier.
* ``multiscale`` wrapper: ``fuse``, the 1x1 conv over the shallow full-resolution map and
  the upsampled deep map (stride 8), the only map the classifier pools.
* ``two_stage`` wrapper: the global branch's layer (as above for its head): it sees the
  whole image (the local branch only a crop, whose map would not align with the image).

Several target layers (or a layer called several times in one forward) give one map each,
averaged after upsampling to the input size, as pytorch-grad-cam aggregates target layers.

A model from outside the registry works when ``target_layers=[...]`` is passed.

Scores are logits (before the sigmoid): the sigmoid is monotonic, and its gradient
vanishes for confident predictions, which would flatten exactly the clearest heatmaps.

The overlay (heatmap resized to the full image, blended, ground truth on top) is
:mod:`cxrlib.overlay`'s, the same picture the demo shows: :func:`overlay` and
:func:`overlay_grid` put it in matplotlib figures, and ``resize_heatmap`` here is that
module's.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlib.labels import FINDINGS, canonical, finding_index
from cxrlib.models import cam_target_layers
from cxrlib.overlay import DEFAULT_ALPHA, DEFAULT_CMAP, box_xywh, render, resize_heatmap

from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, RandomCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


class CenterCAM(BaseCAM):
    """Score-free baseline: a Gaussian centred on the image (sigma = a quarter of the side).

    Findings in chest X-rays cluster in the middle of the lung fields, so "always point at
    the centre" is the baseline a heatmap has to beat before it means anything (the centre
    baseline of the pointing game, Zhang et al. 2016).
    """

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], reshape_transform=None):
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth=False):
        # Drawn at the input's resolution: on a coarse grid (2x2 at 64 px) a centred blob is flat.
        h, w = input_tensor.shape[-2:]
        ys = (np.arange(h) + 0.5) / h - 0.5
        xs = (np.arange(w) + 0.5) / w - 0.5
        blob = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * 0.25**2)).astype(np.float32)
        return np.repeat(blob[None], activations.shape[0], axis=0)


# Names users pass as ``method=``. Gradient methods answer "where is the evidence for this
# finding"; eigencam (first principal component of the activations), randomcam (random
# channel weights; draws from NumPy's global generator, so seed it with cxrlib.seed.set_seed)
# and center ignore the class, and serve as baselines for the localization scores.
CAM_METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "randomcam": RandomCAM,
    "center": CenterCAM,
}
SCORE_FREE_METHODS: frozenset[str] = frozenset({"eigencam", "randomcam", "center"})
_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "grad-cam": "gradcam", "random": "randomcam"}


def method_class(method: str) -> type[BaseCAM]:
    """The pytorch-grad-cam class behind a method name (case-insensitive; see CAM_METHODS)."""
    key = str(method).lower().replace("_", "")
    key = _ALIASES.get(key, key)
    if key not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}: expected one of {', '.join(CAM_METHODS)}")
    return CAM_METHODS[key]


def resolve_target_layers(model: nn.Module, target_layers: Sequence[nn.Module] | None = None) -> list[nn.Module]:
    """The layers to explain: ``target_layers`` when given, else the model registry's choice."""
    if target_layers is not None:
        layers = list(target_layers)
    else:
        layers = list(cam_target_layers(model))
    if not layers or not all(isinstance(layer, nn.Module) for layer in layers):
        raise ValueError(f"target_layers must be a non-empty list of nn.Module, got {layers!r}")
    return layers


@contextlib.contextmanager
def _capture(layers: Sequence[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Record each target layer's output during a forward pass (one entry per call)."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise ValueError(
                f"Grad-CAM target layer {type(module).__name__} must output a [B,C,h,w] tensor, "
                f"got {type(output).__name__}{tuple(output.shape) if isinstance(output, torch.Tensor) else ''}; "
                "choose a convolutional layer (see cxrlib.models.cam_target_layers)"
            )
        if not output.requires_grad:  # frozen backbone: start the graph here instead
            output = output.detach().requires_grad_(True)
        captured.append(output)
        # The network continues on a clone, so an in-place op downstream (DenseNet's ReLU)
        # cannot overwrite the activations we differentiate against.
        return output.clone()

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _explaining(model: nn.Module) -> Iterator[None]:
    """Eval mode and gradients on for the duration; the caller's train/eval state is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        model.train(was_training)


def _forward(model: nn.Module, x: torch.Tensor, layers: Sequence[nn.Module]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with _capture(layers) as captured:
        logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(
            f"{type(model).__name__} must return logits [B,K] for a Grad-CAM; got "
            f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}"
        )
    if not captured:
        raise ValueError(
            f"no target layer of {type(model).__name__} ran during the forward pass: the layers "
            "passed (or returned by cxrlib.models.cam_target_layers) are not used by this model"
        )
    return logits, captured


def _grads(score: torch.Tensor, activations: list[torch.Tensor]) -> list[torch.Tensor]:
    """d score / d activations, backpropagating only between the score and the activations."""
    grads = torch.autograd.grad(score, activations, retain_graph=True, allow_unused=True)
    # A layer the score does not depend on (e.g. one branch of a staged model) contributes 0.
    return [torch.zeros_like(a) if g is None else g for a, g in zip(activations, grads)]


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max each [h,w] map of [N,h,w] into [0,1]; flat or non-finite maps become zeros."""
    maps = torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    span = flat.max(dim=1).values[:, None, None] - lo
    # Relative test: float round-off on a constant map must not be stretched into a pattern.
    ok = (span > 0) & (span > 1e-6 * flat.abs().max(dim=1).values[:, None, None])
    return torch.where(ok, (maps - lo) / torch.where(ok, span, torch.ones_like(span)), torch.zeros_like(maps))


def _to_maps(
    cam: BaseCAM,
    x: torch.Tensor,
    layers: Sequence[nn.Module],
    activations: list[torch.Tensor],
    grads: list[torch.Tensor] | None,
    targets: list[ClassifierOutputTarget],
    repeat: int = 1,
) -> np.ndarray:
    """Weight activations by the method's own rule, ReLU, upsample, normalise, average layers.

    ``repeat`` > 1 pairs one image's activations with ``repeat`` gradient sets (all findings).
    """
    raw_maps = []
    for i, act in enumerate(activations):
        act_np = act.detach().float().cpu().numpy()
        if repeat > 1:
            act_np = np.repeat(act_np, repeat, axis=0)
        grad_np = None if grads is None else grads[i].detach().float().cpu().numpy()
        if grad_np is None:  # score-free: the library's get_cam_image never reads it
            grad_np = np.zeros_like(act_np)
        layer = layers[min(i, len(layers) - 1)]
        raw_maps.append(cam.get_cam_image(x, layer, targets, act_np, grad_np, False))
    return upsample_maps(raw_maps, tuple(x.shape[-2:]))


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """The model with every learned weight drawn again from its layer's own initialisation.

    The model-randomisation sanity check of Adebayo et al. (2018, "Sanity checks for saliency
    maps"): the same architecture and target layers, nothing learned. Heatmaps of the trained
    model that score no better against the ground truth than this copy's show the
    architecture (where its features are active), not what training taught it. The original
    is left untouched; the global random state is restored afterwards.
    """
    import copy

    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reset = 0
        for module in clone.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                reset += 1
    if not reset:
        raise ValueError(f"{type(model).__name__} has no layer with reset_parameters(): nothing to randomise")
    return clone.eval()


def upsample_maps(maps: np.ndarray | Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Maps on a layer's grid ``[N,h,w]`` to input-size heatmaps ``[N,H,W]`` in [0, 1].

    The one path every CAM map takes (and the random maps that measure its chance level):
    ReLU, min-max, bilinear upsampling, min-max; a sequence holds one array per target
    layer, averaged after upsampling and normalised again.
    """
    per_layer = []
    for raw in [maps] if isinstance(maps, np.ndarray) else list(maps):
        m = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
        m = _normalise(torch.relu(torch.nan_to_num(m)))
        m = F.interpolate(m[:, None], size=tuple(int(v) for v in size), mode="bilinear", align_corners=False)[:, 0]
        per_layer.append(_normalise(m))
    return _normalise(torch.stack(per_layer).mean(dim=0)).numpy().astype(np.float32)


def target_grids(model: nn.Module, image: torch.Tensor,
                 target_layers: Sequence[nn.Module] | None = None) -> list[tuple[int, int]]:
    """The grid ``(h, w)`` of each target-layer activation for one image ``[C,H,W]``.

    What a heatmap of this model is upsampled from: 7x7 for a ResNet's last stage at
    224 px, 28x28 for the FPN head's fused layer.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValueError(f"image must be a tensor [C,H,W], got {getattr(image, 'shape', type(image).__name__)}")
    x = _check_images(image[None], model)
    layers = resolve_target_layers(model, target_layers)
    with _explaining(model), torch.no_grad():
        _, acts = _forward(model, x, layers)
    return [(int(a.shape[-2]), int(a.shape[-1])) for a in acts]


def _method_instance(model: nn.Module, layers: list[nn.Module], method: str) -> BaseCAM:
    cam = method_class(method)(model, layers)
    # Only the method's weighting is used; its own hooks would duplicate our capture.
    cam.activations_and_grads.release()
    return cam


def _check_images(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(
            f"images must be a float tensor [B,C,H,W] (see cxrlib.data.datasets.preprocess), got "
            f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}"
        )
    param = next(model.parameters(), None)
    if param is not None:
        images = images.to(device=param.device, dtype=param.dtype)
    return images.detach()


def _class_index(c: int | str, num_classes: int) -> int:
    k = finding_index(c) if isinstance(c, str) else int(c)
    if not 0 <= k < num_classes:
        raise ValueError(f"class index {c!r} out of range for a model with {num_classes} outputs")
    return k


def heatmaps(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int | str] | int | str,
    method: str = "gradcam",
    target_layers: Sequence[nn.Module] | None = None,
) -> np.ndarray:
    """Heatmaps for a batch, one finding per image: float32 ``[B,H,W]`` in [0, 1].

    ``classes`` holds one class index (or finding name) per image; a single value applies to
    every image. One forward pass and one backward through the head serve the whole batch:
    images do not interact in eval mode, so the gradient of the summed per-image scores
    with respect to image b's activations is the gradient of image b's own score.
    """
    images = _check_images(images, model)
    if isinstance(classes, (int, str, np.integer)):
        classes = [classes] * images.shape[0]
    classes = list(classes)
    if len(classes) != images.shape[0]:
        raise ValueError(f"classes has {len(classes)} entries for {images.shape[0]} images: give one per image")
    layers = resolve_target_layers(model, target_layers)
    with _explaining(model):  # first: the library's constructor switches the model to eval
        cam = _method_instance(model, layers, method)
        logits, acts = _forward(model, images, layers)
        idx = [_class_index(c, logits.shape[1]) for c in classes]
        targets = [ClassifierOutputTarget(k) for k in idx]
        grads = None
        if cam.uses_gradients:
            score = sum(t(out) for t, out in zip(targets, logits))
            grads = _grads(score, acts)
        return _to_maps(cam, images, layers, acts, grads, targets)


def heatmap(
    model: nn.Module,
    image: torch.Tensor,
    finding: int | str,
    method: str = "gradcam",
    target_layers: Sequence[nn.Module] | None = None,
) -> np.ndarray:
    """One image ``[C,H,W]``, one finding (index or name): float32 ``[H,W]`` in [0, 1]."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValueError(f"image must be a tensor [C,H,W], got {getattr(image, 'shape', type(image).__name__)}")
    return heatmaps(model, image[None], [finding], method, target_layers)[0]


def heatmaps_all_findings(
    model: nn.Module,
    image: torch.Tensor,
    method: str = "gradcam",
    target_layers: Sequence[nn.Module] | None = None,
    classes: Sequence[int | str] | None = None,
) -> np.ndarray:
    """Every output's heatmap for one image ``[C,H,W]``: float32 ``[K,H,W]`` in [0, 1].

    One forward pass; then per class one ``autograd.grad`` from that logit to the captured
    activations (the graph is kept between them), so the backbone runs once, not K times.
    ``classes`` restricts the maps to some outputs (default: all K, in output order).
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValueError(f"image must be a tensor [C,H,W], got {getattr(image, 'shape', type(image).__name__)}")
    x = _check_images(image[None], model)
    layers = resolve_target_layers(model, target_layers)
    with _explaining(model):
        cam = _method_instance(model, layers, method)
        logits, acts = _forward(model, x, layers)
        num = logits.shape[1]
        idx = list(range(num)) if classes is None else [_class_index(c, num) for c in classes]
        targets = [ClassifierOutputTarget(k) for k in idx]
        if not cam.uses_gradients:
            # The map does not depend on the class: compute it once.
            maps = _to_maps(cam, x, layers, acts, None, targets[:1])
            return np.repeat(maps, len(idx), axis=0)
        per_class = [_grads(logits[0, k], acts) for k in idx]
        grads = [torch.cat([g[i] for g in per_class]) for i in range(len(acts))]
        return _to_maps(cam, x, layers, acts, grads, targets, repeat=len(idx))


# ----------------------------------------------------------------------------- overlays
# The picture is cxrlib.overlay's, the same one the demo shows; these only put it in a
# matplotlib figure, with the titles and box labels a figure can add.


def _axes_pixels(ax) -> int:
    """Twice the Axes' longer side in screen pixels: the picture is drawn at about the size it
    is shown (so its box and mask lines keep their width), with room for a sharper export."""
    box = ax.get_window_extent()
    return max(64, round(2 * max(box.width, box.height)))


def overlay(
    full_image_u8: np.ndarray,
    heatmap: np.ndarray,
    boxes: Sequence | None = None,
    ax=None,
    title: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
    masks=None,
):
    """Draw ``heatmap`` over the full-resolution gray image, with the findings' ground truth.

    ``full_image_u8`` is the original image ([H,W] uint8, e.g. ``DataBundle.full_image``),
    not the resized model input; the heatmap (any size) is resized to it. ``boxes`` are Box
    objects (or (x, y, w, h) tuples) in full-image pixels; each is outlined and labelled
    with its finding. ``masks`` (one bool ``[h,w]`` array or several, any resolution) are
    outlined. The Axes keeps full-image pixel coordinates. Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt  # pyplot only for the figures; the picture needs none

    img = np.asarray(full_image_u8)
    if img.ndim != 2:
        raise ValueError(f"full_image_u8 must be a 2-D gray image, got shape {img.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    boxes = list(boxes or [])
    picture = render(img, heatmap, boxes, masks, max_side=_axes_pixels(ax), alpha=alpha, cmap=cmap)
    height, width = img.shape
    ax.imshow(picture, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    for box in boxes:
        label = getattr(box, "finding", None)
        if label:
            x, y, _, _ = box_xywh(box)
            ax.text(x, max(y - 4, 0), str(label), color="lime", fontsize=8, va="bottom")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def overlay_grid(
    full_image_u8: np.ndarray,
    maps: np.ndarray,
    findings: Sequence[str] | None = None,
    boxes: Sequence | None = None,
    probabilities: Sequence[float] | None = None,
    ncols: int = 4,
    alpha: float = DEFAULT_ALPHA,
    panel_size: float = 2.6,
    masks: Sequence | None = None,
):
    """A grid of overlays of one image, one panel per finding; returns the Figure.

    ``maps`` is ``[K,h,w]`` (e.g. from heatmaps_all_findings); ``findings`` names the panels
    (default: the 14 findings in order); a panel draws the boxes whose ``finding`` is its
    own; ``masks`` (optional, length K: a bool mask or None per panel) are outlined in
    their panel; ``probabilities`` (optional, length K) go into the panel titles.
    """
    import matplotlib.pyplot as plt  # pyplot only for the figures; the picture needs none

    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must be [K,h,w], got shape {maps.shape}")
    names = list(findings) if findings is not None else list(FINDINGS[: maps.shape[0]])
    if len(names) != maps.shape[0]:
        raise ValueError(f"{len(names)} finding names for {maps.shape[0]} heatmaps")
    if masks is not None and len(masks) != len(names):
        raise ValueError(f"{len(masks)} masks for {len(names)} heatmaps: give one (or None) per finding")
    ncols = max(1, min(ncols, len(names)))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_axis_off()
            continue
        own = [b for b in boxes or [] if _same_finding(getattr(b, "finding", None), names[i])]
        title = names[i] if probabilities is None else f"{names[i]} {float(probabilities[i]):.2f}"
        overlay(full_image_u8, maps[i], boxes=own, ax=ax, title=title, alpha=alpha,
                masks=None if masks is None else masks[i])
    fig.tight_layout()
    return fig


def _same_finding(a: str | None, b: str) -> bool:
    if a is None:
        return False
    try:
        return canonical(a) == canonical(b)
    except ValueError:
        return a == b


__all__ = [
    "CAM_METHODS",
    "SCORE_FREE_METHODS",
    "CenterCAM",
    "heatmap",
    "heatmaps",
    "heatmaps_all_findings",
    "method_class",
    "overlay",
    "overlay_grid",
    "resize_heatmap",
    "resolve_target_layers",
]
