"""Figures and tables the notebooks show: label statistics, examples, ROC curves, results.

Each function takes plain arrays or a DataBundle, draws on an optional ``ax`` and returns
the Axes or Figure (or a DataFrame), so a notebook cell is one call plus a sentence of why.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cxrlib import phantoms, profiles
from cxrlib.data.cache import resize_image
from cxrlib.data.chestxray14 import find_data_entry, find_images, read_data_entry
from cxrlib.data.imageio import read_image
from cxrlib.labels import FINDINGS
from cxrlib.phantoms.spec import NUISANCE_KNOBS
from cxrlib.results import BETTER, NO_DIFFERENCE, NOT_COMPARED, WORSE, number_text


def _axes(ax, figsize=(6, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


# ----------------------------------------------------------------------------- label statistics


def metadata_table(data_dir: str | Path) -> pd.DataFrame | None:
    """ChestX-ray14's Data_Entry table (all 112,120 rows) with the 14 findings as 0/1 columns,
    or None when ``data_dir`` holds none. Age, sex and view position come along."""
    if not data_dir:
        return None
    try:
        path = find_data_entry(data_dir)
    except FileNotFoundError:
        return None
    table = read_data_entry(path)
    raw = pd.read_csv(path, keep_default_na=False)
    df = pd.DataFrame({"image_id": table.image_ids, "patient_id": table.patient_ids})
    for k, name in enumerate(table.label_names):
        df[name] = table.targets[:, k].astype(np.int8)
    for src, dst in (("Patient Age", "age"), ("Patient Gender", "sex"), ("View Position", "view")):
        if src in raw.columns:
            df[dst] = pd.to_numeric(raw[src], errors="coerce") if dst == "age" else raw[src].astype(str)
    return df


def dataset_frame(bundle) -> pd.DataFrame:
    """A DataBundle's images as a table like ``metadata_table``: ids, patients, 0/1 findings,
    and the part of the split each image is in."""
    frames = []
    for part in ("train", "val", "test"):
        ds = getattr(bundle, part)
        df = pd.DataFrame({"image_id": np.asarray(ds.image_ids).astype(str),
                           "patient_id": np.asarray(ds.patient_ids)})
        y = np.asarray(ds.targets)
        for k, name in enumerate(ds.label_names):
            df[name] = y[:, k].astype(np.int8)
        df["part"] = part
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def prevalence_table(targets: np.ndarray, label_names: Sequence[str] = FINDINGS) -> pd.DataFrame:
    """Positives and prevalence per finding, most frequent first."""
    targets = np.asarray(targets)
    n = len(targets)
    pos = targets[:, : len(label_names)].sum(axis=0).astype(int)
    df = pd.DataFrame({"finding": list(label_names), "positives": pos, "prevalence": pos / max(n, 1)})
    return df.sort_values("positives", ascending=False).reset_index(drop=True)


def plot_prevalence(targets: np.ndarray, label_names: Sequence[str] = FINDINGS, ax=None, title: str | None = None):
    """Horizontal bars: share of images positive for each finding."""
    df = prevalence_table(targets, label_names).iloc[::-1]
    ax = _axes(ax, (6, 4.5))
    ax.barh(df["finding"], df["prevalence"] * 100, color="#4c72b0")
    for y, (p, n) in enumerate(zip(df["prevalence"], df["positives"])):
        ax.text(p * 100, y, f" {n}", va="center", fontsize=8)
    ax.set_xlabel("images positive (%)")
    ax.set_title(title or f"Label prevalence ({len(targets):,} images)")
    return ax


def cooccurrence(targets: np.ndarray, label_names: Sequence[str] = FINDINGS) -> pd.DataFrame:
    """P(column finding | row finding): how often a finding comes with another."""
    y = np.asarray(targets, dtype=np.float64)[:, : len(label_names)]
    both = y.T @ y
    pos = np.diag(both).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = both / pos[:, None]
    return pd.DataFrame(cond, index=list(label_names), columns=list(label_names))


def plot_cooccurrence(targets: np.ndarray, label_names: Sequence[str] = FINDINGS, ax=None):
    """Heatmap of P(column | row), the diagonal left out (it is 1)."""
    import seaborn as sns

    cond = cooccurrence(targets, label_names)
    mask = np.eye(len(cond), dtype=bool)
    ax = _axes(ax, (7.5, 6))
    sns.heatmap(cond, mask=mask, cmap="viridis", vmin=0, ax=ax, annot=True, fmt=".2f", annot_kws={"size": 6},
                cbar_kws={"label": "P(column | row)"})
    ax.set_title("Co-occurrence: P(column finding | row finding)")
    return ax


def plot_findings_per_image(targets: np.ndarray, ax=None):
    y = np.asarray(targets)[:, : len(FINDINGS)]
    counts = pd.Series(y.sum(axis=1).astype(int)).value_counts().sort_index()
    ax = _axes(ax, (5, 3.5))
    ax.bar(counts.index, counts.values / len(y) * 100, color="#55a868")
    ax.set_xlabel("findings on the image (0 = No Finding)")
    ax.set_ylabel("images (%)")
    ax.set_title("Findings per image")
    return ax


def plot_images_per_patient(patient_ids: np.ndarray, ax=None):
    counts = pd.Series(np.asarray(patient_ids)).value_counts()
    ax = _axes(ax, (5, 3.5))
    bins = np.unique(np.concatenate([np.arange(1, 11), np.geomspace(11, max(counts.max(), 12) + 1, 10).astype(int)]))
    ax.hist(counts.values, bins=bins, color="#c44e52")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("images per patient")
    ax.set_ylabel("patients")
    ax.set_title(f"{len(counts):,} patients, {counts.sum():,} images")
    return ax


def plot_demographics(meta: pd.DataFrame, axes=None):
    """Age histogram, sex and view position bars from the metadata table."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    age = meta["age"].dropna()
    age = age[(age > 0) & (age < 110)]  # a few rows of the release hold ages in the hundreds
    axes[0].hist(age, bins=40, color="#8172b2")
    axes[0].set_xlabel("age (years)")
    axes[0].set_title("Patient age")
    for ax, col, title in ((axes[1], "sex", "Sex"), (axes[2], "view", "View position")):
        vc = meta[col].value_counts()
        ax.bar(vc.index.astype(str), vc.values, color="#64b5cd")
        ax.set_title(title)
    return axes


