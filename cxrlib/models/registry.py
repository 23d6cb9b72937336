"""One registry for backbones, heads and wrappers, in the spirit of timm's ``create_model``.

A model is ``backbone + head (+ wrapper)``: every registered backbone returns the same
feature pyramid (strides 8/16/32), every head turns that pyramid into one feature map, and
every wrapper rearranges backbones and heads around the input. So any backbone combines with
any head and wrapper, and a notebook names a model instead of building one::

    create_model("densenet121", head="fpn", num_classes=14, in_chans=1)
    create_model("resnet50", wrapper="two_stage", num_classes=15, tau=0.7)

Registering is one line for a new backbone (see :mod:`cxrlib.models.backbones`), and
``register_head`` / ``register_wrapper`` decorate classes; there are no if-chains. This
module only records entries (it imports no model code); :mod:`cxrlib.models.factory`
builds them.
"""
from __future__ import annotations

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


def get_wrapper(name: str) -> type:
    """The registered wrapper class ``name`` (the plain model is :mod:`cxrlib.models.factory`'s default)."""
    try:
        return _WRAPPERS[name]
    except KeyError:
        raise ModelError(
            f"unknown wrapper {name!r}: known wrappers are {', '.join(list_wrappers())} (or None)"
        ) from None


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
