"""How large the two-stage (AG-CNN) crops are at a profile's size, by attention layer and tau.

The global stage of a two_stage run is the finished baseline (cxrlib.experiments.
global_stage_equivalent), so its crops depend on the baseline's weights alone. This trains (or
reuses) the profile's baseline seeds and, on the *validation* images (never the test set, so
the choice it informs is not fitted to the test), reports for each attention layer (C5, the
paper's; C4, the one before) and threshold ``tau``: the share of crops that are the whole
image, and the mean and median share of the image a crop covers.

    python bench/two_stage_crops.py --profile cpu --runs-dir /tmp/crop_runs
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cxrlib import experiments, profiles
from cxrlib.data import load_data
from cxrlib.fileio import atomic_write_text
from cxrlib.models.two_stage import ATTENTION_LAYERS, largest_region_boxes
from _header import header_lines  # bench/_header.py: the machine line every result starts with

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "two_stage_crops.md"
TAUS = (0.6, 0.7, 0.8, 0.9)


def crop_shares(model, images: torch.Tensor, layer: str, tau: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Per image, the share of the image the crop box covers (1: the whole image), and the grid."""
    with torch.no_grad():
        feats, _ = model.branch.forward_all(images)
    chosen = feats[-1 - ATTENTION_LAYERS.index(layer)]
    cells = largest_region_boxes(chosen.abs().amax(1), tau)
    h, w = chosen.shape[-2:]
    return (((cells[:, 2] - cells[:, 0]) * (cells[:, 3] - cells[:, 1])).float() / (h * w)).numpy(), (h, w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--runs-dir", default="", help="where the baseline runs are trained or reused")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    profile = profiles.load(args.profile, runs_dir=args.runs_dir)
    base = profile.baseline
    results = experiments.run_all([base], seeds=profile.seeds)[base.name]
    data = load_data(base.data, progress=False)
    images = torch.stack([data.val[i][0] for i in range(len(data.val))])
    rows = []
    for layer in ATTENTION_LAYERS:
        for tau in TAUS:
            measured = [crop_shares(r.model.eval(), images, layer, tau) for r in results]
            shares, (gh, gw) = np.concatenate([m[0] for m in measured]), measured[0][1]
            rows.append(f"| {layer} ({gh} x {gw}) | {tau:g} | {np.mean(shares >= 1):.2f} | "
                        f"{np.mean(shares):.2f} | {np.median(shares):.2f} |")
    seconds = time.perf_counter() - t0
    lines = [
        f"# Two-stage crops at the {profile.name} profile's size", "",
        *header_lines(f"python bench/two_stage_crops.py {' '.join(sys.argv[1:])}"),
        f"- baseline: {base.model.name} at {base.data.image_size} px, seeds {list(profile.seeds.of(base))}, "
        f"{base.train.epochs} epoch(s); {len(data.val)} validation images per seed, pooled",
        f"- total time: {seconds:.0f} s", "",
        "| attention layer (grid) | tau | whole-image crops | mean crop area | median crop area |",
        "|---|---|---|---|---|", *rows, "",
        f"The {profile.name} profile's notebook 05 reads the attention from "
        f"{profile.notebook_value('05_two_stage', 'ATTENTION_LAYER', None)} at tau "
        f"{profile.notebook_value('05_two_stage', 'TAU', None):g} (profiles/{profile.name}.yaml; for the cpu profile "
        "chosen after seeing this table, so that the crop crops: the finer map, and a tau above the paper's because at "
        "0.7 the cells above it often ring the mediastinum and their box is the whole image).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        atomic_write_text(text, args.results)


if __name__ == "__main__":
    main()