# ----------------------------------------------------------------------------- splits


def split_summary(bundle) -> pd.DataFrame:
    """Images, patients and positives per part of the bundle's split."""
    rows = []
    for part in ("train", "val", "test"):
        ds = getattr(bundle, part)
        y = np.asarray(ds.targets)[:, : len(FINDINGS)]
        rows.append({
            "part": part,
            "images": len(ds),
            "patients": len(np.unique(ds.patient_ids)),
            "images with a finding": int((y.sum(axis=1) > 0).sum()),
            "rarest finding (positives)": f"{FINDINGS[int(y.sum(0).argmin())]} ({int(y.sum(0).min())})" if len(y) else "",
        })
    return pd.DataFrame(rows)


def leakage_check(bundle) -> pd.DataFrame:
    """Patients and image ids shared between parts: all zeros on a patient-wise split."""
    parts = {p: getattr(bundle, p) for p in ("train", "val", "test")}
    rows = []
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rows.append({
                "parts": f"{a} / {b}",
                "shared patients": len(set(np.asarray(parts[a].patient_ids).tolist())
                                       & set(np.asarray(parts[b].patient_ids).tolist())),
                "shared images": len(set(map(str, parts[a].image_ids)) & set(map(str, parts[b].image_ids))),
            })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- examples


