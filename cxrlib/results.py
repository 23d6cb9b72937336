"""Runs compared and put into words: the results table, the conclusions, and the one
convention for writing a statistic.

* **The convention.** Every table, sentence, notebook and the report's index write a CI, a
  p-value, a range of seeds and a verdict through the functions of the first section:
  ``0.712 [0.690, 0.733]`` for an estimate with its 95% CI (:func:`estimate_text`,
  :func:`interval_text`), ``-0.010 to +0.020`` for a range of per-seed values
  (:func:`range_text`), ``< 0.001`` / ``0.034`` for a p-value (:func:`p_text`), and the
  verdict words :data:`BETTER`, :data:`WORSE`, :data:`NO_DIFFERENCE`, :data:`NOT_COMPARED`,
  :data:`TOO_FEW`, :data:`NOT_TESTED` (:func:`no_difference_words` and :func:`not_tested_words`
  add the numbers). :func:`verdict` is the rule for a run against the baseline
  (:data:`VERDICT_RULE`: the comparison design of :mod:`cxrlib.inference`, a t-test over seeds
  and test patients whose false-call rate is measured); :func:`interval_verdict` the rule for
  one paired CI.
* **Comparisons.** :func:`compare_runs` (two runs), :func:`compare_experiments` (two
  experiments with their seeds, over all findings or chosen ones), both on the test images the
  runs share; :func:`finding_comparison` puts the design's verdict on several choices of
  findings side by side (a finding alone, the mean of the rest) and
  :func:`format_finding_comparison` writes it.
* **The results table.** :func:`results_table`: one row per experiment of a runs folder with
  its seeds, mean AUROC and CI, the paired difference from the baseline and the verdict;
  :func:`format_results` its readable strings.
* **Conclusions** (each row of the table in one sentence) are composed by :mod:`cxrlib.conclusions`
  from this module's numbers and words.

The run folders themselves are read through :mod:`cxrlib.runs`, the statistics computed by
:mod:`cxrlib.inference` and :mod:`cxrlib.metrics`; this module only compares and writes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cxrlib.config import BASELINE
from cxrlib.labels import FINDINGS
from cxrlib.inference import (ALPHA, DESIGN_RULE, MIN_SEEDS, NEGATIVE_CONTROL, POSITIVE_CONTROL, compare_arms,
                              experiment_interval, negative_control, positive_control)
from cxrlib.metrics import paired_comparison
from cxrlib.runs import CONFIG, CONTROL, MODEL, experiment_runs, kind_of, load_predictions, read_metrics
from cxrlib.runs import _float  # a stored number, or NaN where there is none: as the run folder reads it

# ----------------------------------------------------------------------------- the convention

MISSING = "not available"  # a number that could not be computed, in a sentence
BETTER, WORSE, NO_DIFFERENCE, NOT_COMPARED, TOO_FEW, NOT_TESTED = (
    "better", "worse", "no difference shown", "not compared", "too few images", "not tested")


def _missing(x: Any) -> bool:
    try:
        return x is None or not math.isfinite(float(x))
    except (TypeError, ValueError):
        return True


def number_text(x: Any, signed: bool = False) -> str:
    """``0.712`` (``+0.012`` when ``signed``: a difference); :data:`MISSING` when not a number."""
    return MISSING if _missing(x) else f"{float(x):{'+' if signed else ''}.3f}"


def interval_text(lo: Any, hi: Any, signed: bool = False, missing: str = "") -> str:
    """``[0.690, 0.733]``: a 95% CI (or a spread); ``missing`` when either end is missing."""
    if _missing(lo) or _missing(hi):
        return missing
    return f"[{number_text(lo, signed)}, {number_text(hi, signed)}]"


def estimate_text(value: Any, lo: Any = None, hi: Any = None, signed: bool = False, missing: str = MISSING) -> str:
    """``0.712 [0.690, 0.733]``: an estimate with its interval; the estimate alone when the
    interval is missing, ``missing`` when the estimate is."""
    if _missing(value):
        return missing
    interval = interval_text(lo, hi, signed)
    return number_text(value, signed) + (f" {interval}" if interval else "")


def range_text(lo: Any, hi: Any, signed: bool = False, missing: str = "") -> str:
    """``-0.010 to +0.020``: the range of per-seed values (not a CI); ``missing`` when unknown."""
    if _missing(lo) or _missing(hi):
        return missing
    return f"{number_text(lo, signed)} to {number_text(hi, signed)}"


def p_text(p: Any, sentence: bool = False) -> str:
    """A p-value: ``< 0.001`` or ``0.034`` in a table ('' when missing); ``p < 0.001``,
    ``p = 0.034`` or ``p not available`` in a sentence."""
    if _missing(p):
        return f"p {MISSING}" if sentence else ""
    text = "< 0.001" if float(p) < 0.001 else f"{float(p):.3f}"
    if not sentence:
        return text
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def seeds_text(n: Any, kind: str = MODEL) -> str:
    """The number of training seeds behind a row, for a table."""
    if kind == CONTROL:
        return "none (fitted)"  # a control is fitted once, deterministically: there is no seed to vary
    return "" if _missing(n) else str(int(n))


def seed_words(row: Mapping[str, Any]) -> str:
    """The seeds behind a results-table row, for a sentence: how many, their SD and range."""
    if row.get("kind") == CONTROL:
        return "(fitted once, no seed)"
    n = int(row["seeds"])
    if n < 2:
        return "(one seed)"
    spread = range_text(row["seed min"], row["seed max"])
    return f"(mean of {n} seeds, SD {number_text(row['seed SD'])}, range {spread})"


def time_text(seconds: Any) -> str:
    if _missing(seconds):
        return ""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _side(lo: Any, hi: Any) -> int:
    """+1 when an interval lies above 0, -1 below, 0 when it includes 0 or is missing."""
    if _missing(lo) or _missing(hi):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


# The comparison design of cxrlib.inference, calibrated in bench/results/verdict_calibration.md.
VERDICT_RULE = DESIGN_RULE


def not_tested_words(n: int) -> str:
    """The verdict on a comparison with too few seeds on a side: ``not tested: 1 seed``."""
    return f"{NOT_TESTED}: {n} seed{'' if n == 1 else 's'}"


def no_difference_words(mdd: Any) -> str:
    """``no difference larger than 0.031 shown``: a null result with the difference it could have
    shown (80% power); never a claim that the two are the same."""
    return NO_DIFFERENCE if _missing(mdd) else f"no difference larger than {number_text(mdd)} shown"


@dataclass(frozen=True)
class Verdict:
    """What :func:`verdict` decided about one comparison with the baseline."""

    called: bool  # a difference is claimed
    direction: int  # +1 better than the baseline, -1 worse, 0 when no difference is called
    label: str  # BETTER, WORSE, no_difference_words(mdd), not_tested_words(n), NOT_COMPARED
    reason: str  # why, with the numbers that decided it
    why: str  # why, in words alone (for a sentence that gives the numbers itself)


def verdict(diff: Any, ci_low: Any, ci_high: Any, p_value: Any, mdd: Any, n_seeds: int, n_seeds_baseline: int,
            fitted: bool = False, alpha: float = ALPHA) -> Verdict:
    """The rule of :data:`VERDICT_RULE` for one run against the baseline, from the numbers of
    :func:`cxrlib.inference.compare_arms` (run minus baseline): the 95% CI of the difference,
    its p-value and its minimum detectable difference ``mdd``; ``n_seeds`` and
    ``n_seeds_baseline`` the seeds on each side (``fitted``: the run is a deterministic fit,
    such as the shortcut control, and has no seed to count). A missing ``diff``: not compared.
    """
    if _missing(diff):
        why = "the runs were not scored on the same test images"
        return Verdict(False, 0, NOT_COMPARED, f"no paired comparison: {why}", why)
    n = n_seeds_baseline if fitted else min(n_seeds, n_seeds_baseline)
    if n < MIN_SEEDS:
        why = (f"a side has {n} seed{'' if n == 1 else 's'}, and the design needs {MIN_SEEDS} a side to "
               "measure how far another seed would land")
        return Verdict(False, 0, not_tested_words(n), why, why)
    if _missing(ci_low) or _missing(ci_high) or _missing(p_value):
        why = "the comparison has no CI or p-value"
        return Verdict(False, 0, NOT_COMPARED, f"no paired comparison: {why}", why)
    ci = " " + interval_text(ci_low, ci_high, signed=True)
    p = f" ({p_text(p_value, sentence=True)})"
    if float(p_value) < alpha:
        side = 1 if ci_low + ci_high > 0 else -1
        parts = [("the 95% CI{} of the difference, over seeds and test patients, excludes 0{}", (ci, p))]
        return Verdict(True, side, BETTER if side > 0 else WORSE, *_both(parts))
    parts = [("the 95% CI{} of the difference, over seeds and test patients, includes 0{}", (ci, p))]
    if not _missing(mdd):  # the number stays in the words: it is the verdict's own
        parts.append((f"a true difference of {number_text(mdd)} would have been called 80% of the time", ()))
    return Verdict(False, 0, no_difference_words(mdd), *_both(parts))


def _both(parts: list[tuple[str, tuple[str, ...]]]) -> tuple[str, str]:
    """The reason with its numbers, and the same words without them."""
    with_numbers = " and ".join(text.format(*numbers) for text, numbers in parts)
    words = " and ".join(text.format(*("" for _ in numbers)) for text, numbers in parts)
    return with_numbers, words


def interval_verdict(ci_low: Any, ci_high: Any, n_units: int | None = None, min_units: int = 0,
                     lower_is_better: bool = False) -> str:
    """The verdict on one difference with its 95% CI (an AUROC's drop at another site):
    :data:`BETTER` or :data:`WORSE` when the CI excludes 0 on that side (below 0 counts as
    better when ``lower_is_better``, as for a drop or false positives), :data:`NO_DIFFERENCE`
    when it includes 0 or is missing, :data:`TOO_FEW` below ``min_units`` independent units
    (``n_units`` None: not counted)."""
    if n_units is not None and n_units < min_units:
        return TOO_FEW
    side = _side(ci_low, ci_high) * (-1 if lower_is_better else 1)
    return BETTER if side > 0 else WORSE if side < 0 else NO_DIFFERENCE


# ----------------------------------------------------------------------------- comparing runs


def _finding_columns(pred: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = [str(n) for n in pred["label_names"]]
    cols = [names.index(f) for f in FINDINGS if f in names]
    return pred["targets"][:, cols], pred["scores"][:, cols], [names[c] for c in cols]


@dataclass
class _Scored:
    """An experiment's seeds on its test images, over the 14 findings (No Finding left out)."""

    ids: np.ndarray
    patient_ids: np.ndarray | None
    targets: np.ndarray
    scores: list[np.ndarray]  # one [N, F] per seed
    names: list[str]


def _scored(run_dirs: Sequence[str | Path]) -> _Scored:
    first = load_predictions(run_dirs[0])
    y, s, names = _finding_columns(first)
    ids = np.asarray(first["ids"]).astype(str)
    scores = [s]
    for d in run_dirs[1:]:
        pred = load_predictions(d)
        y2, s2, names2 = _finding_columns(pred)
        if names2 != names or not np.array_equal(np.asarray(pred["ids"]).astype(str), ids) or not np.array_equal(y2, y):
            raise ValueError(f"{d}: its test images or labels differ from those of {run_dirs[0]}; the seeds of one "
                             f"experiment share the test set (the split follows data.seed, never the training seed)")
        scores.append(s2)
    patients = np.asarray(first["patient_ids"]) if "patient_ids" in first else None
    return _Scored(ids, patients, y, scores, names)


def _common(a: _Scored, b: _Scored) -> tuple[np.ndarray, np.ndarray] | None:
    """Positions in ``a`` and ``b`` of the test images both scored, or None when they share too
    few, or disagree on the findings or the labels (another split or dataset)."""
    if a.names != b.names:
        return None
    pos_b = {i: k for k, i in enumerate(b.ids)}
    common = [(k, pos_b[i]) for k, i in enumerate(a.ids) if i in pos_b]
    if len(common) < 2:
        return None
    ia = np.array([k for k, _ in common])
    ib = np.array([k for _, k in common])
    if not np.array_equal(a.targets[ia], b.targets[ib]):
        return None
    return ia, ib


def compare_experiments(base_runs: Sequence[str | Path], other_runs: Sequence[str | Path],
                        fitted: bool = False, findings: Sequence[str] | None = None) -> dict[str, Any] | None:
    """An experiment's seeds against the baseline's on the test images both scored, by the
    comparison design (:func:`cxrlib.inference.compare_arms`, other minus base, with
    ``seed_diff_min``/``max``: the range of the per-seed differences), or None when they share
    no test images with the same labels (another split or dataset). ``fitted``: the other is
    a deterministic fit with no seed (the shortcut control). ``findings``: the mean AUROC over
    these findings alone (one finding: its own AUROC), those without a positive and a negative
    on the shared images left out as from any mean; None: all of them."""
    return _compare(_scored(base_runs), _scored(other_runs), fitted, findings)


def _columns(names: Sequence[str], findings: Sequence[str] | None) -> list[int]:
    """The columns of ``findings`` among the runs' ``names`` (all of them for None)."""
    if findings is None:
        return list(range(len(names)))
    if isinstance(findings, str) or not len(findings):
        raise ValueError(f"findings={findings!r}: expected a non-empty list of finding names")
    missing = [f for f in findings if f not in names]
    if missing:
        raise ValueError(f"findings {missing} are not among the runs' findings {list(names)}")
    return [list(names).index(f) for f in findings]


def _compare(base: _Scored, other: _Scored, fitted: bool = False,
             findings: Sequence[str] | None = None) -> dict[str, Any] | None:
    pair = _common(base, other)
    if pair is None:
        return None
    ib, io = pair
    cols = _columns(base.names, findings)
    patients = base.patient_ids[ib] if base.patient_ids is not None else None
    out = compare_arms(base.targets[ib][:, cols], [s[io][:, cols] for s in other.scores],
                       [s[ib][:, cols] for s in base.scores], patient_ids=patients,
                       label_names=[base.names[c] for c in cols], fitted_a=fitted)
    seed_diffs = [a - b for a in out["per_seed_a"] for b in out["per_seed_b"]]
    return {**out, "seed_diff_min": min(seed_diffs), "seed_diff_max": max(seed_diffs)}


def finding_comparison(base_runs: Sequence[str | Path], other_runs: Sequence[str | Path],
                       groups: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Two experiments' seeds compared by the design on chosen findings: one row per entry of
    ``groups`` (``{row name: findings whose mean AUROC it compares}``; one finding: that
    finding alone), other minus base, with the verdict of :func:`verdict`.

    Columns: ``findings`` (how many entered the mean: those with a positive and a negative on
    the shared test images), ``base AUROC`` with its 95% CI over seeds and test patients
    (``base CI low``/``high``: did the baseline learn it at all?), ``other AUROC``, then the
    comparison columns of the results table (``diff vs baseline`` ... ``verdict``, ``reason``).
    A row none of whose findings can be scored there says so and is not compared.
    """
    base, other = _scored(base_runs), _scored(other_runs)
    pair = _common(base, other)
    rows = []
    for label, findings in groups.items():
        cols = _columns(base.names, findings)
        row: dict[str, Any] = {"comparison": label, "findings": 0, "base AUROC": math.nan, "base CI low": math.nan,
                               "base CI high": math.nan, "other AUROC": math.nan}
        y = base.targets[pair[0]][:, cols] if pair is not None else None
        scorable = 0 if y is None else int(((y.sum(0) > 0) & ((1 - y).sum(0) > 0)).sum())
        if pair is not None and not scorable:
            why = f"no finding of {list(findings)} has both a positive and a negative among the shared test images"
            rows.append({**row, **_versus_baseline(None, len(other.scores), len(base.scores), False),
                         "verdict": NOT_COMPARED, "reason": why})
            continue
        cmp = _compare(base, other, findings=findings)
        if cmp is not None:
            ib = pair[0]
            own = experiment_interval(y, [s[ib][:, cols] for s in base.scores],
                                      base.patient_ids[ib] if base.patient_ids is not None else None,
                                      [base.names[c] for c in cols])
            row.update({"findings": len(cmp["classes"]), "base AUROC": cmp["mean_auroc_b"],
                        "base CI low": own["ci"][0], "base CI high": own["ci"][1], "other AUROC": cmp["mean_auroc_a"]})
        rows.append({**row, **_versus_baseline(cmp, len(other.scores), len(base.scores), False)})
    return pd.DataFrame(rows)


def format_finding_comparison(table: pd.DataFrame, base: str = "baseline", other: str = "other") -> pd.DataFrame:
    """:func:`finding_comparison` as readable strings, ``base`` and ``other`` naming the two experiments."""
    return pd.DataFrame({
        "findings": table["findings"].map(lambda n: str(int(n)) if n else ""),
        f"{base} AUROC [95% CI]": [estimate_text(m, lo, hi) for m, lo, hi in
                                   zip(table["base AUROC"], table["base CI low"], table["base CI high"])],
        f"{other} AUROC": table["other AUROC"].map(number_text),
        f"{other} - {base} [95% CI]": [estimate_text(d, lo, hi, signed=True, missing="") for d, lo, hi in
                                       zip(table["diff vs baseline"], table["diff CI low"], table["diff CI high"])],
        "p-value": table["p-value"].map(p_text),
        "per-seed differences": [range_text(lo, hi, signed=True) for lo, hi in
                                 zip(table["seed diff min"], table["seed diff max"])],
        "verdict": table["verdict"],
    }).set_axis(table["comparison"].rename(None), axis=0)


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Paired mean-AUROC difference b - a of two single runs on the test images both scored,
    with per-finding DeLong tests (:func:`~cxrlib.metrics.paired_comparison`), or None.

    None when the two runs share no test images with the same labels (another split or
    dataset): such a difference would compare different questions.
    """
    a, b = _scored([run_a]), _scored([run_b])
    pair = _common(a, b)
    if pair is None:
        return None
    ia, ib = pair
    patients = a.patient_ids[ia] if a.patient_ids is not None else None
    # paired_comparison reports A - B: pass run_b first so a positive diff means b is better.
    return paired_comparison(a.targets[ia], b.scores[0][ib], a.scores[0][ia], patient_ids=patients,
                             n_bootstrap=n_bootstrap, seed=seed, label_names=a.names)


_COLUMNS = [
    "experiment", "kind", "model", "head", "wrapper", "loss", "labels", "image size", "split", "test images",
    "seeds", "mean AUROC", "seed SD", "seed min", "seed max", "seed AUROCs", "CI low", "CI high", "CI covers",
    "diff vs baseline", "diff CI low", "diff CI high", "p-value", "MDD", "seed diff min", "seed diff max",
    "verdict", "reason", "train seconds", "run_dir", "sees",
]
DESIGN_CONTROL = "design control"  # a row that checks the comparison design itself, from the baseline's seeds


def results_table(
    runs: str | Path | Mapping[str, Sequence[str | Path]],
    baseline: str = BASELINE,
    n_bootstrap: int = 1000,
    seed: int = 0,
    leave_out: Sequence[str] = (),
    problems: list[str] | None = None,
    controls: bool = True,
) -> pd.DataFrame:
    """One row per experiment: what it was, its seeds, its mean AUROC with the seed spread and
    a 95% CI, the difference from ``baseline`` and the verdict on it.

    ``runs`` is a runs folder (every finished experiment in it, :func:`cxrlib.runs.experiment_runs`) or
    ``{name: [run folder per seed]}``. Per experiment, over the findings:

    * ``mean AUROC``: the mean over seeds of each seed's test mean AUROC (``seed AUROCs``);
      ``seed SD``/``min``/``max`` its spread over ``seeds`` seeds; ``CI low``/``high``: the 95%
      CI of that mean over seeds and test patients, ``CI covers`` says which
      (:func:`cxrlib.inference.experiment_interval`);
    * ``diff vs baseline`` with ``diff CI``, ``p-value`` and ``MDD`` (the difference it would
      call 80% of the time): the comparison design (:func:`compare_experiments`);
      ``seed diff min``/``max``: the range of the per-seed differences, shown, not tested;
    * ``verdict`` and ``reason``: :func:`verdict`, the one rule.

    With ``controls`` and a baseline of at least two seeds, two rows check the design itself:
    :data:`~cxrlib.inference.NEGATIVE_CONTROL` (the baseline against more seeds of itself,
    simulated from its spread: should be no difference) and
    :data:`~cxrlib.inference.POSITIVE_CONTROL` (its scores with noise added: known to be worse).
    The baseline comes first, then the shortcut control, the design's controls, then the rest by
    name. ``leave_out`` names experiments not to show (a profile's "full profile only" models); ``problems`` collects
    what was skipped and why. ``n_bootstrap`` is not used by the design (it needs no resampling)
    and is accepted for the callers that pass it.
    """
    groups = experiment_runs(runs, problems) if isinstance(runs, (str, Path)) else dict(runs)
    groups = {name: [Path(d) for d in dirs] for name, dirs in groups.items() if name not in leave_out and dirs}
    scored = {name: _scored(dirs) for name, dirs in groups.items()}
    base = scored.get(baseline)
    rows = []
    for name, dirs in groups.items():
        sc = scored[name]
        metrics = read_metrics(dirs[0]) or {}
        cfg = json.loads((dirs[0] / CONFIG).read_text()) if (dirs[0] / CONFIG).is_file() else {}
        kind = kind_of(metrics)
        model, data, train = cfg.get("model", {}), cfg.get("data", {}), cfg.get("train", {})
        seconds = [_float((read_metrics(d) or {}).get("train_seconds")) for d in dirs]
        row: dict[str, Any] = {
            "experiment": name,
            "kind": kind,
            "model": model.get("name", "") if kind == MODEL else str((metrics.get("model") or {}).get("name", kind)),
            "head": model.get("head", "") if kind == MODEL else "",
            "wrapper": (model.get("wrapper") or "") if kind == MODEL else "",
            "loss": train.get("loss", "") if kind == MODEL else "",
            "labels": len(metrics.get("label_names", [])) or None,
            "image size": data.get("image_size"),
            "split": metrics.get("split", ""),
            "test images": len(sc.ids),
            "train seconds": float(np.nanmean(seconds)) if np.isfinite(seconds).any() else math.nan,
            "run_dir": str(dirs[0]),
            # what a control is fitted on, as its run folder describes it ('' for a network)
            "sees": "" if kind == MODEL else str((metrics.get("model") or {}).get("sees", "")),
            **_own_numbers(sc),
            "verdict": "", "reason": "",
        }
        if base is not None and name != baseline:
            row.update(_versus_baseline(_compare(base, sc, fitted=kind == CONTROL), len(sc.scores),
                                        len(base.scores), kind == CONTROL))
        rows.append(row)
    if controls and base is not None and len(base.scores) >= MIN_SEEDS:
        rows += _design_controls(rows[list(groups).index(baseline)], base, seed)
    table = pd.DataFrame(rows, columns=_COLUMNS)
    if len(table):
        order = np.where(table["experiment"] == baseline, 0, np.where(table["kind"] == CONTROL, 1,
                                                                     np.where(table["kind"] == DESIGN_CONTROL, 2, 3)))
        table = table.assign(_o=order).sort_values(["_o", "experiment"]).drop(columns="_o").reset_index(drop=True)
    return table


def _own_numbers(sc: _Scored) -> dict[str, Any]:
    """An experiment's own columns: its seeds, their mean and spread, the CI of the mean."""
    own = experiment_interval(sc.targets, sc.scores, sc.patient_ids, sc.names)
    per_seed = own["per_seed"]
    return {"seeds": own["n_seeds"], "mean AUROC": own["mean"], "seed SD": own["seed_sd"],
            "seed min": min(per_seed), "seed max": max(per_seed), "seed AUROCs": tuple(per_seed),
            "CI low": own["ci"][0], "CI high": own["ci"][1], "CI covers": own["covers"]}


def _versus_baseline(cmp: dict[str, Any] | None, n_seeds: int, n_base: int, fitted: bool) -> dict[str, Any]:
    """The comparison columns of a row: the design's numbers and its verdict."""
    out = {"diff vs baseline": math.nan, "diff CI low": math.nan, "diff CI high": math.nan, "p-value": math.nan,
           "MDD": math.nan, "seed diff min": math.nan, "seed diff max": math.nan}
    if cmp is not None:
        out.update({"diff vs baseline": cmp["diff"], "diff CI low": _float(cmp["ci"][0]),
                    "diff CI high": _float(cmp["ci"][1]), "p-value": _float(cmp["p_value"]), "MDD": _float(cmp["mdd"]),
                    "seed diff min": cmp["seed_diff_min"], "seed diff max": cmp["seed_diff_max"]})
    v = verdict(out["diff vs baseline"], out["diff CI low"], out["diff CI high"], out["p-value"], out["MDD"], n_seeds,
                n_base, fitted)
    return {**out, "verdict": v.label, "reason": v.reason}


def _design_controls(base_row: dict[str, Any], base: _Scored, seed: int) -> list[dict[str, Any]]:
    """The negative (A/A, simulated) and positive (planted loss) control rows of the design."""
    rows = []
    for name, what, cmp in (
        (NEGATIVE_CONTROL, "the baseline against 3 more seeds of itself, simulated from its seed spread",
         negative_control(base.targets, base.scores, base.patient_ids, base.names, seed=seed)),
        (POSITIVE_CONTROL, "the baseline's scores with noise added until their mean AUROC is lower by twice the "
                           "difference the design could show, or at chance",
         positive_control(base.targets, base.scores, base.patient_ids, base.names, seed=seed)),
    ):
        per_seed = cmp["per_seed_a"]
        diffs = [a - b for a in per_seed for b in cmp["per_seed_b"]]
        row = {**{c: base_row.get(c) for c in ("labels", "image size", "split", "test images")},
               "experiment": name, "kind": DESIGN_CONTROL, "model": what, "head": "", "wrapper": "", "loss": "",
               "seeds": len(per_seed), "mean AUROC": cmp["mean_auroc_a"], "seed AUROCs": tuple(per_seed),
               "seed SD": float(np.std(per_seed, ddof=1)), "seed min": min(per_seed), "seed max": max(per_seed),
               "CI low": math.nan, "CI high": math.nan, "CI covers": "", "train seconds": math.nan, "run_dir": ""}
        row.update(_versus_baseline({**cmp, "seed_diff_min": min(diffs), "seed_diff_max": max(diffs)},
                                    len(per_seed), len(cmp["per_seed_b"]), False))
        rows.append(row)
    return rows


def format_results(table: pd.DataFrame) -> pd.DataFrame:
    """The results table as readable strings: ``0.712 [0.690, 0.733]``, ``+0.012 [-0.010, +0.035]``."""
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
    out["seeds"] = [seeds_text(n, k) for n, k in zip(table["seeds"], table["kind"])]
    out["mean AUROC [95% CI]"] = [
        estimate_text(m, lo, hi) for m, lo, hi in zip(table["mean AUROC"], table["CI low"], table["CI high"])
    ]
    out["seed SD [min, max]"] = [
        estimate_text(sd, lo, hi, missing="")
        for sd, lo, hi in zip(table["seed SD"], table["seed min"], table["seed max"])
    ]
    out["vs baseline [95% CI]"] = [
        estimate_text(d, lo, hi, signed=True, missing="")
        for d, lo, hi in zip(table["diff vs baseline"], table["diff CI low"], table["diff CI high"])
    ]
    out["p-value"] = table["p-value"].map(p_text)
    out["per-seed differences"] = [
        range_text(lo, hi, signed=True) for lo, hi in zip(table["seed diff min"], table["seed diff max"])
    ]
    out["verdict"] = table["verdict"]
    out["train time"] = [time_text(s) + (" per seed" if n > 1 and not pd.isna(s) else "")
                         for s, n in zip(table["train seconds"], table["seeds"])]
    return out
