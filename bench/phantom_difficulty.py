"""Difficulty of the synthetic chest phantoms: the shortcut control beside the CNN baseline.

The phantoms must teach reading a chest image, not a shortcut. So this records, per
finding:

- the shortcut control (``cxrlib.controls``: logistic regression on global intensity
  statistics only) on phantoms, fitted on the profile's train split, scored on its test split;
- the same control on the real ChestX-ray14 sample, by patient-grouped cross-validation
  (the sample has no usable train split);
- the CNN baseline of the profile (ResNet-18 with the cpu profile's data and training
  settings, trained through ``cxrlib.train.run_experiment``) on the same test split, and the
  paired bootstrap over test patients of its mean AUROC against the control's;
- render time per phantom at the profile's size and at 512 px.

Goals on phantoms, at the profile's size (the cpu profile's 48 px) and at 64 px: every
finding with >= 20 test positives has control AUROC <= 0.65 and the control's mean is
<= 0.60; the profile's CNN baseline beats the control by >= 0.10 mean AUROC with a 95% CI
that excludes 0.

    python bench/phantom_difficulty.py                  # cpu profile: 2,000 phantoms at 64 px
    python bench/phantom_difficulty.py --no-cnn         # the controls only (a minute)
    python bench/phantom_difficulty.py --control-n 6000 # also the control on 3x more phantoms
    python bench/phantom_difficulty.py --size 64 --no-cnn --results bench/results/phantom_difficulty_64px.md
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cxrlib  # noqa: F401  (before torch users: the CPU torchvision fix)
import numpy as np
import torch

from cxrlib import profiles
from cxrlib.config import DataConfig, ExperimentConfig
from cxrlib.controls import control_predictions, cross_validated_scores, intensity_features
from cxrlib.data import load_data
from cxrlib.data.phantom_source import PHANTOM_FULL_SIZE, phantom_spec
from cxrlib.fileio import atomic_write_text
from cxrlib.labels import FINDINGS
from cxrlib.metrics import auroc, paired_comparison
from cxrlib.phantoms import render_phantom
from cxrlib.train import run_experiment
from _header import header_lines  # bench/_header.py: the machine line every result starts with

RESULTS = Path(__file__).resolve().parent / "results" / "phantom_difficulty.md"
REPO = Path(__file__).resolve().parent.parent
GOAL_FINDING, GOAL_MEAN, GOAL_MARGIN, MIN_POSITIVES = 0.65, 0.60, 0.10, 20


def render_ms(size: int, n: int, spec) -> float:
    render_phantom(0, size, spec=spec)  # warm the per-patient caches' code paths
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        render_phantom(i, size, spec=spec)
    return 1000 * (time.perf_counter() - t0) / n


def per_finding(targets: np.ndarray, scores: np.ndarray, names: list[str]) -> dict[str, tuple[float, int]]:
    aucs = auroc(targets, scores)
    return {name: (float(aucs[k]), int(targets[:, k].sum())) for k, name in enumerate(names) if name in FINDINGS}


def mean_defined(table: dict[str, tuple[float, int]]) -> float:
    return float(np.nanmean([v[0] for v in table.values()]))


def real_sample_control(data_dir: Path, size: int, cache_dir: Path, folds: int, seed: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sample is a partial download: say so once, below
        b = load_data(DataConfig(source="chestxray14", data_dir=str(data_dir), image_size=size,
                                 cache_dir=str(cache_dir), workers=1), progress=False)
    parts = [b.dataset(p) for p in ("train", "val", "test")]
    images = np.concatenate([np.asarray(d.cache.images[d.slots]) for d in parts])
    targets = np.concatenate([d.targets for d in parts])
    patients = np.concatenate([d.patient_ids for d in parts])
    scores = cross_validated_scores(intensity_features(images), targets, patients, folds=folds, seed=seed)
    return per_finding(targets, scores, list(b.label_names)), len(targets), len(np.unique(patients))


def phantom_control(cfg: ExperimentConfig, n: int, cache_dir: Path):
    data_cfg = DataConfig(**{**cfg.data.__dict__, "num_phantoms": n, "cache_dir": str(cache_dir)})
    bundle = load_data(data_cfg, progress=False)
    pred = control_predictions(bundle)
    return per_finding(pred["targets"], pred["scores"], [str(x) for x in pred["label_names"]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu", help="profile whose data and baseline are measured (default cpu)")
    ap.add_argument("--n", type=int, default=None, help="phantoms (default: the profile's)")
    ap.add_argument("--size", type=int, default=None, help="image size (default: the profile's)")
    ap.add_argument("--control-n", type=int, default=None, help="also fit the control on this many phantoms")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override, as the CLI's --set (e.g. data.phantom_contrast=1.5); repeatable")
    ap.add_argument("--phantom", action="append", default=[], metavar="KNOB=VALUE",
                    help="a PhantomSpec knob for this run (data.phantom_options), e.g. exposure=0.5; repeatable")
    ap.add_argument("--real-dir", default=None,
                    help="ChestX-ray14 sample (default $CXRLIB_SHARED_DATA/chestxray14-sample or ../shared/data/...)")
    ap.add_argument("--folds", type=int, default=5, help="patient-grouped CV folds on the real sample")
    ap.add_argument("--no-cnn", action="store_true", help="controls only")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--note", default="", help="a line about the machine's load, written with the results")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write the results file")
    ap.add_argument("--results", default=str(RESULTS), help=f"results file (default {RESULTS.relative_to(REPO)})")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = profiles.load(args.profile).baseline
    overrides = {"runs_dir": "unused"}
    if args.n:
        overrides["data.num_phantoms"] = args.n
    if args.size:
        overrides["data.image_size"] = args.size
    for item in args.phantom:
        knob, _, value = item.partition("=")
        overrides[f"data.phantom_options.{knob.strip()}"] = float(value)
    cfg = cfg.with_overrides(overrides).with_overrides(args.set)
    if cfg.data.source != "phantoms":
        raise SystemExit(f"error: profile {args.profile!r} does not use phantoms (source {cfg.data.source!r})")
    shared = Path(os.environ.get("CXRLIB_SHARED_DATA", REPO.parent / "shared" / "data"))
    real_dir = Path(args.real_dir) if args.real_dir else shared / "chestxray14-sample"
    size, n = cfg.data.image_size, cfg.data.num_phantoms
    spec = phantom_spec(cfg.data)
    start = time.time()
    timing = {s: render_ms(s, k, spec) for s, k in ((size, 200), (PHANTOM_FULL_SIZE, 20))}
    print("render: " + ", ".join(f"{s} px {ms:.1f} ms" for s, ms in timing.items()), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = cfg.with_overrides({"runs_dir": str(tmp / "runs"), "data.cache_dir": str(tmp / "cache"),
                                  "name": "baseline"})
        t0 = time.time()
        bundle = load_data(cfg.data, progress=False)
        cache_s = time.time() - t0
        control = control_predictions(bundle)
        names = [str(x) for x in control["label_names"]]
        ctl = per_finding(control["targets"], control["scores"], names)
        print(f"control on phantoms: mean {mean_defined(ctl):.3f}", flush=True)
        big = phantom_control(cfg, args.control_n, tmp / "cache") if args.control_n else None
        real, n_real, n_real_patients = (real_sample_control(real_dir, size, tmp / "cache", args.folds, cfg.seed)
                                         if real_dir.is_dir() else (None, 0, 0))
        if real is None:
            print(f"no real sample at {real_dir}: its column stays empty", flush=True)
        cnn, comparison, train_s = None, None, 0.0
        if not args.no_cnn:
            t0 = time.time()
            result = run_experiment(cfg, data=bundle, progress=False)
            train_s = time.time() - t0
            pred = result.predictions
            if not np.array_equal(pred["ids"], control["ids"]):
                raise SystemExit("error: the CNN's and the control's test images differ")
            cnn = per_finding(pred["targets"], pred["scores"], names)
            comparison = paired_comparison(pred["targets"], pred["scores"], control["scores"],
                                           patient_ids=pred["patient_ids"], n_bootstrap=args.n_bootstrap,
                                           seed=cfg.seed, label_names=names)
    total_s = time.time() - start

    header = ["finding", "test positives", "control, phantoms"]
    if big:
        header.append(f"control, {args.control_n} phantoms")
    header += ["control, real sample (positives)", "ResNet-18, phantoms"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in FINDINGS:
        auc, pos = ctl[name]
        flag = " **over**" if pos >= MIN_POSITIVES and auc > GOAL_FINDING else ""
        row = [name, str(pos), f"{auc:.3f}{flag}"]
        if big:
            row.append(f"{big[name][0]:.3f} ({big[name][1]})")
        row.append(f"{real[name][0]:.3f} ({real[name][1]})" if real else "")
        row.append(f"{cnn[name][0]:.3f}" if cnn else "")
        lines.append("| " + " | ".join(row) + " |")
    mean_row = ["**mean** (defined findings)", "", f"**{mean_defined(ctl):.3f}**"]
    if big:
        mean_row.append(f"**{mean_defined(big):.3f}**")
    mean_row += [f"**{mean_defined(real):.3f}**" if real else "", f"**{mean_defined(cnn):.3f}**" if cnn else ""]
    lines.append("| " + " | ".join(mean_row) + " |")
    table_md = "\n".join(lines)

    checked = [name for name in FINDINGS if ctl[name][1] >= MIN_POSITIVES]
    over = [name for name in checked if ctl[name][0] > GOAL_FINDING]
    goals = [f"- control AUROC <= {GOAL_FINDING} for every finding with >= {MIN_POSITIVES} test positives "
             f"({', '.join(checked)}): {'met' if not over else 'NOT met: ' + ', '.join(over)}",
             f"- control mean <= {GOAL_MEAN}: {mean_defined(ctl):.3f}, "
             f"{'met' if mean_defined(ctl) <= GOAL_MEAN else 'NOT met'}"]
    if comparison:
        lo, hi = comparison["ci"]
        ok = comparison["diff"] >= GOAL_MARGIN and lo > 0
        goals.append(f"- ResNet-18 minus control, mean AUROC: {comparison['diff']:+.3f} (95% CI {lo:+.3f} to "
                     f"{hi:+.3f}, p {comparison['p_value']:.3g}, paired bootstrap over {comparison['n_images']} test "
                     f"images' patients, {comparison['n_bootstrap']} resamples, {len(comparison['classes'])} "
                     f"findings): {'met' if ok else 'NOT met'} (goal >= +{GOAL_MARGIN} with a CI above 0)")
    goals_md = "\n".join(goals)
    print(table_md)
    print(goals_md)
    if args.no_write:
        return 0
    command = "python bench/phantom_difficulty.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sizes = {p: len(bundle.dataset(p)) for p in ("train", "val", "test")}
    real_line = (f"{n_real} real images of {n_real_patients} patients at {size} px, {args.folds}-fold CV grouped by "
                 f"patient ({real_dir.name})" if real else "not measured (no sample)")
    meta = [
        *(line[2:] for line in header_lines(command)),
        *([args.note] if args.note else []),
        f"phantoms: profile {args.profile!r}, {n} phantoms at {size} px (seed {cfg.seed}), patient-wise split "
        f"{sizes['train']}/{sizes['val']}/{sizes['test']}; {spec}",
        "control: cxrlib.controls (16-bin histogram, 9 percentiles, mean, std; logistic regression per finding), "
        "fitted on the train split, scored on the test split",
        f"real sample: {real_line}",
        f"CNN: the profile's baseline ({cfg.model.name}, {cfg.train.epochs} epoch(s), batch {cfg.train.batch_size}, "
        f"lr {cfg.train.lr}, augmentation {cfg.train.augment}) through cxrlib.train.run_experiment: "
        + ("not run" if cnn is None else f"{train_s:.0f} s"),
        "render time per phantom (wall clock): " + ", ".join(f"{s} px {ms:.1f} ms" for s, ms in timing.items())
        + f"; cache of {n} phantoms built in {cache_s:.0f} s",
        f"total time: {total_s:.0f} s",
    ]
    text = f"""# Difficulty of the synthetic chest phantoms

All phantom images here are synthetic (cxrlib.phantoms), not patient data. The real
column is the shortcut control on real ChestX-ray14 images, for scale.

## Run

{chr(10).join("- " + m for m in meta)}

Test AUROC per finding (NaN: no positive in the test part; means skip those):

{table_md}

## Goals

{goals_md}
"""
    atomic_write_text(text, Path(args.results))
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
