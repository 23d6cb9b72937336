"""The lessons of notebooks 10 and 11 are lessons: question, idea, what to look for, pitfalls,
exercises that predict before running, and at least 1,000 words of prose."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.parametrize("stem", ["10_label_noise", "11_external_site"])
def test_lesson_prose(stem):
    nb = nbformat.read(str(NOTEBOOKS / f"{stem}.ipynb"), as_version=4)
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert len(re.findall(r"\b\w[\w'-]*\b", prose)) >= 1000
    for part in ("**The question.**", "**The idea", "**Look for:**", "## Pitfalls", "## Exercises", "Predict"):
        assert part in prose, (stem, part)
    assert nb.metadata["cxrlib"]["plan"]["builder"].startswith("cxrlib.")
