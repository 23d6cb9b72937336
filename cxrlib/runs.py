"""The run folder: the one module that writes and reads what an experiment leaves behind.

``runs/<profile>/<name>/`` holds

* ``config.json``: the :class:`~cxrlib.config.ExperimentConfig` (written when training starts);
* ``history.csv``: one row per epoch;
* ``last.pt``: the training loop's state, to resume from; ``best.pt``: the best weights with
  the config and label names;
* ``test_predictions.npz``: ids, patient ids, targets, scores, label names;
* ``metrics.json``: test AUROCs with CIs, the split, the config's fingerprint. Written last.
* ``localization.json`` (heatmap runs only): the run's localization summary, a table per
  finding (:func:`write_localization`, :func:`read_localization`).

A run is **finished** when ``metrics.json``, ``test_predictions.npz`` and ``best.pt`` are all
there (:func:`is_finished`); asked about a config, also when the metrics were made by that
config (same fingerprint). Every reader uses that one rule: training's reuse, the results
table, the command line and the demo's run list.

Reloading a run never downloads: :func:`load_model` rebuilds the architecture without
pretrained weights, then loads the run's own ``best.pt``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrlib import checkpoint as ckpt_io
from cxrlib.config import BASELINE, ExperimentConfig
from cxrlib.fileio import atomic_file, atomic_write_text
from cxrlib.labels import FINDINGS
from cxrlib.metrics import paired_comparison
from cxrlib.models import create_model_from_config

CONFIG = "config.json"
HISTORY = "history.csv"
METRICS = "metrics.json"
PREDICTIONS = "test_predictions.npz"
BEST = "best.pt"
LAST = "last.pt"
LOCALIZATION = "localization.json"
FILES = (CONFIG, HISTORY, METRICS, PREDICTIONS, BEST, LAST, LOCALIZATION)


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


# ----------------------------------------------------------------------------- writing


def write_config(run_dir: str | Path, cfg: ExperimentConfig) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg.to_json(), run_dir / CONFIG)


def write_history(run_dir: str | Path, history: list[dict] | pd.DataFrame) -> None:
    frame = history if isinstance(history, pd.DataFrame) else pd.DataFrame(history)
    atomic_write_text(frame.to_csv(index=False), Path(run_dir) / HISTORY)


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
    for name in (METRICS, PREDICTIONS, BEST, LAST, HISTORY, LOCALIZATION):
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
    time, model summary and the config's fingerprint.
    """
    run_dir = Path(run_dir)
    full = {"experiment": cfg.name, "split": getattr(data, "split_name", "unknown"),
            "source": getattr(data, "source", cfg.data.source)}
    full.update(metrics)
    full.update({"train_seconds": float(train_seconds), "model": model_summary(cfg, model),
                 "fingerprint": cfg.fingerprint()})
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
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"cannot write {LOCALIZATION}: run folder {run_dir} does not exist (train the run first)")
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"localization summary for {run_dir}: expected a pandas DataFrame, got {type(table).__name__}")
    frame = table.astype(object).where(pd.notna(table), None)
    payload = {
        "index_names": [None if n is None else str(n) for n in frame.index.names],
        "index": [_json_key(k) for k in frame.index],
        "columns": [_json_key(c) for c in frame.columns],
        "data": [[_json_value(v) for v in row] for row in frame.itertuples(index=False, name=None)],
        "notes": dict(notes or {}),
    }
    path = run_dir / LOCALIZATION
    atomic_write_text(json.dumps(payload, indent=1), path)
    return path


def read_localization(run_dir: str | Path) -> pd.DataFrame | None:
    """A run's localization summary as written by :func:`write_localization` (its notes in
    ``table.attrs["notes"]``), or None when the run has none."""
    path = Path(run_dir) / LOCALIZATION
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        index = _index(payload["index"], payload.get("index_names") or [None])
        columns = _index(payload["columns"], [None])
        table = pd.DataFrame(payload["data"], index=index, columns=columns)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"cannot read {path}: {err}; write it again (the heatmaps notebook does)") from err
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


def is_finished(run_dir: str | Path, config: ExperimentConfig | None = None) -> bool:
    """Whether ``run_dir`` holds a finished run (metrics, predictions and best weights), and,
    given ``config``, one that this config produced (its fingerprint is in the metrics)."""
    run_dir = Path(run_dir)
    if not all((run_dir / name).is_file() for name in (METRICS, PREDICTIONS, BEST)):
        return False
    if config is None:
        return True
    metrics = read_metrics(run_dir)
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


