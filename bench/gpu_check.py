"""The GPU check: everything a GPU day must measure, in one call, under eight minutes.

Run through ``bench/gpu_check.sh`` on a machine with an NVIDIA GPU, after
``pip install -r requirements.txt`` and the CUDA build of torch (README, "GPU machine").
Each part runs in its own process under a time cap, so a slow ``torch.compile`` or a
crash costs only its own part; a part that runs out of time keeps what it measured.

1. ``env``       the machine: host name, GPU, driver, torch, CUDA, cuDNN.
2. ``train``     training throughput of DenseNet-121, ResNet-50 and ResNet-18 at 224 px, the
                 engine's ``train_step`` on tensors already on the GPU: fp32, AMP, AMP +
                 channels_last; DenseNet-121 also at CheXNet's batch of 16. Peak memory.
3. ``pipeline``  224 px phantoms in the uint8 cache, resident on the GPU -> batched augmentation
                 on the device -> the same step, against the bare step in alternating rounds;
                 the same from pinned host memory; ``fit`` end to end (two epochs, validation
                 and checkpoints included); evaluation throughput, plain and ten-crop.
4. ``report``    the smoke report (every notebook) with ``--device cuda``.
5. ``compile``   the AMP + channels_last step under ``torch.compile``, DenseNet-121 first; last,
                 because it is the part most likely to be slow, and it gets what time is left.

Targets checked on an H100/H200: DenseNet-121 AMP + channels_last >= 3,000 images/s; the
pipeline >= 0.95 of the bare step; the implied 15-epoch CheXNet run on 78,468 images
<= 10 minutes. Writes ``bench/results/gpu.md`` (``--out``).

``--device cpu --tiny`` rehearses every part on the CPU with tiny models and images in
about a minute (what the tests run); its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# torch and cxrlib are imported inside the functions that use them, on purpose: the refusal
# without CUDA must answer before any heavy import, and each part's process imports only
# what that part needs.
REPO = Path(__file__).resolve().parent.parent
BUDGET_S = 465  # the whole check: eight minutes less a margin for start-up and the record
# seconds per part; compile, last, gets whatever the others left (up to its cap)
CAPS = {"env": 20, "train": 100, "pipeline": 100, "report": 130, "compile": 300}
PARTS = tuple(CAPS)
MODELS = ("densenet121", "resnet50", "resnet18")
MODES = ("fp32", "amp", "amp+channels_last")
CHEXNET_BATCH = 16
CHEXNET_TRAIN_IMAGES = 78_468  # the CheXNet split's training list
OFFICIAL_VAL_IMAGES = 86_524 - 78_468  # validation images beside that many training images
TARGET_DENSENET = 3_000  # images/s, DenseNet-121 AMP + channels_last, H100/H200
TARGET_PIPELINE = 0.95  # pipeline / bare step
TARGET_MINUTES = 10.0  # 15 epochs
JUDGED_GPUS = ("H100", "H200")
INSTALL_HINT = "see README.md, 'GPU machine', for the one command that installs the CUDA build of the pinned torch"


# --------------------------------------------------------------------------- the parts (child processes)


class Recorder:
    """A part's results as JSON, rewritten after each measurement: a part stopped at its cap keeps them."""

    def __init__(self, path: Path):
        self.path, self.data = path, {}

    def put(self, key: str, value) -> None:
        self.data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)
        print(f"  {key}: {json.dumps(value)[:200]}", flush=True)

    def append(self, key: str, value) -> None:
        self.put(key, self.data.get(key, []) + [value])


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


class Trainer:
    """A model, its optimizer and the engine's step, set up as ``fit`` sets them up."""

    def __init__(self, name: str, device, amp: bool, channels_last: bool, compile_: bool = False, classes: int = 14):
        import torch

        from cxrlib.models import create_model
        from cxrlib.train import amp_settings, make_optimizer

        torch.manual_seed(0)
        self.device, self.channels_last = device, channels_last
        self.model = create_model(name, num_classes=classes, in_chans=1).to(device).train()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model) if compile_ else self.model
        self.opt = make_optimizer("adam", self.model.parameters(), 1e-3, 0.0, fused=device.type == "cuda")
        self.amp = amp_settings(device, amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp[2])
        self.loss_fn = torch.nn.BCEWithLogitsLoss()

    def step(self, x, y):
        from cxrlib.train import train_step

        return train_step(self.net, x, y, self.loss_fn, self.opt, self.scaler, self.amp)

    def synthetic_batch(self, batch: int, size: int, classes: int = 14):
        """Random uint8 images made into the model's input on the device, and random targets."""
        import torch

        from cxrlib.augment import model_input

        g = torch.Generator().manual_seed(batch)
        u8 = torch.randint(0, 256, (batch, size, size), dtype=torch.uint8, generator=g).to(self.device)
        y = (torch.rand(batch, classes, generator=g) < 0.1).float().to(self.device)
        return model_input(u8, None, 1, self.channels_last), y


