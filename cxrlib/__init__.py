"""cxrlib: multi-label thorax disease classification on NIH ChestX-ray14.

Import order matters for one reason: torchvision must be importable on CPU-only torch, so the
small fix in :mod:`cxrlib.torchvision_cpu` runs before anything imports torchvision, timm or
pytorch-grad-cam.
"""
from cxrlib import torchvision_cpu as _torchvision_cpu  # noqa: F401  (must come first)
from cxrlib.labels import FINDINGS, NO_FINDING, label_names

__version__ = "0.1.0"
__all__ = ["FINDINGS", "NO_FINDING", "label_names", "__version__"]
