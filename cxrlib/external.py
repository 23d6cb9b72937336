"""Another hospital: an external test set, and the AUROC a model loses there, per finding.

A model is tested on images from its own archive (the internal test split) and on images
from a second site it never saw (the external set): another detector and tone scale,
another exposure practice, another mix of patients, more devices. On phantoms the second
site is drawn with other knobs (:data:`SITE_B`) and other patients (another cohort seed); on
real data it is any second folder in the release's layout (its metadata table and images),
all of whose images are the external set. Nothing is trained here: the baseline's runs are
re-scored.

The two test sets hold different images, so the drop cannot be paired image by image: each
set is resampled by its own patient bootstrap, and the drop's CI is that of the difference
of two independent AUROCs (:func:`site_drop`).

    ext = external.external_bundle(run.config.data, site_dir)        # phantoms: site_dir None
    scores = external.predict(run.run_dir, external.all_images(ext))
    external.site_drop(run.predictions, scores, n_bootstrap=1000)
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from cxrlib import experiments, runs
from cxrlib.data import CachedDataset, load_data
from cxrlib.data.phantom_source import phantom_spec
from cxrlib.metrics import auroc, bootstrap_aurocs, percentile_ci
from cxrlib.results import NO_DIFFERENCE, estimate_text, interval_verdict, number_text

# The second phantom site: each a PhantomSpec knob (1 = the training site's calibrated
# strength). Its detector maps the histogram less firmly to standard levels (weaker exposure
# recognition) and is noisier; its exposures vary more; its patients are a wider habitus mix;
# it is an intensive-care site, where lines, tubes and leads are three times as frequent, and
# collimation and burned-in text more frequent.
SITE_B: dict[str, float] = {"processing": 0.3, "exposure": 2.0, "noise": 1.6, "body": 1.8, "devices": 3.0,
                            "collimation": 2.0, "markers": 2.0}
# The second site's patients: another cohort seed, so no patient (and no follow-up) of the
# training site is among them.
SITE_SEED_OFFSET = 1000


def site_config(data_cfg, site_dir: str | Path | None = None, knobs: Mapping[str, float] | None = None,
                num_phantoms: int | None = None):
    """The DataConfig of the external site for a run trained on ``data_cfg``: same image size,
    labels and label noise; on phantoms other knobs (``knobs``, default :data:`SITE_B`) and
    other patients, drawn ``num_phantoms`` strong (default: as many as ``data_cfg``); on real
    data the folder ``site_dir`` in the release's layout."""
    if data_cfg.source == "phantoms":
        if site_dir:
            raise ValueError(f"site_dir={str(site_dir)!r}: the run was trained on phantoms, whose second site is "
                             "drawn, not read; give no folder (or train on the real data)")
        options = {**(data_cfg.phantom_options or {}), **dict(SITE_B if knobs is None else knobs),
                   "confounder": 0.0}  # the lesson's drain belongs to the training site's archive
        cfg = dataclasses.replace(data_cfg, seed=data_cfg.seed + SITE_SEED_OFFSET, phantom_options=options,
                                  num_phantoms=int(num_phantoms or data_cfg.num_phantoms), limit=None)
        phantom_spec(cfg)  # unknown knobs fail here, naming them
        return cfg
    if data_cfg.source != "chestxray14":
        raise ValueError(f"source {data_cfg.source!r}: an external site exists for phantoms and for ChestX-ray14 "
                         "folders only")
    if not site_dir:
        raise ValueError("site_dir: give the second site's folder (the release's layout: Data_Entry_2017*.csv, "
                         "split lists and images/)")
    site, own = Path(site_dir).expanduser().resolve(), Path(data_cfg.data_dir).expanduser().resolve()
    if not site.is_dir():
        raise FileNotFoundError(f"external site folder {site} does not exist")
    if site == own:
        raise ValueError(f"site_dir {site} is the folder the model was trained from: an external site must be "
                         "another archive")
    return dataclasses.replace(data_cfg, data_dir=str(site), limit=None)


def external_bundle(data_cfg, site_dir: str | Path | None = None, knobs: Mapping[str, float] | None = None,
                    num_phantoms: int | None = None, progress: bool = False):
    """The external site's DataBundle (:func:`site_config`, loaded and cached)."""
    return load_data(site_config(data_cfg, site_dir, knobs, num_phantoms), progress=progress)


