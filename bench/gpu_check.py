"""The GPU check: everything a GPU day must measure, in one call, under eight minutes.

Run through ``bench/gpu_check.sh`` (which puts the repository root on ``PYTHONPATH``, so
no editable install is needed) on a machine with an NVIDIA GPU, after
``pip install -r requirements.txt`` and the CUDA build of torch (README, "GPU machine").
Each part runs in its own process under a time cap, so a slow ``torch.compile`` or a
crash costs only its own part; a part that runs out of time keeps what it measured, and
every part's raw results are written to ``<out>.json`` before the record is rendered.

1. ``env``       the machine: host name, GPU, driver, torch, CUDA, cuDNN, native bf16.
2. ``train``     eager training throughput at 224 px, the engine's ``train_step`` on tensors
                 already on the GPU: DenseNet-121 in fp32, AMP, AMP + channels_last at batch
                 256 and at CheXNet's 16 (the profile's batch); ResNet-50/18 AMP + channels_last.
3. ``compile``   the full profile's step as ``fit`` runs it (:class:`cxrlib.step.Stepper`:
                 CUDA graphs via ``mode="reduce-overhead"``) for DenseNet-121 at batch 16 first,
                 then at 256. Before the pipeline and the report: it is the row the day needs.
4. ``pipeline``  224 px phantoms in the uint8 cache, resident on the GPU -> batched augmentation
                 on the device -> the step, against the bare step in alternating rounds; the
                 same from pinned host memory; evaluation, plain and ten-crop; and ``fit`` end to
                 end with the full profile's own train settings (batch 16, compile as the profile
                 sets it; two epochs, validation, checkpoint and history write included).
5. ``ddp``       two processes (gloo) against one: DenseNet-121's forward after the BatchNorm
                 conversion ``fit`` uses under torchrun, and one DDP step (bench/gpu_check_ddp.py).
6. ``report``    the smoke report (every notebook) with ``--device cuda``, in the time left.

Targets checked on an H100/H200, at the full profile's set-up: the 15-epoch CheXNet run on
78,468 images (plus validation) implied by ``fit``'s measured epoch <= 10 minutes; the
pipeline >= 0.95 of the bare step; DenseNet-121 compiled at batch 16 >= 3,000 images/s.
Writes ``bench/results/gpu.md`` (``--out``) and the raw ``gpu.json`` beside it.

``--device cpu --tiny`` rehearses every part on the CPU with tiny models and images (what
the tests run; the fit and the compile part compile with inductor, as ``compile: auto``
does on CUDA, which takes a few minutes on two cores); its numbers mean nothing.
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
# seconds per part, in the order they run; together within the budget. The report, last, gets
# what is left (up to its cap); the compile row comes before the pipeline and the report.
CAPS = {"env": 15, "train": 60, "compile": 120, "pipeline": 130, "ddp": 50, "report": 90}
PARTS = tuple(CAPS)
MODELS = ("densenet121", "resnet50", "resnet18")
MODES = ("fp32", "amp", "amp+channels_last")
CHEXNET_BATCH = 16
CHEXNET_TRAIN_IMAGES = 78_468  # the CheXNet split's training list
OFFICIAL_VAL_IMAGES = 86_524 - 78_468  # validation images beside that many training images
TARGET_DENSENET = 3_000  # images/s, DenseNet-121 at the profile's batch, compiled, H100/H200
TARGET_PIPELINE = 0.95  # pipeline / bare step
TARGET_MINUTES = 10.0  # 15 epochs
JUDGED_GPUS = ("H100", "H200")
# the CPU rehearsal's parts may take this many times their caps: inductor's C++ builds of the
# compiled fit and step take minutes on a shared two-core machine
TINY_CAP_FACTOR = 3
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
    """A model, its optimizer and the engine's step, set up as ``fit`` sets them up.

    ``compile_``: the step goes through :class:`cxrlib.step.Stepper` as in ``fit`` (CUDA graphs
    on CUDA, compiled for ``batch``-image batches).
    """

    def __init__(self, name: str, device, amp: bool, channels_last: bool, compile_: bool = False, classes: int = 14,
                 batch: int = 0):
        import torch

        from cxrlib.models import create_model
        from cxrlib.step import Stepper, amp_settings, make_optimizer

        torch.manual_seed(0)
        self.device, self.channels_last = device, channels_last
        self.model = create_model(name, num_classes=classes, in_chans=1).to(device).train()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.stepper = Stepper(self.model, True if compile_ else False, device, batch)
        self.opt = make_optimizer("adam", self.model.parameters(), 1e-3, 0.0, fused=device.type == "cuda")
        self.amp = amp_settings(device, amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp[2])
        self.loss_fn = torch.nn.BCEWithLogitsLoss()

    def step(self, x, y):
        return self.stepper(x, y, self.loss_fn, self.opt, self.scaler, self.amp)

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
                              compile_=compile_, batch=batch)
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
        rec.put("bf16", torch.cuda.is_bf16_supported(including_emulation=False))  # native only, as amp_settings
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            rec.put("driver", out.splitlines()[0] if out else "unknown")
        except (OSError, subprocess.SubprocessError):
            rec.put("driver", "unknown (no nvidia-smi)")
    else:
        rec.put("gpu", f"none (CPU rehearsal: {platform.processor() or platform.machine()})")


def part_train(args, rec: Recorder, device) -> None:
    """Eager rows: DenseNet-121 (the study's model) in every mode, at the large batch and the
    profile's; the other models in the mode a GPU run uses. Six measurements, not ten: the
    compile part after this one must not be crowded out."""
    first, others = args.models[0], args.models[1:]
    for mode in MODES:
        rec.append("rows", measure_step(first, device, mode, args.batch, args.size, args.seconds, args.warmup))
    rec.put("chexnet_batch", measure_step(first, device, "amp+channels_last", min(CHEXNET_BATCH, args.batch),
                                          args.size, args.seconds, args.warmup))
    for name in others:
        rec.append("rows", measure_step(name, device, "amp+channels_last", args.batch, args.size, args.seconds,
                                        args.warmup))


def part_compile(args, rec: Recorder, device) -> None:
    """The step as ``fit`` compiles it; the profile's batch first, each row kept as it finishes."""
    name = args.models[0]
    for batch in sorted({min(CHEXNET_BATCH, args.batch), args.batch}):
        rec.append("rows", measure_step(name, device, "amp+channels_last", batch, args.size, args.seconds,
                                        args.warmup, compile_=True))


def part_ddp(args, rec: Recorder, device) -> None:
    from gpu_check_ddp import compare  # beside this script (its folder is sys.path[0])

    rec.put("ddp", compare("densenet121", size=64, batch=4))


def profile_train(device, tiny: bool) -> dict:
    """The full profile's train settings, for this device; ``compile: auto`` compiles in the
    CPU rehearsal too, as it does on CUDA (the point is to rehearse the compiled fit)."""
    import dataclasses

    from cxrlib import profiles

    train = dataclasses.asdict(profiles.load("full").baseline.train)
    if device.type == "cpu" and train["compile"] == "auto":
        train["compile"] = True
    train.update(device=str(device), n_bootstrap=0, early_stopping_patience=5, epochs=2)
    if tiny:
        train.update(num_workers=0, threads=1)
    return train


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
    # first, as the verdict is read from it: fit end to end with the full profile's train
    # settings (batch 16, compile as it sets it); two epochs, validation, checkpoint and
    # history write included
    _reset_peak(device)
    train = profile_train(device, args.tiny)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExperimentConfig.from_dict({"name": "gpu_check_fit", "runs_dir": tmp, "data": {"image_size": args.size},
                                          "model": {"name": name}, "train": train})
        data.train.augment = True
        res = fit(cfg, data=data, progress=False)
        seconds = [float(s) for s in res.history["seconds"]]
    per_epoch = seconds[-1] - seconds[-2] if len(seconds) > 1 else seconds[-1]
    rec.put("fit", {"epochs": len(seconds), "train_images": len(data.train), "val_images": len(data.val),
                    "batch": train["batch_size"], "compile": train["compile"], "lr": train["lr"],
                    "epoch_seconds": round(per_epoch, 2), "cumulative_seconds": [round(s, 2) for s in seconds],
                    "peak_gb": _peak_gb(device)})

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


PART_FUNCS = {"env": part_env, "train": part_train, "compile": part_compile, "pipeline": part_pipeline,
              "ddp": part_ddp, "report": part_report}


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


def part_env_vars() -> dict:
    """The environment of a part's process: this one's, with the repository root first on
    PYTHONPATH. A part runs as ``python bench/gpu_check.py``, whose sys.path starts at bench/,
    so without it ``import cxrlib`` would work only after an editable install."""
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=str(REPO) + (os.pathsep + path if path else ""))


