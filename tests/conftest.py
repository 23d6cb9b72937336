"""Shared fixtures: where the real sample data lives, and whether it must be there.

The real ChestX-ray14 sample and the MedMNIST npz sit in ``../shared/data`` beside the
checkout (override with CXRLIB_SHARED_DATA). Locally a missing folder skips the tests that
need it; in CI (CXRLIB_REQUIRE_SHARED_DATA=1 or CI=true) it fails them, so a broken path
can never turn into a green run that tested nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import cxrlib  # noqa: F401  (makes torchvision importable before any test imports it)

REPO = Path(__file__).resolve().parent.parent


def _required() -> bool:
    return os.environ.get("CXRLIB_REQUIRE_SHARED_DATA") == "1" or os.environ.get("CI", "").lower() == "true"


def shared_data_dir() -> Path:
    return Path(os.environ.get("CXRLIB_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


def _need(path: Path, what: str) -> Path:
    if path.exists():
        return path
    message = f"{what} not found at {path}; set CXRLIB_SHARED_DATA to the folder holding the shared data"
    if _required():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(shared_data_dir(), "shared data folder")


@pytest.fixture(scope="session")
def cxr14_sample(shared_data) -> Path:
    """The real ChestX-ray14 sample, in the release's own layout."""
    return _need(shared_data / "chestxray14-sample", "ChestX-ray14 sample")


@pytest.fixture(scope="session")
def pneumoniamnist_npz(shared_data) -> Path:
    return _need(shared_data / "pneumoniamnist" / "pneumoniamnist.npz", "PneumoniaMNIST npz")
