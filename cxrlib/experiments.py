"""Experiments as small changes to a profile's baseline, run or reused, and compared.

A notebook resolves its profile once and asks for variants of the baseline::

    profile = profiles.load(PROFILE, data_dir=DATA_DIR, device=DEVICE, runs_dir=RUNS_DIR, overrides=OVERRIDES)
    configs = experiments.variants(profile, {"fpn": {"model.head": "fpn"}})
    results = experiments.run_all(configs, seeds=profile.seeds)   # every seed of each
    experiments.compare(results)      # summary, paired comparison with verdict, per-class table, figure

Each training notebook builds its runs with one function here (:func:`backbones`,
:func:`head_variants`, :func:`multiscale_variants`, :func:`two_stage_variants`,
:func:`loss_variants`), and declares that same call as data in its metadata
(:class:`NotebookPlan`), so what ``cxrlib check`` plans is what the notebooks train.

The command line's overrides apply to the baseline and every variant alike, so the
baseline's config is identical in every notebook: it trains once per seed and is reused
after. The shortcut control (:func:`run_control`) is fitted on the baseline's data.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib import controls, plots, plots_training, runs
from cxrlib import progress as progress_events  # named apart from the progress= flags below
from cxrlib.config import ExperimentConfig
from cxrlib.data import load_data
from cxrlib.metrics import auroc_report
from cxrlib.models import get_model_spec
from cxrlib.models.two_stage import ATTENTION_LAYERS, PAPER_TAU
from cxrlib.profiles import Profile, Seeds
from cxrlib.results import VERDICT_RULE, format_results, results_table
from cxrlib.project import NOTEBOOKS_DIR
from cxrlib.runs import RunResult
from cxrlib.train import evaluate, run_experiment, with_channels

# Set by the report runner under --redo: runs finished after this time (seconds since the
# epoch) are this report's own, so the baseline that every notebook shares retrains once.
REDO_SINCE_ENV = "CXRLIB_REDO_SINCE"
PLAN_SECTION = "cxrlib"  # a notebook's metadata section that holds its plan (NotebookPlan)


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
              fifteen_labels: bool = False) -> list[ExperimentConfig]:
    """The baseline and one variant per backbone in ``models``, each optionally capped at
    ``max_steps[model]`` optimizer steps (so a slow backbone gets about the same wall time);
    with ``fifteen_labels``, also the baseline with No Finding as a 15th output (``15labels``).

    Models the profile lists as full profile only (:func:`full_profile_only`) are left out:
    a run that cannot leave chance within the profile's budget would read as a finding.
    """
    size = profile.baseline.data.image_size
    changes: dict[str, dict[str, Any]] = {}
    for m in models:
        if m in profile.full_profile_only:
            continue
        change: dict[str, Any] = {"model.name": m}
        if max_steps and m in max_steps:
            change["train.max_steps"] = int(max_steps[m])
        # Inception-v3's unpadded stem needs 75 px: below that it gets the smallest multiple
        # of 8 that fits, and the results table's size column says so.
        need = int(get_model_spec(m).min_input_size)
        if size < need:
            change["data.image_size"] = -(-need // 8) * 8
        changes[m] = change
    configs = variants(profile, changes)
    if fifteen_labels:  # its mean AUROC is still over the 14 findings, so it pairs with the baseline
        configs.append(profile.config("15labels", {"data.include_no_finding": True}))
    return configs


def head_variants(profile: Profile, head: str, backbone: str = "") -> list[ExperimentConfig]:
    """The baseline and the baseline with ``head`` (``fpn``, ``psp``) in place of global pooling.

    With a ``backbone`` both runs use it, and the first is ``baseline_<backbone>``: the
    comparison needs the baseline on the same backbone, never the profile's other one.
    """
    changes = {"model.head": head, **({"model.name": backbone} if backbone else {})}
    configs = variants(profile, {head: changes})
    if backbone:
        configs[0] = profile.config(f"baseline_{backbone}", {"model.name": backbone})
    return configs


def multiscale_variants(profile: Profile, scale: int) -> list[ExperimentConfig]:
    """The baseline and ``multiscale``: input ``scale`` times the baseline's side, whose deep
    branch reads it downsampled by ``scale``, so it sees exactly what the baseline sees and
    any difference comes from the full-resolution shallow branch."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"SCALE must be a whole number >= 1 (input side as a multiple of the baseline's), got {scale!r}")
    return variants(profile, {"multiscale": {
        "model.wrapper": "multiscale", "model.options": {"low_res": 1.0 / scale},
        "data.image_size": profile.baseline.data.image_size * scale}})


def two_stage_variants(profile: Profile, stage_epochs: Sequence[int], tau: float = PAPER_TAU,
                       attention_layer: str = ATTENTION_LAYERS[0]) -> list[ExperimentConfig]:
    """The baseline and ``two_stage`` (AG-CNN), trained ``stage_epochs`` = epochs of the
    global, local and fusion stages, in that order; its crop is the region of the global
    branch's ``attention_layer`` above ``tau`` times its maximum (the paper: C5, 0.7)."""
    paper = (tau, attention_layer) == (PAPER_TAU, ATTENTION_LAYERS[0])
    options = {} if paper else {"tau": tau, "attention_layer": attention_layer}
    change = {"model.wrapper": "two_stage", "train.stage_epochs": list(stage_epochs)}
    if options:  # the paper's settings are the model's defaults: its configs stay as they were
        change["model.options"] = options
    return variants(profile, {"two_stage": change})


def loss_variants(profile: Profile, losses: Sequence[str]) -> list[ExperimentConfig]:
    """The baseline and one variant per loss, named after it; the baseline's own loss is the
    baseline (listed once)."""
    return variants(profile, {loss: {"train.loss": loss} for loss in losses})


def heatmap_config(profile: Profile, head: str = "") -> ExperimentConfig:
    """The run whose heatmaps are scored (notebook 07): the baseline, or its variant with the
    head ``head``, the same config (so the same run) that the head's own notebook trains on
    the profile's baseline backbone (02/03 with ``BACKBONE`` empty)."""
    return head_variants(profile, head)[-1] if head else profile.config()


def heatmap_configs(profile: Profile, head: str = "") -> list[ExperimentConfig]:
    """:func:`heatmap_config` as a plan: the one run notebook 07 scores."""
    return [heatmap_config(profile, head)]


@dataclass(frozen=True)
class NotebookPlan:
    """What a notebook trains, as data it declares itself (``metadata.cxrlib.plan`` in the
    ``.ipynb``): the function its code cell calls (``module:function``, taking the profile
    first), which of its parameters feeds which argument, and whether each run is trained
    once per training seed of the profile (``per_seed``) or once (the seed the demo shows).

    The notebook names its own plan, so the library knows no notebook by name, and a lesson
    module (:mod:`cxrlib.shortcuts`) plans its runs without the core importing it.
    """

    builder: str
    arguments: Mapping[str, str] = field(default_factory=dict)  # argument -> PARAMETER
    per_seed: bool = True

    @classmethod
    def of_notebook(cls, path: str | Path) -> "NotebookPlan | None":
        """The plan ``path`` declares; None for a notebook that trains nothing."""
        path = Path(path)
        try:
            meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read the notebook {path}: {err}") from err
        plan = (meta.get(PLAN_SECTION) or {}).get("plan")
        if plan is None:
            return None
        if not isinstance(plan, dict) or not isinstance(plan.get("builder"), str):
            raise ValueError(f"{path}: metadata.{PLAN_SECTION}.plan must be a mapping with a 'builder' "
                             f"('module:function'), 'arguments' and 'per_seed'")
        unknown = set(plan) - {"builder", "arguments", "per_seed"}
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)} in metadata.{PLAN_SECTION}.plan")
        return cls(plan["builder"], dict(plan.get("arguments") or {}), bool(plan.get("per_seed", True)))

    def function(self) -> Callable[..., Sequence[ExperimentConfig]]:
        """The builder, imported by name (only from cxrlib)."""
        module, _, name = self.builder.partition(":")
        if not module.startswith("cxrlib.") or not name:
            raise ValueError(f"plan builder {self.builder!r}: expected 'cxrlib.<module>:<function>'")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"plan builder {self.builder!r} does not exist: {err}") from None

    def configs(self, profile: Profile, params: Mapping[str, Any]) -> list[ExperimentConfig]:
        """The builder's configs for these notebook ``params``, once per seed when ``per_seed``;
        a parameter the notebook leaves out takes the builder's default."""
        kwargs = {arg: params[param] for arg, param in self.arguments.items() if param in params}
        configs = list(self.function()(profile, **kwargs))
        if not self.per_seed:
            return configs
        return [seeded for cfg in configs for seeded in seed_configs(cfg, profile.seeds)]