def write_atomically(text: str, path: Path) -> None:
    """``text`` to ``path`` through a temporary file beside it: never half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def launch(part: str, args, folder: Path, cap: float) -> dict:
    """Run one part in its own process group, killed at ``cap`` seconds; its JSON and status."""
    out = folder / f"{part}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--json", str(out)] + args.passthrough
    print(f"== {part} (cap {cap:.0f} s)", flush=True)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=part_env_vars())
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
    if args.tiny and args.budget == BUDGET_S:
        args.budget = BUDGET_S * TINY_CAP_FACTOR
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
            results[part] = launch(part, args, Path(tmp), min(CAPS[part] * (1 if not args.tiny else TINY_CAP_FACTOR),
                                                             left))
            # the raw results so far, before anything is rendered: a crash later loses nothing
            write_atomically(json.dumps(results, indent=1), raw_path(args.out))
    total = time.perf_counter() - start
    ok = all(r["status"] == "ok" or r["status"].startswith("skipped") for r in results.values())
    try:
        text = render(results, args, argv, total)
    except Exception as err:  # noqa: BLE001 - the record must still say what happened
        text = (f"# GPU check: the record could not be rendered ({type(err).__name__}: {err})\n\n"
                f"The raw results are in `{raw_path(args.out).name}`.\n")
        ok = False
    write_atomically(text, args.out)
    print(text)
    print(f"wrote {args.out} and {raw_path(args.out)} in {total:.0f} s")
    return 0 if ok else 1


def raw_path(out: Path) -> Path:
    """Where every part's raw results go: beside the record, ``gpu.md`` -> ``gpu.json``."""
    return Path(out).with_suffix(".json")