def pick_examples(dataset, n: int = 8, seed: int = 0, with_findings: bool = True) -> list[int]:
    """Indices of ``n`` examples, preferring images with a finding, different findings first."""
    y = np.asarray(dataset.targets)[:, : len(FINDINGS)]
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    if with_findings:
        for k in rng.permutation(y.shape[1]):
            rows = np.flatnonzero(y[:, k] > 0)
            rows = [r for r in rows if r not in chosen]
            if rows:
                chosen.append(int(rng.choice(rows)))
            if len(chosen) >= n:
                break
    rest = [i for i in rng.permutation(len(y)) if i not in chosen]
    chosen.extend(int(i) for i in rest[: n - len(chosen)])
    return chosen[:n]


def draw_mask_outlines(ax, masks: dict[str, np.ndarray | None], size: int, labels: bool = True) -> None:
    """Outline each finding's mask (any size) on an image of ``size`` pixels, one colour per
    finding (its index in FINDINGS), with the finding's name at the top of its outline."""
    import matplotlib.pyplot as plt

    for name, mask in masks.items():
        if mask is None or not np.any(mask):
            continue
        mask = np.asarray(mask, dtype=float)
        k = FINDINGS.index(name) if name in FINDINGS else 0
        colour = plt.cm.tab20(k % 20)
        s = size / mask.shape[0]
        # Pixel centres of the mask in the image's pixels, so that the outline sits on the
        # finding at any display size.
        ax.contour((np.arange(mask.shape[1]) + 0.5) * s - 0.5, (np.arange(mask.shape[0]) + 0.5) * s - 0.5, mask,
                   levels=[0.5], colors=[colour], linewidths=1.0)
        if labels:
            rows, cols = np.nonzero(mask)
            ax.text((cols.min() + 0.5) * s, (rows.min() + 0.5) * s, name, color=colour, fontsize=6, va="bottom")


