"""Errors raised while building models, so callers can tell a bad request from a missing file."""
from __future__ import annotations


class ModelError(ValueError):
    """A model was asked for with a name, option or input that cannot work; the message says why."""


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but could not be loaded (no network, wrong or missing file)."""
