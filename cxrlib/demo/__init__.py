"""The interactive demo: pick or upload a chest X-ray, see 14 probabilities and a heatmap.

- :mod:`cxrlib.demo.session`: :class:`DemoSession`, the state and logic (model menu, images,
  probabilities, heatmaps, the overlay picture) as plain values; settings from
  ``CXRLIB_DEMO_<NAME>`` environment variables.
- :mod:`cxrlib.demo.uploads`: uploaded bytes checked and decoded, or an :class:`UploadError`.
- :mod:`cxrlib.demo.app`: :class:`DemoApp` and :func:`build_demo`, the ipywidgets front.

Importing this package does not import ipywidgets: the session and uploads work (and are
tested) without it, and ``DemoApp``/``build_demo`` load the widget module on first use.
"""
from __future__ import annotations

from cxrlib.demo.session import (
    DEFAULT_METHOD,
    DEFAULT_THRESHOLD,
    DEFAULT_UNTRAINED,
    ENV_PREFIX,
    MAX_DISPLAY_SIDE,
    ChartData,
    DemoImage,
    DemoModel,
    DemoSession,
    ModelChoice,
    demo_profile,
    demo_settings,
    encode_jpeg,
    list_model_choices,
    untrained_module,
)
from cxrlib.demo.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES, UPLOAD_ACCEPT, UploadError, read_upload

_WIDGET_NAMES = ("DemoApp", "build_demo")


def __getattr__(name: str):
    if name in _WIDGET_NAMES:
        # ipywidgets is needed for the widget only: imported here, on first use, so that the
        # rest of the demo imports without it.
        try:
            from cxrlib.demo import app  # ipywidgets behind it: loaded on first use
        except ImportError as err:
            raise ImportError(f"cxrlib.demo.{name} needs ipywidgets ({err}): "
                              "pip install -r requirements.txt") from err
        return getattr(app, name)
    raise AttributeError(f"module 'cxrlib.demo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WIDGET_NAMES))


__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_THRESHOLD",
    "DEFAULT_UNTRAINED",
    "ENV_PREFIX",
    "MAX_DISPLAY_SIDE",
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "UPLOAD_ACCEPT",
    "ChartData",
    "DemoApp",
    "DemoImage",
    "DemoModel",
    "DemoSession",
    "ModelChoice",
    "UploadError",
    "build_demo",
    "demo_profile",
    "demo_settings",
    "encode_jpeg",
    "list_model_choices",
    "read_upload",
    "untrained_module",
]