# --------------------------------------------------------------------------- the record


def _fmt(v, nd=0) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def _median(values) -> float | None:
    return statistics.median(values) if values else None


def implied_minutes(train_rate: float | None, eval_rate: float | None) -> float | None:
    """Minutes of 15 CheXNet epochs (78,468 training images, the rest of the official
    train+val list validated each epoch) at these images/s; None when not measured."""
    if not train_rate:
        return None
    return 15 * (CHEXNET_TRAIN_IMAGES / train_rate + OFFICIAL_VAL_IMAGES / (eval_rate or train_rate)) / 60


def render(results: dict, args, argv, total: float) -> str:
    """The record, from whatever the parts left: any part may be missing, cut short or empty."""
    data = {p: (results.get(p) or {}).get("data") or {} for p in PARTS}
    env, train, comp, pipe, ddp, rep = (data[p] for p in ("env", "train", "compile", "pipeline", "ddp", "report"))
    gpu = str(env.get("gpu", "unknown"))
    judged = any(g in gpu for g in JUDGED_GPUS)
    cmd = "bash bench/gpu_check.sh " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    lines = [f"# GPU check: {gpu} on {env.get('host', 'unknown host')}", "",
             f"Command: `{cmd.strip()}` (from the repository root); total {total:.0f} s. Raw results: "
             f"`{raw_path(args.out).name}`.",
             f"Date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; torch {env.get('torch')}, CUDA {env.get('cuda')}, "
             f"cuDNN {env.get('cudnn')}, driver {env.get('driver')}, {env.get('gpu_memory_gb', '-')} GiB, "
             f"native bf16 {env.get('bf16')}, {env.get('cpus')} CPUs, Python {env.get('python')}.", ""]
    if args.tiny:
        lines += ["**CPU rehearsal (`--tiny`)**: tiny models and images on the CPU; it proves the script runs, "
                  "its numbers mean nothing.", ""]
    lines += _throughput_lines(train, comp, args)
    fit_rate, ev_rate, ratio = None, None, None
    if pipe:
        more, fit_rate, ev_rate, ratio = _pipeline_lines(pipe)
        lines += more
    if ddp.get("ddp"):
        d = ddp["ddp"]
        same = d["forward_max_diff"] < 1e-4 and d["weights_max_diff"] < 1e-5 and d["ranks_identical"]
        lines += ["## Several processes (DDP)", "",
                  f"{d['processes']} {d['backend']} processes against one, {d['model']} at {d['size']} px, batch "
                  f"{d['batch']}: forward max difference {d['forward_max_diff']:.1e}, weights after one step "
                  f"{d['weights_max_diff']:.1e}, ranks identical {d['ranks_identical']}; BatchNorm layers after the "
                  f"conversion: {', '.join(d['batchnorm_kinds'])}. **{'same as one process' if same else 'DIFFERENT'}**.",
                  ""]
    dense16 = next((r["images_per_s"] for r in comp.get("rows", []) if r["model"] == "densenet121"
                    and r["batch"] == CHEXNET_BATCH), None)
    minutes = implied_minutes(fit_rate, ev_rate)
    lines += _target_lines(judged, dense16, ratio, minutes)
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