def list_runs(runs_dir: str | Path, problems: list[str] | None = None) -> list[RunSummary]:
    """Every finished run under ``runs_dir`` with its architecture, test mean AUROC and split.

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


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The run's model with its best weights, in eval mode; never downloads anything.

    The architecture is rebuilt without pretrained weights (a run trained from ImageNet
    weights must reload on a machine with no network), then ``best.pt`` (read with
    ``weights_only=True``) supplies every weight. The model carries ``label_names`` and the
    run's ``image_size``.
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
    model.label_names = list(best["label_names"])
    model.image_size = int(cfg.data.image_size)
    return model.to(device).eval()


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
    hist = pd.read_csv(run_dir / HISTORY) if (run_dir / HISTORY).is_file() else None
    metrics = read_metrics(run_dir)
    preds = load_predictions(run_dir) if (run_dir / PREDICTIONS).is_file() else None
    model = load_model(run_dir, device) if with_model and has_model(run_dir) else None
    if metrics:
        seconds = float(metrics.get("train_seconds", 0.0))
    else:
        seconds = float(hist["seconds"].iloc[-1]) if hist is not None and len(hist) else 0.0
    return RunResult(run_dir=run_dir, config=cfg, history=hist, metrics=metrics, predictions=preds,
                     train_seconds=seconds, model=model)


# ----------------------------------------------------------------------------- comparing


def _finding_columns(pred: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = [str(n) for n in pred["label_names"]]
    cols = [names.index(f) for f in FINDINGS if f in names]
    return pred["targets"][:, cols], pred["scores"][:, cols], [names[c] for c in cols]


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Paired mean-AUROC difference b - a on the test images both runs scored, or None.

    None when the two runs share no test images with the same labels (another split or
    dataset): such a difference would compare different questions.
    """
    a, b = load_predictions(run_a), load_predictions(run_b)
    ya, sa, names_a = _finding_columns(a)
    yb, sb, names_b = _finding_columns(b)
    if names_a != names_b:
        return None
    ids_a = [str(i) for i in a["ids"]]
    pos_b = {str(i): k for k, i in enumerate(b["ids"])}
    common = [(k, pos_b[i]) for k, i in enumerate(ids_a) if i in pos_b]
    if len(common) < 2:
        return None
    ia = np.array([k for k, _ in common])
    ib = np.array([k for _, k in common])
    if not np.array_equal(ya[ia], yb[ib]):
        return None
    patients = a["patient_ids"][ia] if "patient_ids" in a else None
    # paired_comparison reports A - B: pass run_b first so a positive diff means b is better.
    return paired_comparison(ya[ia], sb[ib], sa[ia], patient_ids=patients, n_bootstrap=n_bootstrap, seed=seed,
                             label_names=names_a)


_COLUMNS = [
    "experiment", "model", "head", "wrapper", "loss", "labels", "image size", "split", "test images",
    "mean AUROC", "CI low", "CI high", "diff vs baseline", "diff CI low", "diff CI high", "p-value",
    "train seconds", "run_dir",
]


def results_table(
    runs_dir: str | Path,
    baseline: str = BASELINE,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per finished run: what it was, its mean AUROC with 95% CI and split, the paired
    difference from ``baseline`` (CI, p-value) and its training time. Baseline first."""
    rows = []
    runs = finished_runs(runs_dir)
    base_dir = next((r for r in runs if r.name == baseline), None)
    for run in runs:
        metrics = read_metrics(run) or {}
        cfg_path = run / CONFIG
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        model, data, train = cfg.get("model", {}), cfg.get("data", {}), cfg.get("train", {})
        ci = metrics.get("mean_auroc_ci") or [math.nan, math.nan]
        row: dict[str, Any] = {
            "experiment": metrics.get("experiment", run.name),
            "model": model.get("name", ""),
            "head": model.get("head", ""),
            "wrapper": model.get("wrapper") or "",
            "loss": train.get("loss", ""),
            "labels": len(metrics.get("label_names", [])) or None,
            "image size": data.get("image_size"),
            "split": metrics.get("split", ""),
            "test images": metrics.get("n_images"),
            "mean AUROC": _float(metrics.get("mean_auroc")),
            "CI low": _float(ci[0]),
            "CI high": _float(ci[1]),
            "diff vs baseline": math.nan,
            "diff CI low": math.nan,
            "diff CI high": math.nan,
            "p-value": math.nan,
            "train seconds": _float(metrics.get("train_seconds")),
            "run_dir": str(run),
        }
        if base_dir is not None and run != base_dir:
            cmp = compare_runs(base_dir, run, n_bootstrap=n_bootstrap, seed=seed)
            if cmp is not None:
                dci = cmp.get("ci") or [math.nan, math.nan]
                row.update({
                    "diff vs baseline": _float(cmp.get("diff")),
                    "diff CI low": _float(dci[0]),
                    "diff CI high": _float(dci[1]),
                    "p-value": _float(cmp.get("p_value")),
                })
        rows.append(row)
    table = pd.DataFrame(rows, columns=_COLUMNS)
    if len(table):
        order = (table["experiment"] != baseline).astype(int)
        table = table.assign(_o=order).sort_values(["_o", "experiment"]).drop(columns="_o").reset_index(drop=True)
    return table


def format_results(table: pd.DataFrame) -> pd.DataFrame:
    """The results table as readable strings: ``0.712 [0.690, 0.733]``, ``+0.012 (p=0.04)``."""
    out = pd.DataFrame()
    out["experiment"] = table["experiment"]
    out["model"] = [
        " + ".join(x for x in (r["model"], r["head"] if r["head"] not in ("", "gap") else "", r["wrapper"]) if x)
        for _, r in table.iterrows()
    ]
    out["loss"] = table["loss"]
    out["labels"] = table["labels"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    out["size"] = table["image size"].map(lambda v: "" if pd.isna(v) else f"{int(v)} px")
    out["split"] = table["split"]
    out["mean AUROC [95% CI]"] = [
        _ci_text(m, lo, hi) for m, lo, hi in zip(table["mean AUROC"], table["CI low"], table["CI high"])
    ]
    out["vs baseline [95% CI]"] = [
        "" if pd.isna(d) else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        for d, lo, hi in zip(table["diff vs baseline"], table["diff CI low"], table["diff CI high"])
    ]
    out["p-value"] = table["p-value"].map(_p_text)
    out["train time"] = table["train seconds"].map(_time_text)
    return out


def _ci_text(m: float, lo: float, hi: float) -> str:
    if pd.isna(m):
        return "undefined"
    return f"{m:.3f}" + ("" if pd.isna(lo) else f" [{lo:.3f}, {hi:.3f}]")


def _p_text(p: float) -> str:
    if pd.isna(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _time_text(s: float) -> str:
    if pd.isna(s):
        return ""
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
