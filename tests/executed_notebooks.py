"""What the notebook tests read from a report's executed notebooks (smoke phantoms and the
real sample alike): the runs each study notebook makes, the files a finished run holds,
and the text and pictures a notebook showed."""
from __future__ import annotations

from pathlib import Path

import nbformat

# Runs each notebook makes under the test profiles (01 trains the shared baseline).
RUNS = {
    "01_baselines": ["baseline", "densenet121", "15labels"],
    "02_fpn": ["fpn"],
    "03_psp": ["psp"],
    "04_multiscale": ["multiscale"],
    "05_two_stage": ["two_stage"],
    "06_losses": ["focal"],
}
RUN_FILES = ("config.json", "history.csv", "steps.csv", "metrics.json", "test_predictions.npz", "best.pt")


def result(report, stem: str):
    """The notebook ``stem``'s result in a report run."""
    return next(r for r in report.notebooks if r.stem == stem)


def outputs(executed: Path) -> list[dict]:
    nb = nbformat.read(str(executed), as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def text(executed: Path) -> str:
    """Everything a notebook printed or displayed as text or HTML."""
    parts = []
    for o in outputs(executed):
        parts += [o.get("text", ""), o.get("data", {}).get("text/plain", ""), o.get("data", {}).get("text/html", "")]
    return "\n".join(parts)


def images(executed: Path) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs(executed))


def injected_parameters(r) -> str:
    """Check that a notebook result ran without an error and was exported; return the source
    of the parameters cell papermill injected."""
    assert r.ok, f"{r.stem} failed: {r.error}; see {r.executed}"
    assert not [o for o in outputs(r.executed) if o.get("output_type") == "error"]
    assert r.html is not None and r.html.stat().st_size > 10_000
    nb = nbformat.read(str(r.executed), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected, f"{r.executed} has no injected parameters cell"
    return injected[0].source
