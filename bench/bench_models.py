"""Parameter counts and CPU forward times of the registered models.

    python bench/bench_models.py            # full table (every backbone, the ResNet-50 variants)
    python bench/bench_models.py --quick    # a few small models, one timing each

Every backbone with the gap head at 224 px (Inception-v3 and NASNet also at their native 299
and 331 px), and ResNet-50 with every head and wrapper (the study's comparison). Times are
the median of ``--repeats`` forward passes in eval mode under ``torch.inference_mode``, after
one warm-up pass. Writes bench/results/models.md (atomically) with the command and machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cxrlib  # noqa: F401  (must come before torch/timm imports elsewhere: CPU torchvision fix)
from cxrlib.fileio import atomic_write_text
import torch

from cxrlib.models import create_model, list_models
from _header import header_lines  # bench/_header.py: the machine line every result starts with

RESULTS = Path(__file__).resolve().parent / "results" / "models.md"

FULL = (
    [dict(name=n, size=224) for n in list_models()]
    + [dict(name="inception_v3", size=299), dict(name="nasnet", size=331)]
    + [dict(name="resnet50", head=h, size=224) for h in ("fpn", "psp")]
    + [dict(name="resnet50", wrapper=w, size=224) for w in ("multiscale", "two_stage")]
    + [dict(name="densenet121", wrapper="two_stage", size=224)]
)
QUICK = [
    dict(name="resnet18", size=224),
    dict(name="resnet18", head="fpn", size=224),
    dict(name="resnet18", wrapper="two_stage", size=224),
]


def time_forward(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds per forward pass."""
    with torch.inference_mode():
        model(x)  # warm-up: allocator, oneDNN primitive caches
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(cases: list[dict], batches: list[int], repeats: int) -> list[dict]:
    rows = []
    for case in cases:
        case = dict(case)
        size = case.pop("size")
        torch.manual_seed(0)
        model = create_model(num_classes=14, in_chans=1, **case)
        if model.stages:
            model.set_stage("fusion")  # the full model: both branches and the crop
        model.eval()
        row = {
            "model": model.info.name,
            "px": size,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        }
        for b in batches:
            seconds = time_forward(model, torch.randn(b, 1, size, size), repeats)
            row[f"ms_b{b}"] = 1000 * seconds
            row[f"img_s_b{b}"] = b / seconds
        rows.append(row)
        print("  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def to_markdown(rows: list[dict], batches: list[int], command: str, repeats: int) -> str:
    header = ["model", "input px", "params (M)"]
    for b in batches:
        header += [f"forward ms (batch {b})", f"images/s (batch {b})"]
    lines = [
        "# Models: parameters and CPU forward time",
        "",
        *header_lines(command),
        f"- method: eval mode, inference_mode, 1 warm-up then median of {repeats} passes; grayscale input "
        "(in_chans=1), 14 outputs; two_stage measured in its fusion stage (global + crop + local + fusion)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        cells = [r["model"], str(r["px"]), f"{r['params_m']:.1f}"]
        for b in batches:
            cells += [f"{r[f'ms_b{b}']:.0f}", f"{r[f'img_s_b{b}']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="three small models, batch 1, one timed pass")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 8; quick: 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes per case (default 5; quick: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"markdown file to write (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batches or ([1] if args.quick else [1, 8])
    repeats = args.repeats or (1 if args.quick else 5)
    rows = run(QUICK if args.quick else FULL, batches, repeats)
    command = "python bench/bench_models.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = to_markdown(rows, batches, command.strip(), repeats)
    atomic_write_text(text, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
