"""Backbones as feature pyramids (strides 8, 16, 32) from timm, and the registry entries.

Why timm's ``features_only`` rather than torchvision's feature extraction: one API covers all
five backbones of the study, NASNet-A Large and Inception-v3 included (torchvision has no
NASNet, and its Inception-v3 needs special handling of the auxiliary head); ``in_chans=1``
adapts a pretrained first convolution by summing its RGB weights instead of re-initialising
it; and ``pretrained_cfg_overlay=dict(file=...)`` loads a local weights file through the
same code path as the hub, so offline use is the same as online use. Where local weights
are looked for, and how offline is detected, is :mod:`cxrlib.models.weights`.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn

# timm (with torchvision, about 1.5 s) is imported inside the functions that build a model,
# so the registry below, which every plan and check reads, costs nothing to import.
from cxrlib.models import weights
from cxrlib.models.errors import ModelError, PretrainedWeightsError
from cxrlib.models.registry import BackboneSpec, register_model

STRIDES = (8, 16, 32)


# --- registry entries: the study's five backbones, then two modern ones (one line each) ---
# Pretrained tags: torchvision's ImageNet weights where timm offers them, as in CheXNet and
# the study; input_size is what those weights were trained at.

@register_model
def resnet18() -> BackboneSpec:
    return BackboneSpec("resnet18", "resnet18.tv_in1k", 224, (128, 256, 512),
                        cam_reason="layer4: last residual stage; its output leaves the block unmodified")


@register_model
def resnet50() -> BackboneSpec:
    return BackboneSpec("resnet50", "resnet50.tv_in1k", 224, (512, 1024, 2048),
                        cam_reason="layer4: last residual stage; its output leaves the block unmodified")


@register_model
def densenet121() -> BackboneSpec:
    return BackboneSpec(
        "densenet121", "densenet121.tv_in1k", 224, (512, 1024, 1024),
        cam_reason=(
            "features.norm5: timm's BatchNormAct2d applies the final ReLU inside the module, so "
            "its output is final and never modified in place afterwards (torchvision's DenseNet "
            "applies an in-place F.relu after `features`, which breaks Grad-CAM's hooks there)"
        ),
    )


@register_model
def inception_v3() -> BackboneSpec:
    # Unpadded stem convolutions: below 75 px the stride-32 map vanishes (torchvision documents
    # the same minimum); 299 px is the pretrained size.
    return BackboneSpec("inception_v3", "inception_v3.tv_in1k", 299, (288, 768, 2048), min_input_size=75,
                        cam_reason="Mixed_7c: last Inception block, a concatenation never modified in place")


@register_model
def nasnet() -> BackboneSpec:
    # NASNet-A Large; timm pads its convolutions 'same', so 32 px still gives a 1x1 stride-32
    # map, but it was trained at 331 px and its cells are heavy: 224 px or more is the useful range.
    return BackboneSpec("nasnet", "nasnetalarge.tf_in1k", 331, (1008, 2016, 4032),
                        cam_reason="act: the final ReLU after cell_17, the output the classifier pools")


register_model(BackboneSpec("convnext_tiny", "convnext_tiny.in12k_ft_in1k", 224, (192, 384, 768), out_indices=(1, 2, 3), cam_reason="stages.3: last ConvNeXt stage"))
register_model(BackboneSpec("efficientnet_b0", "efficientnet_b0.ra_in1k", 224, (40, 112, 320), cam_reason="blocks.6: last MBConv stage (before the 1x1 head conv, which features_only drops)"))


# --- building ---

class _LoadReport(logging.Handler):
    """Collects timm's load messages: for a feature extractor timm loads non-strictly and only
    logs missing keys (at INFO), so a file of the wrong model would silently leave random weights."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.missing: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Missing keys ("):
            self.missing.append(message[len("Missing keys ("): message.find(") discovered")])


@contextmanager
def _checked_load(spec: BackboneSpec, source: str):
    import timm
    logger = logging.getLogger("timm.models._builder")
    report, level = _LoadReport(), logger.level
    logger.addHandler(report)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(report)
        logger.setLevel(level)
    cfg = timm.models.get_pretrained_cfg(spec.timm_name)
    heads = cfg.classifier if cfg is not None and cfg.classifier else ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    # The ImageNet classifier is dropped on purpose (a feature extractor has none).
    missing = [k for entry in report.missing for k in entry.split(", ") if not k.startswith(tuple(h + "." for h in heads))]
    if missing:
        keys = ", ".join(missing)
        raise PretrainedWeightsError(
            f"weights from {source} do not fit {spec.name} (timm {spec.timm_name}): missing "
            f"{keys[:300]}{'...' if len(keys) > 300 else ''}. Give that architecture's ImageNet state dict"
        )


