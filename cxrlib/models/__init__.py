"""Models: one registry of backbones (feature pyramids from timm), heads and wrappers.

``create_model("densenet121", head="fpn", num_classes=14, in_chans=1)`` builds any
registered backbone with any head (``gap``, ``fpn``, ``psp``) and optionally a wrapper
(``multiscale``, ``two_stage``); ``list_models()``, ``list_heads()``, ``list_wrappers()``
say what exists, ``model.info`` describes a built model and ``cam_target_layers(model)``
gives the layer Grad-CAM should hook.
"""
from cxrlib.models.errors import ModelError, PretrainedWeightsError
from cxrlib.models.factory import create_model, create_model_from_config
from cxrlib.models.registry import (
    BackboneSpec,
    ModelInfo,
    cam_target_layers,
    get_model_spec,
    list_heads,
    list_models,
    list_wrappers,
    register_head,
    register_model,
    register_wrapper,
    unwrap,
)

# Importing these modules registers the backbones, heads and wrappers (the factory already
# imported backbones, heads and base; the wrappers register here).
from cxrlib.models import backbones, heads, base, multiscale, two_stage  # noqa: E402,F401  isort: skip

__all__ = [
    "BackboneSpec", "ModelInfo", "ModelError", "PretrainedWeightsError", "cam_target_layers",
    "create_model", "create_model_from_config", "get_model_spec", "list_heads", "list_models",
    "list_wrappers", "register_head", "register_model", "register_wrapper", "unwrap",
]
