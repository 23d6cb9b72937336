"""How the cpu profile's data and training settings were chosen: the baseline against the
shortcut control at each candidate setting, and what one run costs.

The cpu profile must train three seeds of about ten compared runs, and the whole report
must stay within 20 minutes on 2 cores: that leaves roughly 25 s of training per run. The
candidates below trade image size, one or two epochs and the findings' contrast
(``data.phantom_contrast``) against each other; for each, this measures on the profile's
2,000 phantoms (patient-wise 1,400/200/400):

- the shortcut control (``cxrlib.controls``) on the test split: mean AUROC, and the highest
  over findings with >= 20 test positives;
- the ResNet-18 baseline (or the backbone the candidate names) for two training seeds through
  ``cxrlib.train.run_experiment``: test mean AUROC, its paired difference from the control with
  a 95% bootstrap CI over test patients, and the wall time of the run (training, validation and
  test evaluation).

A candidate fits when the control stays within the phantom goals (mean <= 0.60, every finding
with >= 20 test positives <= 0.65) and the baseline beats it by >= 0.10 with a CI above 0 on
each seed, at a run cost that fits the budget.

    python bench/cpu_profile_choice.py               # every candidate (about 10 minutes on 2 cores)
    python bench/cpu_profile_choice.py --only 48px_c2.0_e1,64px_c1.0_e2
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cxrlib  # noqa: F401  (before torch users: the CPU torchvision fix)
import numpy as np

from cxrlib import profiles
from cxrlib.controls import control_predictions
from cxrlib.data import load_data
from cxrlib.fileio import atomic_write_text
from cxrlib.labels import FINDINGS
from cxrlib.metrics import auroc, paired_comparison
from cxrlib.train import run_experiment
from _header import header_lines  # bench/_header.py: the machine line every result starts with

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_profile_choice.md"
MIN_POSITIVES = 20

# name -> overrides of the cpu profile's experiment. The profile's own settings are
# 48px_c2.0_e1 (and densenet121_e1 for notebook 01's DenseNet-121).
CANDIDATES: dict[str, dict[str, object]] = {
    "64px_c1.0_e2": {"data.image_size": 64, "data.phantom_contrast": 1.0, "train.epochs": 2},
    "64px_c1.0_e1": {"data.image_size": 64, "data.phantom_contrast": 1.0, "train.epochs": 1},
    "64px_c1.5_e1": {"data.image_size": 64, "data.phantom_contrast": 1.5, "train.epochs": 1},
    "64px_c2.5_e1": {"data.image_size": 64, "data.phantom_contrast": 2.5, "train.epochs": 1},
    "32px_c2.5_e1": {"data.image_size": 32, "data.phantom_contrast": 2.5, "train.epochs": 1},
    "48px_c2.5_e1": {"data.image_size": 48, "data.phantom_contrast": 2.5, "train.epochs": 1},
    "48px_c2.0_e1": {"data.image_size": 48, "data.phantom_contrast": 2.0, "train.epochs": 1},
    "48px_c2.0_e1_1600": {"data.image_size": 48, "data.phantom_contrast": 2.0, "train.epochs": 1,
                          "data.num_phantoms": 1600},
    "densenet121_32steps": {"data.image_size": 48, "data.phantom_contrast": 2.0, "train.epochs": 1,
                            "model.name": "densenet121", "train.max_steps": 32},
    "densenet121_e1": {"data.image_size": 48, "data.phantom_contrast": 2.0, "train.epochs": 1,
                       "model.name": "densenet121"},
    # Inception-v3's unpadded stem needs 75 px: the profile would give it 80 (experiments.backbones).
    "inception_v3_e1": {"data.image_size": 80, "data.phantom_contrast": 2.0, "train.epochs": 1,
                        "model.name": "inception_v3"},
}


def measure(name: str, change: dict[str, object], tmp: Path, seeds: list[int], n_bootstrap: int) -> dict:
    cfg = profiles.load("cpu").baseline
    cfg = cfg.with_overrides({"runs_dir": str(tmp / "runs" / name), "data.cache_dir": str(tmp / "cache"),
                              "name": "baseline", **change})
    bundle = load_data(cfg.data, progress=False)
    control = control_predictions(bundle)
    aucs, positives = auroc(control["targets"], control["scores"]), control["targets"].sum(axis=0)
    names = [str(x) for x in control["label_names"]]
    checked = [k for k, n in enumerate(names) if n in FINDINGS and positives[k] >= MIN_POSITIVES]
    row = {"control_mean": float(np.nanmean(aucs)), "control_max": float(max(aucs[k] for k in checked)),
           "seeds": []}
    for seed in seeds:
        t0 = time.perf_counter()
        result = run_experiment(cfg.with_overrides({"seed": seed, "name": f"{name}_seed{seed}"}), data=bundle,
                                progress=False)
        seconds = time.perf_counter() - t0
        pred = result.predictions
        if not np.array_equal(pred["ids"], control["ids"]):
            raise SystemExit(f"error: {name}: the model's and the control's test images differ")
        cmp = paired_comparison(pred["targets"], pred["scores"], control["scores"], patient_ids=pred["patient_ids"],
                                n_bootstrap=n_bootstrap, seed=0, label_names=names)
        row["seeds"].append({"seed": seed, "mean": float(np.nanmean(auroc(pred["targets"], pred["scores"]))),
                             "diff": cmp["diff"], "ci": cmp["ci"], "seconds": seconds})
        print(f"{name} seed {seed}: mean {row['seeds'][-1]['mean']:.3f}, minus control {cmp['diff']:+.3f} "
              f"[{cmp['ci'][0]:+.3f}, {cmp['ci'][1]:+.3f}], {seconds:.0f} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    ap.add_argument("--seeds", default="0,1", help="training seeds per candidate (default 0,1)")
    ap.add_argument("--n-bootstrap", type=int, default=300)
    ap.add_argument("--note", default="", help="a line about the machine's load, written with the results")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write the results file")
    args = ap.parse_args(argv)
    chosen = [c.strip() for c in args.only.split(",") if c.strip()] or list(CANDIDATES)
    unknown = sorted(set(chosen) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"error: unknown candidate(s) {unknown}; known: {sorted(CANDIDATES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.time()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            rows[name] = measure(name, CANDIDATES[name], Path(tmp), seeds, args.n_bootstrap)
    total = time.time() - start

    lines = ["| candidate | settings | control mean | control max (>= 20 pos.) | "
             + " | ".join(f"seed {s}: model, minus control [95% CI], s" for s in seeds) + " |",
             "|---|---|---|---|" + "---|" * len(seeds)]
    for name, row in rows.items():
        settings = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in CANDIDATES[name].items())
        cells = [f"{s['mean']:.3f}, {s['diff']:+.3f} [{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}], {s['seconds']:.0f}"
                 for s in row["seeds"]]
        lines.append(f"| {name} | {settings} | {row['control_mean']:.3f} | {row['control_max']:.3f} | "
                     + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return 0
    command = "python bench/cpu_profile_choice.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = "\n".join(header_lines(command))
    text = f"""# Choosing the cpu profile's settings

All images are synthetic phantoms (cxrlib.phantoms). Each candidate changes the cpu
profile's experiment as its settings column says; everything else is the profile's (2,000
phantoms, patient-wise split 1,400/200/400, ResNet-18 unless named, batch 32, Adam 1e-3,
augmentation). The control is the shortcut control (global intensity statistics only).
The seconds are one run's wall time: training, validation and test evaluation.

{header}
{('- ' + args.note) if args.note else ''}
- total time: {total:.0f} s

{table}
"""
    atomic_write_text(text, RESULTS)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
