"""Feeding the device on the CPU: uint8 batches, the batched augmentation, and the training step.

Three measurements, each the median of alternating rounds, on the training split of
synthetic phantoms held in the uint8 cache:

1. **Delivery** at ``--size`` px (default 224), batch ``--batch-size`` (256), augmentation on:
   uint8 batches with their targets and augmentation parameters, ready for the device
   (:meth:`cxrlib.feed.Feed.batches`), from the resident store, from the cache memmap in
   this process, and from ``--workers`` persistent DataLoader workers; beside today's
   per-sample loader that augments each image on the CPU and ships float32.
   Target: the resident store delivers >= 20,000 images/s (it is a memory copy).
2. **Device-side augmentation on the CPU** (:func:`cxrlib.augment.model_input`): one
   ``grid_sample`` and one scale-and-shift per batch, milliseconds per batch.
3. **The training step** (ResNet-18, ``--step-size`` px, batch ``--step-batch``): on tensors
   already in memory, fed by the feed (resident uint8 -> augmentation -> step), and fed by
   the per-sample loader, in alternating rounds. On the CPU the augmentation shares the cores
   with the step; on a GPU it runs there (see ``bench/gpu_check.sh``).

Numbers measured while other work runs on the machine are marked as such (load average).

    python bench/bench_feed.py           # the recorded run (bench/results/feed.md)
    python bench/bench_feed.py --quick   # seconds: proves the script works
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import cxrlib  # noqa: F401  (before torchvision/timm)
from cxrlib.fileio import atomic_write_text
import numpy as np
import torch

from cxrlib.augment import model_input
from cxrlib.config import DataConfig
from cxrlib.data import load_data
from cxrlib.feed import Feed
from cxrlib.models import create_model
from cxrlib.train import make_optimizer, train_step
from _header import header_lines, load_average  # bench/_header.py: the machine line every result starts with

REPO = Path(__file__).resolve().parent.parent
TARGET_DELIVERY = 20_000  # images/s from the resident store


def per_sample_loader(ds, batch_size: int, workers: int, seed: int):
    """Today's per-sample path: ``ds[i]`` augments one image on the CPU and returns float32."""
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, generator=g,
                                       persistent_workers=workers > 0)


def forever(make_epoch):
    """Batches without end, epoch after epoch (epoch numbers 0, 1, ...)."""
    e = 0
    while True:
        yield from make_epoch(e)
        e += 1


def rate(source, n_batches: int) -> tuple[float, float]:
    """(images/s wall clock, images per CPU-second of this process) over ``n_batches`` of ``source``."""
    n, t, c = 0, time.perf_counter(), time.process_time()
    for _ in range(n_batches):
        b = next(source)
        n += len(b[0])
    return n / (time.perf_counter() - t), n / max(time.process_time() - c, 1e-9)


