"""The shortcut control: what global intensity statistics alone achieve.

A model that sees no spatial information at all, only an image's grey-level distribution
(a 16-bin histogram, percentiles, mean and standard deviation), fitted per finding by
logistic regression on the training images. Its AUROC is the floor a real classifier must
clear: a finding it detects well changes the whole image's brightness or contrast (or
travels with something that does), so a CNN's AUROC on that finding may measure the same
shortcut rather than reading the image. On the real ChestX-ray14 sample the control stays
near chance; on phantoms it must too, or the phantoms teach shortcuts.

    scores = control_predictions(bundle)        # fit on bundle.train, score bundle.test
    scores["scores"]                            # [N, K], like a run's test_predictions.npz

The features are invariant to any permutation of the pixels (tests check it); that is what
"no spatial information" means here.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:  # imported where a control is fitted: scikit-learn takes seconds to import
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

HIST_BINS = 16
PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
FEATURE_NAMES = (tuple(f"hist_{k:02d}" for k in range(HIST_BINS)) + tuple(f"p{p:02d}" for p in PERCENTILES)
                 + ("mean", "std"))
# scikit-learn's default regularisation: the control is not tuned down to look weak.
DEFAULT_C = 1.0


def intensity_features(images: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
    """``float32 [N, 27]``: per image, the 16-bin histogram (shares of pixels over 0..255),
    nine percentiles, mean and standard deviation (grey levels scaled to 0..1).

    ``images``: ``uint8 [N, H, W]`` or any iterable of 2-D ``uint8`` images (sizes may differ).
    """
    rows = []
    for k, img in enumerate(images):
        a = np.asarray(img)
        if a.ndim != 2 or a.dtype != np.uint8:
            raise ValueError(f"image {k}: expected a 2-D uint8 image, got shape {a.shape} dtype {a.dtype}")
        rows.append(_from_counts(np.bincount(a.ravel(), minlength=256)))
    if not rows:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32)
    return np.asarray(rows, dtype=np.float32)


def _from_counts(counts: np.ndarray) -> np.ndarray:
    """The features from an image's 256 grey-level counts alone: so they cannot depend on
    where a pixel is, not even through the order of a floating-point sum."""
    n = counts.sum()
    levels = np.arange(256, dtype=np.float64) / 255.0
    hist = counts.reshape(HIST_BINS, -1).sum(axis=1) / n
    mean = (levels * counts).sum() / n
    std = np.sqrt(((levels - mean) ** 2 * counts).sum() / n)
    # Percentiles as numpy's default (linear between the order statistics around q (n - 1)).
    cum = np.cumsum(counts)
    pos = np.asarray(PERCENTILES, dtype=np.float64) / 100 * (n - 1)
    lo, hi = np.floor(pos), np.ceil(pos)
    v_lo = np.searchsorted(cum, lo, side="right") / 255.0
    v_hi = np.searchsorted(cum, hi, side="right") / 255.0
    pct = v_lo + (pos - lo) * (v_hi - v_lo)
    return np.concatenate([hist, pct, [mean, std]])


@dataclass
class ShortcutControl:
    """Per-finding logistic regressions on :func:`intensity_features` (a fitted control).

    A finding without both positives and negatives among the training images scores its
    training prevalence for every image (its AUROC is then 0.5 by construction).
    """

    label_names: list[str]
    scaler: StandardScaler
    models: list[LogisticRegression | float]

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        x = self.scaler.transform(np.asarray(features, dtype=np.float64))
        out = np.empty((len(x), len(self.models)), np.float32)
        for k, m in enumerate(self.models):
            out[:, k] = m if isinstance(m, float) else m.predict_proba(x)[:, 1]
        return out

    def predict(self, images) -> np.ndarray:
        """``float32 [N, K]`` probabilities for ``images`` (as :func:`intensity_features` takes)."""
        return self.predict_features(intensity_features(images))


def fit_control(features: np.ndarray, targets: np.ndarray, label_names: Sequence[str] | None = None,
                C: float = DEFAULT_C, n_features: int = len(FEATURE_NAMES)) -> ShortcutControl:
    """Fit the control on ``features`` (from :func:`intensity_features`, or ``n_features``
    columns of :func:`metadata_features`) and 0/1 ``targets [N, K]``."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"features shape {x.shape}: expected [N, {n_features}] (intensity_features gives "
                         f"{len(FEATURE_NAMES)} columns, metadata_features one or more)")
    if y.ndim != 2 or len(y) != len(x):
        raise ValueError(f"targets shape {y.shape} does not match {len(x)} images")
    names = list(label_names) if label_names is not None else [f"class_{k}" for k in range(y.shape[1])]
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} label names for {y.shape[1]} target columns")
    # scikit-learn takes one to two seconds to import: only fitting a control pays for it
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    models: list[LogisticRegression | float] = []
    for k in range(y.shape[1]):
        t = (y[:, k] > 0.5).astype(int)
        if 0 < t.sum() < len(t):
            models.append(LogisticRegression(C=C, max_iter=2000).fit(xs, t))
        else:
            models.append(float(t.mean()) if len(t) else 0.0)
    return ShortcutControl(names, scaler, models)