def create_body(spec: BackboneSpec, in_chans: int, pretrained: bool, weights_path: str | Path | None) -> nn.Module:
    """The timm feature extractor for ``spec``, with weights from a file, the hub, or random.

    ``weights_path`` names the file (a config's ``model.weights_dir`` is resolved to one by
    the caller). Otherwise, when ``pretrained``, the weights come from the default weights
    folder or the Hugging Face cache (:mod:`cxrlib.models.weights`), and from the hub only
    when it can be reached; offline, the error comes at once and says which file to fetch
    and where to put it.
    """
    import timm
    kwargs = dict(features_only=True, out_indices=spec.out_indices, in_chans=in_chans)
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(
                f"weights file {path} for {spec.name} does not exist: give the path of a {spec.timm_name} "
                f"state dict (.pth/.safetensors); or {weights.fetch_help(spec.timm_name)}"
            )
        return _from_file(spec, path, kwargs)
    if not pretrained:
        return timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    local = weights.resolve(spec.name, spec.timm_name)
    if local is not None:
        return _from_file(spec, local, kwargs)
    try:
        with _checked_load(spec, "the timm hub"):
            body = timm.create_model(spec.timm_name, pretrained=True, **kwargs)
        return body
    except PretrainedWeightsError:
        raise
    except Exception as err:  # the hub raises many kinds (DNS, HTTP, proxy, disk)
        raise PretrainedWeightsError(
            f"could not get pretrained weights for {spec.name} (timm {spec.timm_name}) from the hub "
            f"({type(err).__name__}: {str(err).rstrip('.')}). To work offline: "
            f"{weights.fetch_help(spec.timm_name)}."
        ) from err


def _from_file(spec: BackboneSpec, path: Path, kwargs: dict) -> nn.Module:
    import timm
    # The same timm code path as the hub (filter functions for torchvision-style keys, the
    # first convolution summed over RGB), only the state dict comes from the file.
    try:
        with _checked_load(spec, str(path)):
            return timm.create_model(spec.timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                     **kwargs)
    except PretrainedWeightsError:
        raise
    except (RuntimeError, KeyError, ValueError, OSError, EOFError) as err:
        raise PretrainedWeightsError(
            f"weights file {path} does not fit {spec.name} (timm {spec.timm_name}): {err}. "
            f"It must be that architecture's ImageNet state dict (3-channel first conv; it is adapted to in_chans)"
        ) from err


class Backbone(nn.Module):
    """``forward(x) -> [C3, C4, C5]`` at strides 8, 16, 32; ``channels`` gives their widths."""

    def __init__(self, spec: BackboneSpec, in_chans: int = 1, pretrained: bool = False,
                 weights_path: str | Path | None = None):
        import timm
        super().__init__()
        self.spec = spec
        self.body = create_body(spec, in_chans, pretrained, weights_path)
        info = self.body.feature_info
        reductions = tuple(info.reduction())
        channels = tuple(info.channels())
        if reductions != STRIDES:
            raise ModelError(f"{spec.name}: timm {timm.__version__} gives strides {reductions} for "
                             f"out_indices {spec.out_indices}, expected {STRIDES}; fix the registry entry")
        if channels != spec.channels:
            raise ModelError(f"{spec.name}: timm {timm.__version__} gives channels {channels}, the registry "
                             f"records {spec.channels}; fix the registry entry")
        self.channels: tuple[int, int, int] = channels
        self.last_stage_name: str = info.module_name()[-1]
        # Kept as a plain attribute, not a second registration of the body's module: registered
        # twice, its weights would be stored twice in every checkpoint (ResNet-18's layer4 is
        # 8.4 M of its 11 M weights). Checkpoints written with the duplicate still load.
        self.__dict__["_last_stage"] = _find_module(self.body, self.last_stage_name, spec.name)
        self._register_load_state_dict_pre_hook(_drop_alias_keys)

    def last_stage(self) -> nn.Module:
        """The module producing C5 (Grad-CAM's default target)."""
        return self._last_stage

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


def _drop_alias_keys(state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "_last_stage.")]:
        del state_dict[key]


def _find_module(body: nn.Module, name: str, model: str) -> nn.Module:
    # FeatureListNet flattens "features.norm5" to "features_norm5"; hook-based extractors
    # (NASNet) keep the original names.
    for candidate in (name, name.replace(".", "_"), "body." + name):
        try:
            return body.get_submodule(candidate)
        except AttributeError:
            continue
    raise ModelError(f"{model}: cannot find feature module {name!r} in the timm feature extractor")
