"""The plain model (backbone + head + classifier) and what every cxrlib model shares."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cxrlib.models.backbones import Backbone
from cxrlib.models.errors import ModelError
from cxrlib.models.heads import Classifier, Head
from cxrlib.models.registry import BackboneSpec, ModelInfo, get_head


class BaseModel(nn.Module):
    """Shared by every model: ``stages``, ``info``, input checks and ``cam_layers``.

    ``stages`` is None for models trained in one go; staged models (two_stage) set a tuple
    and implement ``set_stage``.
    """

    stages: tuple[str, ...] | None = None
    info: ModelInfo
    min_input_size: int = 1
    in_chans: int = 1

    def cam_layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ModelError(
                f"{self.info.name} expects images [B, {self.in_chans}, H, W], got shape {tuple(x.shape)}; "
                f"build the model with in_chans={x.shape[1] if x.ndim == 4 else '?'} or change the dataset's channels"
            )
        h, w = x.shape[-2:]
        if min(h, w) < self.min_input_size:
            raise ModelError(
                f"{self.info.name} needs images of at least {self.min_input_size}x{self.min_input_size} px, "
                f"got {h}x{w}; raise DataConfig.image_size (default input for this backbone: {self.info.input_size} px)"
            )

    def _make_info(self, spec: BackboneSpec, head: str, wrapper: str | None, num_classes: int, in_chans: int,
                   embedding_channels: int, pretrained: bool, weights_path, cam_reason: str,
                   options: dict[str, Any]) -> ModelInfo:
        cam = self.cam_layers()[0]
        cam_name = next((n for n, m in self.named_modules() if m is cam), "?")
        source = str(Path(weights_path)) if weights_path is not None else ("timm hub" if pretrained else "none")
        return ModelInfo(
            name="+".join([spec.name, head] + ([wrapper] if wrapper else [])),
            backbone=spec.name, head=head, wrapper=wrapper, timm_name=spec.timm_name,
            num_classes=num_classes, in_chans=in_chans, input_size=spec.input_size,
            min_input_size=self.min_input_size, feature_channels=spec.channels,
            embedding_channels=embedding_channels, cam_layer=cam_name, cam_reason=cam_reason,
            pretrained=source, options=dict(options),
        )


class Branch(nn.Module):
    """Backbone + head: ``forward(x) -> map``; keeps the pyramid of the last call in ``forward_all``."""

    def __init__(self, spec: BackboneSpec, head: str, head_options: dict[str, Any], in_chans: int,
                 pretrained: bool, weights_path):
        super().__init__()
        self.backbone = Backbone(spec, in_chans=in_chans, pretrained=pretrained, weights_path=weights_path)
        self.head: Head = get_head(head)(self.backbone.channels, **head_options)
        self.out_channels = self.head.out_channels

    def forward_all(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats = self.backbone(x)
        return feats, self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[1]

    def cam_layer(self) -> nn.Module:
        return self.head.cam_layer() or self.backbone.last_stage()

    def cam_reason(self) -> str:
        if self.head.cam_layer() is None:
            return f"{self.head.cam_reason}: {self.backbone.spec.cam_reason}"
        return self.head.cam_reason


class CXRModel(BaseModel):
    """Backbone + head + classifier: the model every head and every study backbone shares."""

    def __init__(self, spec: BackboneSpec, head: str = "gap", head_options: dict[str, Any] | None = None,
                 num_classes: int = 14, in_chans: int = 1, pretrained: bool = False, weights_path=None,
                 drop_rate: float = 0.0):
        super().__init__()
        head_options = dict(head_options or {})
        self.in_chans = in_chans
        self.min_input_size = spec.min_input_size
        self.branch = Branch(spec, head, head_options, in_chans, pretrained, weights_path)
        self.classifier = Classifier(self.branch.out_channels, num_classes, drop_rate)
        self.info = self._make_info(spec, head, None, num_classes, in_chans, self.branch.out_channels,
                                    pretrained, weights_path, self.branch.cam_reason(),
                                    {**head_options, "drop_rate": drop_rate})

    @property
    def backbone(self) -> Backbone:
        return self.branch.backbone

    @property
    def head(self) -> Head:
        return self.branch.head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's feature map, before pooling."""
        self.check_input(x)
        return self.branch(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))

    def cam_layers(self) -> list[nn.Module]:
        return [self.branch.cam_layer()]