def _part_images(dataset) -> np.ndarray:
    return np.asarray(dataset.cache.images[np.asarray(dataset.slots)])


def control_predictions(bundle, train: str = "train", test: str = "test",
                        C: float = DEFAULT_C) -> dict[str, np.ndarray]:
    """Fit the control on a DataBundle's ``train`` part and score its ``test`` part.

    Returns what a run's ``test_predictions.npz`` holds: ``ids``, ``patient_ids``,
    ``targets``, ``scores`` (``float32 [N, K]``) and ``label_names``; so the control can stand
    in a results table or a paired comparison beside any trained model.
    """
    tr, te = bundle.dataset(train), bundle.dataset(test)
    control = fit_control(intensity_features(_part_images(tr)), tr.targets, tr.label_names, C=C)
    return {
        "ids": np.asarray(te.image_ids),
        "patient_ids": np.asarray(te.patient_ids),
        "targets": np.asarray(te.targets, dtype=np.float32),
        "scores": control.predict_features(intensity_features(_part_images(te))),
        "label_names": np.asarray(te.label_names),
    }


def cross_validated_scores(features: np.ndarray, targets: np.ndarray, patient_ids, folds: int = 5,
                           seed: int = 0, C: float = DEFAULT_C) -> np.ndarray:
    """Out-of-fold control scores ``[N, K]`` with patient-grouped ``folds``-fold CV.

    For data without a usable train split (a small sample): every image is scored by a
    control fitted on the folds that hold none of its patient's images.
    """
    x = np.asarray(features)
    y = np.asarray(targets)
    patients = np.asarray(patient_ids)
    if not 2 <= folds <= len(np.unique(patients)):
        raise ValueError(f"folds={folds}: expected 2 to the number of patients ({len(np.unique(patients))})")
    unique, inverse = np.unique(patients, return_inverse=True)
    fold_of = np.random.default_rng(seed).permutation(len(unique)) % folds
    fold = fold_of[inverse]
    out = np.empty(y.shape, np.float32)
    for f in range(folds):
        held = fold == f
        out[held] = fit_control(x[~held], y[~held], C=C, n_features=x.shape[1]).predict_features(x[held])
    return out


# ------------------------------------------------------------------------- the metadata control
#
# What the image's metadata alone achieve: view position (AP films are mostly portable, taken
# of patients too sick to stand), age, sex and the follow-up number (patients with many images
# are sicker). Like the histogram control it is a floor, and a CNN can read the same things
# from the pixels (an AP film looks different: Zech et al. 2018), so a finding the metadata
# rank well is one whose AUROC may measure the ward rather than the lung.

METADATA_CONTROL_COLUMNS = ("view_position", "age", "sex", "follow_up")



