"""A loaded model with its input contract: what it sees, and what its outputs are called.

A network's weights do not say at what side, in how many channels or with which
normalisation an image must reach it, nor what each output means. A :class:`Predictor`
keeps those beside the module, so whatever scores an image (``cxrlib predict``, the demo,
the lessons) asks it instead of working them out again::

    predictor = runs.load_model("runs/cpu/baseline")     # a trained run, at its own size
    predictor.probabilities(["chest.png"])               # [1, 14], in predictor.label_names order
    predictor.heatmaps(images, "Effusion")               # [N, S, S] Grad-CAM maps

An image is a file (read by :mod:`cxrlib.data.imageio`: PNG, JPEG or DICOM, whatever its
name says) or a uint8 gray array of any size; it is resized as the cache resizes and
normalised as training normalised (:func:`cxrlib.data.preprocess`, which asks
:mod:`cxrlib.data.cache` and :mod:`cxrlib.augment`), so a model sees at inference exactly
what it saw in training.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Sequence, Union

import numpy as np
import torch
from torch import nn

from cxrlib.augment import check_channels
from cxrlib.data import preprocess, read_image
from cxrlib.labels import FINDINGS

# A file to read, or the pixels themselves (uint8 [H,W], any size).
Image = Union[str, os.PathLike, np.ndarray]


@dataclass
class Predictor:
    """``module`` in eval mode on ``device``, fed ``channels`` x ``image_size`` squares,
    answering one output per name in ``label_names``."""

    module: nn.Module
    image_size: int
    channels: int
    label_names: list[str]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        if int(self.image_size) < 1:
            raise ValueError(f"image_size must be a positive side in pixels, got {self.image_size!r}")
        self.image_size = int(self.image_size)
        self.channels = check_channels(int(self.channels))
        self.label_names = [str(n) for n in self.label_names]
        self.device = torch.device(self.device)
        self.module = _unwrap(self.module).to(self.device).eval()

    @classmethod
    def for_config(cls, module: nn.Module, config, label_names: Sequence[str],
                   device: str | torch.device | None = None) -> "Predictor":
        """``module`` trained under ``config`` (an :class:`~cxrlib.config.ExperimentConfig`): fed at
        its ``data.image_size`` in its ``model.in_chans``; ``device`` None keeps the module's."""
        device = _device_of(module) if device is None else device
        return cls(module, config.data.image_size, config.model.in_chans, list(label_names), device)

    @classmethod
    def untrained(cls, arch: str, image_size: int | None = None, device: str | torch.device = "cpu",
                  module: nn.Module | None = None) -> "Predictor":
        """A freshly initialised 14-output gray ``arch`` (or the given ``module`` of it), fed at
        ``image_size``, by default the size its registry entry was made for: an untrained
        architecture has no size of its own."""
        from cxrlib import models  # imports timm: only an untrained model pays for it here

        if module is None:
            module = models.create_model(arch, num_classes=len(FINDINGS), in_chans=1, pretrained=False)
        size = image_size or models.get_model_spec(arch).input_size
        return cls(module, size, 1, list(FINDINGS), device)

    def at_size(self, image_size: int | None) -> "Predictor":
        """The same model fed at another side (``None`` keeps this one)."""
        return self if not image_size else replace(self, image_size=int(image_size))

    def inputs(self, images: Sequence[Image]) -> torch.Tensor:
        """``images`` as the model sees them: float32 ``[N, C, S, S]`` on the CPU."""
        return torch.stack([self.input(im) for im in images]) if len(images) else torch.zeros(
            (0, self.channels, self.image_size, self.image_size))

    def input(self, image: Image) -> torch.Tensor:
        """One image as the model sees it: float32 ``[C, S, S]`` on the CPU."""
        pixels = read_image(image) if isinstance(image, (str, os.PathLike)) else np.asarray(image)
        return preprocess(pixels, self.image_size, self.channels)

    def probabilities(self, images: Sequence[Image], batch_size: int = 32) -> np.ndarray:
        """Sigmoid probabilities ``[N, K]`` in :attr:`label_names` order."""
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = self.inputs(images[i:i + batch_size]).to(self.device)
                out.append(torch.sigmoid(self.module(x).float()).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.label_names)), np.float32)

    def output_index(self, finding: str) -> int:
        """The output that answers ``finding``; a clear error for a name the model lacks."""
        if finding not in self.label_names:
            raise ValueError(f"the model has no output {finding!r}: its outputs are {', '.join(self.label_names)}")
        return self.label_names.index(finding)

    def heatmaps(self, images: Sequence[Image], finding: str, method: str = "gradcam") -> np.ndarray:
        """``finding``'s heatmap for each image: float32 ``[N, S, S]`` in [0, 1] (:mod:`cxrlib.cam`)."""
        from cxrlib import cam  # imports pytorch-grad-cam: only heatmaps pay for it

        return cam.heatmaps(self.module, self.inputs(images).to(self.device), self.output_index(finding),
                            method=method)

    def analyse(self, x: torch.Tensor, method: str = "gradcam") -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``[K]`` and every output's heatmap ``[K,S,S]`` for one input ``[C,S,S]``.

        One forward pass serves both: :func:`cxrlib.cam.heatmaps_all_findings` computes all the
        maps from a single forward (one cheap backward through the head per output), and a hook
        keeps the logits of that same forward. Against a separate inference pass this halves
        the wait for an image's first answer.
        """
        from cxrlib.cam import heatmaps_all_findings  # imports pytorch-grad-cam: only heatmaps pay for it

        outputs: list = []
        handle = self.module.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
        try:
            maps = heatmaps_all_findings(self.module, x.to(self.device), method=method)
        finally:
            handle.remove()
        probs = torch.sigmoid(outputs[-1].float())[0].cpu().numpy().astype(np.float32)
        return probs, np.asarray(maps, dtype=np.float32)


def predict_images(model: nn.Module, images_u8_list: Sequence[np.ndarray], image_size: int, channels: int,
                   batch_size: int = 32, device: str | torch.device | None = None) -> np.ndarray:
    """Probabilities ``[N, K]`` of a bare module for uint8 gray images of any size, fed at
    ``image_size`` in ``channels`` (a :class:`Predictor` whose label names do not matter)."""
    device = _device_of(model) if device is None else device
    probs = Predictor(model, image_size, channels, [], device).probabilities(list(images_u8_list), batch_size)
    return probs if len(probs) else np.zeros((0, 0), np.float32)


def _device_of(module: nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
