"""Building a model from registry entries: backbone x head (x wrapper).

The registry (:mod:`cxrlib.models.registry`) only records what exists; this module turns a
name into a module. Keeping the two apart lets the model classes import the registry (to
register themselves) without the registry importing them back.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch.nn as nn

from cxrlib.models import weights
from cxrlib.models.base import CXRModel
from cxrlib.models.errors import ModelError
from cxrlib.models.registry import get_head, get_model_spec, get_wrapper


def model_class(wrapper: str | None) -> type:
    """The class that builds a model: the plain backbone + head model, or a registered wrapper."""
    if wrapper is None or wrapper in ("", "none"):
        return CXRModel
    return get_wrapper(wrapper)


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
    model_cls = model_class(wrapper)
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


def create_model_from_config(model_cfg, num_classes: int, *, pretrained: bool | None = None) -> nn.Module:
    """Build the model a :class:`cxrlib.config.ModelConfig` describes.

    ``pretrained=False`` builds the architecture only, ignoring the config's ``pretrained``
    and ``weights_path``: what a saved run needs, whose own weights replace them anyway.
    Pretrained weights come from ``weights_path``, else the file for this backbone in
    ``weights_dir`` or the Hugging Face cache, else the hub (:mod:`cxrlib.models.weights`).
    """
    use_pretrained = model_cfg.pretrained if pretrained is None else bool(pretrained)
    weights_path = model_cfg.weights_path if use_pretrained else None
    if use_pretrained and weights_path is None:
        spec = get_model_spec(model_cfg.name)
        weights_path = weights.resolve(spec.name, spec.timm_name, model_cfg.weights_dir)
    return create_model(
        model_cfg.name,
        head=model_cfg.head,
        num_classes=num_classes,
        in_chans=model_cfg.in_chans,
        pretrained=use_pretrained,
        weights_path=weights_path,
        wrapper=model_cfg.wrapper,
        **dict(model_cfg.options or {}),
    )