def plot_examples(bundle, part: str = "test", indices: Sequence[int] | None = None, n: int = 8,
                  ncols: int = 4, full: bool = True, panel: float = 3.0):
    """Example images with their labels, and the ground truth the source offers: boxes
    (ChestX-ray14's box list) or mask outlines (phantoms)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    ds = getattr(bundle, part)
    idx = list(indices) if indices is not None else pick_examples(ds, n)
    nrows = -(-len(idx) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, panel * nrows + 0.3), squeeze=False)
    names = list(ds.label_names)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, idx):
        image_id = str(ds.image_ids[i])
        img = bundle.full_image(image_id) if full else ds.raw(i)
        ax.imshow(img, cmap="gray")
        labels = [names[k] for k in np.flatnonzero(np.asarray(ds.targets[i]) > 0)] or ["No Finding"]
        ax.set_title("\n".join([image_id] + [", ".join(labels[j:j + 2]) for j in range(0, len(labels), 2)]),
                     fontsize=7)
        offers = bundle.offers
        for box in (bundle.boxes(image_id) if offers.boxes else []):
            b = box.to_size(box.image_size, img.shape[0]) if getattr(box, "image_size", None) else box
            ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, fill=False, edgecolor="lime", linewidth=1.2))
            ax.text(b.x, b.y, b.finding, color="lime", fontsize=6, va="bottom")
        if offers.masks:
            present = np.flatnonzero(np.asarray(ds.targets[i])[: len(FINDINGS)] > 0)
            draw_mask_outlines(ax, {FINDINGS[k]: bundle.mask(image_id, FINDINGS[k]) for k in present},
                               img.shape[0])
    fig.tight_layout()
    return fig


def heatmap_grid(bundle, image_id: str, maps: np.ndarray, probabilities: Sequence[float] | None = None,
                 title: str | None = None, **kwargs):
    """All of an image's heatmaps (``maps`` ``[K,h,w]``, one per finding of ``bundle.label_names``)
    over its full-resolution picture, each panel with that finding's ground truth from the
    bundle: boxes where the source offers boxes (ChestX-ray14), mask outlines where it offers
    masks (phantoms). ``kwargs`` go to :func:`cxrlib.cam.overlay_grid`; returns the Figure."""
    from cxrlib import cam  # cam imports pytorch-grad-cam: only the heatmap figures pay for it

    image_id = str(image_id)
    names = list(bundle.label_names[: len(maps)])
    masks = bundle.masks(image_id)
    fig = cam.overlay_grid(bundle.full_image(image_id), maps, findings=names, boxes=bundle.boxes(image_id),
                           probabilities=probabilities, masks=[masks.get(name) for name in names], **kwargs)
    if title:
        fig.suptitle(title, y=1.02)
    return fig


# ----------------------------------------------------------------------------- phantoms beside real images


def real_sample_dir(data_dir: str | Path | None = "") -> Path | None:
    """A folder of real ChestX-ray14 images to show beside the phantoms, or None.

    ``data_dir`` when it holds images, else the shared sample
    (:func:`cxrlib.profiles.shared_data_dir` ``/chestxray14-sample``).
    """
    for folder in ([Path(data_dir)] if data_dir else []) + [profiles.shared_data_dir() / "chestxray14-sample"]:
        if folder.is_dir() and find_images(folder):
            return folder
    return None


def real_examples(folder: str | Path | None, n: int = 6, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """``n`` real images of ``folder`` (a seeded choice), resized as the cache would; [] for None."""
    if folder is None:
        return []
    paths = sorted(find_images(folder).values())
    pick = np.random.default_rng(seed).choice(len(paths), size=min(n, len(paths)), replace=False)
    return [resize_image(read_image(paths[i]), size) for i in sorted(pick)]


def phantom_examples(n: int = 6, size: int = 256, seed: int = 0, spec=None, start: int = 0) -> list[np.ndarray]:
    """The first ``n`` synthetic phantoms from ``start`` at ``size`` px."""
    return [phantoms.render_phantom(start + i, size, seed=seed, spec=spec).image for i in range(n)]


def plot_side_by_side(phantom_images: Sequence[np.ndarray], real_images: Sequence[np.ndarray] = (),
                      panel: float = 2.2):
    """Synthetic phantoms in the top row, real chest X-rays (when given) in the bottom row."""
    import matplotlib.pyplot as plt

    rows = [("synthetic phantom", list(phantom_images))] + ([("real ChestX-ray14", list(real_images))]
                                                            if len(real_images) else [])
    ncols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(panel * ncols, panel * len(rows) + 0.2), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(images):
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=255)
                ax.set_title(name, fontsize=7)
    fig.tight_layout()
    return fig


# Chance-driven knobs are shown at 4 (near certain to appear), the others at 2x their default.
_KNOB_SHOWN = {"collimation": 4.0, "markers": 4.0, "devices": 4.0}


def plot_phantom_knobs(index: int | None = None, size: int = 192, seed: int = 0, panel: float = 2.0,
                       ncols: int = 5):
    """One phantom under each nuisance knob of :class:`cxrlib.phantoms.PhantomSpec`.

    The first panel has every nuisance knob off; each next panel turns on one knob alone
    (chance-driven ones at 4, where they almost surely appear; the others at twice their
    default); then all at their defaults, and the optional confounder (a chest drain on a
    Pneumothorax image of the training split). Findings and their masks stay put.
    """
    import matplotlib.pyplot as plt

    table = phantoms.phantom_table(400, seed=seed)
    if index is None:  # a phantom with a finding that shows at any size
        index = int(np.flatnonzero(table["Effusion"].to_numpy() == 1)[0])
    off = {k: 0.0 for k in NUISANCE_KNOBS}
    panels = [("all nuisance off", phantoms.PhantomSpec(**off), index, False)]
    for knob in NUISANCE_KNOBS:
        value = _KNOB_SHOWN.get(knob, 2.0)
        panels.append((f"{knob} = {value:g}", phantoms.PhantomSpec(**{**off, knob: value}), index, False))
    panels.append(("all at defaults", phantoms.PhantomSpec(), index, False))
    ptx = int(np.flatnonzero(table["Pneumothorax"].to_numpy() == 1)[0])
    panels.append(("confounder = 1 (train split)", phantoms.PhantomSpec(confounder=1.0), ptx, True))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, panel * nrows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (title, spec, i, training) in zip(axes.flat, panels):
        p = phantoms.render_phantom(i, size, seed=seed, spec=spec, training=training)
        ax.imshow(p.image, cmap="gray", vmin=0, vmax=255)
        labels = ", ".join(FINDINGS[k] for k in np.flatnonzero(p.labels)) or "No Finding"
        ax.set_title(f"{title}\n{labels}", fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- runs


def per_class_table(metrics: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per-finding test AUROC of several runs side by side (rows: findings, columns: runs)."""
    data = {}
    for name, m in metrics.items():
        per = m.get("per_class", {}) if isinstance(m, dict) else {}
        data[name] = {f: (per.get(f) or {}).get("auroc") for f in per}
    df = pd.DataFrame(data)
    order = [f for f in list(FINDINGS) + ["No Finding"] if f in df.index]
    df = df.loc[order].astype(float)
    means = {n: (m.get("mean_auroc") if isinstance(m, dict) else None) for n, m in metrics.items()}
    df.loc["mean (14)"] = pd.Series(means, dtype=float)
    return df