def alternate(sources: dict, n_batches: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Each source in turn, ``rounds`` times, so that a busy machine slows all of them alike."""
    out = {k: [] for k in sources}
    for k, s in sources.items():  # warm-up: workers start, page cache, allocator
        rate(s, 1)
    for _ in range(rounds):
        for k, s in sources.items():
            out[k].append(rate(s, n_batches))
    return out


def med(rows, i=0) -> float:
    return statistics.median(r[i] for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224, help="image side for delivery and augmentation")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--phantoms", type=int, default=1200, help="phantoms in the cache (70%% are training images)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the streamed and per-sample loaders")
    ap.add_argument("--batches", type=int, default=12, help="batches per round (delivery)")
    ap.add_argument("--augment-repeats", type=int, default=5)
    ap.add_argument("--step-size", type=int, default=64, help="image side for the training-step comparison")
    ap.add_argument("--step-batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="training steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="a few batches of small images: proves the script works")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "feed.md")
    ap.add_argument("--cache-dir", default=str(REPO / "data" / "cache"))
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.batch_size, args.phantoms, args.batches = 64, 32, 200, 3
        args.augment_repeats, args.step_size, args.step_batch, args.steps, args.rounds = 2, 32, 8, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    load = load_average()  # at the start: the runs below add their own load

    def training_split(size: int):
        cfg = DataConfig(source="phantoms", num_phantoms=args.phantoms, image_size=size, cache_dir=args.cache_dir,
                         workers=0)
        ds = load_data(cfg, progress=False).train
        ds.augment = True
        return ds

    # ---- 1. delivery: uint8 batches + targets + augmentation parameters, ready for the device
    print(f"delivery: {args.size} px phantoms ...", flush=True)
    ds = training_split(args.size)
    bs = args.batch_size
    if len(ds) < bs:
        raise SystemExit(f"error: {len(ds)} training images < batch {bs}; raise --phantoms")
    resident = Feed(ds, bs, shuffle=True, resident="host")
    inline = Feed(ds, bs, shuffle=True, resident="off", workers=0)
    workers = Feed(ds, bs, shuffle=True, resident="off", workers=args.workers)
    old = per_sample_loader(ds, bs, args.workers, 0)
    plain = ds.subset(np.arange(len(ds)))
    plain.augment = False
    no_params = Feed(plain, bs, shuffle=True, resident="host")
    delivery = alternate({
        "resident": forever(resident.batches),
        "resident, augmentation off (no parameters)": forever(no_params.batches),
        "memmap, in this process": forever(inline.batches),
        f"memmap, {args.workers} workers": forever(workers.batches),
        f"per-sample loader, float32, {args.workers} workers": forever(lambda e: iter(old)),
    }, args.batches, args.rounds)
    workers.close()

    # ---- 2. the batched augmentation on the CPU
    print("augmentation on the CPU ...", flush=True)
    b = next(resident.batches(0))
    aug_ms, norm_ms = [], []
    model_input(b.images, b.params)
    for _ in range(args.augment_repeats):
        t = time.perf_counter()
        model_input(b.images, b.params)
        aug_ms.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        model_input(b.images)
        norm_ms.append(1000 * (time.perf_counter() - t))
    aug, norm = statistics.median(aug_ms), statistics.median(norm_ms)
    del resident, inline, no_params, old

    # ---- 3. the training step, fed three ways
    print(f"training step: {args.step_size} px ...", flush=True)
    small = training_split(args.step_size)
    sb = args.step_batch
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=len(small.label_names), in_chans=1).train()
    opt = make_optimizer("adam", model.parameters(), 1e-3, 0.0)  # fit's optimizer (fused only on CUDA)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    no_amp = (False, None, False)  # the CPU runs without autocast, as the engine does
    feed = Feed(small, sb, shuffle=True)
    memory = []  # the feed's own first batches, so all three modes compute on the same images
    for x, y in feed.epoch(0):
        memory.append((x.clone(), y.clone()))
        if len(memory) == 8:
            break
    per_sample = per_sample_loader(small, sb, 0, 0)

    def stepped(batches):
        for x, y in batches:
            train_step(model, x, y, loss_fn, opt, scaler, no_amp)
            yield x, y

    steps = alternate({
        "model step on tensors in memory": stepped(forever(lambda e: iter(memory))),
        "feed (resident uint8 -> batched augmentation) -> step": stepped(forever(feed.epoch)),
        "per-sample loader (augments each image, float32) -> step": stepped(forever(lambda e: iter(per_sample))),
    }, args.steps, args.rounds)

    # ---- the record
    keys = list(delivery)
    res = med(delivery[keys[0]])
    bare, fed, old_step = (med(steps[k]) for k in steps)
    cmd = "python " + " ".join(shlex.quote(a) for a in ["bench/bench_feed.py", *(argv if argv is not None
                                                                                 else sys.argv[1:])])
    lines = [
        "# Feeding the device: uint8 batches, batched augmentation, the training step (CPU)",
        "",
        *header_lines(cmd, load=load),
        "",
        f"## 1. Delivery: {args.size} px uint8 batches of {bs}, ready for the device",
        "",
        f"{len(ds)} training phantoms in the uint8 cache; augmentation on (each batch carries its {bs} x 5 "
        f"parameters drawn per (seed, epoch, index)). Median of {args.rounds} alternating rounds of "
        f"{args.batches} batches; images per CPU-second counts this process only (workers run beside it).",
        "",
        "| source | images/s | images per CPU-s | rounds (images/s) |",
        "|---|---:|---:|---|",
        *[f"| {k} | {med(v):,.0f} | {med(v, 1):,.0f} | {', '.join(f'{r[0]:,.0f}' for r in v)} |"
          for k, v in delivery.items()],
        "",
        f"Resident delivery: **{res:,.0f} images/s** (target >= {TARGET_DELIVERY:,}: "
        f"{'met' if res >= TARGET_DELIVERY else 'NOT met'}).",
        "",
        f"## 2. The batched augmentation on the CPU ({args.size} px, batch {bs}, {torch.get_num_threads()} threads)",
        "",
        "| step | ms per batch | images/s |",
        "|---|---:|---:|",
        f"| flip + affine (one grid_sample) + normalisation | {aug:.1f} | {bs / aug * 1000:,.0f} |",
        f"| normalisation only (evaluation) | {norm:.1f} | {bs / norm * 1000:,.0f} |",
        "",
        "On a GPU the same call runs on the device, where it is a small fraction of the step.",
        "",
        f"## 3. The training step (ResNet-18, {args.step_size} px, batch {sb}, Adam + BCE)",
        "",
        f"{len(small)} training phantoms; median of {args.rounds} alternating rounds of {args.steps} steps.",
        "",
        "| fed by | images/s | images per CPU-s | rounds (images/s) |",
        "|---|---:|---:|---|",
        *[f"| {k} | {med(v):.1f} | {med(v, 1):.1f} | {', '.join(f'{r[0]:.1f}' for r in v)} |"
          for k, v in steps.items()],
        "",
        f"The feed keeps **{100 * fed / bare:.1f}%** of the bare step's throughput; the per-sample loader "
        f"**{100 * old_step / bare:.1f}%**. On the CPU the augmentation runs on the cores the step uses, so the "
        "gap is the augmentation's own cost; on a GPU it moves to the device.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(text, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
