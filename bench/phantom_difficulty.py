"""Difficulty of the synthetic chest phantoms: a ResNet-18 from scratch, per-class AUROC.

The default PhantomSpec must make the task learnable but not trivial (mean AUROC well
between 0.6 and 0.95 at 128 px on a few thousand phantoms), and the nodule must be
clearly harder at 64 px than at 128 px. This script renders phantoms, splits them
patient-wise (phantom_split), trains timm's resnet18 (in_chans=1, no pretraining) and
prints/writes per-class and mean test AUROC for each image size.

The training loop is a short plain one (Adam 1e-3, BCE, batch 32, fixed epochs, no
augmentation) on purpose: it measures the data, not the engine, and stays independent of
the experiment machinery in cxrlib.train.

    python bench/phantom_difficulty.py            # real run: 3000 phantoms, 64 and 128 px
    python bench/phantom_difficulty.py --quick    # 1500 phantoms at 64 px
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import cxrlib  # noqa: F401  (before timm: the CPU torchvision fix)
from cxrlib.fileio import atomic_write_text
import numpy as np
import timm
import torch
from sklearn.metrics import roc_auc_score

from cxrlib.phantoms import PhantomSpec, phantom_split, phantom_table, render_phantom
from cxrlib.labels import FINDINGS
from cxrlib.seed import set_seed

RESULTS = Path(__file__).resolve().parent / "results" / "phantom_difficulty.md"


def render_set(n: int, size: int, seed: int, spec: PhantomSpec) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((n, size, size), np.uint8)
    labels = np.empty((n, len(FINDINGS)), np.float32)
    for i in range(n):
        p = render_phantom(i, size, seed=seed, spec=spec)
        images[i], labels[i] = p.image, p.labels
    return images, labels


def train_and_score(images, labels, parts, epochs: int, seed: int, batch: int = 32) -> dict:
    set_seed(seed)
    mean, std = images[parts["train"]].mean() / 255, images[parts["train"]].std() / 255
    x = torch.from_numpy(images).float().div_(255).sub_(mean).div_(std).unsqueeze(1)
    y = torch.from_numpy(labels)
    model = timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=len(FINDINGS))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    train = torch.from_numpy(parts["train"])
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=gen)]
        total = 0.0
        for b in range(0, len(order), batch):
            idx = order[b:b + batch]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        print(f"  epoch {epoch + 1}/{epochs}: train loss {total / len(order):.4f} ({time.time() - t0:.0f} s)", flush=True)
    train_s = time.time() - t0
    model.eval()
    test = parts["test"]
    with torch.no_grad():
        scores = torch.cat([torch.sigmoid(model(x[test[b:b + 128]])) for b in range(0, len(test), 128)]).numpy()
    per_class = {}
    for k, name in enumerate(FINDINGS):
        t = labels[test, k]
        per_class[name] = (float(roc_auc_score(t, scores[:, k])) if 0 < t.sum() < len(t) else float("nan"), int(t.sum()))
    aucs = [v[0] for v in per_class.values() if not np.isnan(v[0])]
    return {"per_class": per_class, "mean": float(np.mean(aucs)), "train_s": train_s, "n_test": len(test)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1500 phantoms at 64 px, 4 epochs")
    ap.add_argument("--n", type=int, default=None, help="phantoms (default 3000, quick 1500)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes (default 64 128)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default 3, quick 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--contrast", type=float, default=None, help="override PhantomSpec.contrast")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write the results file")
    ap.add_argument("--append", action="store_true", help="add this run to the results file instead of replacing it")
    args = ap.parse_args(argv)
    n = args.n or (1500 if args.quick else 3000)
    sizes = args.sizes or ([64] if args.quick else [64, 128])
    epochs = args.epochs or (4 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = PhantomSpec() if args.contrast is None else PhantomSpec(contrast=args.contrast)
    table = phantom_table(n, seed=args.seed, spec=spec)
    parts = phantom_split(table, seed=args.seed)
    print(f"synthetic phantoms: {n} images, {table.patient_id.nunique()} patients, "
          f"train/val/test {len(parts['train'])}/{len(parts['val'])}/{len(parts['test'])}; {spec}")
    results = {}
    start = time.time()
    for size in sizes:
        t0 = time.time()
        images, labels = render_set(n, size, args.seed, spec)
        render_s = time.time() - t0
        print(f"{size} px: rendered in {render_s:.1f} s; training resnet18 for {epochs} epochs", flush=True)
        results[size] = train_and_score(images, labels, parts, epochs, args.seed)
        results[size]["render_s"] = render_s
    total_s = time.time() - start

    header = "| finding | n_pos (test) | " + " | ".join(f"AUROC {s} px" for s in sizes) + " |"
    lines = [header, "|" + "---|" * (2 + len(sizes))]
    for name in FINDINGS:
        npos = results[sizes[0]]["per_class"][name][1]
        cells = [f"{results[s]['per_class'][name][0]:.3f}" for s in sizes]
        lines.append(f"| {name} | {npos} | " + " | ".join(cells) + " |")
    lines.append("| **mean** (defined classes) | | " + " | ".join(f"**{results[s]['mean']:.3f}**" for s in sizes) + " |")
    table_md = "\n".join(lines)
    print(table_md)
    timing = "\n".join(
        f"- {s} px: render {results[s]['render_s']:.1f} s, train {results[s]['train_s']:.0f} s" for s in sizes
    )
    if not args.no_write:
        command = "python bench/phantom_difficulty.py " + " ".join(argv if argv is not None else sys.argv[1:])
        title = "# Difficulty of the synthetic chest phantoms\n\nAll images here are synthetic phantoms (cxrlib.phantoms), not patient data.\n"
        text = f"""
## Run: {", ".join(f"{s} px" for s in sizes)}

- command: `{command.strip()}`
- date: {datetime.datetime.now().isoformat(timespec='seconds')}
- machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)
- data: {n} phantoms (seed {args.seed}), patient-wise split {len(parts['train'])}/{len(parts['val'])}/{len(parts['test'])}, {spec}
- model: timm resnet18, in_chans=1, from scratch; Adam 1e-3, BCE, batch 32, {epochs} epochs, no augmentation
- total time: {total_s:.0f} s
{timing}

Test AUROC per finding (NaN: no positive in the test part; the mean skips those):

{table_md}
"""
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        old = RESULTS.read_text() if (args.append and RESULTS.exists()) else title
        atomic_write_text(old.rstrip("\n") + "\n" + text, RESULTS)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
