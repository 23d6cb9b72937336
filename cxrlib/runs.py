"""The run folder: the one module that writes and reads what an experiment leaves behind.

``runs/<profile>/<name>/`` holds

* ``config.json``: the :class:`~cxrlib.config.ExperimentConfig` (written when training starts);
* ``history.csv``: one row per epoch;
* ``steps.csv``: one row per optimizer step (its epoch, stage, images, training loss and
  learning rate), the learning curve inside an epoch; written with the history. Runs
  trained before it existed, and controls, have none (:func:`read_steps` gives None);
* ``last.pt``: the training loop's state, to resume from, removed once the run is finished
  (:func:`prune`; ``train.keep_last`` keeps it); ``best.pt``: the best weights with the
  config and label names;
* ``test_predictions.npz``: ids, patient ids, targets, scores, label names;
* ``metrics.json``: test AUROCs with CIs, the split, the config's fingerprint, the run's
  ``kind``. Written last.
* ``localization.json`` (heatmap runs only): the run's localization summary, a table per
  finding (:func:`write_localization`, :func:`read_localization`).
* ``.claim.NNNNNN`` (while a sweep worker trains the run): who trains it, written and read by
  :mod:`cxrlib.claims` alone.

**Seeds.** An experiment trained with several seeds (:func:`run_folder`) keeps its seed-0 run
in ``<name>/`` itself and seed *k* in ``<name>/seed<k>/``: whatever lists run folders (the
demo's menu, ``cxrlib evaluate --run``) sees one run per experiment, deleting ``<name>/``
deletes every seed, and runs written before seeds existed are seed 0 where they are.
:func:`experiment_runs` gathers an experiment's seeds for the results table.

**Kinds.** A run declares its ``kind`` in ``metrics.json``: ``model`` (a trained network, the
default) or ``control`` (the shortcut control: a fitted model with no weights file, so it
is never offered where a network is loaded).

A run is **finished** when ``metrics.json`` and ``test_predictions.npz`` are there with the
files its kind needs (``best.pt`` for a model, nothing more for a control; :func:`is_finished`);
asked about a config, also when the metrics were made by that config (same fingerprint).
Every reader uses that one rule: training's reuse, the results table, the command line and
the demo's run list.

Reloading a run never downloads: :func:`load_model` rebuilds the architecture without
pretrained weights, then loads the run's own ``best.pt``, and returns it as a
:class:`~cxrlib.predict.Predictor` that knows the run's image size, channels and label names.

Comparing runs and putting them into words is :mod:`cxrlib.results`'s work; this module
only stores and reads.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrlib import checkpoint as ckpt_io
from cxrlib.config import ExperimentConfig
from cxrlib.fileio import atomic_file, atomic_write_text
from cxrlib import labels
from cxrlib.models import create_model_from_config
from cxrlib.predict import Predictor

CONFIG = "config.json"
HISTORY = "history.csv"
STEPS = "steps.csv"
STEP_COLUMNS = ("step", "epoch", "stage", "samples", "train_loss", "lr")
METRICS = "metrics.json"
PREDICTIONS = "test_predictions.npz"
BEST = "best.pt"
LAST = "last.pt"
LOCALIZATION = "localization.json"
STRATA = "strata.json"  # a test set stratified by a confounder (the shortcut lesson's), per model and stratum
FILES = (CONFIG, HISTORY, STEPS, METRICS, PREDICTIONS, BEST, LAST, LOCALIZATION)

MODEL, CONTROL = "model", "control"
# What a finished run of each kind holds besides metrics.json and test_predictions.npz.
KIND_FILES = {MODEL: (BEST,), CONTROL: ()}
_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclass
class RunResult:
    """A run as the notebooks use it: its config, history, test metrics and predictions, model."""

    run_dir: Path
    config: ExperimentConfig
    history: pd.DataFrame | None
    metrics: dict[str, Any] | None
    predictions: dict[str, np.ndarray] | None
    train_seconds: float
    model: nn.Module | None
    steps: pd.DataFrame | None = None  # one row per optimizer step (see read_steps); None: not logged

    @property
    def predictor(self) -> Predictor:
        """The run's model with its input contract, on the model's device; its outputs named as
        its test predictions name them (as the config names them for a run not yet evaluated)."""
        if self.model is None:
            raise ValueError(f"the run {self.run_dir} was read without its model: load it with with_model=True")
        names = self.predictions["label_names"] if self.predictions else labels.label_names(
            self.config.data.include_no_finding)
        return Predictor.for_config(self.model, self.config, [str(n) for n in names])


@dataclass(frozen=True)
class RunSummary:
    """What a menu or a table needs to name a finished run, read without loading its model."""

    name: str
    run_dir: Path
    architecture: str  # "resnet18+gap", "resnet18+fpn", "resnet50+gap+two_stage"
    backbone: str
    image_size: int | None
    mean_auroc: float  # test mean AUROC (nan when undefined)
    split: str


# ----------------------------------------------------------------------------- where


def run_folder(cfg: ExperimentConfig) -> Path:
    """The folder of ``cfg``'s run: ``<runs_dir>/<name>/`` for training seed 0, and
    ``<runs_dir>/<name>/seed<k>/`` for seed *k* (see the module docstring)."""
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ValueError(f"experiment {cfg.name!r}: seed must be a whole number >= 0, got {cfg.seed!r}")
    folder = Path(cfg.runs_dir) / cfg.name
    return folder if cfg.seed == 0 else folder / f"seed{cfg.seed}"


def run_label(cfg: ExperimentConfig) -> str:
    """How progress lines name a run: its experiment, and the seed when it is not seed 0."""
    return cfg.name if cfg.seed == 0 else f"{cfg.name} seed {cfg.seed}"


def seed_folders(experiment_dir: str | Path) -> dict[int, Path]:
    """Every place a seed of the experiment in ``experiment_dir`` may live, finished or not:
    ``{seed: folder}``, seed 0 first."""
    root = Path(experiment_dir)
    found = {0: root}
    if root.is_dir():
        for child in root.iterdir():
            m = _SEED_DIR.match(child.name)
            if m and child.is_dir():
                found[int(m.group(1))] = child
    return dict(sorted(found.items()))


def experiment_runs(runs_dir: str | Path, problems: list[str] | None = None) -> dict[str, list[Path]]:
    """The finished runs under ``runs_dir`` grouped by experiment: ``{name: [run folder per
    seed, in seed order]}``.

    Seeds of one experiment are runs of one config that differ in the seed alone. A finished
    seed left from an earlier config (the profile changed, fewer seeds were asked for) is
    left out and named in ``problems``: the newest finished seed says which config is current.
    """
    root = Path(runs_dir)
    out: dict[str, list[Path]] = {}
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        finished = [d for d in seed_folders(folder).values() if is_finished(d)]
        if not finished:
            continue
        keys = {}
        for d in finished:
            try:
                keys[d] = dataclasses.replace(load_config(d), seed=0).fingerprint()
            except (OSError, ValueError, TypeError) as err:
                _note(problems, f"run {d} skipped: {err}")
        if not keys:
            continue
        newest = max(keys, key=lambda d: (d / METRICS).stat().st_mtime)
        kept = [d for d in keys if keys[d] == keys[newest]]
        for d in keys:
            if d not in kept:
                _note(problems, f"run {d} left out: an earlier config of {folder.name} than its newest seed's")
        out[folder.name] = kept
    return out


# ----------------------------------------------------------------------------- writing


def write_config(run_dir: str | Path, cfg: ExperimentConfig) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.to_json(), run_dir / CONFIG)


def write_history(run_dir: str | Path, history: list[dict] | pd.DataFrame,
                  steps: list[dict] | pd.DataFrame | None = None) -> None:
    """``history.csv`` (one row per epoch) and, given ``steps``, the step log first (:func:`write_steps`)."""
    if steps is not None:
        write_steps(run_dir, steps)
    frame = history if isinstance(history, pd.DataFrame) else pd.DataFrame(history)
    atomic_write_text(frame.to_csv(index=False), Path(run_dir) / HISTORY)


def read_history(run_dir: str | Path) -> pd.DataFrame | None:
    """The run's ``history.csv`` (one row per epoch), or None when it has none."""
    path = Path(run_dir) / HISTORY
    return pd.read_csv(path) if path.is_file() else None