def all_images(bundle) -> CachedDataset:
    """Every image of a site, its three parts together: no image of another site trained the
    model, so the whole archive is test data."""
    parts = [bundle.train, bundle.val, bundle.test]
    return CachedDataset(bundle.cache, np.concatenate([p.slots for p in parts]),
                         np.concatenate([p.image_ids for p in parts]),
                         np.concatenate([np.asarray(p.patient_ids).astype(str) for p in parts]),
                         np.concatenate([p.targets for p in parts]), bundle.label_names, seed=parts[0].seed)


def predict(run_dir: str | Path, dataset, batch_size: int = 64, device: str = "cpu") -> dict[str, np.ndarray]:
    """A finished run's predictions on ``dataset`` (ids, patient_ids, targets, scores,
    label_names), as its own ``test_predictions.npz`` holds them for its test split."""
    loaded = runs.load_model(run_dir, device)
    if int(loaded.image_size) != int(dataset.image_size):
        raise ValueError(f"{run_dir} was trained at {loaded.image_size} px, the external images are "
                         f"{dataset.image_size} px: make the site at the run's size (site_config(run.config.data))")
    with warnings.catch_warnings():  # only the scores are wanted here: site_drop says what is undefined
        warnings.simplefilter("ignore", UserWarning)
        predictions = experiments.score(loaded, dataset, batch_size=batch_size)
    return predictions