def timed_steps(trainer: Trainer, batches, seconds: float, min_steps: int = 3) -> tuple[float, int]:
    """images/s of the step over ``batches`` (a callable giving the next (x, y)) for about ``seconds``."""
    device, n, t0 = trainer.device, 0, time.perf_counter()
    block = 1
    while True:
        for _ in range(block):
            x, y = batches()
            trainer.step(x, y)
            n += len(y)
        _sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and n >= min_steps:
            return n / elapsed, n
        block = min(block * 2, 16)  # syncing rarely: a sync per step would itself slow the step


def measure_step(name, device, mode, batch, size, seconds, warmup, compile_=False) -> dict:
    """One model and mode on synthetic input; the batch halves on out-of-memory (recorded)."""
    import torch

    while batch >= 1:
        _reset_peak(device)
        trainer = None
        try:
            trainer = Trainer(name, device, amp=mode != "fp32", channels_last=mode.endswith("channels_last"),
                              compile_=compile_)
            x, y = trainer.synthetic_batch(batch, size)
            t = time.perf_counter()
            for _ in range(warmup):  # cuDNN autotuning, allocator, and the compilation itself
                trainer.step(x, y)
            _sync(device)
            warm_s = time.perf_counter() - t
            rate, n = timed_steps(trainer, lambda: (x, y), seconds)
            return {"model": name, "mode": mode + ("+compile" if compile_ else ""), "batch": batch, "size": size,
                    "images_per_s": round(rate, 1), "timed_images": n, "warmup_s": round(warm_s, 1),
                    "peak_gb": _peak_gb(device)}
        except torch.cuda.OutOfMemoryError:
            del trainer
            batch //= 2
    raise RuntimeError(f"{name} {mode}: out of memory even at batch 1")


def part_env(args, rec: Recorder, device) -> None:
    import torch

    rec.put("host", platform.node())
    rec.put("cpus", os.cpu_count())
    rec.put("torch", torch.__version__)
    rec.put("python", platform.python_version())
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        rec.put("gpu", torch.cuda.get_device_name(device))
        rec.put("gpu_memory_gb", round(p.total_memory / 2**30, 1))
        rec.put("capability", f"{p.major}.{p.minor}")
        rec.put("cuda", torch.version.cuda)
        rec.put("cudnn", torch.backends.cudnn.version())
        rec.put("bf16", torch.cuda.is_bf16_supported())
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            rec.put("driver", out.splitlines()[0] if out else "unknown")
        except (OSError, subprocess.SubprocessError):
            rec.put("driver", "unknown (no nvidia-smi)")
    else:
        rec.put("gpu", f"none (CPU rehearsal: {platform.processor() or platform.machine()})")


def part_train(args, rec: Recorder, device) -> None:
    for k, name in enumerate(args.models):  # the first (DenseNet-121, the study's model) first
        for mode in MODES:
            rec.append("rows", measure_step(name, device, mode, args.batch, args.size, args.seconds, args.warmup))
        if k == 0:
            rec.put("chexnet_batch", measure_step(name, device, "amp+channels_last", min(CHEXNET_BATCH, args.batch),
                                                  args.size, args.seconds, args.warmup))


def part_compile(args, rec: Recorder, device) -> None:
    for name in args.models:  # DenseNet-121 first, the study's model; each row is kept as it finishes
        rec.append("rows", measure_step(name, device, "amp+channels_last", args.batch, args.size, args.seconds,
                                        args.warmup, compile_=True))


