"""Experiments as small changes to a profile's baseline, run or reused, and compared.

A notebook resolves its profile once and asks for variants of the baseline::

    profile = profiles.load(PROFILE, data_dir=DATA_DIR, device=DEVICE, runs_dir=RUNS_DIR, overrides=OVERRIDES)
    configs = experiments.variants(profile, {"fpn": {"model.head": "fpn"}})
    results = experiments.run_all(configs)
    experiments.compare(results)      # summary, paired comparison, per-class table, figure

The command line's overrides apply to the baseline and every variant alike, so the
baseline's config is identical in every notebook: it trains once and is reused after.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from cxrlib import plots, profiles, runs
from cxrlib.config import BASELINE, ExperimentConfig
from cxrlib.models import get_model_spec
from cxrlib.profiles import Profile
from cxrlib.runs import RunResult
from cxrlib.train import run_experiment

# Set by the report runner under --redo: runs finished after this time (seconds since the
# epoch) are this report's own, so the baseline that every notebook shares retrains once.
REDO_SINCE_ENV = "CXRLIB_REDO_SINCE"


def variants(profile: Profile, changes: Mapping[str, Mapping[str, Any]]) -> list[ExperimentConfig]:
    """The baseline followed by one config per named variant (``{name: changes}``).

    A variant whose config turns out identical to the baseline's (``{"train.loss": "bce"}``
    when the baseline uses BCE) *is* the baseline: it is named ``baseline`` and listed once,
    so its run is shared with every other notebook.
    """
    base = profile.config()
    configs = [base]
    for name, change in changes.items():
        cfg = profile.config(name, change)
        if dataclasses.replace(cfg, name=base.name).fingerprint() == base.fingerprint():
            continue
        if any(c.name == cfg.name for c in configs):
            raise ValueError(f"two variants are both named {cfg.name!r}: give them different names")
        configs.append(cfg)
    return configs


def backbones(profile: Profile, models: Sequence[str], max_steps: Mapping[str, int] | None = None,
              ) -> list[ExperimentConfig]:
    """The baseline and one variant per backbone in ``models``, each optionally capped at
    ``max_steps[model]`` optimizer steps (so a slow backbone gets about the same wall time)."""
    size = profile.baseline.data.image_size
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
    return variants(profile, changes)


def heatmap_config(profile: Profile, head: str = "") -> ExperimentConfig:
    """The run whose heatmaps are scored (notebook 07): the baseline, or its variant with the
    head ``head``, the same config (so the same run) that the head's own notebook trains."""
    return variants(profile, {head: {"model.head": head}})[-1] if head else profile.config()


def base_config(profile: str | Path = "cpu", *, data_dir: str | None = "", device: str | None = "",
                runs_dir: str | Path | None = "", overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The profile's baseline: ``profiles.load(...).baseline`` (the demo still asks here)."""
    return profiles.load(profile, data_dir=data_dir, device=device, runs_dir=runs_dir, overrides=overrides).baseline


# ----------------------------------------------------------------------------- runs


def run(cfg: ExperimentConfig, redo: bool = False, progress: bool = False, data=None):
    """``cxrlib.train.run_experiment`` with one difference: under the report runner's
    ``--redo``, a run this report already retrained is reused instead of trained again."""
    since = os.environ.get(REDO_SINCE_ENV)
    finished = runs.finished_at(cfg.run_dir)
    if redo and since and finished is not None and finished >= float(since):
        redo = False
    return run_experiment(cfg, data=data, redo=redo, progress=progress)


def run_all(configs: Sequence[ExperimentConfig], redo: bool = False, progress: bool = False) -> dict[str, RunResult]:
    """Run (or reuse) several experiments in order: ``{name: RunResult}``."""
    return {cfg.name: run(cfg, redo=redo, progress=progress) for cfg in configs}


def summary(results: Mapping[str, RunResult]) -> pd.DataFrame:
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


def comparison(results: Mapping[str, RunResult], baseline: str = BASELINE, n_bootstrap: int = 1000,
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


@dataclass
class Comparison:
    """A notebook's comparison of its runs: each part displays in a cell of its own, or all
    of them in order when the value itself is displayed."""

    baseline: str
    summary: pd.DataFrame  # mean AUROC (95% CI), split, training time per run
    paired: pd.DataFrame  # each run's paired difference from the baseline: 95% CI, p-value
    per_class: pd.DataFrame  # AUROC per finding and run
    figure: Any  # matplotlib Figure: validation mean AUROC per epoch, and test ROC curves

    def _ipython_display_(self) -> None:
        from IPython.display import display  # only called inside IPython

        for part in (self.summary, self.paired, self.per_class, self.figure):
            display(part)


def compare(results: Mapping[str, RunResult], baseline: str | None = None, n_bootstrap: int | None = None,
            seed: int = 0) -> Comparison:
    """Compare runs with ``baseline`` (default: the first, as :func:`variants` lists it).

    ``n_bootstrap`` defaults to the baseline config's. The figure is not drawn into the
    notebook's current pyplot state, so it appears where the comparison is displayed, once.
    """
    from matplotlib.figure import Figure  # matplotlib loads only when a figure is drawn, as in plots

    baseline = baseline or next(iter(results))
    if baseline not in results:
        raise ValueError(f"baseline {baseline!r} is not among the runs compared: {', '.join(results)}")
    if n_bootstrap is None:
        n_bootstrap = results[baseline].config.train.n_bootstrap
    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, 2)
    plots.plot_history({name: r.history for name, r in results.items()}, "val_mean_auroc", ax=axes[0])
    plots.plot_roc_curves({name: r.predictions for name, r in results.items()}, ax=axes[1])
    figure.tight_layout()
    return Comparison(
        baseline=baseline,
        summary=summary(results),
        paired=comparison(results, baseline=baseline, n_bootstrap=n_bootstrap, seed=seed),
        per_class=plots.per_class_table({name: r.metrics for name, r in results.items()}),
        figure=figure,
    )


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