def write_steps(run_dir: str | Path, steps: list[dict] | pd.DataFrame) -> None:
    """``steps.csv``: one row per optimizer step, with the columns of ``STEP_COLUMNS``."""
    frame = steps if isinstance(steps, pd.DataFrame) else pd.DataFrame(steps, columns=list(STEP_COLUMNS))
    missing = [c for c in STEP_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"cannot write {Path(run_dir) / STEPS}: the step log lacks the columns {missing}")
    atomic_write_text(frame[list(STEP_COLUMNS)].to_csv(index=False), Path(run_dir) / STEPS)


def read_steps(run_dir: str | Path) -> pd.DataFrame | None:
    """The run's ``steps.csv`` (one row per optimizer step; ``stage`` is "" outside staged
    models), or None when it has none (trained before the step log existed, or a control)."""
    path = Path(run_dir) / STEPS
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype={"stage": str})
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}; delete it (the run's other files stay valid) or retrain "
                         f"(--redo)") from err
    missing = [c for c in STEP_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}: delete it (the run's other files stay valid) or "
                         f"retrain (--redo)")
    return frame.assign(stage=frame["stage"].fillna(""))  # as written: "" outside staged models, not NaN


def save_last(run_dir: str | Path, state: dict[str, Any]) -> None:
    """The training loop's resumable state (its content is :mod:`cxrlib.train`'s business)."""
    ckpt_io.atomic_save(state, Path(run_dir) / LAST)


