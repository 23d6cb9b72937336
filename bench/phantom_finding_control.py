"""One finding's shortcut control on phantoms, on every positive of a few thousand phantoms.

bench/phantom_difficulty.py scores the control on the profile's test split, where a finding
such as Emphysema (2% of images) has 9 to 20 positives: too few to tell 0.55 from 0.70. This
scores the histogram control (cxrlib.controls) for one finding with patient-grouped 5-fold
cross-validation over all positives of ``--n`` phantoms and ``--negatives`` of their
negatives, at each size asked (no CNN, a minute or two):

    python bench/phantom_finding_control.py --finding Emphysema --n 6000 --size 48 --size 64
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

from cxrlib import phantoms as ph
from cxrlib.controls import cross_validated_scores, intensity_features
from cxrlib.fileio import atomic_write_text
from cxrlib.labels import canonical
from cxrlib.metrics import auroc_report
from cxrlib.profiles import load
from _header import header_lines  # noqa: E402  bench/_header.py: the machine line every result starts with


def measure(finding: str, n: int, size: int, negatives: int, spec, seed: int, n_bootstrap: int) -> dict:
    table = ph.phantom_table(n, seed=seed, spec=spec)
    y = table[finding].to_numpy()
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    neg = np.sort(np.random.default_rng(seed).choice(neg, min(negatives, len(neg)), replace=False))
    rows = np.concatenate([pos, neg])
    t0 = time.perf_counter()
    x = intensity_features(ph.render_phantom(int(r), size, seed=seed, spec=spec).image for r in rows)
    seconds = time.perf_counter() - t0
    target = y[rows][:, None].astype(np.float32)
    patients = table["patient_id"].to_numpy()[rows]
    scores = cross_validated_scores(x, target, patients, folds=5, seed=seed)
    report = auroc_report(target, scores, [finding], patient_ids=patients, n_bootstrap=n_bootstrap, seed=seed)
    pc = report["per_class"][finding]
    return {"size": size, "positives": len(pos), "negatives": len(neg), "auroc": pc["auroc"], "ci": pc["auroc_ci"],
            "render_s": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--finding", default="Emphysema")
    ap.add_argument("--n", type=int, default=6000, help="phantoms whose positives are all used")
    ap.add_argument("--negatives", type=int, default=1500, help="negatives drawn among them")
    ap.add_argument("--size", type=int, action="append", help="image sizes (default 48 and 64)")
    ap.add_argument("--profile", default="cpu", help="profile whose phantom knobs are used (default cpu)")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--note", default="", help="a line about the machine's load")
    ap.add_argument("--results", default=None, help="results file (default bench/results/phantom_<finding>_control.md)")
    args = ap.parse_args()
    finding = canonical(args.finding)
    cfg = load(args.profile).baseline.data
    from cxrlib.data.phantom_source import phantom_spec

    spec = phantom_spec(cfg)
    sizes = args.size or [48, 64]
    rows = [measure(finding, args.n, s, args.negatives, spec, cfg.seed, args.n_bootstrap) for s in sizes]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    lines = [f"# {finding}: the shortcut control on phantoms, all positives of {args.n:,} phantoms", "",
             "All images here are synthetic phantoms (cxrlib.phantoms), not patient data.", "", "## Run", "",
             *header_lines(f"python bench/phantom_finding_control.py {' '.join(sys.argv[1:])}",
                           note=f"code at commit {commit.strip()}, plus any uncommitted change"),
             *([f"- {args.note}"] if args.note else []),
             f"- phantoms: profile {args.profile!r}, seed {cfg.seed}; {spec}",
             "- control: cxrlib.controls (16-bin histogram, 9 percentiles, mean, std; logistic regression), "
             "patient-grouped 5-fold cross-validation; 95% CI by patient bootstrap", "",
             "| size | positives | negatives | control AUROC (95% CI) | render time |", "|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci"]
        lines.append(f"| {r['size']} px | {r['positives']} | {r['negatives']} | {r['auroc']:.3f} ({lo:.3f} to "
                     f"{hi:.3f}) | {r['render_s']:.0f} s |")
    lines += ["", "Goal (as bench/phantom_difficulty.py): control AUROC <= 0.65: "
              + ", ".join(f"{r['size']} px {'met' if r['auroc'] <= 0.65 else 'NOT met'}" for r in rows), ""]
    text = "\n".join(lines)
    print(text)
    out = Path(args.results or REPO / "bench" / "results" / f"phantom_{finding.lower()}_control.md")
    atomic_write_text(text, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
