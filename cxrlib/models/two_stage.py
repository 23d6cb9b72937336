"""Attention-guided two-branch model, AG-CNN (Guan et al. 2018, arXiv:1801.09927).

* Global branch: backbone + head + classifier on the whole image.
* Attention-guided crop: heatmap = max over channels of |C5| of the global branch (the
  paper's choice), upsampled to the input, thresholded at ``tau`` times its maximum; the
  bounding box of the largest connected region is cropped from the full-resolution input
  and resized for the local branch. The box is chosen without gradients (a mask has none),
  but the crop itself is slicing + ``F.interpolate``, so gradients flow through the cropped
  pixels into the local branch (and into the input, if it asks for them).
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

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage

from cxrlib.models.base import BaseModel, Branch
from cxrlib.models.errors import ModelError
from cxrlib.models.heads import Classifier
from cxrlib.models.registry import BackboneSpec, register_wrapper

STAGES = ("global", "local", "fusion")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def largest_region_box(heatmap: np.ndarray, tau: float) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (end exclusive) of the largest 8-connected region where
    ``heatmap >= tau * max``; the whole image when the map is flat or not finite."""
    h, w = heatmap.shape
    peak = float(np.max(heatmap)) if heatmap.size else 0.0
    if not np.isfinite(peak):
        return 0, 0, w, h
    labels, n = ndimage.label(heatmap >= tau * peak, structure=_EIGHT_CONNECTED)
    if n == 0:
        return 0, 0, w, h
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    ys, xs = ndimage.find_objects(labels)[largest - 1]
    return xs.start, ys.start, xs.stop, ys.stop


def _restore_stage(module: "TwoStageModel", _incompatible_keys) -> None:
    """After load_state_dict: apply the stage the weights were saved in (a module-level
    function, not a lambda, so the model stays picklable)."""
    module.set_stage(STAGES[int(module.stage_index)])


@register_wrapper("two_stage")
class TwoStageModel(BaseModel):
    """Options: ``tau`` (threshold, fraction of the heatmap's max; paper: 0.7), ``global_size``
    (side the global branch sees; None = the input as given), ``local_size`` (side the crop is
    resized to; None = the global branch's side), ``drop_rate``."""

    stages = STAGES

    def __init__(self, spec: BackboneSpec, head: str = "gap", head_options: dict[str, Any] | None = None,
                 num_classes: int = 14, in_chans: int = 1, pretrained: bool = False, weights_path=None,
                 tau: float = 0.7, global_size: int | None = None, local_size: int | None = None,
                 drop_rate: float = 0.0):
        super().__init__()
        head_options = dict(head_options or {})
        if not 0.0 < tau <= 1.0:
            raise ModelError(f"tau must be in (0, 1] (a fraction of the heatmap's maximum; paper: 0.7), got {tau!r}")
        for key, side in (("global_size", global_size), ("local_size", local_size)):
            if side is not None and side < spec.min_input_size:
                raise ModelError(f"{key}={side} is below {spec.name}'s minimum input of {spec.min_input_size} px")
        self.tau = float(tau)
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
            {**head_options, "tau": tau, "global_size": global_size, "local_size": local_size, "drop_rate": drop_rate},
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

    def heatmap(self, c5: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Max over channels of |C5|, upsampled to ``size``: ``[B, H, W]`` (no gradient)."""
        with torch.no_grad():
            h = c5.detach().abs().amax(dim=1, keepdim=True).float()
            return F.interpolate(h, size=size, mode="bilinear", align_corners=False)[:, 0]

    def boxes_from_heatmap(self, heatmap: torch.Tensor) -> torch.Tensor:
        """``[B, 4]`` long ``(x0, y0, x1, y1)``, end exclusive, in the heatmap's pixels."""
        maps = heatmap.detach().cpu().numpy()
        return torch.tensor([largest_region_box(m, self.tau) for m in maps], dtype=torch.long)

    def crop(self, x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Crop each box from ``x`` and resize to ``size``; differentiable in ``x``."""
        crops = []
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            patch = x[i : i + 1, :, y0:y1, x0:x1]
            crops.append(F.interpolate(patch, size=size, mode="bilinear", align_corners=False))
        return torch.cat(crops, dim=0)

    @torch.no_grad()
    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For notebooks: the normalised heatmap ``[B, H, W]`` in [0, 1] and the crop boxes."""
        self.check_input(x)
        feats, _ = self.global_branch.forward_all(self._global_input(x))
        heat = self.heatmap(feats[-1], tuple(x.shape[-2:]))
        boxes = self.boxes_from_heatmap(heat)
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
        boxes = self.boxes_from_heatmap(self.heatmap(feats[-1], tuple(x.shape[-2:])))
        side = self.local_size or xg.shape[-1]
        lmap = self._run("local", lambda: self.local_branch(self.crop(x, boxes, (side, side))))
        if self.stage == "local":
            return self.local_classifier(lmap)
        pooled = torch.cat([Classifier.pool(gmap), Classifier.pool(lmap)], dim=1)
        return self.fusion(pooled)

    def cam_layers(self) -> list[nn.Module]:
        return [self.global_branch.cam_layer()]