def read_last(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / LAST
    return ckpt_io.load(path) if path.is_file() else None


def save_best(run_dir: str | Path, weights: Mapping[str, torch.Tensor], cfg: ExperimentConfig,
              label_names: list[str], *, epoch: int, score: float, stage: str | None) -> None:
    """``best.pt``: the weights with everything :func:`load_model` needs to rebuild the model."""
    ckpt_io.atomic_save({"model": dict(weights), "epoch": epoch, "score": score, "stage": stage,
                         "label_names": list(label_names), "config": cfg.to_dict(),
                         "fingerprint": cfg.fingerprint()}, Path(run_dir) / BEST)


def clear(run_dir: str | Path) -> None:
    """Delete a run's results and checkpoints (``--redo``); metrics first, so a folder left
    half-cleared by a crash reads as unfinished."""
    for name in (METRICS, PREDICTIONS, BEST, LAST, HISTORY, STEPS, LOCALIZATION):
        (Path(run_dir) / name).unlink(missing_ok=True)


def save_predictions(run_dir: str | Path, predictions: Mapping[str, Any]) -> None:
    with atomic_file(Path(run_dir) / PREDICTIONS, "wb") as f:
        np.savez_compressed(f, **{k: np.asarray(v) for k, v in predictions.items()})


def model_summary(cfg: ExperimentConfig, model: nn.Module) -> dict[str, Any]:
    """The model section of metrics.json: the config's model settings, size and built name."""
    out = asdict(cfg.model)
    out["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    info = getattr(model, "info", None)
    if info is not None and hasattr(info, "name"):
        out["info_name"] = str(info.name)
    return out


def write_evaluation(run_dir: str | Path, cfg: ExperimentConfig, data, metrics: dict, predictions: dict,
                     train_seconds: float, model: nn.Module) -> dict[str, Any]:
    """Write ``test_predictions.npz`` then ``metrics.json`` (last: it marks the run finished).

    Returns the metrics as written: ``metrics`` plus the experiment, split, source, training
    time, model summary, the config's fingerprint and the kind (``model``).
    """
    written = _write_finished(run_dir, cfg, data, metrics, predictions, train_seconds, model_summary(cfg, model), MODEL)
    if not cfg.train.keep_last:
        prune(run_dir)
    return written


def prune(run_dir: str | Path) -> int:
    """Remove what a finished run no longer needs (``last.pt``: the loop's state, several
    times the size of ``best.pt`` with its optimizer moments); returns the bytes freed.

    Only a finished run is pruned, so an unfinished one always keeps what it resumes from;
    reloading, the report and the two-stage reuse read ``best.pt``, predictions, history,
    the step log and metrics, which stay.
    """
    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        return 0
    last = run_dir / LAST
    try:
        size = last.stat().st_size
        last.unlink()
    except FileNotFoundError:
        return 0
    return size


def write_control(run_dir: str | Path, cfg: ExperimentConfig, data, metrics: dict, predictions: dict,
                  fit_seconds: float, description: Mapping[str, Any]) -> dict[str, Any]:
    """A control's run folder: ``config.json``, ``test_predictions.npz``, then ``metrics.json``
    declaring ``kind: control`` (finished without ``best.pt``: a control has no network).

    ``description`` becomes the metrics' model section (what the control sees and how it is
    fitted). Returns the metrics as written.
    """
    write_config(run_dir, cfg)
    return _write_finished(run_dir, cfg, data, metrics, predictions, fit_seconds, dict(description), CONTROL)


def _write_finished(run_dir, cfg, data, metrics, predictions, seconds, model_section, kind) -> dict[str, Any]:
    run_dir = Path(run_dir)
    full = {"experiment": cfg.name, "kind": kind, "split": getattr(data, "split_name", "unknown"),
            "source": getattr(data, "source", cfg.data.source)}
    full.update(metrics)
    full.update({"train_seconds": float(seconds), "model": model_section, "fingerprint": cfg.fingerprint()})
    run_dir.mkdir(parents=True, exist_ok=True)
    save_predictions(run_dir, predictions)
    atomic_write_text(json.dumps(full, indent=2), run_dir / METRICS)
    return full


def write_localization(run_dir: str | Path, table: pd.DataFrame, notes: Mapping[str, Any] | None = None) -> Path:
    """Store a run's localization summary (``localization.json`` beside ``metrics.json``).

    ``table`` is any DataFrame of numbers or text (one row per finding, say, with the
    model's score, the random-map chance and the published figure); ``notes`` any JSON-ready
    facts about it (the method, the box rule, how many images). NaN is stored as null. The
    run folder must exist: a summary belongs to a run.
    """
    return _write_table(Path(run_dir), LOCALIZATION, "localization summary", table, notes)


def read_localization(run_dir: str | Path) -> pd.DataFrame | None:
    """A run's localization summary as written by :func:`write_localization` (its notes in
    ``table.attrs["notes"]``), or None when the run has none."""
    return _read_table(Path(run_dir) / LOCALIZATION, "the heatmaps notebook does")


def write_strata(run_dir: str | Path, table: pd.DataFrame, notes: Mapping[str, Any] | None = None) -> Path:
    """Store a test set stratified by a confounder (``strata.json`` in the run folder of the
    run trained with it): one row per (model, stratum), and ``notes`` (default: the table's
    ``attrs["notes"]``) saying how the test set was drawn."""
    return _write_table(Path(run_dir), STRATA, "stratified table", table,
                        table.attrs.get("notes") if notes is None else notes)


def read_strata(run_dir: str | Path) -> pd.DataFrame | None:
    """A run's stratified table as written by :func:`write_strata`, or None when it has none."""
    return _read_table(Path(run_dir) / STRATA, "the shortcut notebook does")


def strata_under(runs_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every stratified table under ``runs_dir`` (lesson runs live in subfolders), by the
    run folder's path relative to it."""
    root = Path(runs_dir)
    if not root.is_dir():
        return {}
    return {str(path.parent.relative_to(root)): read_strata(path.parent) for path in sorted(root.rglob(STRATA))}


def _write_table(run_dir: Path, name: str, what: str, table: pd.DataFrame, notes: Mapping[str, Any] | None) -> Path:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"cannot write {name}: run folder {run_dir} does not exist (train the run first)")
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what} for {run_dir}: expected a pandas DataFrame, got {type(table).__name__}")
    frame = table.astype(object).where(pd.notna(table), None)
    payload = {
        "index_names": [None if n is None else str(n) for n in frame.index.names],
        "index": [_json_key(k) for k in frame.index],
        "columns": [_json_key(c) for c in frame.columns],
        "data": [[_json_value(v) for v in row] for row in frame.itertuples(index=False, name=None)],
        "notes": dict(notes or {}),
    }
    path = run_dir / name
    atomic_write_text(json.dumps(payload, indent=1), path)
    return path


def _read_table(path: Path, who_writes: str) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        index = _index(payload["index"], payload.get("index_names") or [None])
        columns = _index(payload["columns"], [None])
        table = pd.DataFrame(payload["data"], index=index, columns=columns)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"cannot read {path}: {err}; write it again ({who_writes})") from err
    table.attrs["notes"] = dict(payload.get("notes") or {})
    return table.infer_objects()