def prevalence_only_scores(targets: np.ndarray) -> np.ndarray:
    """Scores that know no image: every image gets each finding's prevalence in ``targets``.

    Per finding its AUROC is 0.5 (all ties), but pooled over findings (a micro-average) it is
    well above 0.5, because common findings outrank rare ones: the chance level of a
    micro-averaged ROC curve, which the diagonal is not."""
    y = np.asarray(targets, dtype=float)
    return np.broadcast_to(y.mean(axis=0), y.shape).copy()


def plot_roc_curves(predictions: dict[str, dict[str, np.ndarray]], finding: str | None = None, ax=None):
    """ROC curves of several runs: one finding, or micro-averaged over the 14 (``finding=None``).

    On one finding the diagonal is chance. A micro-average pools the findings' scores, so a
    score that only knows which findings are common beats the diagonal: that curve
    (:func:`prevalence_only_scores` of the first run's test targets) is drawn as its chance."""
    from sklearn.metrics import roc_auc_score, roc_curve

    ax = _axes(ax, (4.5, 4.5))
    chance = None
    for name, pred in predictions.items():
        names = [str(n) for n in pred["label_names"]]
        cols = [names.index(finding)] if finding else [names.index(f) for f in FINDINGS if f in names]
        targets = np.asarray(pred["targets"])[:, cols]
        y, s = targets.ravel(), np.asarray(pred["scores"])[:, cols].ravel()
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} ({number_text(roc_auc_score(y, s))})", linewidth=1.2)
        if chance is None and finding is None:
            chance = prevalence_only_scores(targets).ravel()
            fpr, tpr, _ = roc_curve(y, chance)
            ax.plot(fpr, tpr, color="gray", linestyle="--", linewidth=1,
                    label=f"prevalence only, no image ({number_text(roc_auc_score(y, chance))})")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC: {finding}" if finding else "ROC, micro-average over findings\n(chance: the dashed curve)",
                 fontsize=None if finding else 9)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_aspect("equal")
    return ax


def plot_roc_grid(predictions: dict[str, dict[str, np.ndarray]], findings: Sequence[str] = FINDINGS,
                  ncols: int = 5, panel: float = 2.8):
    """Per-finding ROC curves of several runs in a grid; returns the Figure."""
    import matplotlib.pyplot as plt

    findings = list(findings)
    nrows = -(-len(findings) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, panel * nrows), squeeze=False)
    for ax in axes.flat[len(findings):]:
        ax.set_axis_off()
    for ax, f in zip(axes.flat, findings):
        plot_roc_curves(predictions, f, ax=ax)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.legend(fontsize=5, loc="lower right")
        ax.set_title(f, fontsize=9)
    fig.tight_layout()
    return fig


