"""Multi-scale input, ICNet-style (Zhao et al. 2018): detail from full resolution, context from low.

The full-resolution image goes through a shallow branch (three stride-2 3x3 convs, as ICNet's
full-resolution branch) that keeps spatial detail at stride 8; a downsampled copy goes
through the deep backbone and head. The deep map is resized to the shallow branch's grid,
the two are concatenated and fused by a 1x1 conv, then pooled and classified. The deep
branch costs ``low_res**2`` of a full-resolution pass, the shallow one almost nothing.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from cxrlib.models.base import BaseModel, Branch
from cxrlib.models.errors import ModelError
from cxrlib.models.heads import Classifier, conv_bn_relu
from cxrlib.models.registry import BackboneSpec, register_wrapper
from cxrlib.models.resize import resize_bilinear


@register_wrapper("multiscale")
class MultiScaleModel(BaseModel):
    """Options: ``low_res`` (fraction of the input side for the deep branch, e.g. 0.5, or a side
    in pixels, e.g. 112), ``shallow_channels`` (widths of the three stride-2 convs),
    ``fused_channels``, ``drop_rate``."""

    def __init__(self, spec: BackboneSpec, head: str = "gap", head_options: dict[str, Any] | None = None,
                 num_classes: int = 14, in_chans: int = 1, pretrained: bool = False, weights_path=None,
                 low_res: float | int = 0.5, shallow_channels: tuple[int, int, int] = (32, 32, 64),
                 fused_channels: int = 256, drop_rate: float = 0.0):
        super().__init__()
        head_options = dict(head_options or {})
        if isinstance(low_res, bool) or not isinstance(low_res, (int, float)) or low_res <= 0 or (
            isinstance(low_res, float) and low_res > 1
        ):
            raise ModelError(f"low_res must be a fraction in (0, 1] (e.g. 0.5) or a side in pixels (e.g. 112), got {low_res!r}")
        if isinstance(low_res, int) and low_res == 1:
            low_res = 1.0  # "1" means full resolution, not a 1-pixel image
        if len(shallow_channels) != 3:
            raise ModelError(f"shallow_channels must be three widths (one per stride-2 conv), got {shallow_channels!r}")
        self.low_res = low_res
        self.in_chans = in_chans
        if isinstance(low_res, float):
            self.min_input_size = math.ceil(spec.min_input_size / low_res)
        else:
            if low_res < spec.min_input_size:
                raise ModelError(f"low_res={low_res} px is below {spec.name}'s minimum input of {spec.min_input_size} px")
            self.min_input_size = 8
        widths = (in_chans, *shallow_channels)
        self.shallow = nn.Sequential(*(conv_bn_relu(widths[i], widths[i + 1], 3, stride=2) for i in range(3)))
        self.deep = Branch(spec, head, head_options, in_chans, pretrained, weights_path)
        self.fuse = conv_bn_relu(shallow_channels[-1] + self.deep.out_channels, fused_channels, k=1)
        self.classifier = Classifier(fused_channels, num_classes, drop_rate)
        self.info = self._make_info(
            spec, head, "multiscale", num_classes, in_chans, fused_channels, pretrained, weights_path,
            "multiscale: `fuse`, the 1x1 conv over the shallow full-resolution map and the upsampled deep map; "
            "the classifier pools only it, and it has the shallow branch's stride-8 grid",
            {**head_options, "low_res": low_res, "shallow_channels": tuple(shallow_channels),
             "fused_channels": fused_channels, "drop_rate": drop_rate},
        )

    def low_size(self, h: int, w: int) -> tuple[int, int]:
        if isinstance(self.low_res, float):
            return max(1, round(h * self.low_res)), max(1, round(w * self.low_res))
        scale = self.low_res / min(h, w)  # an int is the shorter side in pixels
        return max(1, round(h * scale)), max(1, round(w * scale))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        detail = self.shallow(x)
        size = self.low_size(*x.shape[-2:])
        low = x if tuple(size) == tuple(x.shape[-2:]) else F.interpolate(
            x, size=size, mode="bilinear", align_corners=False, antialias=True
        )
        context = self.deep(low)
        context = resize_bilinear(context, detail.shape[-2:])  # deterministic backward when asked
        return self.fuse(torch.cat([detail, context], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))

    def cam_layers(self) -> list[nn.Module]:
        return [self.fuse]