def part_pipeline(args, rec: Recorder, device) -> None:
    import torch

    from cxrlib.config import DataConfig, ExperimentConfig
    from cxrlib.data import load_data
    from cxrlib.feed import Feed
    from cxrlib.train import evaluate, fit

    name = args.models[0]
    t = time.perf_counter()
    data = load_data(DataConfig(source="phantoms", num_phantoms=args.phantoms, image_size=args.size,
                                cache_dir=args.cache_dir, workers=0), progress=False)
    rec.put("cache", {"phantoms": args.phantoms, "train_images": len(data.train), "size": args.size,
                      "seconds": round(time.perf_counter() - t, 1)})
    ds = data.train
    ds.augment = True
    batch = min(args.batch, len(ds))
    trainer = Trainer(name, device, amp=True, channels_last=True, classes=len(data.label_names))
    feeds = {"device": Feed(ds, batch, device, shuffle=True, channels_last=True, resident="device"),
             "host": Feed(ds, batch, device, shuffle=True, channels_last=True, resident="host")}
    rec.put("placement", {k: f.placement for k, f in feeds.items()})

    def endless(feed):
        e = 0
        while True:
            yield from feed.epoch(e)
            e += 1

    streams = {k: endless(f) for k, f in feeds.items()}
    bare = [next(streams["device"]) for _ in range(3)]  # the feed's own batches, kept on the GPU
    bare = [(x.clone(), y.clone()) for x, y in bare if len(y) == batch] or bare
    k = iter(range(10**9))
    sources = {"bare step (batches already on the device)": lambda: bare[next(k) % len(bare)],
               "pipeline, resident on the GPU": lambda: next(streams["device"]),
               "pipeline, resident in pinned host memory": lambda: next(streams["host"])}
    _reset_peak(device)
    # warm-up over a whole epoch of each: the last, smaller batch is a new shape for cuDNN to tune
    for key, source in sources.items():
        for _ in range(args.warmup if key.startswith("bare") else len(feeds["device"]) + 1):
            trainer.step(*source())
    rounds = {key: [] for key in sources}
    for _ in range(args.rounds):
        for key, source in sources.items():
            rounds[key].append(round(timed_steps(trainer, source, args.seconds / 2)[0], 1))
            rec.put("rounds", rounds)
    rec.put("batch", batch)
    rec.put("model", name)
    rec.put("peak_gb", _peak_gb(device))
    del trainer, feeds, streams, bare

    # evaluation throughput, through the engine's own evaluate (no bootstrap)
    model = Trainer(name, device, amp=True, channels_last=True, classes=len(data.label_names)).model.eval()
    plain = ds.subset(range(len(ds)))
    plain.augment = False
    ev = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # AUROCs of an untrained model on phantoms: not the point
        for tta in ("none", "tencrop"):
            evaluate(model, plain, tta=tta, n_bootstrap=0, batch_size=batch, device=device)  # warm-up
            _sync(device)
            t = time.perf_counter()
            evaluate(model, plain, tta=tta, n_bootstrap=0, batch_size=batch, device=device)
            _sync(device)
            ev[tta] = round(len(plain) / (time.perf_counter() - t), 1)
            rec.put("eval_images_per_s", ev)
    del model

    # fit end to end: two epochs, validation and checkpoints included; compile off (timed above)
    _reset_peak(device)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExperimentConfig.from_dict({
            "name": "gpu_check_fit", "runs_dir": tmp, "data": {"image_size": args.size},
            "model": {"name": name},
            "train": {"epochs": 2, "batch_size": batch, "device": str(device), "n_bootstrap": 0,
                      "early_stopping_patience": 5, "compile": False}})
        data.train.augment = True
        res = fit(cfg, data=data, progress=False)
        seconds = [float(s) for s in res.history["seconds"]]
    per_epoch = seconds[-1] - seconds[-2] if len(seconds) > 1 else seconds[-1]
    rec.put("fit", {"epochs": len(seconds), "train_images": len(data.train), "val_images": len(data.val),
                    "epoch_seconds": round(per_epoch, 2), "cumulative_seconds": [round(s, 2) for s in seconds],
                    "peak_gb": _peak_gb(device)})


def part_report(args, rec: Recorder, device) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "cxrlib", "report", "--profile", "smoke", "--device", str(device.type),
               "--out", str(Path(tmp) / "reports"), "--runs-dir", str(Path(tmp) / "runs")]
        if args.tiny:
            cmd += ["--only", "00"]
        rec.put("command", " ".join(shlex.quote(c) for c in cmd[1:]).replace(tmp, "<tmp>"))
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        rec.put("seconds", round(time.perf_counter() - t, 1))
        rec.put("returncode", proc.returncode)
        if proc.returncode:
            rec.put("output_tail", (proc.stdout + proc.stderr)[-3000:])


