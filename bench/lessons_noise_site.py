"""What notebooks 12 (label noise) and 13 (another hospital) show on a profile, outside papermill.

The profile's baseline (trained, or reused from ``--runs-dir``) re-scored against a noisy
labeller's test labels, then at the second site; both controls beside it; the baseline trained
again on noisy train/val labels and compared with the clean one. Writes
bench/results/lessons_noise_site.md.

    python bench/lessons_noise_site.py --profile cpu --runs-dir /tmp/cxrlib_runs_cpu
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

import pandas as pd  # noqa: E402

from cxrlib import experiments, external, label_noise, profiles
from cxrlib.fileio import atomic_write_text
from _header import header_lines  # noqa: E402  bench/_header.py: the machine line every result starts with

RESULTS = REPO / "bench" / "results" / "lessons_noise_site.md"


def _md(df: pd.DataFrame) -> str:
    """A markdown table (numbers to 3 decimals), without optional dependencies."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    head = [str(df.index.name or "")] + [str(c) for c in df.columns]
    rows = [[cell(i)] + [cell(v) for v in r] for i, r in zip(df.index, df.itertuples(index=False))]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head)] + rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--runs-dir", default="", help="runs folder (finished runs are reused); default runs/<profile>")
    ap.add_argument("--sensitivity", type=float, default=0.8)
    ap.add_argument("--specificity", type=float, default=0.98)
    ap.add_argument("--num-phantoms", type=int, default=600, help="images drawn at the second phantom site")
    ap.add_argument("--note", default="", help="a line about the machine's load")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args()
    t0 = time.perf_counter()
    profile = profiles.load(args.profile, runs_dir=args.runs_dir)
    base = profile.baseline
    baseline = experiments.run_all([base], seeds=profile.seeds)[base.name]
    noise = label_noise.test_noise_table(baseline[0].predictions, args.sensitivity, args.specificity,
                                         seed=base.data.seed)
    site = external.rescore_runs(baseline, None, num_phantoms=args.num_phantoms)
    controls = experiments.compare({base.name: baseline, experiments.CONTROL: experiments.run_control(profile),
                                    experiments.METADATA_CONTROL: experiments.run_metadata_control(profile)})
    noisy_cfg = label_noise.noisy_training_config(base, args.sensitivity, args.specificity)
    noisy = experiments.run_all([noisy_cfg], seeds=profile.seeds)[noisy_cfg.name]
    trained = experiments.compare({base.name: baseline, noisy_cfg.name: noisy})
    seconds = time.perf_counter() - t0
    lines = [
        "# Notebooks 12 and 13 on a profile: label noise, another hospital, the metadata control", "",
        "All images here are synthetic phantoms (cxrlib.phantoms), not patient data.", "", "## Run", "",
        *header_lines(f"python bench/lessons_noise_site.py {' '.join(sys.argv[1:])}",
                      extra=f"wall time {seconds:.0f} s (finished runs reused; not a timing)"),
        *([f"- {args.note}"] if args.note else []),
        f"- profile {profile.name!r}: {base.data.source} at {base.data.image_size} px, baseline {base.model.name}, "
        f"seeds {list(profile.seeds.baseline)}; labeller: sensitivity {args.sensitivity}, specificity "
        f"{args.specificity}; second site: {args.num_phantoms} phantoms, knobs {external.SITE_B}", "",
        "## Notebook 12: the first seed's test scores against a noisy labeller's labels (no training)", "",
        _md(noise), "",
        "## Notebook 12: trained on noisy train/val labels, scored against the true test labels", "",
        _md(trained.summary.set_index("experiment")), "", _md(trained.paired.set_index("experiment")), "",
        "## Notebook 13: the first seed at the second phantom site", "",
        _md(site.table[["internal positives", "external positives", "internal AUROC", "external AUROC", "drop",
                        "drop CI low", "drop CI high"]]), "",
        f"{site.words()}", "", "Per seed:", "", _md(site.seed_drops), "",
        "## Notebook 13: the baseline beside the shortcut control and the metadata control", "",
        _md(controls.summary.set_index("experiment")), "", _md(controls.paired.set_index("experiment")), "",
    ]
    text = "\n".join(lines)
    print(text)
    atomic_write_text(text, Path(args.results))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