def _throughput_lines(train: dict, comp: dict, args) -> list[str]:
    rows, crows = train.get("rows", []), comp.get("rows", [])
    size = (rows or crows or [{}])[0].get("size", args.size)
    lines = [f"## Training throughput ({size} px, images/s)", "",
             "The engine's step (forward under autocast, BCE, backward, Adam) on a batch already on the device; "
             "cuDNN autotuning and TF32 on, as a training run without `train.deterministic`. Eager, then compiled "
             "as `fit` compiles it (CUDA graphs, `mode=\"reduce-overhead\"`).", "",
             "| model | batch | fp32 | AMP | AMP + channels_last | compiled (AMP + channels_last) | compile s | peak GiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    table = {}
    for r in rows + ([train["chexnet_batch"]] if train.get("chexnet_batch") else []):
        table.setdefault((r["model"], r["batch"]), {})[r["mode"]] = r
    for r in crows:
        table.setdefault((r["model"], r["batch"]), {})["compiled"] = r
    for (name, batch), by in table.items():
        cl, c = by.get("amp+channels_last", {}), by.get("compiled", {})
        lines.append(f"| {name} | {batch} | {_fmt(by.get('fp32', {}).get('images_per_s'))} | "
                     f"{_fmt(by.get('amp', {}).get('images_per_s'))} | {_fmt(cl.get('images_per_s'))} | "
                     f"{_fmt(c.get('images_per_s'))} | {_fmt(c.get('warmup_s'), 1)} | "
                     f"{_fmt(c.get('peak_gb') or cl.get('peak_gb'), 2)} |")
    return lines + [""]


def _pipeline_lines(pipe: dict) -> tuple[list[str], float | None, float | None, float | None]:
    lines, fit_rate, ratio = [], None, None
    ev = pipe.get("eval_images_per_s", {})
    f = pipe.get("fit")
    if f:
        fit_rate = f["train_images"] / f["epoch_seconds"] if f.get("epoch_seconds") else None
        lines += [f"## `fit` at the full profile's set-up ({pipe.get('model', '')}, batch {f.get('batch')}, "
                  f"compile {f.get('compile')})", "",
                  f"Epoch {f['epochs']} of {f['epochs']} ({f['train_images']} training and {f['val_images']} "
                  f"validation phantoms; validation, checkpoint and history write included): {f['epoch_seconds']} s, "
                  f"{_fmt(fit_rate)} training images/s; peak {_fmt(f.get('peak_gb'), 2)} GiB.", ""]
    rounds = pipe.get("rounds", {})
    if rounds:
        keys = list(rounds)
        med = {k: _median(v) for k, v in rounds.items()}
        cache = pipe.get("cache", {})
        lines += [f"## The pipeline against the bare step ({pipe.get('model')}, AMP + channels_last, batch "
                  f"{pipe.get('batch')})", "",
                  f"{cache.get('train_images')} training phantoms at {cache.get('size')} px in the uint8 cache (built "
                  f"in {cache.get('seconds')} s); augmentation on. Placement chosen by `train.resident=auto`: "
                  f"{pipe.get('placement', {}).get('device')}. Median of alternating rounds.", "",
                  "| fed by | images/s | rounds |", "|---|---:|---|"]
        lines += [f"| {k} | {_fmt(med[k])} | {', '.join(_fmt(r) for r in rounds[k])} |" for k in keys]
        if len(keys) >= 2 and med[keys[0]] and med[keys[1]]:
            ratio = med[keys[1]] / med[keys[0]]
            lines += ["", f"Pipeline (resident on the GPU) / bare step: **{ratio:.3f}**; peak "
                      f"{_fmt(pipe.get('peak_gb'), 2)} GiB."]
        lines += [""]
    if ev:
        lines += [f"Evaluation (`evaluate`, AMP + channels_last, batch {pipe.get('batch')}): "
                  f"**{_fmt(ev.get('none'))} images/s** plain, **{_fmt(ev.get('tencrop'))} images/s** with ten "
                  f"crops (source images; ten forward passes each).", ""]
    return lines, fit_rate, ev.get("none"), ratio


def _target_lines(judged: bool, dense16, ratio, minutes) -> list[str]:
    def verdict(value, ok) -> str:
        if value is None:
            return "not measured"
        if not judged:
            return "not judged (the targets are for an H100/H200)"
        return "met" if ok else "**NOT met**"

    return ["## Targets (H100/H200), at the full profile's set-up", "", "| target | measured | verdict |",
            "|---|---:|---|",
            f"| 15 epochs of {CHEXNET_TRAIN_IMAGES:,} images (+ {OFFICIAL_VAL_IMAGES:,} validated each epoch) at "
            f"`fit`'s measured rate <= {TARGET_MINUTES:.0f} min | {_fmt(minutes, 1)} min | "
            f"{verdict(minutes, minutes is not None and minutes <= TARGET_MINUTES)} |",
            f"| DenseNet-121 compiled at batch {CHEXNET_BATCH} >= {TARGET_DENSENET:,} images/s | {_fmt(dense16)} | "
            f"{verdict(dense16, dense16 is not None and dense16 >= TARGET_DENSENET)} |",
            f"| pipeline >= {TARGET_PIPELINE} of the bare step | {_fmt(ratio, 3)} | "
            f"{verdict(ratio, ratio is not None and ratio >= TARGET_PIPELINE)} |", ""]


if __name__ == "__main__":
    raise SystemExit(main())
