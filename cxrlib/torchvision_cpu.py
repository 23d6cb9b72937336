"""Make ``import torchvision`` work next to a CPU-only build of torch.

Why this exists: the torchvision wheel on PyPI is built against CUDA. Next to the CPU build of
torch its C++ extension (``torchvision/_C.so``) fails to load, and then
``torchvision/_meta_registrations.py`` still calls ``torch.library.register_fake`` for the
operators ``torchvision::nms`` and ``torchvision::qnms``, which were never defined, so
``import torchvision`` dies with ``RuntimeError: operator torchvision::nms does not exist``
(upstream pytorch/vision issue 9085).

What we do: try to load the extension ourselves, exactly as torchvision would. If it loads
(a matching CUDA or CPU build), nothing else happens. If it does not, we declare the two
operator schemas so that torchvision's fake-kernel registration succeeds. The models and
transforms are pure Python and work normally; the C++ operators (nms, roi_align,
deform_conv2d, ...) still raise torchvision's own "Couldn't load custom C++ ops" error when
called. cxrlib needs none of them.

Import this module before torchvision, timm or pytorch-grad-cam; ``cxrlib/__init__.py`` does.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import sys

import torch

# Schemas as torchvision's C++ code declares them (torchvision/csrc/ops/nms.cpp, qnms.cpp).
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

_library = None  # kept alive: dropping a torch.library.Library undoes its definitions
extension_loaded: bool | None = None


def _extension_path() -> str | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(folder, "_C*.so")) + glob.glob(os.path.join(folder, "_C*.pyd")))
        if found:
            return found[0]
    return None


def ensure_importable() -> bool:
    """Prepare torch so that ``import torchvision`` succeeds; return whether its C++ ops load.

    Safe to call many times. Does nothing once torchvision is imported.
    """
    global _library, extension_loaded
    if extension_loaded is not None or "torchvision" in sys.modules:
        return bool(extension_loaded)
    path = _extension_path()
    if path is None:  # torchvision is not installed; its own import error will say so
        extension_loaded = False
        return False
    try:
        torch.ops.load_library(path)
        extension_loaded = True
    except OSError:
        extension_loaded = False
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS.values():
            _library.define(schema)
    return extension_loaded


ensure_importable()