def _json_key(key: Any) -> Any:
    return [_json_value(k) for k in key] if isinstance(key, tuple) else _json_value(key)


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _index(keys: list, names: list) -> pd.Index:
    if keys and all(isinstance(k, list) for k in keys):
        return pd.MultiIndex.from_tuples([tuple(k) for k in keys], names=names)
    return pd.Index(keys, name=names[0] if names else None)


# ----------------------------------------------------------------------------- finished?


def read_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """``metrics.json`` as a dict; None when it is missing or unreadable."""
    try:
        return json.loads((Path(run_dir) / METRICS).read_text())
    except (OSError, ValueError):
        return None


def kind_of(metrics: Mapping[str, Any] | None) -> str:
    """The kind a run's metrics declare (``model`` when they declare none: runs written before
    kinds existed, or metrics that cannot be read, which then fail where they are read)."""
    kind = (metrics or {}).get("kind", MODEL)
    if kind not in KIND_FILES:
        raise ValueError(f"a run declares kind {kind!r}; this version of cxrlib knows {', '.join(KIND_FILES)}: "
                         f"update cxrlib or delete that run folder")
    return kind


def is_finished(run_dir: str | Path, config: ExperimentConfig | None = None) -> bool:
    """Whether ``run_dir`` holds a finished run (metrics, predictions and the files its kind
    needs), and, given ``config``, one that this config produced (its fingerprint is in the
    metrics)."""
    run_dir = Path(run_dir)
    if not ((run_dir / METRICS).is_file() and (run_dir / PREDICTIONS).is_file()):
        return False
    metrics = read_metrics(run_dir)
    if not all((run_dir / name).is_file() for name in KIND_FILES[kind_of(metrics)]):
        return False
    if config is None:
        return True
    return metrics is not None and metrics.get("fingerprint") == config.fingerprint()