PART_FUNCS = {"env": part_env, "train": part_train, "pipeline": part_pipeline, "report": part_report,
              "compile": part_compile}


def run_part(args) -> int:
    import cxrlib  # noqa: F401  (before torchvision/timm)
    import torch

    from cxrlib.seed import select_kernels

    device = torch.device(args.device)
    if device.type == "cuda":
        select_kernels(deterministic=False)  # what a training run on CUDA uses (cuDNN autotuning, TF32)
    if args.threads:
        torch.set_num_threads(args.threads)
    PART_FUNCS[args.part](args, Recorder(Path(args.json)), device)
    return 0


# --------------------------------------------------------------------------- the orchestrator


def cuda_missing(device: str) -> str | None:
    """Why the check cannot run here, or None. Fast: imports torch and asks, nothing more."""
    try:
        import torch
    except ImportError:
        return (f"torch is not installed for {sys.executable}: run `pip install -r requirements.txt` first "
                f"(or set PYTHON to the interpreter of the project's environment); {INSTALL_HINT}")
    if not device.startswith("cuda"):
        return None

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        return (f"gpu_check needs an NVIDIA GPU and a CUDA build of torch, but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, {build}); {INSTALL_HINT}. To rehearse the script on the CPU: "
                f"bash bench/gpu_check.sh --device cpu --tiny --out /tmp/gpu.md")
    return None