def _columns(pred: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    names = [str(n) for n in pred["label_names"]]
    return (np.asarray(pred["targets"], dtype=np.float64), np.asarray(pred["scores"], dtype=np.float64),
            np.asarray(pred["patient_ids"]).astype(str), names)


def site_drop(internal: Mapping[str, Any], external: Mapping[str, Any], n_bootstrap: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """Per finding: AUROC on the internal test split and on the external set, each with its
    patient-bootstrap 95% CI, and the drop (internal minus external) with the CI of the
    difference of the two independent bootstraps; a last row ``mean`` over the findings
    defined on both sets. ``internal``/``external``: predictions as a run's ``test_predictions.npz``.
    """
    y_i, s_i, p_i, names = _columns(internal)
    y_e, s_e, p_e, names_e = _columns(external)
    if names != names_e:
        raise ValueError(f"the two prediction sets name different labels: {names} and {names_e}")
    a_i, a_e = auroc(y_i, s_i), auroc(y_e, s_e)
    both = np.flatnonzero(np.isfinite(a_i) & np.isfinite(a_e))
    boot_i = boot_e = np.zeros((0, len(both)))
    if n_bootstrap > 0 and len(both):
        boot_i = bootstrap_aurocs(y_i, s_i, both, p_i, n_bootstrap, seed)
        boot_e = bootstrap_aurocs(y_e, s_e, both, p_e, n_bootstrap, seed + 1)
        n = min(len(boot_i), len(boot_e))
        boot_i, boot_e = boot_i[:n], boot_e[:n]
    rows = []
    for k, name in enumerate(names):
        row = {"finding": name, "internal positives": int(y_i[:, k].sum()), "external positives": int(y_e[:, k].sum()),
               "internal AUROC": a_i[k], "external AUROC": a_e[k], "drop": a_i[k] - a_e[k]}
        j = np.flatnonzero(both == k)
        ci = [(np.nan, np.nan)] * 3 if not len(j) or not len(boot_i) else [
            percentile_ci(boot_i[:, j[0]]), percentile_ci(boot_e[:, j[0]]), percentile_ci(boot_i[:, j[0]] - boot_e[:, j[0]])]
        for col, (lo, hi) in zip(("internal", "external", "drop"), ci):
            row[f"{col} CI low"], row[f"{col} CI high"] = lo, hi
        rows.append(row)
    table = pd.DataFrame(rows).set_index("finding")
    mean = {"internal positives": np.nan, "external positives": np.nan,
            "internal AUROC": a_i[both].mean() if len(both) else np.nan,
            "external AUROC": a_e[both].mean() if len(both) else np.nan}
    mean["drop"] = mean["internal AUROC"] - mean["external AUROC"]
    if len(boot_i):
        for col, b in (("internal", boot_i.mean(axis=1)), ("external", boot_e.mean(axis=1)),
                       ("drop", boot_i.mean(axis=1) - boot_e.mean(axis=1))):
            mean[f"{col} CI low"], mean[f"{col} CI high"] = percentile_ci(b)
    table.loc["mean"] = pd.Series(mean)
    return table


def drop_words(table: pd.DataFrame) -> str:
    """The mean drop in words, from :func:`site_drop`'s table, written through
    :mod:`cxrlib.results`' one convention: the drop (internal minus external AUROC) with its 95%
    CI (:func:`~cxrlib.results.estimate_text`) and the verdict of one CI
    (:func:`~cxrlib.results.interval_verdict`): worse at the other site when the drop's CI lies
    above 0, better when below, no difference shown when it includes 0."""
    m = table.loc["mean"]
    lo, hi = m.get("drop CI low", np.nan), m.get("drop CI high", np.nan)
    where = (f"mean AUROC {number_text(m['internal AUROC'])} at its own site, "
             f"{number_text(m['external AUROC'])} at the other")
    if not np.isfinite(lo):
        return f"{where}; no CI (too few images to resample)"
    # the drop is internal minus external: a lower drop is better for the other site
    word = interval_verdict(lo, hi, lower_is_better=True)
    why = "the 95% CI includes 0" if word == NO_DIFFERENCE else "the 95% CI excludes 0"
    at = "" if word == NO_DIFFERENCE else " at the other site"
    return f"{where}: drop {estimate_text(m['drop'], lo, hi, signed=True)}, {word}{at} ({why})"


@dataclasses.dataclass
class SiteResult:
    """The baseline's runs re-scored at another site: what notebook 11 shows."""

    bundle: Any  # the external site's DataBundle
    images: CachedDataset  # all of its images
    predictions: list[dict[str, np.ndarray]]  # per seed run, on ``images``
    table: pd.DataFrame  # site_drop of the first seed's run
    seed_drops: pd.DataFrame  # per seed: mean AUROC at each site and the drop

    def words(self) -> str:
        return drop_words(self.table)


def rescore_runs(results, site_dir: str | Path | None = None, knobs: Mapping[str, float] | None = None,
                 num_phantoms: int | None = None, n_bootstrap: int | None = None) -> SiteResult:
    """Every seed of a finished experiment (``results``: its RunResults, :func:`cxrlib.experiments.run_all`)
    scored at the external site (:func:`site_config` from the first run's data); the drop table of
    the first seed and, per seed, the mean drop (its spread says how much the drop is the model's
    and how much the seed's)."""
    results = list(results)
    if not results:
        raise ValueError("no run to re-score: train the baseline first (notebook 01)")
    first = results[0]
    bundle = external_bundle(first.config.data, site_dir, knobs, num_phantoms)
    images = all_images(bundle)
    predictions = [predict(r.run_dir, images) for r in results]
    n_bootstrap = first.config.train.n_bootstrap if n_bootstrap is None else n_bootstrap
    table = site_drop(first.predictions, predictions[0], n_bootstrap=n_bootstrap, seed=first.config.seed)
    rows = []
    for r, pred in zip(results, predictions):
        t = site_drop(r.predictions, pred, n_bootstrap=0)
        rows.append({"seed": r.config.seed, "internal mean AUROC": t.loc["mean", "internal AUROC"],
                     "external mean AUROC": t.loc["mean", "external AUROC"], "drop": t.loc["mean", "drop"]})
    return SiteResult(bundle, images, predictions, table, pd.DataFrame(rows).set_index("seed"))


def has_site(data_cfg, site_dir: str | Path | None = None) -> bool:
    """Whether a second site exists for runs on ``data_cfg``: on phantoms always (it is drawn),
    on real data when a second folder is given."""
    return data_cfg.source == "phantoms" or bool(site_dir)


def lesson_plan(profile) -> list:
    """Notebook 11's runs, once per seed of the profile: the baseline, re-scored at the other
    site (the controls beside it are fitted, not trained)."""
    return [profile.baseline]
