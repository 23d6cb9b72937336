"""GPU training throughput: DenseNet-121 at 224 px, AMP + channels_last, from the cache vs on-GPU tensors.

* **on GPU**: the engine's training step (autocast bf16 where supported, else fp16 with a
  gradient scaler; channels_last; BCE; Adam) on batches already resident on the GPU;
* **from cache**: the same step fed by uint8 memmap cache -> CachedDataset (augmentation on)
  -> DataLoader (workers, pinned memory) -> non-blocking copy.

Target: at least 2,000 images/s on one H100, with the loader keeping up (pipeline within
10% of the on-GPU figure). Needs CUDA; without it the script stops with a message.

    python bench/bench_gpu_throughput.py           # the recorded run
    python bench/bench_gpu_throughput.py --quick   # a short run
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

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="densenet121")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per round and mode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="DataLoader workers")
    ap.add_argument("--phantoms", type=int, default=6000, help="phantoms in the cache (70%% train)")
    ap.add_argument("--no-amp", action="store_true", help="float32 instead of mixed precision")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--quick", action="store_true", help="10 steps x 1 round, batch 128, 2000 phantoms")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu_throughput.md")
    ap.add_argument("--cache-dir", default=str(REPO / "data" / "cache"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: bench_gpu_throughput.py measures GPU training and needs CUDA, but "
              f"torch.cuda.is_available() is False here (torch {torch.__version__}); run it on a machine with an "
              "NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        return 2
    if args.quick:
        args.steps, args.rounds, args.batch_size, args.phantoms = 10, 1, 128, 2000

    from cxrlib.config import DataConfig
    from cxrlib.data import load_data
    from cxrlib.models import create_model
    from cxrlib.train import ResumableSampler, amp_settings, make_loader, batch_to_device, train_step

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    t = time.perf_counter()
    data = load_data(DataConfig(source="phantoms", num_phantoms=args.phantoms, image_size=args.size,
                                cache_dir=args.cache_dir, workers=0), progress=True)
    cache_s = time.perf_counter() - t
    ds = data.train
    ds.augment = True
    if len(ds) < args.batch_size:
        raise SystemExit(f"error: {len(ds)} training images < batch {args.batch_size}; raise --phantoms")
    k = len(data.label_names)
    channels_last = not args.no_channels_last
    use_amp, amp_dtype, needs_scaler = amp_settings(device, not args.no_amp)
    model = create_model(args.model, num_classes=k, in_chans=1).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_scaler)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step(x, y):
        train_step(model, x, y, loss_fn, opt, scaler, (use_amp, amp_dtype, needs_scaler))

    n_mem = min(len(ds) // args.batch_size, 4)
    mem = []
    for b in range(n_mem):
        items = [ds[i] for i in range(b * args.batch_size, (b + 1) * args.batch_size)]
        mem.append((batch_to_device(torch.stack([x for x, _ in items]), device, channels_last),
                    torch.stack([y for _, y in items]).to(device)))

    sampler = ResumableSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0)
    epochs = itertools.count()

    def batches():
        while True:
            e = next(epochs)
            sampler.set_epoch(e)
            ds.set_epoch(e)
            loader = make_loader(ds, args.batch_size, sampler, args.workers, True, e)
            yield from loader

    feed = batches()

    def timed(fn, n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        torch.cuda.synchronize()
        return n * args.batch_size / (time.perf_counter() - t0)

    def gpu_step(i):
        step(*mem[i % n_mem])

    def pipe_step(i):
        x, y = next(feed)
        step(batch_to_device(x, device, channels_last), y.to(device, non_blocking=True))

    timed(gpu_step, 5)
    timed(pipe_step, 5)
    gpu_rates, pipe_rates = [], []
    for _ in range(args.rounds):
        gpu_rates.append(timed(gpu_step, args.steps))
        pipe_rates.append(timed(pipe_step, args.steps))
    t0 = time.perf_counter()
    for _ in range(args.steps):
        next(feed)
    load_rate = args.steps * args.batch_size / (time.perf_counter() - t0)
    g, p = statistics.median(gpu_rates), statistics.median(pipe_rates)
    loss_pct = 100 * (1 - p / g)
    name = torch.cuda.get_device_name(device)
    prec = "off (float32)" if not use_amp else str(amp_dtype).replace("torch.", "")
    print(f"{name}: on-GPU {g:.0f} img/s, from cache {p:.0f} img/s ({loss_pct:.1f}% lost), loader alone "
          f"{load_rate:.0f} img/s")
    cmd = "python bench/bench_gpu_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"""# GPU training throughput: {args.model} {args.size} px

Command: `{cmd.strip()}`
Date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; GPU: {name}; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()});
torch {torch.__version__}, CUDA {torch.version.cuda}.

Batch {args.batch_size}, mixed precision {prec}, channels_last {channels_last}, Adam + BCE, cuDNN benchmark on;
{len(ds)} training phantoms in the {args.size} px uint8 cache (built in {cache_s:.0f} s), augmentation on,
DataLoader workers {args.workers}, pinned memory, non-blocking copies. Median of {args.rounds} alternating
rounds of {args.steps} steps.

| mode | images/s | rounds |
|---|---|---|
| step on tensors already on the GPU | {g:.0f} | {', '.join(f'{r:.0f}' for r in gpu_rates)} |
| cache -> dataset -> loader -> GPU step | {p:.0f} | {', '.join(f'{r:.0f}' for r in pipe_rates)} |
| loader alone (CPU side, no model) | {load_rate:.0f} | |

Pipeline loss: **{loss_pct:.1f}%**; target: >= 2,000 images/s on an H100 with the loader keeping up.
"""
    atomic_write_text(text, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