def launch(part: str, args, folder: Path, cap: float) -> dict:
    """Run one part in its own process group, killed at ``cap`` seconds; its JSON and status."""
    out = folder / f"{part}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--json", str(out)] + args.passthrough
    print(f"== {part} (cap {cap:.0f} s)", flush=True)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=cap)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the part and whatever it started (workers, kernels)
        log, _ = proc.communicate()
        status = f"stopped at its {cap:.0f} s cap"
    seconds = time.perf_counter() - t
    print(log, end="", flush=True)
    data = json.loads(out.read_text()) if out.is_file() else {}
    return {"status": status, "seconds": round(seconds, 1), "data": data,
            "log_tail": "" if status == "ok" else log[-2500:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny: a rehearsal)")
    ap.add_argument("--tiny", action="store_true", help="tiny models and images: proves every part runs")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu.md")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check")
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out (" + ", ".join(PARTS) + ")")
    ap.add_argument("--cache-dir", default=str(REPO / "data" / "cache"))
    # a part's own settings (the orchestrator passes them on)
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256, help="training batch (halved on out-of-memory)")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (autotuning; compilation)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds, pipeline vs bare step")
    ap.add_argument("--phantoms", type=int, default=3000, help="phantoms in the 224 px cache (70%% train)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.tiny:
        args.models, args.size, args.batch, args.seconds = "resnet18", 40, 8, 0.2  # 35 px crops: resnet18 needs 32
        args.warmup, args.rounds, args.phantoms, args.threads = 1, 1, 60, args.threads or 1
    args.models = [m.strip() for m in str(args.models).split(",") if m.strip()]
    if args.part:
        return run_part(args)

    why = cuda_missing(args.device)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    if args.device == "cpu" and not args.tiny:
        print("error: --device cpu is a rehearsal of the script and needs --tiny (CPU numbers at 224 px would "
              "take hours and mean nothing here)", file=sys.stderr)
        return 2
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(PARTS)
    if unknown:
        print(f"error: --skip {sorted(unknown)}: unknown part(s); parts are {', '.join(PARTS)}", file=sys.stderr)
        return 2
    reasons = {p: "skipped (--skip)" for p in skip}
    if args.tiny:
        reasons.setdefault("compile", "skipped (CPU rehearsal: inductor on the CPU takes minutes)")
    args.passthrough = ["--device", args.device, "--models", ",".join(args.models), "--size", str(args.size),
                        "--batch", str(args.batch), "--seconds", str(args.seconds), "--warmup", str(args.warmup),
                        "--rounds", str(args.rounds), "--phantoms", str(args.phantoms),
                        "--cache-dir", args.cache_dir] + (["--tiny"] if args.tiny else []) + (
                           ["--threads", str(args.threads)] if args.threads else [])
    start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in PARTS:
            if part in reasons:
                results[part] = {"status": reasons[part], "seconds": 0, "data": {}, "log_tail": ""}
                continue
            left = args.budget - (time.perf_counter() - start)
            if left < 10:
                results[part] = {"status": "not run: the time budget was spent", "seconds": 0, "data": {},
                                 "log_tail": ""}
                continue
            results[part] = launch(part, args, Path(tmp), min(CAPS[part] * (1 if not args.tiny else 2), left))
    total = time.perf_counter() - start
    text = render(results, args, argv, total)
    from cxrlib.fileio import atomic_write_text  # after the checks: the refusal must not wait for imports

    atomic_write_text(text, args.out)
    print(text)
    print(f"wrote {args.out} in {total:.0f} s")
    return 0 if all(r["status"] in ("ok",) or r["status"].startswith("skipped") for r in results.values()) else 1


# --------------------------------------------------------------------------- the record


def _fmt(v, nd=0) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def render(results: dict, args, argv, total: float) -> str:
    env = results["env"]["data"]
    train = results["train"]["data"]
    comp = results["compile"]["data"]
    pipe = results["pipeline"]["data"]
    rep = results["report"]["data"]
    gpu = str(env.get("gpu", "unknown"))
    judged = any(g in gpu for g in JUDGED_GPUS)
    cmd = "bash bench/gpu_check.sh " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    lines = [f"# GPU check: {gpu} on {env.get('host', 'unknown host')}", "",
             f"Command: `{cmd.strip()}` (from the repository root); total {total:.0f} s.",
             f"Date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; torch {env.get('torch')}, CUDA {env.get('cuda')}, "
             f"cuDNN {env.get('cudnn')}, driver {env.get('driver')}, {env.get('gpu_memory_gb', '-')} GiB, "
             f"bf16 {env.get('bf16')}, {env.get('cpus')} CPUs, Python {env.get('python')}.", ""]
    if args.tiny:
        lines += ["**CPU rehearsal (`--tiny`)**: tiny models and images on the CPU; it proves the script runs, "
                  "its numbers mean nothing.", ""]
    size = train.get("rows", [{}])[0].get("size", args.size) if train.get("rows") else args.size
    lines += [f"## Training throughput ({size} px, images/s)", "",
              "The engine's `train_step` (forward under autocast, BCE, backward, Adam) on a batch already on the "
              "device; cuDNN autotuning and TF32 on, as a training run without `train.deterministic`. "
              "Peak memory is for AMP + channels_last.", "",
              "| model | batch | fp32 | AMP | AMP + channels_last | + torch.compile | compile s | peak GiB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = train.get("rows", [])
    for name in args.models:
        by = {r["mode"]: r for r in rows if r["model"] == name}
        c = next((r for r in comp.get("rows", []) if r["model"] == name), None)
        if not by and c is None:
            continue
        cl = by.get("amp+channels_last", {})
        lines.append(f"| {name} | {cl.get('batch', '-')} | {_fmt(by.get('fp32', {}).get('images_per_s'))} | "
                     f"{_fmt(by.get('amp', {}).get('images_per_s'))} | {_fmt(cl.get('images_per_s'))} | "
                     f"{_fmt(c and c['images_per_s'])} | {_fmt(c and c['warmup_s'], 1)} | "
                     f"{_fmt(cl.get('peak_gb'), 2)} |")
    cb = train.get("chexnet_batch")
    if cb:
        lines += ["", f"{cb['model']} at CheXNet's batch of {cb['batch']} (AMP + channels_last): "
                  f"**{_fmt(cb['images_per_s'])} images/s** (small batches are bound by kernel launches)."]
    lines += [""]
    dense = next((r["images_per_s"] for r in rows if r["model"] == "densenet121" and r["mode"] == "amp+channels_last"),
                 None)

    ratio = minutes = None
    if pipe:
        rounds = pipe.get("rounds", {})
        keys = list(rounds)
        med = {k: statistics.median(v) for k, v in rounds.items() if v}
        lines += [f"## The pipeline against the bare step ({pipe.get('model')}, AMP + channels_last, batch "
                  f"{pipe.get('batch')})", "",
                  f"{pipe.get('cache', {}).get('train_images')} training phantoms at {pipe.get('cache', {}).get('size')} "
                  f"px in the uint8 cache (built in {pipe.get('cache', {}).get('seconds')} s); augmentation on. "
                  f"Placement chosen by `train.resident=auto`: {pipe.get('placement', {}).get('device')}. Median of "
                  f"alternating rounds.", "",
                  "| fed by | images/s | rounds |", "|---|---:|---|"]
        lines += [f"| {k} | {_fmt(med.get(k))} | {', '.join(_fmt(r) for r in rounds[k])} |" for k in keys]
        if len(keys) >= 2 and med.get(keys[0]):
            ratio = med[keys[1]] / med[keys[0]]
            lines += ["", f"Pipeline (resident on the GPU) / bare step: **{ratio:.3f}**; peak "
                      f"{_fmt(pipe.get('peak_gb'), 2)} GiB."]
        ev = pipe.get("eval_images_per_s", {})
        if ev:
            lines += ["", f"Evaluation (`evaluate`, AMP + channels_last, batch {pipe.get('batch')}): "
                      f"**{_fmt(ev.get('none'))} images/s** plain, **{_fmt(ev.get('tencrop'))} images/s** with ten "
                      f"crops (source images; ten forward passes each)."]
        f = pipe.get("fit")
        if f:
            rate = f["train_images"] / f["epoch_seconds"] if f["epoch_seconds"] else None
            val_rate = ev.get("none")
            lines += ["", f"`fit` end to end, epoch 2 of 2 ({f['train_images']} training and {f['val_images']} "
                      f"validation images; validation and checkpoint included): {f['epoch_seconds']} s, "
                      f"{_fmt(rate)} training images/s; peak {_fmt(f.get('peak_gb'), 2)} GiB."]
    lines += [""]
    # the implied CheXNet run: 15 epochs of 78,468 training images at the pipeline's rate, plus validation
    pipe_rate = None
    if pipe and ratio is not None and pipe.get("model") == "densenet121":
        pipe_rate = statistics.median(pipe["rounds"][list(pipe["rounds"])[1]])
    ev_rate = (pipe or {}).get("eval_images_per_s", {}).get("none")
    if pipe_rate:
        minutes = 15 * (CHEXNET_TRAIN_IMAGES / pipe_rate + OFFICIAL_VAL_IMAGES / (ev_rate or pipe_rate)) / 60
    if cb and cb["model"] == "densenet121":
        slow = 15 * (CHEXNET_TRAIN_IMAGES / cb["images_per_s"] + OFFICIAL_VAL_IMAGES / (ev_rate or cb["images_per_s"])) / 60
        lines += [f"At CheXNet's batch of {cb['batch']} the same 15 epochs would take about {slow:.1f} minutes.", ""]

    def verdict(value, ok) -> str:
        if value is None:
            return "not measured"
        if not judged:
            return "not judged (the targets are for an H100/H200)"
        return "met" if ok else "**NOT met**"

    lines += ["## Targets (H100/H200)", "", "| target | measured | verdict |", "|---|---:|---|",
              f"| DenseNet-121 AMP + channels_last >= {TARGET_DENSENET:,} images/s | {_fmt(dense)} | "
              f"{verdict(dense, dense is not None and dense >= TARGET_DENSENET)} |",
              f"| pipeline >= {TARGET_PIPELINE} of the bare step | {_fmt(ratio, 3) if ratio is not None else '-'} | "
              f"{verdict(ratio, ratio is not None and ratio >= TARGET_PIPELINE)} |",
              f"| 15 epochs of {CHEXNET_TRAIN_IMAGES:,} images (+ {OFFICIAL_VAL_IMAGES:,} validated each epoch) "
              f"<= {TARGET_MINUTES:.0f} min | {_fmt(minutes, 1) if minutes else '-'} min | "
              f"{verdict(minutes, minutes is not None and minutes <= TARGET_MINUTES)} |", ""]
    if rep:
        ok = rep.get("returncode") == 0
        lines += ["## Smoke report", "", f"`python {rep.get('command')}`: "
                  f"{'ok' if ok else 'FAILED (exit ' + str(rep.get('returncode')) + ')'} in {rep.get('seconds')} s.", ""]
        if not ok and rep.get("output_tail"):
            lines += ["```", rep["output_tail"].strip()[-2000:], "```", ""]
    lines += ["## Parts", "", "| part | status | seconds |", "|---|---|---:|"]
    lines += [f"| {p} | {r['status']} | {r['seconds']} |" for p, r in results.items()]
    for p, r in results.items():
        if r.get("log_tail"):
            lines += ["", f"{p} output (tail):", "```", r["log_tail"].strip()[-2000:], "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