def notebook_configs(profile: Profile, notebook: str | Path, params: Mapping[str, Any]) -> list[ExperimentConfig]:
    """The experiments ``notebook`` (a path, or a stem of the project's ``notebooks/``) trains or
    reuses with its papermill ``params``: its :class:`NotebookPlan`, which names the very call
    its code cell makes, so the plan and the notebook cannot drift apart (``cxrlib check``
    plans from this; ``tests/test_notebooks.py`` checks the smoke report trained exactly these
    runs). A notebook without a plan trains nothing."""
    path = Path(notebook)
    if path.suffix != ".ipynb":
        path = NOTEBOOKS_DIR / f"{notebook}.ipynb"
    plan = NotebookPlan.of_notebook(path)
    return [] if plan is None else plan.configs(profile, params)


def clinical_losses(profile: Profile, losses: Sequence[str] = ()) -> list[str]:
    """The losses notebook 09 compares: ``losses`` when given, else those notebook 06 trains
    with this profile, so the lesson reuses 06's runs and trains none."""
    return list(losses or profile.notebook_value("06_losses", "LOSSES"))


def clinical_variants(profile: Profile, losses: Sequence[str] = ()) -> list[ExperimentConfig]:
    """Notebook 09's plan: the baseline and the loss variants of :func:`clinical_losses`."""
    return loss_variants(profile, clinical_losses(profile, losses))


