"""The ``cxrlib`` command line: check, train, evaluate, predict, cache, report, sweep.

Every configuration value comes from an ExperimentConfig: the defaults, then a profile's
``experiment:`` section (``--profile smoke|cpu|full|path.yaml``, resolved by
:mod:`cxrlib.profiles`), then the named options (``--epochs``, ``--model`` ...), then
``--set section.key=value`` overrides in order.

This module owns every command's options, the report's included. Commands import torch,
timm, papermill and nbconvert through the modules that need them, inside the command, so
``cxrlib --help`` and a mistyped option answer at once.

Several GPUs: ``torchrun --nproc_per_node N -m cxrlib train ...`` (DistributedDataParallel).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from cxrlib import distributed, profiles
from cxrlib.config import ExperimentConfig
from cxrlib.data import SOURCES, load_data
from cxrlib.data.cache import build_cache_from_config


class CLIError(ValueError):
    """A bad command-line value; printed as ``error: ...`` with exit status 2."""


# --------------------------------------------------------------------------- config options


def _add_config_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("experiment configuration (applied in this order: profile, options, --set)")
    g.add_argument("--profile", metavar="NAME|FILE",
                   help="a profile in profiles/ (smoke, cpu, full) or a YAML file; its 'experiment:' section "
                        "sets the config (default: the built-in defaults)")
    g.add_argument("--data-dir", metavar="DIR",
                   help="ChestX-ray14 folder as NIH ships it, or a MedMNIST .npz file or its folder")
    g.add_argument("--source", metavar="NAME", help=f"data source: {', '.join(SOURCES)}")
    g.add_argument("--model", metavar="NAME", help="backbone name (see cxrlib.models.list_models())")
    g.add_argument("--head", metavar="NAME", help="classification head: gap, fpn, psp")
    g.add_argument("--wrapper", metavar="NAME", help="model wrapper: none, multiscale, two_stage")
    g.add_argument("--epochs", type=int, metavar="N", help="maximum training epochs (per stage for staged models)")
    g.add_argument("--device", metavar="DEV", help="auto (GPU when there is one), cpu, cuda or cuda:N")
    g.add_argument("--name", metavar="NAME", help="experiment name: results go to <runs_dir>/<name>/")
    g.add_argument("--runs-dir", metavar="DIR", help="folder that holds run folders (default: runs)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.batch_size=32 --set data.image_size=224 "
                        "(values parsed as YAML; repeatable)")


def build_config(args: argparse.Namespace) -> ExperimentConfig:
    """The ExperimentConfig that the options describe (errors name the bad value).

    Without ``--name`` the run is called ``experiment`` (the config default), so a command
    line run never overwrites the runs a report shares between its notebooks.
    """
    profile = profiles.load(args.profile, data_dir=args.data_dir, runs_dir=args.runs_dir)
    named = {"data.source": args.source, "model.name": args.model,
             "model.head": args.head, "model.wrapper": args.wrapper, "train.epochs": args.epochs,
             "train.device": args.device}
    named = {k: v for k, v in named.items() if v is not None}
    if named.get("model.wrapper") in ("none", "None", ""):
        named["model.wrapper"] = None
    cfg = profile.config(args.name or ExperimentConfig.name, named)
    if args.overrides:
        cfg = cfg.with_overrides(list(args.overrides))
    return cfg.validate()


# --------------------------------------------------------------------------- printing


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text table of per-class AUROC with 95% CI, and the mean, written by
    :mod:`cxrlib.results`' convention (the one home of how a CI reads)."""
    # pandas-heavy results is imported here, not at the top: `cxrlib check` never needs it
    from cxrlib.results import MISSING, interval_text, number_text

    def ci(pair) -> str:
        lo, hi = pair
        return interval_text(lo, hi, missing=MISSING)

    lines = [f"{metrics.get('experiment', '')}  [{metrics.get('split', '')}]  n={metrics.get('n_images')}  "
             f"tta={metrics.get('tta', 'none')}", f"{'finding':<20} {'AUROC':>13}  {'95% CI':<16} {'AUPRC':>13} {'n_pos':>6}"]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<20} {number_text(m['auroc']):>13}  {ci(m['auroc_ci']):<16} "
                     f"{number_text(m['auprc']):>13} {m['n_pos']:>6}")
    lines.append(f"{'mean':<20} {number_text(metrics['mean_auroc']):>13}  {ci(metrics['mean_auroc_ci'])}")
    if metrics.get("undefined"):
        lines.append(f"undefined (no positives or no negatives; left out of the mean): {', '.join(metrics['undefined'])}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from cxrlib.experiments import finished_global_stage  # imports timm: only the commands that need it pay
    from cxrlib.train import run_experiment

    cfg = build_config(args)
    try:
        res = run_experiment(cfg, redo=args.redo, progress=not args.quiet, checkpoint_every=args.checkpoint_every,
                             global_stage_from=finished_global_stage(cfg))
        if distributed.current().is_main:
            print(format_metrics(res.metrics))
            print(f"run folder: {res.run_dir}")
    finally:
        distributed.cleanup()
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    # runs and train import timm: only the commands that need it pay for it
    from cxrlib import runs
    from cxrlib.train import evaluate, with_channels

    if args.run:
        run_dir = Path(args.run)
        if not (run_dir / runs.CONFIG).is_file():
            raise CLIError(f"--run {args.run!r} is not a run folder (no {runs.CONFIG} there)")
        cfg = runs.load_config(run_dir)
        extra = {k: v for k, v in {"data.data_dir": args.data_dir, "train.device": args.device}.items() if v}
        cfg = cfg.with_overrides(extra).with_overrides(list(args.overrides)) if (extra or args.overrides) else cfg
    else:
        cfg = build_config(args)
        run_dir = runs.run_folder(cfg)
    if not runs.has_model(run_dir):
        raise CLIError(f"no trained model in {run_dir} ({runs.BEST} missing): run `cxrlib train` first")
    tta = args.tta or cfg.train.tta
    n_boot = args.n_bootstrap if args.n_bootstrap is not None else cfg.train.n_bootstrap
    device = distributed.resolve_device(cfg.train.device)
    model = runs.load_model(run_dir, device=device).module
    data = load_data(cfg.data, progress=not args.quiet)
    tc = cfg.train
    metrics, preds = evaluate(model, with_channels(data.test, cfg.model.in_chans), tta=tta, n_bootstrap=n_boot,
                              batch_size=tc.batch_size, device=device, progress=not args.quiet, seed=cfg.seed,
                              num_workers=tc.num_workers, amp=tc.amp, resident=tc.resident, resident_gb=tc.resident_gb)
    old = runs.load_run(run_dir, with_model=False)
    full = runs.write_evaluation(run_dir, cfg, data, metrics, preds, old.train_seconds, model)
    print(format_metrics(full))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    # models, runs and predict import timm: only the commands that need it pay for it
    from cxrlib import models, runs
    from cxrlib.predict import Predictor

    if bool(args.run) == bool(args.model):
        raise CLIError("give exactly one of --run RUN_DIR (a trained run) or --model NAME (untrained weights)")
    device = distributed.resolve_device(args.device)
    if args.run:
        run_dir = Path(args.run)
        if not runs.has_model(run_dir):
            raise CLIError(f"--run {args.run!r} holds no trained model ({runs.BEST} missing)")
        predictor = runs.load_model(run_dir, device=device)
    else:
        if args.model not in models.list_models():
            raise CLIError(f"unknown model {args.model!r}: expected one of {', '.join(models.list_models())}")
        warnings.warn(f"--model {args.model}: untrained weights, the probabilities are meaningless "
                      f"(use --run RUN_DIR for a trained model)", stacklevel=1)
        predictor = Predictor.untrained(args.model, device=device)
    predictor = predictor.at_size(args.image_size)
    probs = predictor.probabilities(list(args.images))  # files read by content: PNG, JPEG, DICOM
    names = predictor.label_names
    if args.json:
        print(json.dumps([{"image": str(p), "probabilities": dict(zip(names, map(float, row)))}
                          for p, row in zip(args.images, probs)], indent=2))
    else:
        for p, row in zip(args.images, probs):
            print(p)
            for name, v in zip(names, row):
                print(f"  {name:<20} {v:.4f}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    cache = build_cache_from_config(cfg.data, progress=not args.quiet)
    print(cache)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    # torch and timm (the speed probe), and the report's notebook list: only this command pays
    from cxrlib import preflight, report

    profile = profiles.load(args.profile, data_dir=args.data_dir, device=args.device, runs_dir=args.runs_dir,
                            overrides=args.overrides)
    notebooks = report.select_notebooks(report.discover_notebooks(args.notebooks_dir), args.only)
    seconds: dict[str, float] = {}
    findings = preflight.check_profile(profile, notebooks, probe=not args.no_probe, budget_s=args.probe_budget,
                                       seconds_by_run=seconds)
    print(preflight.format_table(findings))
    if args.gpus:
        from cxrlib import sweep  # submitit: only a check that asks about several GPUs loads it

        device = profile.baseline.train.device
        for line in sweep.study_estimates(sweep.plan_runs(profile, notebooks), seconds, args.gpus, device):
            print(line)
    print(f"checked profile {profile.name} in {time.perf_counter() - t0:.1f} s")
    return 1 if preflight.problems(findings) else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from cxrlib import report, sweep  # the report's notebook list; the plan imports the model code

    profile = profiles.load(args.profile, data_dir=args.data_dir, device=args.device, runs_dir=args.runs_dir,
                            overrides=args.overrides)
    if args.status:
        print(sweep.format_status(sweep.status(profile.baseline.runs_dir)))
        return 0
    options = sweep.Options(executor=args.executor, workers=args.workers, partition=args.partition,
                            time_min=args.time, array_parallelism=args.array_parallelism,
                            cpus_per_task=args.cpus_per_task, checkpoint_every=args.checkpoint_every,
                            slurm_options=dict(_key_value(o) for o in args.slurm_option))
    notebooks = report.select_notebooks(report.discover_notebooks(args.notebooks_dir), args.only)
    submission = sweep.submit(sweep.plan_runs(profile, notebooks), options)
    todo = len(sweep.pending(submission.plan))
    print(f"sweep of profile {profile.name}: {len(submission.plan.runs)} runs planned, {todo} to train, "
          f"{len(submission.jobs)} {args.executor} job(s): {', '.join(str(j.job_id) for j in submission.jobs) or '-'}")
    print(f"follow it with: cxrlib sweep --status --profile {args.profile}"
          + (f" --runs-dir {args.runs_dir}" if args.runs_dir else ""))
    if args.wait or args.executor == "debug":
        submission.wait()
        rows = sweep.status(profile.baseline.runs_dir)
        print(sweep.format_status(rows))
        return 1 if any(r["state"] != sweep.DONE for r in rows) else 0
    return 0


def _gpu_counts(text: str) -> list[int]:
    return [_positive_int(part) for part in text.split(",") if part.strip()]


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CLIError(f"--slurm-option {text!r}: expected KEY=VALUE, e.g. account=mylab")
    return key, value


def cmd_report(args: argparse.Namespace) -> int:
    from cxrlib import report  # papermill and nbconvert: only the report loads them

    profile = profiles.load(args.profile, data_dir=args.data_dir, device=args.device, runs_dir=args.runs_dir,
                            overrides=args.overrides)
    result = report.run_report(profile, only=args.only, redo=args.redo, out_dir=args.out,
                               notebooks_dir=args.notebooks_dir, timeout=args.timeout, log_output=args.log_output,
                               check=not args.no_check)
    if result.blocked:
        print(f"cxrlib report: stopped before the first notebook: {len(result.blocked)} problem(s) found by the "
              f"check (table above); fix them, or pass --no-check to run anyway", file=sys.stderr)
        return 1
    if result.failed:
        names = ", ".join(r.stem for r in result.failed)
        print(f"cxrlib report: {len(result.failed)} notebook(s) failed: {names}; "
              f"partial outputs in {result.out_dir / 'executed'}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _add_study_options(p: argparse.ArgumentParser, only: str, set_help: str, runs_dir: str) -> None:
    """The options of the commands that plan the whole study (check, sweep, report): which profile,
    data, device, notebooks and runs folder; ``only``, ``set_help`` and ``runs_dir`` are each one's help."""
    p.add_argument("--profile", default="cpu", help="smoke | cpu | full | path to a profile YAML (default: cpu)")
    p.add_argument("--data-dir", default=None, help="ChestX-ray14 folder as NIH ships it (default: the profile's data)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the profile's)")
    p.add_argument("--only", default=None, help=only)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--runs-dir", default=None, help=runs_dir)
    p.add_argument("--notebooks-dir", default=None, help="folder of numbered notebooks (default: notebooks/)")


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train a model, then evaluate it on the test split",
                       description="Train with the configured recipe (CheXNet's by default), keep the best weights "
                       "by validation mean AUROC, evaluate on the test split and write runs/<name>/{config.json, "
                       "history.csv, steps.csv, metrics.json, test_predictions.npz, best.pt, last.pt}. An "
                       "interrupted run resumes from last.pt; a finished run with the same config is reused.")
    _add_config_options(t)
    t.add_argument("--redo", action="store_true", help="train again even if a finished or interrupted run exists")
    t.add_argument("--checkpoint-every", type=_positive_int, metavar="STEPS",
                   help="also checkpoint every STEPS optimizer steps (last.pt is always written each epoch)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)


def _add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="evaluate a trained run on the test split",
                       description="Score the test split with a run's best weights and (re)write its metrics.json "
                       "and test_predictions.npz. The run is --run DIR, or the run folder of the configuration.")
    _add_config_options(e)
    e.add_argument("--run", metavar="RUN_DIR", help="the run folder (default: <runs_dir>/<name> of the config)")
    e.add_argument("--tta", choices=("none", "tencrop"), help="test-time augmentation (default: the config's)")
    e.add_argument("--n-bootstrap", type=int, metavar="N", help="bootstrap resamples for the CIs (0: none)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="print the finding probabilities of image files",
                       description="Read PNG, JPEG or DICOM files, resize them as the cache does, and print one "
                       "probability per finding for each.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG or DICOM files")
    p.add_argument("--run", metavar="RUN_DIR", help="a trained run folder (holds best.pt and config.json)")
    p.add_argument("--model", metavar="NAME", help="an untrained model by name (for trying the pipeline only)")
    p.add_argument("--image-size", type=_positive_int, metavar="PX",
                   help="input side in pixels (default: the run's data.image_size, or for --model the "
                        "architecture's input_size in the registry, e.g. 224 for resnet18)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_predict)


def _add_cache(sub) -> None:
    c = sub.add_parser("cache", help="decode and resize the configured data into the image cache",
                       description="Build (or complete) the uint8 image cache for the configured source and "
                       "image size; training does this on demand, this command does it ahead of time.")
    _add_config_options(c)
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_cache)


def _add_check(sub) -> None:
    k = sub.add_parser("check", help="check that a profile's report can run here, in seconds",
                       description="List at once everything the report would need and lacks: the metadata and "
                       "split files, the images of each part, the ImageNet weights of every pretrained backbone "
                       "(weights folder or Hugging Face cache; the hub is asked once), the device and its memory, "
                       "disk room for the image caches, and a wall-time estimate per notebook from a short speed "
                       "probe on this device. Exits 1 when something blocks the report.")
    _add_study_options(k, only="notebooks to check for, by number or name, comma-separated",
                       set_help="override a config value (model.weights_dir=/data/weights) or a notebook "
                       "parameter; repeatable", runs_dir="where runs are reused from (default: the profile's)")
    k.add_argument("--no-probe", action="store_true", help="skip the speed probe (no time estimates)")
    k.add_argument("--probe-budget", type=float, default=30.0, metavar="SECONDS",
                   help="stop probing models after this many seconds (default: 30)")
    k.add_argument("--gpus", type=_gpu_counts, default=None, metavar="N[,M...]",
                   help="also estimate the whole study run by `cxrlib sweep` on N devices like this one, one "
                        "run per device (e.g. 1,8)")
    k.set_defaults(func=cmd_check)


def _add_sweep(sub) -> None:
    w = sub.add_parser("sweep", help="train every run the report needs as jobs (Slurm array or local workers)",
                       description="Plan exactly the runs the report's notebooks train (as cxrlib check does), "
                       "submit them through submitit and return: a Slurm job array (one job per run, one GPU "
                       "each) or one local worker per visible GPU. Each run is claimed in its folder so no two "
                       "workers train it; a killed or preempted run resumes from last.pt; a failed one is tried "
                       "once more. Then `cxrlib report` trains nothing. --status lists every run's state.")
    _add_study_options(w, only="the runs of these notebooks only, by number or name, comma-separated",
                       set_help="override a config value or a notebook parameter, as for report; repeatable",
                       runs_dir="where runs are written (default: the profile's)")
    w.add_argument("--status", action="store_true",
                   help="print queued / running (epoch, time left) / done / failed per run of the latest sweep, "
                        "read from the runs folder; submit nothing")
    w.add_argument("--executor", choices=("local", "slurm", "debug"), default="local",
                   help="local: workers on this machine; slurm: a job array; debug: in this process (default: local)")
    w.add_argument("--workers", type=_positive_int, default=None,
                   help="local workers (default: one per visible GPU, or 1 without a GPU)")
    w.add_argument("--partition", default=None, help="Slurm partition")
    w.add_argument("--time", type=_positive_int, default=None, metavar="MINUTES",
                   help="time limit per Slurm job (default: 24 h) or per local worker; a job out of time is "
                        "requeued and resumes")
    w.add_argument("--array-parallelism", type=_positive_int, default=8, metavar="N",
                   help="Slurm array jobs running at once (default: 8)")
    w.add_argument("--cpus-per-task", type=_positive_int, default=None, help="CPUs per Slurm job")
    w.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a further #SBATCH option, e.g. account=mylab or qos=high; repeatable")
    w.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="STEPS",
                   help="also checkpoint every STEPS optimizer steps (less lost to a preemption)")
    w.add_argument("--wait", action="store_true", help="wait for the jobs, then print the status")
    w.set_defaults(func=cmd_sweep)


def _add_report(sub) -> None:
    r = sub.add_parser("report", help="run the notebooks and export the HTML report",
                       description="Run every numbered notebook with papermill (each run's epochs and the time "
                       "left are printed as it trains) and export the HTML report to reports/.")
    _add_study_options(r, only="notebooks to run, by number or name, comma-separated (e.g. 02,03)",
                       set_help="override a config value (train.epochs=3) or a notebook parameter "
                       "(notebooks.01_baselines.MODELS=[resnet18]); repeatable",
                       runs_dir="where runs are written and reused (default: the profile's, runs/<profile>)")
    r.add_argument("--redo", action="store_true", help="retrain runs even when a finished one matches")
    r.add_argument("--out", default="reports", help="output folder (default: reports)")
    r.add_argument("--timeout", type=float, default=None, help="seconds allowed per notebook cell")
    r.add_argument("--log-output", action="store_true", help="stream the notebooks' own output")
    r.add_argument("--no-check", action="store_true",
                   help="skip the check (cxrlib check) that otherwise runs first and stops the report on a problem")
    r.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrlib", description="Multi-label chest X-ray classification (NIH ChestX-ray14): train, evaluate, "
        "predict, build caches, render the report.",
        epilog="Several GPUs: torchrun --nproc_per_node N -m cxrlib train ...")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_cache(sub)
    _add_check(sub)
    _add_sweep(sub)
    _add_report(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:  # CLIError, ImageError, config errors: a message, no trace
        print(f"cxrlib {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
