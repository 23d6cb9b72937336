"""Attention-guided two-branch model, AG-CNN (Guan et al. 2018, arXiv:1801.09927).

* Global branch: backbone + head + classifier on the whole image.
* Attention-guided crop: heatmap = max over channels of |C5| of the global branch (the
  paper's choice; ``attention_layer="C4"`` reads the stage before, twice as fine, for inputs
  so small that C5 is a 2 x 2 grid whose cells nearly always all pass), thresholded at ``tau`` times its maximum on C5's own grid (7 x 7 cells
  at 224 px); the box of the largest 8-connected region of cells, in input pixels, is
  cropped from the full-resolution input and resized for the local branch. The paper
  thresholds the map upsampled to the input; a box made of whole cells is a little coarser
  (a cell is 32 px at 224) but is found on the device for the whole batch in a few small
  kernels, with no copy to the host, no per-image loop and no shape that changes from
  batch to batch, so a compiled step keeps one graph. The box is chosen without gradients
  (a mask has none), but the crop is one ``affine_grid``/``grid_sample`` for the batch,
  sampling exactly what a bilinear resize of the sliced box would, so gradients flow
  through the cropped pixels into the local branch (and into the input, if it asks).
* Local branch: its own backbone + head + classifier on the crop.
* Fusion branch: a linear layer over the concatenated pooled features of both branches.

Trained in stages as in the paper: ``global`` (global branch only), ``local`` (global fixed),
``fusion`` (global and local fixed). ``set_stage`` freezes the other parts (their parameters
stop requiring gradients and their BatchNorm/dropout stay in eval mode) and chooses which
logits ``forward`` returns. The stage is saved in the state dict (buffer ``stage_index``),
so a checkpoint loaded after training answers with the stage it was saved in.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from cxrlib.models.base import BaseModel, Branch
from cxrlib.models.errors import ModelError
from cxrlib.models.heads import Classifier
from cxrlib.models.registry import BackboneSpec, register_wrapper

STAGES = ("global", "local", "fusion")
ATTENTION_LAYERS = ("C5", "C4")  # the global branch's last feature map (the paper's), then the one before
PAPER_TAU = 0.7  # Guan et al.'s threshold, a fraction of the heatmap's maximum


def largest_region_boxes(maps: torch.Tensor, tau: float) -> torch.Tensor:
    """``[B, 4]`` long ``(x0, y0, x1, y1)`` (end exclusive, in cells) of the largest 8-connected
    region where ``maps[b] >= tau * max(maps[b])``, for ``maps`` ``[B, h, w]``, on their device;
    the whole map when it is flat-zero or not finite.

    Connected components by label propagation: each cell above the threshold starts with its
    own number and takes the largest number among its 8 neighbours, ``h * w`` times (the
    longest path a region can have), so every region ends up carrying one number with no
    data-dependent loop, hence no host sync.
    """
    b, h, w = maps.shape
    m = maps.detach().float()
    peak = m.flatten(1).amax(1)
    mask = m >= tau * peak[:, None, None]  # a NaN peak gives no cell: the whole map below
    labels = torch.arange(1, h * w + 1, device=m.device, dtype=torch.float32).view(1, 1, h, w) * mask[:, None]
    for _ in range(h * w):
        labels = F.max_pool2d(labels, 3, stride=1, padding=1) * mask[:, None]
    labels = labels[:, 0].long()
    counts = torch.zeros(b, h * w + 1, device=m.device).scatter_add_(
        1, labels.flatten(1), torch.ones(b, h * w, device=m.device))
    counts[:, 0] = 0  # the background is no region
    largest = counts.argmax(1)  # 0 when there is no region: the background, i.e. the whole map
    keep = (labels == largest[:, None, None]) | (largest == 0)[:, None, None]
    rows, cols = keep.any(2), keep.any(1)

    def span(hit: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = hit.int().argmax(1)
        last = n - hit.flip(1).int().argmax(1)
        return first, last

    y0, y1 = span(rows, h)
    x0, x1 = span(cols, w)
    return torch.stack([x0, y0, x1, y1], 1)


def _restore_stage(module: "TwoStageModel", _incompatible_keys) -> None:
    """After load_state_dict: apply the stage the weights were saved in (a module-level
    function, not a lambda, so the model stays picklable)."""
    module.set_stage(STAGES[int(module.stage_index)])


@register_wrapper("two_stage")
class TwoStageModel(BaseModel):
    """Options: ``tau`` (threshold, fraction of the heatmap's max; paper: 0.7), ``attention_layer``
    (the global branch's feature map the heatmap is read from: "C5", its last, as in the paper,
    or "C4", the one before at half the stride), ``global_size``
    (side the global branch sees; None = the input as given), ``local_size`` (side the crop is
    resized to; None = the global branch's side), ``drop_rate``."""

    stages = STAGES

    def __init__(self, spec: BackboneSpec, head: str = "gap", head_options: dict[str, Any] | None = None,
                 num_classes: int = 14, in_chans: int = 1, pretrained: bool = False, weights_path=None,
                 tau: float = PAPER_TAU, attention_layer: str = ATTENTION_LAYERS[0], global_size: int | None = None,
                 local_size: int | None = None, drop_rate: float = 0.0):
        super().__init__()
        head_options = dict(head_options or {})
        if not 0.0 < tau <= 1.0:
            raise ModelError(f"tau must be in (0, 1] (a fraction of the heatmap's maximum; paper: 0.7), got {tau!r}")
        if attention_layer not in ATTENTION_LAYERS:
            raise ModelError(f"attention_layer must be one of {', '.join(ATTENTION_LAYERS)} (the global branch's "
                             f"last feature map, C5, as in the paper, or the one before), got {attention_layer!r}")
        for key, side in (("global_size", global_size), ("local_size", local_size)):
            if side is not None and side < spec.min_input_size:
                raise ModelError(f"{key}={side} is below {spec.name}'s minimum input of {spec.min_input_size} px")
        self.tau = float(tau)
        self.attention_layer = attention_layer
        self._attention_index = -1 - ATTENTION_LAYERS.index(attention_layer)  # C5: feats[-1], C4: feats[-2]
        self.global_size = global_size
        self.local_size = local_size
        self.in_chans = in_chans
        self.min_input_size = spec.min_input_size if global_size is None else 8
        args = (spec, head, head_options, in_chans, pretrained, weights_path)
        self.global_branch = Branch(*args)
        self.global_classifier = Classifier(self.global_branch.out_channels, num_classes, drop_rate)
        self.local_branch = Branch(*args)
        self.local_classifier = Classifier(self.local_branch.out_channels, num_classes, drop_rate)
        fused = self.global_branch.out_channels + self.local_branch.out_channels
        self.fusion = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(fused, num_classes))
        self.register_buffer("stage_index", torch.tensor(0, dtype=torch.long))
        self.register_load_state_dict_post_hook(_restore_stage)
        self.stage = "global"
        self.set_stage("global")
        self.info = self._make_info(
            spec, head, "two_stage", num_classes, in_chans, fused, pretrained, weights_path,
            f"two_stage: the global branch's CAM layer ({self.global_branch.cam_reason()}); it sees the whole "
            "image (the local branch only the crop) and its features also choose the crop",
            {**head_options, "tau": tau, "attention_layer": attention_layer, "global_size": global_size, "local_size": local_size, "drop_rate": drop_rate},
        )

    # --- stages ---

    def _parts(self) -> dict[str, list[nn.Module]]:
        return {
            "global": [self.global_branch, self.global_classifier],
            "local": [self.local_branch, self.local_classifier],
            "fusion": [self.fusion],
        }

    def set_stage(self, stage: str) -> None:
        """Train only ``stage``'s part (paper: global; then local with global fixed; then fusion
        with both fixed) and make ``forward`` return that part's logits."""
        if stage not in STAGES:
            raise ModelError(f"unknown stage {stage!r}: stages are {', '.join(STAGES)}")
        self.stage = stage
        self.stage_index.fill_(STAGES.index(stage))
        for name, modules in self._parts().items():
            for module in modules:
                module.requires_grad_(name == stage)
        self.train(self.training)

    def train(self, mode: bool = True) -> "TwoStageModel":
        super().train(mode)
        if mode and hasattr(self, "stage"):
            # A fixed part keeps its BatchNorm statistics and runs without dropout.
            for name, modules in self._parts().items():
                if name != self.stage:
                    for module in modules:
                        module.eval()
        return self

    # --- attention-guided crop ---

    def _global_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_size is None or tuple(x.shape[-2:]) == (self.global_size, self.global_size):
            return x
        return F.interpolate(x, size=(self.global_size, self.global_size), mode="bilinear",
                             align_corners=False, antialias=True)

    def attention_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The global branch's feature map the attention is read from (``attention_layer``)."""
        return feats[self._attention_index]

    def heatmap(self, c5: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Max over channels of |C5| (or of the ``attention_layer`` given), each cell enlarged to
        its pixels of ``size`` (nearest, so a figure shows the very cells the box is built from):
        ``[B, H, W]``, no gradient."""
        with torch.no_grad():
            h = c5.detach().abs().amax(dim=1, keepdim=True).float()
            return F.interpolate(h, size=size, mode="nearest")[:, 0]

    def boxes_from_cam(self, c5: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``[B, 4]`` long ``(x0, y0, x1, y1)``, end exclusive, in pixels of an input of ``size``:
        the largest region of C5's grid above ``tau`` (:func:`largest_region_boxes`), on C5's device."""
        with torch.no_grad():
            cells = largest_region_boxes(c5.detach().abs().amax(dim=1), self.tau)
            (gh, gw), (hh, ww) = c5.shape[-2:], size
            scale = torch.tensor([ww, hh, ww, hh], device=cells.device)
            grid = torch.tensor([gw, gh, gw, gh], device=cells.device)
            # pixel p belongs to cell floor(p * cells / pixels), as nearest upsampling assigns it:
            # cell c spans pixels ceil(c * pixels / cells) .. ceil((c + 1) * pixels / cells) - 1
            lo = -((-cells[:, :2] * scale[:2]) // grid[:2])
            hi = -((-cells[:, 2:] * scale[2:]) // grid[2:])
            return torch.cat([lo, hi], 1)

    def crop(self, x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Each box of ``x`` resized to ``size``, for the whole batch in one ``grid_sample``.

        Samples where ``F.interpolate(x[..., y0:y1, x0:x1], size, bilinear)`` would (sample
        points clamped to the box's first and last pixel centres, as that resize clamps
        them), so no pixel outside the box is read. Differentiable in ``x``.
        """
        n, _, hh, ww = x.shape
        b = boxes.to(device=x.device, dtype=torch.float32)
        x0, y0, x1, y1 = b.unbind(1)
        zero = torch.zeros_like(x0)
        # output -> input in affine_grid's [-1, 1] coordinates (align_corners=False): a box of
        # pw pixels starting at x0 spans scale pw/W around centre (x0 + x1)/W - 1
        theta = torch.stack([torch.stack([(x1 - x0) / ww, zero, (x0 + x1) / ww - 1], 1),
                             torch.stack([zero, (y1 - y0) / hh, (y0 + y1) / hh - 1], 1)], 1)
        grid = F.affine_grid(theta, [n, x.shape[1], *size], align_corners=False)
        lo = torch.stack([(2 * x0 + 1) / ww - 1, (2 * y0 + 1) / hh - 1], 1)[:, None, None]  # first pixel centres
        hi = torch.stack([(2 * x1 - 1) / ww - 1, (2 * y1 - 1) / hh - 1], 1)[:, None, None]  # last pixel centres
        grid = torch.maximum(torch.minimum(grid, hi), lo)
        return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)

    @torch.no_grad()
    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For notebooks: the normalised heatmap ``[B, H, W]`` in [0, 1] and the crop boxes."""
        self.check_input(x)
        feats, _ = self.global_branch.forward_all(self._global_input(x))
        chosen = self.attention_features(feats)
        heat = self.heatmap(chosen, tuple(x.shape[-2:]))
        boxes = self.boxes_from_cam(chosen, tuple(x.shape[-2:]))
        peak = heat.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        return heat / peak, boxes

    # --- forward ---

    def _run(self, part: str, fn, *args):
        # A fixed part needs no graph while training; in eval with gradients on (Grad-CAM)
        # it runs normally so hooks on it still see gradients.
        if part != self.stage and self.training:
            with torch.no_grad():
                return fn(*args)
        return fn(*args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if not self.training and torch.is_grad_enabled() and not x.requires_grad:
            # Every parameter of a fixed part is frozen, so without this nothing before the
            # fusion layer would require gradients and Grad-CAM's hooks would see none.
            x = x.detach().requires_grad_(True)
        xg = self._global_input(x)
        feats, gmap = self._run("global", self.global_branch.forward_all, xg)
        if self.stage == "global":
            return self.global_classifier(gmap)
        boxes = self.boxes_from_cam(self.attention_features(feats), tuple(x.shape[-2:]))
        side = self.local_size or xg.shape[-1]
        lmap = self._run("local", lambda: self.local_branch(self.crop(x, boxes, (side, side))))
        if self.stage == "local":
            return self.local_classifier(lmap)
        pooled = torch.cat([Classifier.pool(gmap), Classifier.pool(lmap)], dim=1)
        return self.fusion(pooled)

    def cam_layers(self) -> list[nn.Module]:
        return [self.global_branch.cam_layer()]
