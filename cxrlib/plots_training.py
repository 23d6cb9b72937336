"""The learning curve: how training went, step by step, beside what validation saw each epoch.

One panel per comparison (:func:`cxrlib.experiments.compare` draws it for the first seed of
each run): the training loss of every optimizer step (``steps.csv``, :func:`cxrlib.runs.read_steps`),
light, with its running mean over :func:`running_window` steps, and the validation mean
AUROC at each epoch's end on a second axis, both over optimizer steps. A run without a step
log (trained before it existed) still draws its validation points; a control is fitted, not
trained, and draws nothing.
"""
from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

VALIDATION = "val_mean_auroc"


def running_window(steps: pd.DataFrame) -> int:
    """Steps averaged by the running mean: an eighth of an epoch (5 of a 44-step epoch, about
    600 of a 4,900-step one), at least 3 and never more than the log holds. Per-batch loss is
    noisy because each batch is a different handful of images; a window tied to the epoch
    smooths that noise alike for a short run and a long one, and still shows a change of
    learning rate between epochs."""
    per_epoch = int(steps.groupby("epoch").size().max()) if len(steps) else 0
    return max(1, min(len(steps), max(3, per_epoch // 8)))


def running_mean(steps: pd.DataFrame, window: int) -> pd.Series:
    """The training loss averaged over ``window`` steps centred on each step, within each
    stage (a new stage trains other weights: its loss does not continue the last one's)."""
    stage = steps["stage"] if "stage" in steps.columns else pd.Series("", index=steps.index)
    return steps.groupby(stage.to_numpy(), sort=False)["train_loss"].transform(
        lambda loss: loss.rolling(window, center=True, min_periods=1).mean())


def plot_learning_curves(histories: Mapping[str, pd.DataFrame | None],
                         steps: Mapping[str, pd.DataFrame | None] | None = None, ax=None):
    """Training loss per step and validation mean AUROC per epoch of several runs, over
    optimizer steps (one colour per run); returns the loss Axes (the AUROC axis is its twin).

    ``histories`` are the runs' ``history.csv`` frames and ``steps`` their step logs; a run
    whose step log is None or empty draws its validation points alone. With no step log at
    all the panel has one axis, the validation mean AUROC. The AUROC axis runs from below
    chance (0.5, dotted) to 1."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    logged = {name: s for name, s in (steps or {}).items() if s is not None and len(s)}
    auroc_ax = ax.twinx() if logged else ax
    handles, aurocs = [], []
    for i, name in enumerate(dict.fromkeys([*histories, *logged])):
        colour, log, history = f"C{i}", logged.get(name), histories.get(name)
        if log is not None:
            window = running_window(log)
            ax.plot(log["step"], log["train_loss"], color=colour, alpha=0.3, linewidth=0.7)
            handles += ax.plot(log["step"], running_mean(log, window), color=colour, linewidth=1.6,
                               label=f"{name} (loss: mean of {window} steps)")
        if history is not None and {VALIDATION, "step"} <= set(history.columns) and len(history):
            line = auroc_ax.plot(history["step"], history[VALIDATION], color=colour, marker="o", markersize=5,
                                 linestyle="--" if logged else "-", label=name)
            aurocs += [float(v) for v in history[VALIDATION] if math.isfinite(v)]
            if log is None:
                handles += line
    # AUROC on its whole scale from chance: two close dots on an axis of their own range
    # would look like a large change
    if aurocs:
        auroc_ax.axhline(0.5, color="grey", linestyle=":", linewidth=0.8, label="chance")
        auroc_ax.set_ylim(min(0.45, min(aurocs) - 0.05), 1.0)
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no step 1.5 on a short run
    if logged:
        ax.set_ylabel("training loss per step (light) and running mean")
        auroc_ax.set_ylabel("validation mean AUROC (dots)")
        ax.set_title("training loss per step, validation AUROC per epoch")
    else:
        ax.set_ylabel("validation mean AUROC")
        ax.set_title("validation mean AUROC per epoch")
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper right")  # a falling loss leaves that corner free
    return ax

