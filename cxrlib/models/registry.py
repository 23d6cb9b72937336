"""One registry for backbones, heads and wrappers, in the spirit of timm's ``create_model``.

A model is ``backbone + head (+ wrapper)``: every registered backbone returns the same
feature pyramid (strides 8/16/32), every head turns that pyramid into one feature map, and
every wrapper rearranges backbones and heads around the input. So any backbone combines with
any head and wrapper, and a notebook names a model instead of building one::

    create_model("densenet121", head="fpn", num_classes=14, in_chans=1)
    create_model("resnet50", wrapper="two_stage", num_classes=15, tau=0.7)

Registering is one line for a new backbone (see :mod:`cxrlib.models.backbones`), and
``register_head`` / ``register_wrapper`` decorate classes; there are no if-chains.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import torch.nn as nn

from cxrlib.models.errors import ModelError

T = TypeVar("T")


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: which timm model, and what the project needs to know about it.

    ``channels`` are recorded here (and checked against timm's ``feature_info`` when a model
    is built) so that the registry documents the pyramid without building anything.
    """

    name: str
    timm_name: str  # timm architecture with its pretrained tag, e.g. "resnet50.tv_in1k"
    input_size: int  # the side the pretrained weights were trained at (the default input)
    channels: tuple[int, int, int]  # C3, C4, C5 channels (strides 8, 16, 32)
    min_input_size: int = 32  # smallest side that gives a C5 map of at least 1x1
    out_indices: tuple[int, int, int] = (2, 3, 4)  # timm feature indices of strides 8/16/32
    cam_reason: str = "last stage: the deepest features that still have a spatial grid"
    description: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """What a built model is: ``model.info``."""

    name: str  # "backbone+head" or "backbone+head+wrapper"
    backbone: str
    head: str
    wrapper: str | None
    timm_name: str
    num_classes: int
    in_chans: int
    input_size: int  # default input side in pixels
    min_input_size: int  # smaller inputs raise ModelError
    feature_channels: tuple[int, int, int]  # backbone C3, C4, C5
    embedding_channels: int  # channels of the pooled features the classifier sees
    cam_layer: str  # qualified module name of cam_target_layers(model)[0]
    cam_reason: str  # why that layer
    pretrained: str  # "none", "timm hub" or the weights file
    options: dict[str, Any] = field(default_factory=dict)


_BACKBONES: dict[str, BackboneSpec] = {}
_HEADS: dict[str, type] = {}
_WRAPPERS: dict[str, type] = {}


def register_model(entry: BackboneSpec | Callable[[], BackboneSpec]):
    """Register a backbone: pass a :class:`BackboneSpec`, or decorate a function returning one.

    A decorated function's name is the model name, as in timm; a spec is registered under
    ``spec.name``. Registering a name twice is an error, because the second entry would
    silently change what an existing experiment config means.
    """
    spec = entry() if callable(entry) and not isinstance(entry, BackboneSpec) else entry
    if not isinstance(spec, BackboneSpec):
        raise ModelError(f"register_model expects a BackboneSpec or a function returning one, got {spec!r}")
    if callable(entry) and not isinstance(entry, BackboneSpec) and spec.name != entry.__name__:
        raise ModelError(f"registry function {entry.__name__!r} returns a spec named {spec.name!r}; use one name")
    if spec.name in _BACKBONES:
        raise ModelError(f"model {spec.name!r} is already registered")
    _BACKBONES[spec.name] = spec
    return entry


