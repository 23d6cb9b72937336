"""Where the project's own folders are: its root, its profiles and its notebooks.

A leaf module (it imports nothing of cxrlib): the profiles, the report runner, the notebook
plans and the model weights' default folder ask this one place without importing each
other (:mod:`cxrlib.models.weights` below :mod:`cxrlib.config` must not reach the profiles).
"""
from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = PROJECT_ROOT / "profiles"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