def full_profile_only(profile: Profile) -> pd.DataFrame:
    """The models this profile leaves to the full profile, each with its measured reason."""
    return pd.DataFrame(list(profile.full_profile_only.items()),
                        columns=["model", f"not trained by the {profile.name} profile, because"])


# ----------------------------------------------------------------------------- runs

def run(cfg: ExperimentConfig, redo: bool = False, progress: bool = False, data=None,
        checkpoint_every: int | None = None):
    """``cxrlib.train.run_experiment`` with one difference: under the report runner's
    ``--redo``, a run this report already retrained is reused instead of trained again.
    A sweep's jobs train through here too, so a run trains as its notebook would train it.
    The config is validated first: a notebook's bad value fails before any run is looked up."""
    cfg.validate()
    since = os.environ.get(REDO_SINCE_ENV)
    finished = runs.finished_at(runs.run_folder(cfg))
    if redo and since and finished is not None and finished >= float(since):
        redo = False
    extra = {"checkpoint_every": checkpoint_every} if checkpoint_every else {}
    return run_experiment(cfg, data=data, redo=redo, progress=progress, global_stage_from=finished_global_stage(cfg),
                          **extra)


def score(predictor, dataset, tta: str = "none", batch_size: int = 64, amp: bool = False) -> dict[str, np.ndarray]:
    """A loaded run's model (a :class:`~cxrlib.predict.Predictor`) scored on a cached ``dataset``
    (ids, patient_ids, targets, scores, label_names), exactly as a run's ``test_predictions.npz``
    holds its test part: the path (:func:`cxrlib.train.evaluate`) every run's test split is scored
    by, fed in the model's channels. The dataset must be at the model's size."""
    if int(dataset.image_size) != predictor.image_size:
        raise ValueError(f"the model was trained at {predictor.image_size} px, the dataset's images are "
                         f"{dataset.image_size} px: cache the images at the model's size")
    _, predictions = evaluate(predictor.module, with_channels(dataset, predictor.channels), tta=tta, n_bootstrap=0,
                              batch_size=batch_size, device=predictor.device, amp=amp)
    return predictions


