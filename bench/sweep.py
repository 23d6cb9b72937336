"""The report's runs as a sweep: wall time with 1 and 2 local workers, every run exactly once,
the disk a finished runs folder takes, and the check's estimate of the full study on N GPUs.

    python bench/sweep.py                       # smoke plan, 1 and 2 workers; estimates; disk
    python bench/sweep.py --plans smoke,cpu     # also the cpu plan (about 25 runs: long)

Each plan is trained into a fresh runs folder by ``cxrlib.sweep`` with submitit's local
executor, once per worker count; the wall time runs from submission to the last job's end.
Every run must finish exactly once (one ``finished`` event per run) and nothing may be left
for the report to train. On two CPU cores two workers share the cores, so the point of the
two-worker rows is correctness, not speed; on a machine with GPUs each worker gets one.

The runs folder's size is measured after the sweep (``last.pt`` pruned), and estimated for
the cpu plan as the sum of each planned model's weights (what its ``best.pt`` holds).
The full study's time on 1 and 8 GPUs is what ``cxrlib check --gpus 1,8`` prints; on a
machine without a GPU it is the estimate for this CPU and says so. Writes
``bench/results/sweep.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cxrlib  # noqa: F401  (before torch/torchvision: the CPU torchvision fix)

from cxrlib import profiles, report, sweep
from cxrlib.fileio import atomic_write_text
from _header import header_lines  # bench/_header.py: the machine line every result starts with

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO.parent / "shared" / "data" / "chestxray14-sample"


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def time_sweep(profile_name: str, workers: int, root: Path) -> dict:
    runs_dir = root / f"{profile_name}-{workers}w"
    shutil.rmtree(runs_dir, ignore_errors=True)
    profile = profiles.load(profile_name, runs_dir=str(runs_dir))
    plan = sweep.plan_runs(profile, report.discover_notebooks())
    t0 = time.perf_counter()
    submission = sweep.submit(plan, sweep.Options(executor="local", workers=workers, poll_s=1.0))
    results = submission.wait()
    wall = time.perf_counter() - t0
    finished = {}
    for run in plan.runs:
        path = sweep.events_path(submission.plan, run)
        events = [json.loads(line)["event"] for line in path.read_text().splitlines()] if path.is_file() else []
        finished[run.key] = events.count("finished")
    left = sweep.pending(sweep.plan_runs(profiles.load(profile_name, runs_dir=str(runs_dir)),
                                         report.discover_notebooks()))
    by_worker = [len(r["trained"]) for r in results]
    return {"profile": profile_name, "workers": workers, "runs": len(plan.runs), "wall": wall,
            "exactly_once": all(n == 1 for n in finished.values()), "left": len(left), "by_worker": by_worker,
            "failed": sum(len(r["failed"]) for r in results),
            "size": _size(runs_dir) - _size(runs_dir / sweep.SWEEP_DIR), "last_pt": len(list(runs_dir.rglob("last.pt")))}


def weights_estimate(profile_name: str) -> tuple[int, int]:
    """(runs, bytes): the plan's runs and the sum of their models' parameters and buffers,
    each tensor once at the precision ``best.pt`` keeps it (``train.weights_dtype``), less a
    few KiB of config."""
    from cxrlib import checkpoint
    from cxrlib.models import create_model_from_config

    profile = profiles.load(profile_name, runs_dir=str(REPO / "runs" / "bench-sweep-estimate"))
    plan = sweep.plan_runs(profile, report.discover_notebooks())
    sizes: dict[str, int] = {}
    total = 0
    for run in plan.runs:
        cfg = run.config
        key = json.dumps([cfg.model.name, cfg.model.head, cfg.model.wrapper, cfg.model.options,
                          cfg.data.include_no_finding, cfg.train.weights_dtype], sort_keys=True, default=str)
        if key not in sizes:
            m = cfg.model
            model = create_model_from_config(type(m)(**{**m.__dict__, "pretrained": False}),
                                             num_classes=15 if cfg.data.include_no_finding else 14)
            params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
            stored = checkpoint.as_stored(model.state_dict(), cfg.train.weights_dtype, params)
            sizes[key] = sum(t.numel() * t.element_size() for t in stored.values())
        total += sizes[key]
    return len(plan.runs), total


def check_estimate(device: str) -> str:
    command = [sys.executable, "-m", "cxrlib", "check", "--profile", "full", "--data-dir", str(SAMPLE),
               "--device", device, "--gpus", "1,8"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if "cxrlib sweep" in line or line.startswith("checked profile")]
    if not any("cxrlib sweep" in line for line in lines):  # say why rather than print nothing
        lines += [f"(exit status {proc.returncode}; the check's last words:)", *proc.stdout.splitlines()[-5:],
                  *proc.stderr.splitlines()[-10:]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", default="smoke", help="plans to sweep, comma-separated (smoke, cpu)")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--root", default=str(REPO / "runs" / "bench-sweep"), help="where the runs folders go")
    parser.add_argument("--results", default=str(REPO / "bench" / "results" / "sweep.md"))
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])  # the workers'

    load = os.getloadavg()  # before the sweeps: their own training is not other work
    rows = [time_sweep(p, int(w), Path(args.root)) for p in args.plans.split(",") for w in args.workers.split(",")]
    n_cpu_runs, cpu_bytes = weights_estimate("cpu")
    estimates = {device: check_estimate(device) for device in ("cuda", "cpu")}
    lines = [
        "# Sweep: the report's runs as jobs",
        "",
        *header_lines(' '.join(['python bench/sweep.py', *sys.argv[1:]]), load=load[0]),
        "",
        "On two CPU cores two workers share the cores: these rows show that every run is trained exactly "
        "once and nothing is left for the report, not a speed-up.",
        "",
        "| plan | workers | runs | wall | runs per worker | every run exactly once | left for the report | failed "
        "| runs folder | last.pt left |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['profile']} | {r['workers']} | {r['runs']} | {r['wall']:.0f} s | "
                     f"{' + '.join(map(str, r['by_worker']))} | {'yes' if r['exactly_once'] else 'NO'} | {r['left']} | "
                     f"{r['failed']} | {_mb(r['size'])} | {r['last_pt']} |")
    if "cpu" not in args.plans.split(","):
        lines += ["", "The cpu plan (about 25 runs, some 15 min each way on a quiet 2-core machine) is not in this "
                      "table: `python bench/sweep.py --plans cpu` adds its rows."]
    lines += [
        "",
        "## Disk",
        "",
        f"The cpu plan's {n_cpu_runs} runs hold, by their models' weights (each tensor once, at the precision "
        f"`best.pt` stores it), about **{_mb(cpu_bytes)}** once `last.pt` is pruned; the predictions, history and metrics add a "
        "few KiB per run.",
        "",
        "## The full study on 1 and 8 GPUs (`cxrlib check --profile full --gpus 1,8`)",
        "",
        f"With the release's sample (`{SAMPLE.relative_to(REPO.parent)}`: its split lists name the whole release, "
        "its images are a few hundred), so the run times are those of the sample's images:",
        "",
        "```",
        "--device cuda:",
        estimates["cuda"] or "(no line)",
        "--device cpu:",
        estimates["cpu"] or "(no line)",
        "```",
        "",
        "The check probes each model for a few steps within its 30 s budget: runs left unprobed are counted as "
        "'without an estimate'. On a GPU machine with the whole release, `python -m cxrlib check --profile full "
        "--data-dir /data/ChestX-ray14 --gpus 1,8` prints the study's time on 1 and 8 of its GPUs.",
    ]
    atomic_write_text("\n".join(lines) + "\n", args.results)
    print("\n".join(lines))
    return 0 if all(r["exactly_once"] and not r["left"] and not r["failed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