def finished_at(run_dir: str | Path) -> float | None:
    """When the run finished (seconds since the epoch: metrics.json's time), or None."""
    path = Path(run_dir) / METRICS
    return path.stat().st_mtime if is_finished(run_dir) else None


def finished_runs(runs_dir: str | Path) -> list[Path]:
    """The finished run folders directly under ``runs_dir``, by name."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and is_finished(p))


def list_runs(runs_dir: str | Path, problems: list[str] | None = None, kinds: Sequence[str] = (MODEL,),
              ) -> list[RunSummary]:
    """Every finished run directly under ``runs_dir`` (an experiment's seed-0 run) of the
    ``kinds`` given (trained models only, by default) with its architecture, test mean AUROC
    and split.

    A run whose files cannot be read is left out and described in ``problems`` when a list
    is given.
    """
    out = []
    for run_dir in finished_runs(runs_dir):
        try:
            cfg = load_config(run_dir)
        except (OSError, ValueError) as err:
            _note(problems, f"run {run_dir} skipped: {err}")
            continue
        metrics = read_metrics(run_dir)
        if metrics is None:
            _note(problems, f"run {run_dir} skipped: cannot read {METRICS}")
            continue
        if kind_of(metrics) not in kinds:
            continue
        m = cfg.model
        arch = "+".join([m.name, m.head] + ([m.wrapper] if m.wrapper else []))
        out.append(RunSummary(name=run_dir.name, run_dir=run_dir, architecture=arch, backbone=m.name,
                              image_size=cfg.data.image_size, mean_auroc=_float(metrics.get("mean_auroc")),
                              split=str(metrics.get("split", ""))))
    return out


def _note(problems: list[str] | None, text: str) -> None:
    if problems is not None:
        problems.append(text)


# ----------------------------------------------------------------------------- reading


def load_config(run_dir: str | Path) -> ExperimentConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: {CONFIG} is missing")
    return ExperimentConfig.from_json(path)


def has_model(run_dir: str | Path) -> bool:
    """Whether the run holds trained weights (``best.pt``), finished or not."""
    return (Path(run_dir) / BEST).is_file()


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """The run's model with its best weights and its input contract (a
    :class:`~cxrlib.predict.Predictor`: fed at the run's own size and channels, its outputs
    named as in training), in eval mode; never downloads anything.

    The architecture is rebuilt without pretrained weights (a run trained from ImageNet
    weights must reload on a machine with no network), then ``best.pt`` (read with
    ``weights_only=True``) supplies every weight.
    """
    run_dir = Path(run_dir)
    path = run_dir / BEST
    if not path.is_file():
        raise FileNotFoundError(f"no trained model in {run_dir} ({BEST} missing): train the run first "
                                f"(cxrlib train, or the notebook that defines it)")
    best = ckpt_io.load(path)
    cfg = ExperimentConfig.from_dict(best["config"])
    model = create_model_from_config(cfg.model, num_classes=len(best["label_names"]), pretrained=False)
    if getattr(model, "stages", None) and best.get("stage"):
        model.set_stage(best["stage"])
    model.load_state_dict(best["model"])
    return Predictor.for_config(model, cfg, list(best["label_names"]), device)


def load_predictions(run_dir: str | Path) -> dict[str, np.ndarray]:
    """A run's test predictions: ids, patient_ids, targets, scores, label_names."""
    path = Path(run_dir) / PREDICTIONS
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}; re-run the experiment (--redo)") from err


def load_run(run_dir: str | Path, with_model: bool = True, device: str | torch.device = "cpu") -> RunResult:
    """A run read back from its folder: finished, or trained but not yet evaluated."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    hist = read_history(run_dir)
    metrics = read_metrics(run_dir)
    preds = load_predictions(run_dir) if (run_dir / PREDICTIONS).is_file() else None
    model = load_model(run_dir, device).module if with_model and has_model(run_dir) else None
    if metrics:
        seconds = float(metrics.get("train_seconds", 0.0))
    else:
        seconds = float(hist["seconds"].iloc[-1]) if hist is not None and len(hist) else 0.0
    return RunResult(run_dir=run_dir, config=cfg, history=hist, metrics=metrics, predictions=preds,
                     train_seconds=seconds, model=model, steps=read_steps(run_dir))


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