# Colours of the forest plot: what the verdict on a run is, or what the run is for.
VERDICT_COLOURS = {BETTER: "#1a7f37", WORSE: "#c0392b", NO_DIFFERENCE: "#7f7f7f",
                   NOT_COMPARED: "#b0b0b0", "baseline": "#111111", "control": "#8e44ad"}


def forest_plot(table: pd.DataFrame, baseline: str = "baseline", title: str | None = None):
    """Every experiment of a results table (:func:`cxrlib.results.results_table`) as a forest
    plot; returns the Figure.

    Per row: the 95% CI of the mean AUROC over seeds (bar), that mean (diamond) and each
    seed's own mean AUROC (dots), coloured by the verdict against the baseline (the design's
    A/A and planted-loss controls too: grey and red when the design works); the
    baseline's mean as a dashed line with its seed range shaded, the shortcut control's as a
    dotted line, chance at 0.5, and the difference from the baseline written on the right.
    """
    from matplotlib.figure import Figure  # not pyplot: the figure shows where it is displayed, once

    n = len(table)
    fig = Figure(figsize=(9.5, 0.42 * max(n, 3) + 1.8), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)[::-1]  # the table's first row on top
    for yi, (_, r) in zip(y, table.iterrows()):
        role = "baseline" if r["experiment"] == baseline else "control" if r.get("kind") == "control" else r["verdict"]
        colour = VERDICT_COLOURS.get(role, VERDICT_COLOURS[NO_DIFFERENCE])  # also "no difference larger than"
        if np.isfinite(r["CI low"]):
            ax.plot([r["CI low"], r["CI high"]], [yi, yi], color=colour, linewidth=3, alpha=0.45, solid_capstyle="butt")
        seeds = [v for v in (r.get("seed AUROCs") or ()) if np.isfinite(v)]
        ax.scatter(seeds, [yi] * len(seeds), s=14, color=colour, zorder=3, edgecolors="white", linewidths=0.5)
        ax.scatter([r["mean AUROC"]], [yi], marker="D", s=40, color=colour, zorder=4)
        if np.isfinite(r["diff vs baseline"]):
            ax.annotate(f"{number_text(r['diff vs baseline'], signed=True)}  {r['verdict']}", xy=(1.01, yi),
                        xycoords=("axes fraction", "data"), va="center", fontsize=8, color=colour)
    base = table[table["experiment"] == baseline]
    if len(base):
        b = base.iloc[0]
        ax.axvline(b["mean AUROC"], color=VERDICT_COLOURS["baseline"], linestyle="--", linewidth=1, label="baseline")
        if np.isfinite(b["seed min"]) and b["seed max"] > b["seed min"]:
            ax.axvspan(b["seed min"], b["seed max"], color="#999999", alpha=0.15, label="baseline's seed range")
    controls = table[table.get("kind", pd.Series(dtype=str)) == "control"]
    for _, c in controls.iterrows():
        ax.axvline(c["mean AUROC"], color=VERDICT_COLOURS["control"], linestyle=":", linewidth=1.2,
                   label=f"{c['experiment']} (no spatial information)")
    ax.axvline(0.5, color="#cccccc", linewidth=1, zorder=0, label="chance")
    ax.set_yticks(y)
    ax.set_yticklabels(table["experiment"])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("test mean AUROC: dots = seeds, diamond = mean over seeds, bar = 95% CI (seeds and test patients)")
    ax.set_title(title or "Every run against the baseline", loc="left")
    fig.legend(fontsize=7, loc="outside lower center", ncol=4, frameon=False)
    return fig
