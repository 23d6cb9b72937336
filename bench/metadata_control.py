"""The metadata control on ChestX-ray14's full metadata table: what the metadata alone rank.

No image is read. On the official patient-wise split (train_val_list.txt, test_list.txt),
per finding on the 25,596 test images:

- view position alone: the AUROC of "the film is AP" as the score (no fitting, so nothing
  depends on a model; below 0.5 where PA films carry the finding more often);
- the metadata control (``cxrlib.controls``: logistic regression per finding on view position,
  age, sex and follow-up number), fitted on train_val, scored on test, with its patient
  bootstrap 95% CI;
- the published figures for view position alone (REFERENCES.md: Edema 0.68, Consolidation
  0.62, Infiltration 0.61, Pneumothorax 0.58 with PA positive) beside the measured ones.

    python bench/metadata_control.py --data-dir ../shared/data/chestxray14-sample
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

from cxrlib import controls
from cxrlib.data import chestxray14 as cx
from cxrlib.fileio import atomic_write_text
from cxrlib.labels import FINDINGS
from cxrlib.metrics import auroc, auroc_report
from _header import header_lines  # noqa: E402  bench/_header.py: the machine line every result starts with

RESULTS = REPO / "bench" / "results" / "metadata_control.md"
# REFERENCES.md, "Shortcuts in the metadata": view position alone on the official test list
# (Pneumothorax's 0.58 is with PA as the positive side, 0.42 with AP positive).
PUBLISHED_VIEW_ONLY = {"Edema": 0.68, "Consolidation": 0.62, "Infiltration": 0.61, "Pneumothorax": 0.42}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "chestxray14-sample"),
                    help="a folder holding Data_Entry_2017*.csv and the official split lists (no image is read)")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    data_dir = Path(args.data_dir)
    path = cx.find_data_entry(data_dir)
    table = cx.read_data_entry(path)
    meta = cx.read_metadata(path)
    train_ids, _ = cx.read_list(data_dir / "train_val_list.txt")
    test_ids, _ = cx.read_list(data_dir / "test_list.txt")
    rows_tr, rows_te = table.rows(train_ids), table.rows(test_ids)
    y_tr, y_te = table.targets[rows_tr], table.targets[rows_te]
    m_tr, m_te = meta.reindex(table.image_ids[rows_tr]), meta.reindex(table.image_ids[rows_te])
    pats_te = table.patient_ids[rows_te]

    ap_te = (m_te["view_position"].str.upper() == "AP").to_numpy(float)
    view_only = auroc(y_te, np.repeat(ap_te[:, None], y_te.shape[1], axis=1))

    x_tr, names = controls.metadata_features(m_tr)
    x_te, _ = controls.metadata_features(m_te)
    fitted = controls.fit_control(x_tr, y_tr, list(FINDINGS), n_features=len(names))
    scores = fitted.predict_features(x_te)
    report = auroc_report(y_te, scores, list(FINDINGS), patient_ids=pats_te, n_bootstrap=args.n_bootstrap)
    seconds = time.perf_counter() - t0

    lines = [
        "# The metadata control on ChestX-ray14's metadata table (no image read)", "",
        "## Run", "",
        *header_lines(f"python bench/metadata_control.py {' '.join(sys.argv[1:])}"),
        f"- table: {path.name}, {len(table):,} images; official split: train_val {len(rows_tr):,} images, "
        f"test {len(rows_te):,} images of {len(np.unique(pats_te)):,} patients; "
        f"{ap_te.mean():.1%} of test images are AP",
        f"- metadata control: {', '.join(names)}; logistic regression per finding (C={controls.DEFAULT_C}) "
        f"fitted on train_val, 95% CI by patient bootstrap ({report['n_bootstrap']} resamples)",
        f"- total time: {seconds:.0f} s", "",
        "## Test AUROC per finding", "",
        "View position alone scores 1 for an AP film, 0 for PA (below 0.5: the finding is more frequent on PA "
        "films). Published: REFERENCES.md, \"Shortcuts in the metadata\" (Pneumothorax's published 0.58 is "
        "with PA positive, so 0.42 here).", "",
        "| finding | test positives | view position alone | published | metadata control (95% CI) |",
        "|---|---|---|---|---|",
    ]
    for k, name in enumerate(FINDINGS):
        pc = report["per_class"][name]
        lo, hi = pc["auroc_ci"]
        pub = PUBLISHED_VIEW_ONLY.get(name)
        lines.append(f"| {name} | {pc['n_pos']:,} | {view_only[k]:.3f} | {'' if pub is None else f'{pub:.2f}'} | "
                     f"{pc['auroc']:.3f} ({lo:.3f} to {hi:.3f}) |")
    lo, hi = report["mean_auroc_ci"]
    lines.append(f"| **mean** | | **{np.nanmean(view_only):.3f}** | | **{report['mean_auroc']:.3f}** "
                 f"({lo:.3f} to {hi:.3f}) |")
    checks = [abs(view_only[FINDINGS.index(n)] - v) <= 0.005 for n, v in PUBLISHED_VIEW_ONLY.items()]
    lines += ["", "## Reproduced", "",
              f"- view position alone matches the four published figures to within 0.005: "
              f"{'yes' if all(checks) else 'no'}", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        atomic_write_text(text, Path(args.results))
        print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
