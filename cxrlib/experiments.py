"""Experiments as small changes to a profile's baseline, and the table of every run.

A notebook asks for ``experiment_config(PROFILE, changes={"model.head": "fpn"})``: the
profile's ``experiment`` section is the baseline, the notebook's changes make the variant,
and the command line's overrides apply to both. Because the baseline's config is identical
in every notebook, ``cxrlib.train.run_experiment`` trains it once and reuses it after.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib import runs
from cxrlib.config import PROFILES_DIR, ExperimentConfig, apply_overrides, load_profile, profile_path

BASELINE = "baseline"
# Set by the report runner under --redo: runs finished after this time (seconds since the
# epoch) are this report's own, so the baseline that every notebook shares retrains once.
REDO_SINCE_ENV = "CXRLIB_REDO_SINCE"


def base_config(
    profile: str | Path = "cpu",
    *,
    data_dir: str | None = "",
    device: str | None = "",
    runs_dir: str | Path | None = "",
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> ExperimentConfig:
    """The profile's baseline experiment with the notebook's common parameters applied.

    ``data_dir`` (empty: the profile's data) points at ChestX-ray14; given with a profile
    whose source is the synthetic phantoms, the source becomes ``chestxray14``. ``device``
    empty keeps the profile's; ``runs_dir`` empty keeps ``runs/<profile>``.
    """
    path = profile_path(profile)
    section = load_profile(path).get("experiment") or {}
    if not isinstance(section, dict):
        raise ValueError(f"profile {path}: 'experiment' must be a mapping of config sections")
    cfg = ExperimentConfig.from_dict(section)
    d = cfg.to_dict()
    d["name"] = BASELINE
    if not section.get("runs_dir"):
        d["runs_dir"] = str(Path("runs") / path.stem)
    if data_dir:
        d = ExperimentConfig.from_dict(d).with_data_dir(data_dir).to_dict()
    if device:
        d["train"]["device"] = str(device)
    if runs_dir:
        d["runs_dir"] = str(runs_dir)
    d = apply_overrides(d, overrides or ())
    d["runs_dir"] = str(project_path(d["runs_dir"]))
    d["data"]["cache_dir"] = str(project_path(d["data"]["cache_dir"]))
    return ExperimentConfig.from_dict(d)


def project_path(path: str | Path) -> Path:
    """A relative ``runs/...`` or ``data/cache`` path, anchored at the project root when working
    inside the project: a notebook opened in JupyterLab runs in ``notebooks/``, and must find
    the same runs and caches as ``python -m cxrlib report`` started from the root."""
    path = Path(path)
    root = PROFILES_DIR.parent
    if path.is_absolute():
        return path
    cwd = Path.cwd().resolve()
    if cwd != root and root in cwd.parents:
        return root / path
    return path


def experiment_config(
    profile: str | Path = "cpu",
    name: str | None = None,
    changes: Mapping[str, Any] | None = None,
    *,
    data_dir: str | None = "",
    device: str | None = "",
    runs_dir: str | Path | None = "",
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> ExperimentConfig:
    """A variant of the profile's baseline: ``changes`` like ``{"model.name": "resnet50"}``.

    ``name`` defaults to ``baseline`` without changes, else to a name made from the changed
    values (``fpn``, ``focal``). The changes are applied last: they define the experiment,
    while ``overrides`` (the command line's ``--set``) adjust everything else.
    """
    cfg = base_config(profile, data_dir=data_dir, device=device, runs_dir=runs_dir, overrides=overrides)
    changes = dict(changes or {})
    d = apply_overrides(cfg.to_dict(), changes)
    d["name"] = name or (BASELINE if not changes else variant_name(changes))
    return ExperimentConfig.from_dict(d)


def variants(
    profile: str | Path,
    changes: Mapping[str, Mapping[str, Any]],
    **common: Any,
) -> list[ExperimentConfig]:
    """The baseline followed by one config per named variant (``{name: changes}``).

    A variant whose config turns out identical to the baseline's (``{"train.loss": "bce"}``
    when the baseline uses BCE) *is* the baseline: it is named ``baseline`` and listed once,
    so its run is shared with every other notebook.
    """
    base = experiment_config(profile, **common)
    configs = [base]
    for name, change in changes.items():
        cfg = experiment_config(profile, name, change, **common)
        if dataclasses.replace(cfg, name=base.name).fingerprint() == base.fingerprint():
            continue
        if any(c.name == cfg.name for c in configs):
            raise ValueError(f"two variants are both named {cfg.name!r}: give them different names")
        configs.append(cfg)
    return configs


def backbones(
    profile: str | Path,
    models: Sequence[str],
    max_steps: Mapping[str, int] | None = None,
    **common: Any,
) -> list[ExperimentConfig]:
    """The baseline and one variant per backbone in ``models``, each optionally capped at
    ``max_steps[model]`` optimizer steps (so a slow backbone gets about the same wall time)."""
    import cxrlib.models.backbones  # noqa: F401  (registers the backbones)
    from cxrlib.models.registry import get_model_spec

    size = base_config(profile, **{k: v for k, v in common.items() if k != "name"}).data.image_size
    changes: dict[str, dict[str, Any]] = {}
    for m in models:
        change: dict[str, Any] = {"model.name": m}
        if max_steps and m in max_steps:
            change["train.max_steps"] = int(max_steps[m])
        # Inception-v3's unpadded stem needs 75 px: below that it gets the smallest multiple
        # of 8 that fits, and the results table's size column says so.
        need = int(get_model_spec(m).min_input_size)
        if size < need:
            change["data.image_size"] = -(-need // 8) * 8
        changes[m] = change
    return variants(profile, changes, **common)


def variant_name(changes: Mapping[str, Any]) -> str:
    """A readable run name from changed values: ``{"model.head": "fpn"}`` -> ``fpn``."""
    parts = []
    for key, value in changes.items():
        leaf = key.split(".")[-1]
        if isinstance(value, bool):
            parts.append(leaf if value else f"no_{leaf}")
        elif isinstance(value, (str, int, float)) and value is not None:
            parts.append(str(value))
        else:
            parts.append(f"{leaf}={json.dumps(value, sort_keys=True)}")
    return "+".join(parts).replace("/", "_").replace(" ", "")


# ----------------------------------------------------------------------------- runs


def run(cfg: ExperimentConfig, redo: bool = False, progress: bool = False, data=None):
    """``cxrlib.train.run_experiment`` with one difference: under the report runner's
    ``--redo``, a run this report already retrained is reused instead of trained again."""
    from cxrlib.train import run_experiment

    since = os.environ.get(REDO_SINCE_ENV)
    finished = runs.finished_at(cfg.run_dir)
    if redo and since and finished is not None and finished >= float(since):
        redo = False
    return run_experiment(cfg, data=data, redo=redo, progress=progress)


def run_all(configs: Sequence[ExperimentConfig], redo: bool = False, progress: bool = False) -> dict[str, Any]:
    """Run (or reuse) several experiments in order: ``{name: RunResult}``."""
    return {cfg.name: run(cfg, redo=redo, progress=progress) for cfg in configs}


def summary(results: Mapping[str, Any]) -> pd.DataFrame:
    """Mean AUROC (95% CI), split and training time of RunResults, one row each."""
    rows = []
    for name, res in results.items():
        m = res.metrics
        ci = m.get("mean_auroc_ci") or [math.nan, math.nan]
        rows.append({
            "experiment": name,
            "mean AUROC": _float(m.get("mean_auroc")),
            "95% CI": "" if ci[0] is None else f"[{_float(ci[0]):.3f}, {_float(ci[1]):.3f}]",
            "split": m.get("split", ""),
            "test images": m.get("n_images"),
            "train seconds": round(_float(getattr(res, "train_seconds", m.get("train_seconds"))), 1),
        })
    return pd.DataFrame(rows)


def comparison(results: Mapping[str, Any], baseline: str = BASELINE, n_bootstrap: int = 1000,
               seed: int = 0) -> pd.DataFrame:
    """Paired difference of each run from ``baseline`` (mean AUROC, 95% CI, p-value)."""
    base = results[baseline]
    rows = []
    for name, res in results.items():
        if name == baseline:
            continue
        cmp = runs.compare_runs(base.run_dir, res.run_dir, n_bootstrap=n_bootstrap, seed=seed)
        if cmp is None:
            rows.append({"experiment": name, "vs": baseline, "diff": math.nan, "95% CI": "other test set",
                         "p-value": math.nan})
            continue
        ci = cmp.get("ci") or [math.nan, math.nan]
        rows.append({
            "experiment": name,
            "vs": baseline,
            "diff": round(_float(cmp.get("diff")), 4),
            "95% CI": f"[{_float(ci[0]):+.3f}, {_float(ci[1]):+.3f}]",
            "p-value": _float(cmp.get("p_value")),
        })
    return pd.DataFrame(rows, columns=["experiment", "vs", "diff", "95% CI", "p-value"])


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