def _indicator(values, column: str, yes: str, no: str) -> np.ndarray:
    """1.0 where a two-valued metadata column reads ``yes``, 0.0 where ``no``; any other value fails,
    naming it (a typo must not become a silent 0)."""
    text = values.astype(str).str.upper().str.strip()
    odd = sorted(set(text) - {yes, no})
    if odd:
        raise ValueError(f"{column} values {odd[:5]}: expected {yes} or {no}")
    return (text == yes).to_numpy(float)


def metadata_features(meta, columns: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """``(float64 [N, F], feature names)`` from a metadata DataFrame (``DataBundle.metadata``).

    ``view_position`` becomes ``AP`` (1 for AP, 0 for PA), ``sex`` becomes ``male``, ``age``
    ``age/100`` and its square (risk is not linear in age), ``follow_up`` ``log(1 + n)``.
    ``columns``: the metadata to use (default: every one of :data:`METADATA_CONTROL_COLUMNS` the
    table has). A missing value is replaced by the column's mean over the table, and said.
    """
    have = [c for c in METADATA_CONTROL_COLUMNS if c in getattr(meta, "columns", ())]
    use = list(columns) if columns is not None else have
    unknown = [c for c in use if c not in METADATA_CONTROL_COLUMNS]
    if unknown:
        raise ValueError(f"metadata column(s) {unknown}: expected some of {list(METADATA_CONTROL_COLUMNS)}")
    absent = [c for c in use if c not in have]
    if absent or not use:
        raise ValueError(f"the metadata hold {have or 'no usable column'}; asked for {use or 'any'}: "
                         "this source has no such metadata (phantoms know only the follow-up number)")
    cols, names = [], []
    for c in use:
        v = meta[c]
        if c == "view_position":
            cols.append(_indicator(v, c, "AP", "PA")); names.append("AP")
        elif c == "sex":
            cols.append(_indicator(v, c, "M", "F")); names.append("male")
        elif c == "age":
            a = _filled(v.to_numpy(float), "age") / 100.0
            cols += [a, a ** 2]; names += ["age/100", "(age/100)^2"]
        else:
            cols.append(np.log1p(np.maximum(_filled(v.to_numpy(float), c), 0))); names.append("log(1+follow_up)")
    return np.stack(cols, axis=1), names


def _filled(x: np.ndarray, name: str) -> np.ndarray:
    bad = ~np.isfinite(x)
    if bad.all():
        raise ValueError(f"metadata column {name!r} holds no number")
    if bad.any():
        warnings.warn(f"{int(bad.sum())} image(s) without a readable {name}: given the mean", stacklevel=3)
        x = np.where(bad, x[~bad].mean(), x)
    return x


def metadata_control_predictions(bundle, train: str = "train", test: str = "test",
                                 columns: Sequence[str] | None = None, C: float = DEFAULT_C) -> dict[str, np.ndarray]:
    """The metadata control: fitted on a DataBundle's ``train`` part, scoring its ``test`` part,
    as :func:`control_predictions` does with the histogram. Errors when the source has no metadata."""
    tr, te = bundle.dataset(train), bundle.dataset(test)
    meta_tr, meta_te = bundle.metadata(train), bundle.metadata(test)
    if meta_tr is None or meta_te is None:
        raise ValueError(f"source {bundle.source!r} offers no metadata: the metadata control needs a view position, "
                         "age, sex or follow-up number")
    x_tr, names = metadata_features(meta_tr, columns)
    x_te, _ = metadata_features(meta_te, columns or [c for c in METADATA_CONTROL_COLUMNS if c in meta_tr.columns])
    control = fit_control(x_tr, tr.targets, tr.label_names, C=C, n_features=len(names))
    return {
        "ids": np.asarray(te.image_ids),
        "patient_ids": np.asarray(te.patient_ids),
        "targets": np.asarray(te.targets, dtype=np.float32),
        "scores": control.predict_features(x_te),
        "label_names": np.asarray(te.label_names),
    }
