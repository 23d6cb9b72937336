"""Benchmark: Grad-CAM latency on CPU, and all 14 findings in one pass versus 14 calls.

    python bench/bench_cam.py            # the real run (224 px, 15 repeats)
    python bench/bench_cam.py --quick    # a smoke run (5 repeats)

Targets (one image, 224 px, CPU): one Grad-CAM for ResNet-18 under 0.3 s, for DenseNet-121
under 0.6 s; the 14-finding heatmaps must cost far less than 14 single calls. Each number is
the median of several runs after one warm-up. Writes bench/results/cam.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cxrlib  # noqa: F401  (must precede torchvision / timm / pytorch_grad_cam)
from cxrlib.fileio import atomic_write_text
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cxrlib import cam
from _header import header_lines  # bench/_header.py: the machine line every result starts with

RESULTS = Path(__file__).resolve().parent / "results" / "cam.md"
TARGETS = {"resnet18": 0.3, "densenet121": 0.6}


def build(name: str) -> tuple[torch.nn.Module, list[torch.nn.Module], str]:
    """The project's model and its registry layer (timm's model if the registry is absent)."""
    try:
        from cxrlib.models import cam_target_layers, create_model

        model = create_model(name, head="gap", num_classes=14, in_chans=1)
        layers = cam_target_layers(model)
        where = getattr(getattr(model, "info", None), "cam_layer", type(layers[0]).__name__)
        return model.eval(), layers, f"cxrlib.models ({where})"
    except ImportError:
        import timm

        model = timm.create_model(name, in_chans=1, num_classes=14).eval()
        layer = model.layer4 if name.startswith("resnet") else model.features
        return model, [layer], "timm (layer4 / features)"


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and lazy initialisation
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of 15 (smoke run)")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else 15
    torch.manual_seed(0)
    x = torch.randn(1, 1, args.size, args.size)

    rows = []
    for name in ("resnet18", "densenet121"):
        model, layers, source = build(name)
        one = median_time(lambda: cam.heatmap(model, x[0], 5, target_layers=layers), repeats)
        with GradCAM(model, layers) as lib:
            lib_one = median_time(lambda: lib(x, [ClassifierOutputTarget(5)]), repeats)
        all14 = median_time(lambda: cam.heatmaps_all_findings(model, x[0], target_layers=layers), repeats)
        sep14 = median_time(lambda: [cam.heatmap(model, x[0], k, target_layers=layers) for k in range(14)],
                            max(1, repeats // 3))
        rows.append((name, source, one, lib_one, all14, sep14))
        print(f"{name:12s} one {one:.3f}s (target <{TARGETS[name]}s; library call {lib_one:.3f}s)  "
              f"all 14 {all14:.3f}s vs 14 calls {sep14:.3f}s ({sep14 / all14:.1f}x)", flush=True)

    command = "python bench/bench_cam.py" + (" --quick" if args.quick else "") + (
        f" --size {args.size}" if args.size != 224 else "") + (f" --threads {args.threads}" if args.threads else "")
    lines = [
        "# Grad-CAM on CPU",
        "",
        *header_lines(command),
        f"- input: one {args.size}x{args.size} gray image, 14 outputs, untrained weights (timing does not "
        f"depend on them); median of {repeats} runs after a warm-up (14 separate calls: "
        f"{max(1, repeats // 3)} runs)",
        "",
        "| model | target layer from | one Grad-CAM (s) | target (s) | pytorch-grad-cam call (s) "
        "| all 14 findings (s) | 14 separate calls (s) | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, source, one, lib_one, all14, sep14 in rows:
        ok = "ok" if one < TARGETS[name] else "MISSED"
        lines.append(f"| {name} | {source} | {one:.3f} ({ok}) | < {TARGETS[name]} | {lib_one:.3f} | "
                     f"{all14:.3f} | {sep14:.3f} | {sep14 / all14:.1f}x |")
    lines += [
        "",
        "One Grad-CAM is `cxrlib.cam.heatmap` (one forward, gradient back to the target layer only). "
        "The pytorch-grad-cam column is the library's own `GradCAM(model, layers)(x, targets)`, "
        "which back-propagates through the whole network. All 14 findings use one forward and "
        "14 backward passes through the head (`cxrlib.cam.heatmaps_all_findings`).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text("\n".join(lines), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
