"""Wall time of the whole report, and the mean AUROC of every experiment it ran.

    python bench/bench_report.py            # the cpu profile: the default `python -m cxrlib report`
    python bench/bench_report.py --quick    # the smoke profile (seconds per notebook)
    python bench/bench_report.py --profile cpu --device cuda --set data.image_size=224

Runs the report into a fresh runs folder (every experiment trains; image caches under
data/cache are reused when present, and the result says whether they were), prints a table
and writes ``bench/results/report_<profile>.md`` with the command, date, machine and numbers.
Run it on a quiet machine: other processes on the cores slow training down.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import cxrlib  # noqa: F401  (before torch/torchvision: the CPU torchvision fix)
from cxrlib.fileio import atomic_write_text

from cxrlib import profiles, report
from cxrlib.results import format_results, results_table
from _header import header_lines, load_average  # bench/_header.py: the machine line every result starts with

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="profile to time (default: cpu; smoke with --quick)")
    parser.add_argument("--quick", action="store_true", help="time the smoke profile instead")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: the profile's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--only", default=None, help="notebooks to run (default: all)")
    parser.add_argument("--out", default=None, help="report folder (default: reports/bench-<profile>)")
    parser.add_argument("--keep-runs", action="store_true",
                        help="reuse the runs of an earlier benchmark instead of training afresh")
    parser.add_argument("--results", default=None, help="markdown file (default: bench/results/report_<profile>.md)")
    args = parser.parse_args(argv)

    prof = profiles.load(args.profile or ("smoke" if args.quick else "cpu"), device=args.device,
                         overrides=args.overrides)
    name = prof.name
    out = Path(args.out or REPO / "reports" / f"bench-{name}")
    runs = out / "runs"
    if runs.exists() and not args.keep_runs:
        shutil.rmtree(runs)  # a fresh runs folder: every experiment trains inside the timing
    caches_before = sorted(p.name for p in prof.cache_dir.iterdir()) if prof.cache_dir.is_dir() else []

    load = load_average()  # before the run: the report's own training is not other work
    t0 = time.perf_counter()
    result = report.run_report(prof, only=args.only, out_dir=out, runs_dir=runs)
    wall = time.perf_counter() - t0

    table = results_table(runs, n_bootstrap=prof.baseline.train.n_bootstrap, leave_out=list(prof.full_profile_only))
    lines = _markdown(args, prof, wall, result, table, caches_before, load)
    target = Path(args.results or REPO / "bench" / "results" / f"report_{name}.md")
    atomic_write_text("\n".join(lines) + "\n", target)
    print("\n".join(lines))
    print(f"\nwritten to {target}")
    return 0 if result.ok else 1


def _markdown(args, profile, wall, result, table, caches_before, load=None) -> list[str]:
    cmd = "python bench/bench_report.py " + " ".join(sys.argv[1:] if args is not None else [])
    device = profile.baseline.train.device
    lines = [
        f"# Report wall time: profile `{profile.name}`",
        "",
        *header_lines(cmd, note=f"runs `python -m cxrlib report --profile {profile.name}"
                     + (f" --device {args.device}" if args.device else "") + "`", extra=f"device {device}",
                     load=load),
        f"- image caches present before the run: {', '.join(caches_before) or 'none (rendering is timed too)'}",
        f"- **total wall time: {wall / 60:.1f} min ({wall:.0f} s)**; notebooks ok: "
        f"{len(result.notebooks) - len(result.failed)}/{len(result.notebooks)}",
        "",
        "| notebook | status | seconds | runs trained | runs reused |",
        "|---|---|---|---|---|",
    ]
    for r in result.notebooks:
        trained, reused = _run_counts(result.out_dir / ".progress" / f"{r.stem}.jsonl")
        lines.append(f"| {r.stem} | {'ok' if r.ok else 'FAILED: ' + (r.error or '')} | {r.seconds:.0f} | "
                     f"{trained} | {reused} |")
    n_runs = int(table["seeds"].sum()) if len(table) else 0
    lines += [
        "",
        f"Runs trained or fitted: {n_runs} ({len(table)} experiments, each with its seeds). Mean test AUROC over "
        "the 14 findings, averaged over seeds, with its 95% CI (over seeds and test patients for a run of two "
        "or more seeds); seed SD and range; the difference from the baseline with the comparison design's 95% "
        "CI and p-value (cxrlib.inference: seed and test-patient variance, 'not tested' below two seeds a side); "
        "per-seed differences; the verdict (a null says the difference it could have shown):",
        "",
        "| experiment | model | size | seeds | mean AUROC [95% CI] | seed SD [min, max] | vs baseline [95% CI] | p "
        "| per-seed differences | verdict | train s per seed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    text = format_results(table) if len(table) else None
    for i in range(len(table)):
        row, t = table.iloc[i], text.iloc[i]
        lines.append(f"| {row['experiment']} | {t['model']} | {t['size']} | {t['seeds']} | {t['mean AUROC [95% CI]']} | "
                     f"{t['seed SD [min, max]']} | {t['vs baseline [95% CI]']} | {t['p-value']} | "
                     f"{t['per-seed differences']} | {t['verdict']} | {row['train seconds']:.1f} |")
    if len(table):
        lines += ["", f"Split: {table['split'].iloc[0]}."]
    return lines


def _run_counts(progress_file: Path) -> tuple[int, int]:
    """Runs a notebook trained and reused (one per seed), from the progress events it wrote."""
    if not progress_file.is_file():
        return 0, 0
    events = [json.loads(line).get("event") for line in progress_file.read_text().splitlines() if line.strip()]
    return events.count("finished"), events.count("reused")


if __name__ == "__main__":
    sys.exit(main())
