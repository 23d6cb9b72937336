"""Heads: a feature pyramid ``[C3, C4, C5]`` in, one feature map out; then pooled and classified.

Every head returns a map (not logits) so that wrappers can reuse it: the multi-scale model
fuses the map with its shallow branch, the two-stage model pools the maps of its two
branches. ``Classifier`` (average pool, dropout, linear) turns a map into logits.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cxrlib.models.errors import ModelError
from cxrlib.models.registry import register_head
from cxrlib.models.resize import resize_bilinear


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),  # in place on the BN output, inside the block: the block's output stays intact
    )


class Head(nn.Module):
    """Base: ``forward(feats) -> map [B, out_channels, h, w]``."""

    out_channels: int

    def cam_layer(self) -> nn.Module | None:
        """Module whose output is this head's map; None means the backbone's last stage."""
        return None

    cam_reason: str = ""


@register_head("gap")
class GapHead(Head):
    """CheXNet's baseline: C5 as is (the classifier pools it globally)."""

    cam_reason = "gap head: the classifier pools C5 directly, so the backbone's last stage is the CAM layer"

    def __init__(self, in_channels: tuple[int, int, int]):
        super().__init__()
        self.out_channels = in_channels[-1]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return feats[-1]


@register_head("fpn")
class FPNHead(Head):
    """Feature pyramid network over C3-C5 (Lin et al. 2017), fused for classification.

    Top-down: P5 = lateral(C5); P4 = lateral(C4) + up(P5); P3 = lateral(C3) + up(P4); each
    level smoothed by a 3x3 conv. The three levels are brought to P3's grid (nearest, so for
    the usual integer size ratios each level's mean is unchanged) and concatenated in
    ``fuse``: the pooled ``fuse`` output equals the concatenation of the three pooled levels.
    """

    cam_reason = (
        "fpn head: `fuse`, the three smoothed levels on the stride-8 grid; every path to the logits "
        "passes through it (unlike P3 or the C5 lateral alone), at the finest resolution"
    )

    def __init__(self, in_channels: tuple[int, int, int], fpn_channels: int = 256):
        super().__init__()
        if fpn_channels < 1:
            raise ModelError(f"fpn_channels must be positive, got {fpn_channels}")
        self.lateral = nn.ModuleList(nn.Conv2d(c, fpn_channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(conv_bn_relu(fpn_channels, fpn_channels) for _ in in_channels)
        self.fuse = nn.Identity()  # a module to hook: its output is the fused map
        self.out_channels = 3 * fpn_channels

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        c3, c4, c5 = feats
        p5 = self.lateral[2](c5)
        p4 = self.lateral[1](c4) + F.interpolate(p5, size=c4.shape[-2:], mode="nearest")
        p3 = self.lateral[0](c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest")
        levels = [s(p) for s, p in zip(self.smooth, (p3, p4, p5))]
        size = levels[0].shape[-2:]
        levels = [levels[0]] + [F.interpolate(p, size=size, mode="nearest") for p in levels[1:]]
        return self.fuse(torch.cat(levels, dim=1))

    def cam_layer(self) -> nn.Module:
        return self.fuse


@register_head("psp")
class PSPHead(Head):
    """Pyramid pooling (Zhao et al. 2017) over C5 with bins 1, 2, 3, 6.

    Each bin's pooled map is reduced by a 1x1 conv to C5/len(bins) channels (PSPNet's choice),
    upsampled back to C5's grid and concatenated with C5; a 3x3 conv fuses them.
    The bin branches use a bias instead of BatchNorm: a 1x1 bin has one value per channel and
    sample, which BatchNorm cannot normalise at batch size 1.
    """

    cam_reason = "psp head: `fuse`, the 3x3 conv over C5 and the upsampled bins, the only input of the classifier"

    def __init__(self, in_channels: tuple[int, int, int], bins: tuple[int, ...] = (1, 2, 3, 6), psp_channels: int = 512):
        super().__init__()
        bins = tuple(int(b) for b in bins)
        if not bins or min(bins) < 1:
            raise ModelError(f"psp bins must be positive ints, got {bins}")
        c5 = in_channels[-1]
        reduced = max(1, c5 // len(bins))
        self.bins = bins
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(c5, reduced, 1), nn.ReLU(inplace=True)) for b in bins
        )
        self.fuse = conv_bn_relu(c5 + reduced * len(bins), psp_channels)
        self.out_channels = psp_channels

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        c5 = feats[-1]
        size = c5.shape[-2:]
        pooled = [resize_bilinear(s(c5), size) for s in self.stages]  # deterministic backward when asked
        return self.fuse(torch.cat([c5, *pooled], dim=1))

    def cam_layer(self) -> nn.Module:
        return self.fuse


class Classifier(nn.Module):
    """Global average pool, dropout, linear: ``map -> logits``; ``pool(map) -> [B, C]``."""

    def __init__(self, in_channels: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ModelError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_channels, num_classes)

    @staticmethod
    def pool(fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(fmap)))