# ----------------------------------------------------------------------------- a two-stage run's global stage

def global_stage_equivalent(cfg: ExperimentConfig) -> ExperimentConfig | None:
    """The plain (unwrapped) config whose training *is* the global stage of the two_stage run
    ``cfg``: same data, backbone, head, seed and training settings, for the global stage's
    epochs. None when ``cfg`` is not two_stage or its global branch reads a resized input.

    AG-CNN trains its global branch first, alone, on whole images: exactly the baseline. So a
    finished baseline run trained this way supplies the global stage instead of training it a
    second time; ``tests/test_train.py`` checks that the two_stage run then ends with the same
    predictions as when it trains every stage itself.
    """
    if cfg.model.wrapper != "two_stage" or cfg.model.options.get("global_size"):
        return None
    d = cfg.to_dict()
    crop_only = ("tau", "attention_layer", "global_size", "local_size")  # the crop's settings: no part of the global stage
    options = {k: v for k, v in d["model"]["options"].items() if k not in crop_only}
    stage_epochs = cfg.train.stage_epochs
    d["model"].update(wrapper=None, options=options)
    d["train"].update(stage_epochs=None, epochs=int(stage_epochs[0]) if stage_epochs else cfg.train.epochs)
    return ExperimentConfig.from_dict(d)


def finished_global_stage(cfg: ExperimentConfig) -> Path | None:
    """A finished run under ``cfg.runs_dir``, of any name, that trained ``cfg``'s global stage
    (:func:`global_stage_equivalent`) and kept its weights: what :func:`run` hands to
    ``run_experiment`` as ``global_stage_from``. A policy across runs, so it lives here and
    not in the training loop, which only loads what it is given."""
    want = global_stage_equivalent(cfg)
    if want is None:
        return None
    key = want.training_key()
    for run_dirs in runs.experiment_runs(cfg.runs_dir).values():
        for run_dir in run_dirs:
            try:
                other = runs.load_config(run_dir)
            except (OSError, ValueError):
                continue  # not a run this code can read: it cannot be the one
            has_weights = runs.is_finished(run_dir, other) and (Path(run_dir) / runs.BEST).is_file()
            if has_weights and other.training_key() == key:
                return Path(run_dir)
    return None

def seed_configs(cfg: ExperimentConfig, seeds: Seeds | Sequence[int] | None) -> list[ExperimentConfig]:
    """``cfg`` once per training seed (``seeds.of(cfg)`` for a profile's :class:`Seeds`; None:
    the config's own seed). Only the seed differs, so each seed's run is reused on its own."""
    chosen = (cfg.seed,) if seeds is None else seeds.of(cfg) if isinstance(seeds, Seeds) else tuple(seeds)
    return [dataclasses.replace(cfg, seed=int(s)) for s in chosen]

def run_all(configs: Sequence[ExperimentConfig], *, seeds: Seeds | Sequence[int] | None = None, redo: bool = False,
            progress: bool = False) -> dict[str, list[RunResult]]:
    """Run (or reuse) several experiments in order, each once per seed (:func:`seed_configs`):
    ``{name: [RunResult per seed]}``. Seeds already finished with the same config are reused,
    so asking for more seeds trains only the new ones."""
    return {cfg.name: [run(c, redo=redo, progress=progress) for c in seed_configs(cfg, seeds)] for cfg in configs}

CONTROL = "shortcut_control"  # the run name of the shortcut control

def control_config(profile: Profile) -> ExperimentConfig:
    """The shortcut control's config: the baseline's data and split, no network.

    Its model section names what it is (global intensity statistics, logistic regression),
    so its fingerprint changes whenever the baseline's data does and the control is refitted.
    """
    return profile.config(CONTROL, {"model.name": "intensity_statistics", "model.head": "logistic_regression",
                                    "model.wrapper": None, "model.pretrained": False})



