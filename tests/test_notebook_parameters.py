"""A notebook opened in JupyterLab and run with only PROFILE set does what the report does.

Each numbered notebook's parameters cell is executed as written with PROFILE set (as a
person would edit it), then its set-up cell (which loads the profile and gives every
parameter left None the profile's value). The notebook's parameters must then be the ones
the report injects with papermill, and the experiments it would train the report's plan
(cxrlib.preflight.planned_experiments) for that profile, run for run and seed for seed.
"""
from __future__ import annotations

import contextlib
import io

import nbformat
import pytest

from cxrlib import experiments, preflight, profiles, report

COMMON = {"PROFILE", "DATA_DIR", "DEVICE", "RUNS_DIR", "REDO", "OVERRIDES"}
NOTEBOOKS = report.discover_notebooks()


def run_as_in_jupyterlab(path, profile_name: str) -> dict:
    """The namespace after the parameters cell (PROFILE edited) and the set-up cell ran."""
    nb = nbformat.read(str(path), as_version=4)
    i = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(nb.cells[i].source, ns)
    ns["PROFILE"] = profile_name
    setup = "\n".join(line for line in nb.cells[i + 1].source.splitlines() if not line.startswith("%"))
    with contextlib.redirect_stdout(io.StringIO()):
        exec(setup, ns)
    return ns


def _plan(configs) -> list[tuple[str, int, str]]:
    return [(c.name, c.seed, c.fingerprint()) for c in configs]


@pytest.mark.parametrize("profile_name", ["smoke", "cpu", "full", "sample"])
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem != "08_demo"], ids=lambda p: p.stem)
def test_a_notebook_run_with_only_profile_set_plans_the_reports_runs(path, profile_name):
    profile = profiles.load(profile_name)
    ns = run_as_in_jupyterlab(path, profile_name)
    names = set(profiles.parameter_defaults(path)) - COMMON
    injected = {**profiles.parameter_defaults(path), **profile.notebook_parameters(path.stem)}
    in_lab = {name: ns[name] for name in names}
    assert in_lab == {name: injected[name] for name in names}, path.stem
    assert _plan(experiments.notebook_configs(ns["profile"], path.stem, {**injected, **in_lab})) == _plan(
        preflight.planned_experiments(profile, [path])[path.stem])


def test_the_jupyterlab_plans_differ_between_profiles():
    """Not vacuous: the cpu and full profiles plan different runs for 01 and 06, and the
    notebooks follow them (before parameters defaulted to the profile's value, a notebook run
    in JupyterLab trained 01's five backbones and 06's five losses whatever the profile)."""
    for stem in ("01_baselines", "06_losses"):
        path = next(p for p in NOTEBOOKS if p.stem == stem)
        cpu, full = (run_as_in_jupyterlab(path, name) for name in ("cpu", "full"))
        key = "MODELS" if stem == "01_baselines" else "LOSSES"
        assert cpu[key] != full[key]
        assert cpu[key] == profiles.load("cpu").notebooks[stem][key]


def test_the_demo_takes_no_profile_dependent_parameter():
    """08 builds its demo from PROFILE itself; it has no parameter a profile sets."""
    path = next(p for p in NOTEBOOKS if p.stem == "08_demo")
    assert None not in profiles.parameter_defaults(path).values()
    assert "08_demo" not in profiles.NOTEBOOK_DEFAULTS


def test_a_value_set_in_the_cell_wins_and_a_missing_one_is_named():
    profile = profiles.load("cpu")
    assert profile.notebook_value("06_losses", "LOSSES", ["bce"]) == ["bce"]
    assert profile.notebook_value("06_losses", "LOSSES") == ["bce", "weighted_bce", "asymmetric"]
    assert profiles.load("full").notebook_value("07_heatmaps", "HEAD") == ""  # full sets none: the default
    with pytest.raises(ValueError, match="NOPE is None"):
        profile.notebook_value("06_losses", "NOPE")
