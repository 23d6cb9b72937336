"""Does the data pipeline slow training down? Full pipeline vs the model step alone.

Same model (ResNet-18), same image size (64 px), same batch (32), one process:

* **in memory**: the training step (forward, BCE, backward, Adam) on batches already
  held as tensors on the device;
* **pipeline**: the same step fed by the engine's path: uint8 memmap cache ->
  CachedDataset (augmentation on) -> DataLoader (the engine's loader) -> device.

The two are measured in alternating rounds so that a busy machine slows both alike.
Target: the pipeline loses less than 10% of the in-memory throughput.

    python bench/bench_pipeline.py           # the recorded run
    python bench/bench_pipeline.py --quick   # seconds: proves the script works
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cxrlib  # noqa: F401  (before torchvision/timm)
from cxrlib.fileio import atomic_write_text
import torch

from cxrlib.config import DataConfig
from cxrlib.data import load_data
from cxrlib.models import create_model
from cxrlib.train import ResumableSampler, make_loader, batch_to_device, train_step

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per round and mode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers for the pipeline")
    ap.add_argument("--phantoms", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="5 steps x 1 round on 300 phantoms")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pipeline.md")
    ap.add_argument("--cache-dir", default=str(REPO / "data" / "cache"))
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.phantoms = 5, 1, 300
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    data = load_data(DataConfig(source="phantoms", num_phantoms=args.phantoms, image_size=args.size,
                                cache_dir=args.cache_dir, workers=1), progress=False)
    ds = data.train
    ds.augment = True
    k = len(data.label_names)
    model = create_model(args.model, num_classes=k, in_chans=1).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    scaler = torch.amp.GradScaler("cuda", enabled=False)
    no_amp = (False, None, False)  # CPU: the engine runs without autocast

    def step(x, y):
        train_step(model, x, y, loss_fn, opt, scaler, no_amp)

    # the in-memory batches are the dataset's own images, so both modes compute the same thing
    n_mem = min(len(ds) // args.batch_size, 8)
    mem = []
    for b in range(n_mem):
        items = [ds[i] for i in range(b * args.batch_size, (b + 1) * args.batch_size)]
        mem.append((torch.stack([x for x, _ in items]).to(device), torch.stack([y for _, y in items]).to(device)))

    sampler = ResumableSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0)
    epoch = itertools.count()

    def pipeline_batches():
        while True:
            e = next(epoch)
            sampler.set_epoch(e)
            ds.set_epoch(e)
            yield from make_loader(ds, args.batch_size, sampler, args.workers, device.type == "cuda", e)

    feed = pipeline_batches()

    cpu_rates: dict[str, list[float]] = {"memory": [], "pipeline": [], "warm-up": []}

    def run_memory(n, mode="memory"):
        t, c = time.perf_counter(), time.process_time()
        for i in range(n):
            step(*mem[i % n_mem])
        cpu_rates[mode].append(n * args.batch_size / (time.process_time() - c))
        return n * args.batch_size / (time.perf_counter() - t)

    def run_pipeline(n, mode="pipeline"):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            x, y = next(feed)
            step(batch_to_device(x, device, False), y.to(device))
        cpu_rates[mode].append(n * args.batch_size / (time.process_time() - c))
        return n * args.batch_size / (time.perf_counter() - t)

    run_memory(3, "warm-up")  # warm-up: allocator, kernels, worker start
    run_pipeline(3, "warm-up")
    mem_rates, pipe_rates = [], []
    for _ in range(args.rounds):
        mem_rates.append(run_memory(args.steps))
        pipe_rates.append(run_pipeline(args.steps))
    m, p = statistics.median(mem_rates), statistics.median(pipe_rates)
    loss_pct = 100 * (1 - p / m)
    # images per CPU-second of this process: a busy machine slows the wall clock, hardly this
    cm, cp = statistics.median(cpu_rates["memory"]), statistics.median(cpu_rates["pipeline"])
    cpu_loss_pct = 100 * (1 - cp / cm)
    # the pipeline's own cost, without the model: how fast can it deliver batches?
    t = time.perf_counter()
    n_load = max(args.steps, 10)
    for _ in range(n_load):
        next(feed)
    load_rate = n_load * args.batch_size / (time.perf_counter() - t)
    # cross-check: with workers=0 the loader's time adds to the step's time
    serial_pct = 100 * (1 / load_rate) / (1 / m + 1 / load_rate)
    print(f"{'mode':<12} {'images/s':>10}   rounds")
    print(f"{'in memory':<12} {m:>10.1f}   {', '.join(f'{r:.1f}' for r in mem_rates)}")
    print(f"{'pipeline':<12} {p:>10.1f}   {', '.join(f'{r:.1f}' for r in pipe_rates)}")
    print(f"{'per CPU-s':<12} memory {cm:.1f}, pipeline {cp:.1f} images/CPU-s: {cpu_loss_pct:.1f}% lost")
    print(f"loader alone: {load_rate:.0f} images/s; pipeline loses {loss_pct:.1f}% (target < 10%); "
          f"loader share of a serial step: {serial_pct:.1f}%")
    cmd = "python bench/bench_pipeline.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"""# Training throughput: full pipeline vs model step alone

Command: `{cmd.strip()}`
Date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}),
torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}; CPU shared with other work unless noted.

Model {args.model}, {args.size} px, batch {args.batch_size}, Adam + BCE, {len(ds)} training phantoms from the
uint8 cache (augmentation on), DataLoader workers {args.workers}. Median of {args.rounds} alternating
rounds of {args.steps} steps each.

| mode | images/s | rounds |
|---|---|---|
| model step on tensors in memory | {m:.1f} | {', '.join(f'{r:.1f}' for r in mem_rates)} |
| cache -> dataset -> loader -> model step | {p:.1f} | {', '.join(f'{r:.1f}' for r in pipe_rates)} |
| loader alone (no model) | {load_rate:.0f} | |

| per CPU-second of this process | images/CPU-s | rounds |
|---|---|---|
| model step on tensors in memory | {cm:.1f} | {', '.join(f'{r:.1f}' for r in cpu_rates['memory'])} |
| cache -> dataset -> loader -> model step | {cp:.1f} | {', '.join(f'{r:.1f}' for r in cpu_rates['pipeline'])} |

Pipeline loss, wall clock: **{loss_pct:.1f}%**; per CPU-second: **{cpu_loss_pct:.1f}%** (target < 10%).
On a shared machine the wall-clock figure is noise (other processes take the cores in turns); the CPU-time
figure and this cross-check are not: the loader's own time per image is {serial_pct:.1f}% of (loader +
in-memory step) time per image, which is what the pipeline must lose when the loader runs in the training
process (workers 0).
"""
    atomic_write_text(text, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