def run_control(profile: Profile, fit: Callable[[Any], Mapping[str, np.ndarray]] = controls.control_predictions,
                redo: bool = False, data=None) -> RunResult:
    """Fit (or reuse) the shortcut control on the baseline's train split; score its test split.

    ``fit(bundle)`` returns test predictions shaped like a run's (ids, patient_ids, targets,
    scores, label_names); by default :func:`cxrlib.controls.control_predictions`, the
    histogram logistic regression. The run folder is written through :mod:`cxrlib.runs` as a run of
    kind ``control``, so the results table pairs it with the baseline like any run, and the
    demo never offers it.
    """
    description = {"name": "intensity statistics", "sees": "each image's grey-level histogram, percentiles, mean "
                   "and SD: no spatial information", "fit": "logistic regression per finding on the train split"}
    return _run_fitted(control_config(profile), fit, description, redo, data)


METADATA_CONTROL = "metadata_control"  # the run name of the metadata control


def metadata_control_config(profile: Profile) -> ExperimentConfig:
    """The metadata control's config: the baseline's data and split, no image at all."""
    return profile.config(METADATA_CONTROL, {"model.name": "metadata", "model.head": "logistic_regression",
                                             "model.wrapper": None, "model.pretrained": False})


def run_metadata_control(profile: Profile, redo: bool = False, data=None) -> RunResult:
    """Fit (or reuse) the metadata control (:func:`cxrlib.controls.metadata_control_predictions`:
    view position, age, sex, follow-up number, as far as the source has them) on the baseline's
    train split and score its test split: a row of the results table beside the shortcut control."""
    cfg = metadata_control_config(profile)
    if not redo and runs.is_finished(runs.run_folder(cfg), cfg):
        return _run_fitted(cfg, controls.metadata_control_predictions, {}, redo, data)  # reused, never fitted
    data = data if data is not None else load_data(cfg.data, progress=False)
    meta = data.metadata("train")
    seen = [c for c in controls.METADATA_CONTROL_COLUMNS if meta is not None and c in meta.columns]
    description = {"name": "metadata", "sees": f"no pixel: only {', '.join(seen) or 'nothing'}",
                   "fit": "logistic regression per finding on the train split"}
    return _run_fitted(cfg, controls.metadata_control_predictions, description, redo, data)


def _run_fitted(cfg: ExperimentConfig, fit: Callable[[Any], Mapping[str, np.ndarray]], description: dict,
                redo: bool, data) -> RunResult:
    """A control's run: reused when finished with this config, else fitted and written as kind ``control``."""
    folder = runs.run_folder(cfg)
    if not redo and runs.is_finished(folder, cfg):
        progress_events.emit("reused", cfg.name)
        return runs.load_run(folder, with_model=False)
    data = data if data is not None else load_data(cfg.data, progress=False)
    t0 = time.perf_counter()
    predictions = {k: np.asarray(v) for k, v in fit(data).items()}
    seconds = time.perf_counter() - t0
    metrics = auroc_report(predictions["targets"], predictions["scores"], [str(n) for n in predictions["label_names"]],
                           patient_ids=predictions.get("patient_ids"), n_bootstrap=cfg.train.n_bootstrap, seed=cfg.seed)
    written = runs.write_control(folder, cfg, data, metrics, predictions, seconds, description)
    progress_events.emit("finished", cfg.name, mean_auroc=written.get("mean_auroc"), split=written.get("split"))
    return RunResult(run_dir=folder, config=cfg, history=None, metrics=written, predictions=predictions,
                     train_seconds=seconds, model=None)


def _seed_lists(results: Mapping[str, RunResult | Sequence[RunResult]]) -> dict[str, list[RunResult]]:
    return {name: [r] if isinstance(r, RunResult) else list(r) for name, r in results.items()}


_SUMMARY = ["experiment", "model", "size", "split", "seeds", "mean AUROC [95% CI]", "seed SD [min, max]",
            "train time"]