def register_head(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register_head("fpn")``. The class takes ``in_channels`` + options."""

    def deco(cls: T) -> T:
        if name in _HEADS:
            raise ModelError(f"head {name!r} is already registered")
        _HEADS[name] = cls
        return cls

    return deco


def register_wrapper(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register_wrapper("two_stage")`` (see :class:`cxrlib.models.base.CXRModel`)."""

    def deco(cls: T) -> T:
        if name in _WRAPPERS:
            raise ModelError(f"wrapper {name!r} is already registered")
        _WRAPPERS[name] = cls
        return cls

    return deco


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` (backbones; heads and wrappers combine with all)."""
    return sorted(_BACKBONES)


def list_heads() -> list[str]:
    return sorted(_HEADS)


def list_wrappers() -> list[str]:
    return sorted(_WRAPPERS)


def get_model_spec(name: str) -> BackboneSpec:
    try:
        return _BACKBONES[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}: known models are {', '.join(list_models())}") from None


def get_head(name: str) -> type:
    try:
        return _HEADS[name]
    except KeyError:
        raise ModelError(f"unknown head {name!r}: known heads are {', '.join(list_heads())}") from None


def get_wrapper(name: str | None) -> type:
    from cxrlib.models.base import CXRModel  # the plain backbone + head model

    if name is None or name in ("", "none"):
        return CXRModel
    try:
        return _WRAPPERS[name]
    except KeyError:
        raise ModelError(
            f"unknown wrapper {name!r}: known wrappers are {', '.join(list_wrappers())} (or None)"
        ) from None


def _keyword_names(fn: Callable, skip: set[str]) -> list[str]:
    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params if p.kind == p.KEYWORD_ONLY or (p.kind == p.POSITIONAL_OR_KEYWORD and p.name not in skip)]


def create_model(
    name: str,
    head: str = "gap",
    num_classes: int = 14,
    in_chans: int = 1,
    pretrained: bool = False,
    weights_path: str | None = None,
    wrapper: str | None = None,
    **options: Any,
) -> nn.Module:
    """Build ``name`` (a backbone) with ``head`` and optionally ``wrapper``.

    ``forward(x [B, in_chans, H, W]) -> logits [B, num_classes]``. ``num_classes=15`` gives
    the 14 findings plus No Finding. ``pretrained=True`` loads ImageNet weights through timm
    (Hugging Face hub or its cache); ``weights_path`` loads a local timm/torchvision-style
    state dict instead (and implies pretrained). With ``in_chans=1`` the first convolution
    of pretrained weights is summed over RGB, not re-initialised. ``options`` go to the head
    (e.g. ``fpn_channels``), the classifier (``drop_rate``) or the wrapper (e.g. ``tau``);
    an option none of them takes is an error that lists the ones they do.
    """
    spec = get_model_spec(name)
    head_cls = get_head(head)
    model_cls = get_wrapper(wrapper)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive int (14 findings, or 15 with No Finding), got {num_classes!r}")
    if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise ModelError(f"in_chans must be a positive int (1 for grayscale, 3 for RGB-replicated), got {in_chans!r}")
    head_keys = _keyword_names(head_cls.__init__, {"self", "in_channels"})
    model_keys = _keyword_names(
        model_cls.__init__,
        {"self", "spec", "head", "head_options", "num_classes", "in_chans", "pretrained", "weights_path"},
    )
    unknown = sorted(set(options) - set(head_keys) - set(model_keys))
    if unknown:
        raise ModelError(
            f"unknown option(s) {unknown} for {name} with head={head!r}, wrapper={wrapper!r}: "
            f"head options {sorted(head_keys)}, model options {sorted(model_keys)}"
        )
    head_options = {k: v for k, v in options.items() if k in head_keys}
    model_options = {k: v for k, v in options.items() if k not in head_keys}
    return model_cls(
        spec,
        head=head,
        head_options=head_options,
        num_classes=num_classes,
        in_chans=in_chans,
        pretrained=pretrained,
        weights_path=weights_path,
        **model_options,
    )


def create_model_from_config(model_cfg, num_classes: int) -> nn.Module:
    """Build the model a :class:`cxrlib.config.ModelConfig` describes."""
    return create_model(
        model_cfg.name,
        head=model_cfg.head,
        num_classes=num_classes,
        in_chans=model_cfg.in_chans,
        pretrained=model_cfg.pretrained,
        weights_path=model_cfg.weights_path,
        wrapper=model_cfg.wrapper,
        **dict(model_cfg.options or {}),
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The cxrlib model inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "cam_layers") and hasattr(model, "stages"):
            return model
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise ModelError(f"{type(model).__name__} is not a cxrlib model (build one with cxrlib.models.create_model)")
        model = inner


def cam_target_layers(model: nn.Module) -> list[nn.Module]:
    """The layer(s) Grad-CAM should hook for this model (each model's ``info.cam_reason`` says why).

    Every returned module's output is left unmodified by later in-place operations, which
    backward hooks need (the trap in torchvision's DenseNet, whose functional in-place ReLU
    after ``features`` corrupts the hooked activations).
    """
    return list(unwrap(model).cam_layers())