_PAIRED = ["experiment", "vs baseline [95% CI]", "p-value", "per-seed differences", "verdict"]


@dataclass
class Comparison:
    """A notebook's comparison of its runs: each part displays in a cell of its own, or all
    of them in order when the value itself is displayed.

    The numbers are :func:`cxrlib.results.results_table`'s over these runs, so a notebook and
    the report's results page agree to the last digit.
    """

    baseline: str
    table: pd.DataFrame  # results_table over these runs (numbers)
    summary: pd.DataFrame  # per experiment: seeds, mean AUROC [95% CI], seed spread, training time
    paired: pd.DataFrame  # each run against the baseline: difference [95% CI], p, per-seed differences, verdict
    per_class: pd.DataFrame  # AUROC per finding and run (mean over seeds)
    figure: Any  # matplotlib Figure: the learning curves and the test ROC curves (first seed)
    rule: str = VERDICT_RULE  # when a difference is called a difference

    def _ipython_display_(self) -> None:
        from IPython.display import Markdown, display  # only called inside IPython

        for part in (self.summary, self.paired, Markdown(self.rule), self.per_class, self.figure):
            display(part)

def compare(results: Mapping[str, RunResult | Sequence[RunResult]], baseline: str | None = None,
            n_bootstrap: int | None = None, seed: int = 0) -> Comparison:
    """Compare runs with ``baseline`` (default: the first, as :func:`variants` lists it).

    ``results`` maps each experiment to its runs, one per seed (:func:`run_all`), or to one
    run. ``n_bootstrap`` defaults to the baseline config's. The figure is not drawn into the
    notebook's current pyplot state, so it appears where the comparison is displayed, once.
    """
    from matplotlib.figure import Figure  # matplotlib loads only when a figure is drawn, as in plots

    seeds = _seed_lists(results)
    baseline = baseline or next(iter(seeds))
    if baseline not in seeds:
        raise ValueError(f"baseline {baseline!r} is not among the runs compared: {', '.join(seeds)}")
    if n_bootstrap is None:
        n_bootstrap = seeds[baseline][0].config.train.n_bootstrap
    table = results_table({name: [r.run_dir for r in rs] for name, rs in seeds.items()}, baseline=baseline,
                          n_bootstrap=n_bootstrap, seed=seed, controls=False)  # the design's controls: in 09
    table = table.set_index("experiment").loc[list(seeds)].reset_index()  # the order the notebook asked for
    text = format_results(table)
    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, 2)
    # a control is fitted, not trained: it has no learning curve, only its ROC curve
    plots_training.plot_learning_curves({name: rs[0].history for name, rs in seeds.items()},
                                        {name: rs[0].steps for name, rs in seeds.items()}, ax=axes[0])
    plots.plot_roc_curves({name: rs[0].predictions for name, rs in seeds.items()}, ax=axes[1])
    if any(len(rs) > 1 for rs in seeds.values()):
        axes[0].set_title(axes[0].get_title() + " (first seed)")
        axes[1].set_title(axes[1].get_title() + " (first seed)")
    figure.tight_layout()
    return Comparison(
        baseline=baseline,
        table=table,
        summary=text[_SUMMARY],
        paired=text.loc[text["experiment"] != baseline, _PAIRED].reset_index(drop=True),
        per_class=plots.per_class_table({name: _mean_metrics([r.metrics for r in rs]) for name, rs in seeds.items()}),
        figure=figure,
    )


def _mean_metrics(seed_metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-finding and mean AUROC averaged over seeds, shaped like one run's metrics."""
    first = seed_metrics[0]
    per_class = {}
    for name in first.get("per_class", {}):
        values = [(m.get("per_class", {}).get(name) or {}).get("auroc") for m in seed_metrics]
        values = [v for v in values if v is not None]
        per_class[name] = {"auroc": float(np.mean(values)) if values else None}
    means = [m.get("mean_auroc") for m in seed_metrics if m.get("mean_auroc") is not None]
    return {"per_class": per_class, "mean_auroc": float(np.mean(means)) if means else None}
