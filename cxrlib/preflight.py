"""Preflight: everything a profile's notebooks need, checked in seconds before hours of work.

Each check is a plain function over the experiments the notebooks will train (the
profile's baseline and every variant), returning :class:`Finding` rows: ``ok``,
``warning`` (the report can go on) or ``problem`` (it cannot), each saying what was found
and what to do. :func:`run_checks` runs them all and lists every finding at once; one
failing check never hides the others.

- data: the metadata table and split files (ChestX-ray14), the npz (MedMNIST), the box list;
- images: present and missing per part of the split;
- weights: every pretrained backbone's ImageNet weights on this machine, or a reachable hub;
- device: the device each experiment asks for, and its memory;
- disk: room for the decoded-image cache at each image size still to be built;
- time: a wall-time estimate per notebook from a speed probe on this device
  (:mod:`cxrlib.speed` measures; :func:`estimate_times` adds up per notebook).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from cxrlib import experiments, profiles, runs
from cxrlib.config import ExperimentConfig
from cxrlib.data import chestxray14 as cx
from cxrlib.data import medmnist
from cxrlib.data.cache import cache_files, open_cache
from cxrlib.data.sources import Plan, make_plan
from cxrlib import distributed
from cxrlib.distributed import resolve_device
from cxrlib.models import get_model_spec
from cxrlib.models import weights as weights_lib
from cxrlib.models.two_stage import STAGES as TWO_STAGES
from cxrlib.profiles import Profile
from cxrlib.speed import Speed, planned_steps, run_seconds, speed_key, speed_probe

OK, WARNING, PROBLEM = "ok", "warning", "problem"
STATUSES = (PROBLEM, WARNING, OK)
CHECKS = ("data", "images", "weights", "device", "disk", "time")
# A check of the full profile on a GPU probes nine models; this bounds it on a slow machine.
PROBE_BUDGET_S = 30.0


@dataclass(frozen=True)
class Finding:
    """One row of the preflight table."""

    check: str  # one of CHECKS
    status: str  # ok | warning | problem
    what: str  # what was found
    todo: str = ""  # what to do about it (empty when ok)

    @property
    def blocking(self) -> bool:
        return self.status == PROBLEM


def problems(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that stop the report (missing data, weights, device, disk)."""
    return [f for f in findings if f.blocking]


def format_table(findings: Sequence[Finding], width: int = 100) -> str:
    """The findings as a plain-text table, problems first, each with what to do under it."""
    rows = sorted(findings, key=lambda f: (STATUSES.index(f.status), CHECKS.index(f.check)
                                           if f.check in CHECKS else len(CHECKS)))
    lines = [f"{'STATUS':<8} {'CHECK':<8} FINDING"]
    indent = " " * 18
    for f in rows:
        body = textwrap.wrap(f.what, width - 18) or [""]
        lines.append(f"{f.status.upper():<8} {f.check:<8} {body[0]}")
        lines += [indent + b for b in body[1:]]
        if f.todo:
            lines += textwrap.wrap(f.todo, width, initial_indent=indent + "-> ", subsequent_indent=indent + "   ")
    n = {s: sum(f.status == s for f in findings) for s in STATUSES}
    lines.append(f"{n[PROBLEM]} problem(s), {n[WARNING]} warning(s), {n[OK]} ok")
    return "\n".join(lines)


def _distinct(items: Iterable, key: Callable) -> list:
    seen, out = set(), []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def _plan_key(cfg: ExperimentConfig) -> str:
    """What a data plan depends on: not the image size, the label count (targets only) or
    where the cache lives, so the baseline, the 15-label run and a larger-image variant
    share one plan (a plan reads the whole metadata table)."""
    d = dataclasses.replace(cfg.data, image_size=64, include_no_finding=False, cache_dir="", workers=0,
                            on_corrupt="error")
    return json.dumps(dataclasses.asdict(d), sort_keys=True)


# --------------------------------------------------------------------------- data, images

@dataclass
class _DataView:
    """What the data layer will read for one DataConfig, or why it cannot."""

    plan: Plan | None
    error: str | None


class _Plans:
    """Each distinct data config planned once per check run (a plan reads the whole table)."""

    def __init__(self):
        self._views: dict[str, _DataView] = {}

    def view(self, cfg: ExperimentConfig) -> _DataView:
        key = _plan_key(cfg)
        if key not in self._views:
            d = dataclasses.replace(cfg.data, image_size=max(int(cfg.data.image_size), 8), include_no_finding=False)
            try:
                self._views[key] = _DataView(make_plan(d), None)
            except Exception as err:  # the plan's own message names the file and the fix
                self._views[key] = _DataView(None, f"{type(err).__name__}: {err}")
        return self._views[key]


def check_data(configs: Sequence[ExperimentConfig], plans: _Plans | None = None) -> list[Finding]:
    """Metadata and split files of every data source the experiments read."""
    plans = plans or _Plans()
    out: list[Finding] = []
    for cfg in _distinct(configs, _plan_key):
        d = cfg.data
        view = plans.view(cfg)
        if view.plan is None and d.source == "chestxray14":
            out += _check_chestxray14_files(d)  # each missing file on its own row
        elif view.plan is None:
            todo = (f"put {d.source}.npz where data.data_dir points (--data-dir)" if d.source in medmnist.LABEL_NAMES
                    else "fix the data settings named above")
            out.append(Finding("data", PROBLEM, f"{d.source}: {view.error}", todo))
        else:
            plan = view.plan
            sizes = ", ".join(f"{p} {len(v.image_ids):,}" for p, v in plan.parts.items())
            where = f" in {Path(d.data_dir).expanduser().absolute()}" if d.data_dir else ""
            out.append(Finding("data", OK, f"{d.source}{where}: {plan.split_name} ({sizes} images)"))
            if plan.offers.boxes:
                out += _check_box_list(Path(d.data_dir).expanduser().absolute())
    # configs that differ only in what the loader does to labels (label noise) plan the same
    # files: one row each
    return list(dict.fromkeys(out))


def _check_box_list(folder: Path) -> list[Finding]:
    boxes = folder / cx.BOX_LIST_NAME
    if boxes.is_file():
        return [Finding("data", OK, f"box list {boxes.name}: the heatmaps notebook scores localization")]
    return [Finding("data", WARNING, f"no {cx.BOX_LIST_NAME} in {folder}: the heatmaps notebook cannot "
                                     "score heatmaps against boxes",
                    f"download {cx.BOX_LIST_NAME} from the NIH release into {folder}")]


def _check_chestxray14_files(d) -> list[Finding]:
    if not d.data_dir:
        return [Finding("data", PROBLEM, "ChestX-ray14: no data folder given",
                        "pass --data-dir <the folder holding Data_Entry_2017*.csv and images/> (see data/README.md)")]
    folder = Path(d.data_dir).expanduser().absolute()
    if not folder.is_dir():
        return [Finding("data", PROBLEM, f"ChestX-ray14 folder {folder} does not exist",
                        "pass --data-dir with the folder NIH's release was unpacked into")]
    out: list[Finding] = []
    table = None
    try:
        path = cx.find_data_entry(folder)
        table = cx.read_data_entry(path, d.include_no_finding)
        out.append(Finding("data", OK, f"metadata {path.name}: {len(table):,} images, "
                                       f"{len(np.unique(table.patient_ids)):,} patients"))
    except (FileNotFoundError, ValueError) as err:
        out.append(Finding("data", PROBLEM, f"metadata: {err}",
                           f"download Data_Entry_2017_v2020.csv from the NIH ChestX-ray14 release into {folder}"))
    if table is not None:
        try:
            split = cx.load_split(folder, d.split, table, d.val_fraction, d.seed)
            sizes = ", ".join(f"{p} {n:,}" for p, n in split.sizes().items())
            out.append(Finding("data", OK, f"split: {split.name} ({sizes})"))
        except (FileNotFoundError, ValueError) as err:
            todo = ("download train_val_list.txt and test_list.txt from the NIH release into "
                    f"{folder}" if d.split == "official" else f"provide the list files of split {d.split!r}")
            out.append(Finding("data", PROBLEM, f"split {d.split!r}: {err}", todo))
    return out + _check_box_list(folder)


def check_images(configs: Sequence[ExperimentConfig], plans: _Plans | None = None) -> list[Finding]:
    """Images present and missing per part of the split (ChestX-ray14; other sources are whole)."""
    plans = plans or _Plans()
    out: list[Finding] = []
    for cfg in _distinct(configs, _plan_key):
        d = cfg.data
        if d.source != "chestxray14":
            continue
        view = plans.view(cfg)
        folder = Path(d.data_dir).expanduser() if d.data_dir else None
        if view.plan is None:
            present = len(cx.find_images(folder)) if folder is not None and folder.is_dir() else 0
            out.append(Finding("images", PROBLEM, f"ChestX-ray14 images cannot be used ({present:,} PNG files found): "
                                                  f"{view.error}",
                               f"unpack the release's images_0XX.tar.gz into {folder or '<data dir>'} "
                               "(images/ or images_0XX/images/)"))
            continue
        plan = view.plan
        for part, p in plan.parts.items():
            used, missing = len(p.image_ids), int(plan.missing_by_part.get(part, 0))
            if missing == 0:
                out.append(Finding("images", OK, f"{part}: all {used:,} images present"))
            else:
                total = f"{used + missing:,}" if d.limit is None else "listed"  # a limit caps what is used
                out.append(Finding(
                    "images", WARNING,
                    f"{part}: {missing:,} of the {total} images are missing; {used:,} will be used",
                    f"unpack the rest of images_001..012.tar.gz into {folder} for the full {part} part "
                    "(results on a partial download are not comparable with published ones)"))
    return out


# --------------------------------------------------------------------------- weights

def check_weights(configs: Sequence[ExperimentConfig]) -> list[Finding]:
    """ImageNet weights of every pretrained backbone: local (weights folder or HF cache), or the hub."""
    out: list[Finding] = []
    for cfg in _distinct([c for c in configs if c.model.pretrained],
                         lambda c: (c.model.name, c.model.weights_path, c.model.weights_dir)):
        m = cfg.model
        try:
            spec = get_model_spec(m.name)
        except ValueError as err:
            out.append(Finding("weights", PROBLEM, str(err), "fix model.name"))
            continue
        if m.weights_path:
            path = Path(m.weights_path).expanduser()
            if path.is_file():
                out.append(Finding("weights", OK, f"{m.name}: {path} (model.weights_path)"))
            else:
                out.append(Finding("weights", PROBLEM, f"{m.name}: weights file {path} does not exist",
                                   weights_lib.fetch_help(spec.timm_name, m.weights_dir)))
            continue
        local = weights_lib.find_local(spec.timm_name, m.weights_dir)
        if local is not None:
            out.append(Finding("weights", OK, f"{m.name}: {local}"))
            continue
        state = weights_lib.hub_state()
        target = weights_lib.target_file(spec.timm_name, m.weights_dir)
        where = f"not in {target.parent} nor in the Hugging Face cache"
        if state.reachable:
            out.append(Finding("weights", WARNING,
                               f"{m.name}: {target.name} is {where}; it will be downloaded on first use "
                               f"({state.reason})", "to work offline later, fetch it now: "
                               f"`{weights_lib.fetch_command(spec.timm_name, m.weights_dir)}`"))
        else:
            command = weights_lib.fetch_command(spec.timm_name, m.weights_dir)
            out.append(Finding("weights", PROBLEM,
                               f"{m.name}: {target.name} is {where}, and the hub cannot be reached ({state.reason})",
                               f"on a machine with network run `{command}`, then copy the file to {target.parent} "
                               "here" if command else weights_lib.fetch_help(spec.timm_name, m.weights_dir)))
    return out


# --------------------------------------------------------------------------- device

def _gib(n: float) -> str:
    if n < 2**30:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**30:.1f} GiB"


def check_device(configs: Sequence[ExperimentConfig]) -> list[Finding]:
    """The device each experiment asks for: present, and how much memory it has."""
    out = [Finding("device", WARNING, problem, fix) for problem, fix in distributed.build_warnings()]
    for cfg in _distinct(configs, lambda c: c.train.device):
        asked = cfg.train.device
        try:
            dev = resolve_device(asked)
        except ValueError:
            build = f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}"
            out.append(Finding("device", PROBLEM, f"train.device={asked} but no CUDA GPU is visible ({build})",
                               "run on a machine with an NVIDIA GPU and a CUDA build of torch, or pass --device cpu "
                               "(and check again for the time that takes on this CPU)"))
            continue
        if dev.type == "cuda":
            index = dev.index if dev.index is not None else 0
            if index >= torch.cuda.device_count():
                out.append(Finding("device", PROBLEM, f"train.device={asked}: only {torch.cuda.device_count()} GPU(s)",
                                   "pick an existing GPU (cuda:0 ...)"))
                continue
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            out.append(Finding("device", OK, f"train.device={asked}: {props.name}, {_gib(total)} "
                                             f"({_gib(free)} free)"))
        else:
            note = " (no GPU visible)" if asked == "auto" else ""
            out.append(Finding("device", OK if asked == "cpu" else WARNING,
                               f"train.device={asked}: CPU, {os.cpu_count()} cores, torch threads "
                               f"{torch.get_num_threads()}{note}",
                               "" if asked == "cpu" else "on a GPU machine the same command uses the GPU"))
    return out


# --------------------------------------------------------------------------- disk

def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(configs: Sequence[ExperimentConfig], plans: _Plans | None = None) -> list[Finding]:
    """Room for every decoded-image cache still to be built (about images x size^2 bytes
    each, three times that with the phantoms' lesion masks)."""
    plans = plans or _Plans()
    out: list[Finding] = []
    need_by_disk: dict[int, list[tuple[Path, int, str]]] = {}
    seen: set[tuple[str, int, str]] = set()
    for cfg in _distinct(configs, lambda c: (_plan_key(c), c.data.image_size, c.data.cache_dir)):
        view = plans.view(cfg)
        if view.plan is None:
            continue  # the data/images rows say why
        plan, size = view.plan, int(cfg.data.image_size)
        cache = (plan.cache_key, size, str(cfg.data.cache_dir))
        if cache in seen:
            continue  # another config reading the same images at the same size: one cache, counted once
        seen.add(cache)
        nbytes = sum(cache_files(len(plan.cache_ids), size, plan.offers.masks).values())
        what = f"cache {plan.cache_key} at {size} px: {len(plan.cache_ids):,} images, {_gib(nbytes)}"
        if open_cache(cfg.data.cache_dir, plan.cache_key, size, plan.cache_ids) is not None:
            out.append(Finding("disk", OK, f"{what}, already built"))
            continue
        root = _existing_parent(Path(cfg.data.cache_dir))
        need_by_disk.setdefault(root.stat().st_dev, []).append((root, nbytes, what))
    for entries in need_by_disk.values():
        root = entries[0][0]
        free = shutil.disk_usage(root).free
        total = sum(n for _, n, _ in entries)
        out += [Finding("disk", OK, f"{what}, to build") for _, _, what in entries]
        summary = f"the caches to build need {_gib(total)}; {_gib(free)} free at {root}"
        if total > free:
            out.append(Finding("disk", PROBLEM, summary, f"free {_gib(total - free)} more there, or point "
                                                         "data.cache_dir at a larger disk"))
        elif total > 0.8 * free:
            out.append(Finding("disk", WARNING, summary, "little room is left for runs and checkpoints: free some"))
        else:
            out.append(Finding("disk", OK, summary))
    return out


# --------------------------------------------------------------------------- time

def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def estimate_times(notebooks: Mapping[str, Sequence[ExperimentConfig]], plans: _Plans | None = None,
                   budget_s: float = PROBE_BUDGET_S,
                   finished: Callable[[ExperimentConfig], bool] | None = None,
                   seconds_by_run: dict[str, float] | None = None) -> list[Finding]:
    """A wall-time estimate per notebook from one :func:`~cxrlib.speed.speed_probe` per distinct model.

    A run shared by several notebooks (the baseline) counts in the first that trains it;
    a run ``finished`` already counts nothing, and a two_stage run whose global stage an
    earlier planned run trains (:func:`cxrlib.experiments.global_stage_equivalent`) counts its other
    stages only. Probes stop once ``budget_s`` is spent; the runs left unprobed are named.
    ``seconds_by_run``, when given, receives each estimated run's seconds by its config's
    fingerprint (:func:`cxrlib.sweep.study_estimates` spreads them over several GPUs).
    """
    plans = plans or _Plans()
    speeds: dict[str, Speed | str] = {}
    seen: set[str] = set()
    trained: set[str] = set()  # what the planned runs train, whatever their names
    spent = 0.0
    out: list[Finding] = []
    missing_device: list[str] = []  # notebooks with nothing to probe on: one row for all
    timed: dict[str, float] = {}  # each estimated run's seconds, by its config's fingerprint
    for notebook, configs in notebooks.items():
        total, parts = 0.0, []
        unknown: dict[str, list[str]] = {}
        for cfg in configs:
            fp = cfg.fingerprint()
            if fp in seen:
                continue
            seen.add(fp)
            trained.add(cfg.training_key())
            if finished is not None and finished(cfg):
                parts.append(f"{cfg.name} done")
                continue
            global_stage = experiments.global_stage_equivalent(cfg)
            reused = global_stage is not None and global_stage.training_key() in trained
            if reused:  # the stage is taken from that run: time the local and fusion stages only
                stages = list(cfg.train.stage_epochs or [cfg.train.epochs] * len(TWO_STAGES))
                cfg = cfg.with_overrides({"train.stage_epochs": [0, *stages[1:]]})
            view = plans.view(cfg)
            if view.plan is None:
                unknown.setdefault("data not readable", []).append(cfg.name)
                continue
            key = speed_key(cfg)
            if key not in speeds:
                if spent > budget_s:
                    speeds[key] = f"probe time budget of {budget_s:g} s spent"
                else:
                    t0 = time.perf_counter()
                    speeds[key] = _probe_or_reason(cfg)
                    spent += time.perf_counter() - t0
            speed = speeds[key]
            if isinstance(speed, str):
                unknown.setdefault(speed, []).append(cfg.name)
                continue
            n = {p: len(v.image_ids) for p, v in view.plan.parts.items()}
            seconds = run_seconds(cfg, speed, n["train"], n["val"], n["test"])
            if seconds_by_run is not None:
                seconds_by_run[fp] = seconds
            total += seconds
            timed[fp] = seconds
            steps, _ = planned_steps(cfg, n["train"])
            parts.append(f"{cfg.name} {_duration(seconds)} ({steps:,} steps"
                         + (", its global stage from the baseline)" if reused else ")"))
        if not parts and not unknown:
            out.append(Finding("time", OK, f"{notebook}: trains nothing new"))
        elif not parts and len(unknown) == 1 and next(iter(unknown)).startswith("device"):
            missing_device.append(notebook)
        elif unknown:
            why = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in unknown.items())
            rest = f" (the other runs: about {_duration(total)})" if parts else ""
            out.append(Finding("time", WARNING, f"{notebook}: no estimate for {why}{rest}",
                               "fix the problems above (or raise the probe budget), then check again"))
        else:
            out.append(Finding("time", OK, f"{notebook}: about {_duration(total)} on "
                                           f"{_device_name(configs[0].train.device)}: {', '.join(parts)}"))
    out += seed_cost(notebooks, timed, finished)
    on_cpu = any(isinstance(s, Speed) and s.device == "cpu" for s in speeds.values())
    load, cores = (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0), os.cpu_count() or 1
    if on_cpu and load > cores:
        out.append(Finding("time", WARNING, f"this machine is busy (load average {load:.1f} on {cores} cores): the "
                                            "CPU estimates include that load",
                           "check again on a quiet machine for the time the runs take alone"))
    peaks = [(s.peak_memory, k) for k, s in speeds.items() if isinstance(s, Speed) and s.peak_memory]
    if peaks:
        peak, key = max(peaks)
        name, size = json.loads(key)[0], json.loads(key)[5]
        device = [c for cs in notebooks.values() for c in cs if speed_key(c) == key][0].train.device
        index = resolve_device(device).index or 0
        total = torch.cuda.get_device_properties(index).total_memory
        status = WARNING if peak > 0.9 * total else OK
        out.append(Finding("device", status, f"the largest training step ({name} at {size} px) peaked at "
                                             f"{_gib(peak)} of the GPU's {_gib(total)}",
                           "" if status == OK else "little headroom: lower train.batch_size if training runs out"))
    if missing_device:
        devices = sorted({c.train.device for nb in missing_device for c in notebooks[nb]})
        out.append(Finding("time", WARNING, f"no time estimate for {', '.join(missing_device)}: device "
                                            f"{', '.join(devices)} not present to probe",
                           "check again on the machine that will train"))
    return out


def seed_cost(notebooks: Mapping[str, Sequence[ExperimentConfig]], timed: Mapping[str, float],
              finished: Callable[[ExperimentConfig], bool] | None = None) -> list[Finding]:
    """What training every experiment with several seeds costs on this device: one line of the
    time estimate.

    ``timed``: the estimated seconds of each run, by its config's fingerprint (a run missing
    from it is finished, or was not estimated). The comparison design (:mod:`cxrlib.inference`)
    tests a side only from its ``MIN_SEEDS`` seeds, so the seeds after each experiment's first
    are what its verdicts cost; the line says how many runs and how much time they are.
    Nothing when no experiment has more than one seed.
    """
    from cxrlib.inference import MIN_SEEDS  # scipy's import only when a line is written

    seeds: dict[str, dict[int, float | None]] = {}  # per experiment and seed: seconds (0 done, None unknown)
    for cfg in (c for cs in notebooks.values() for c in cs):
        done = finished is not None and finished(cfg)
        seeds.setdefault(cfg.name, {})[int(cfg.seed)] = 0.0 if done else timed.get(cfg.fingerprint())
    extra = {name: sorted(s)[1:] for name, s in seeds.items()}
    if not any(extra.values()):
        return []
    by_list: dict[tuple[int, ...], int] = {}
    for s in seeds.values():
        by_list[tuple(sorted(s))] = by_list.get(tuple(sorted(s)), 0) + 1
    lists = "; ".join(f"{n} experiment{'s' if n != 1 else ''} with seeds {list(k)}" for k, n in by_list.items())
    costs = [seeds[name][x] for name, e in extra.items() for x in e]
    known = [c for c in costs if c is not None]
    total = sum(v for s in seeds.values() for v in s.values() if v is not None)
    if not known:
        cost = "their time not estimated: this device did not probe them"
    else:
        cost = f"about {_duration(sum(known))} on this device"
        if total > 0:
            cost += f", {sum(known) / total:.0%} of the {_duration(total)} still to train"
        if len(known) < len(costs):
            cost += f"; {len(costs) - len(known)} of them not estimated"
    return [Finding("time", OK, f"training seeds: {lists}. The seeds after each experiment's first are "
                                f"{len(costs)} of the {sum(len(s) for s in seeds.values())} runs ({cost}); the "
                                f"comparison design tests a side only from {MIN_SEEDS} seeds")]


def _device_name(asked: str) -> str:
    dev = resolve_device(asked)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"this CPU ({os.cpu_count()} cores)"


def _probe_or_reason(cfg: ExperimentConfig) -> Speed | str:
    try:
        resolve_device(cfg.train.device)
    except ValueError:
        return f"device {cfg.train.device} not present"
    try:
        return speed_probe(cfg)
    except torch.cuda.OutOfMemoryError:
        return f"batch {cfg.train.batch_size} at {cfg.data.image_size} px does not fit in the GPU's memory"
    except Exception as err:  # a model that cannot be built at this size says why
        return f"probe failed: {type(err).__name__}: {err}"


# --------------------------------------------------------------------------- all at once

def run_checks(notebooks: Mapping[str, Sequence[ExperimentConfig]] | Sequence[ExperimentConfig],
               probe: bool = True, budget_s: float = PROBE_BUDGET_S,
               finished: Callable[[ExperimentConfig], bool] | None = None,
               seconds_by_run: dict[str, float] | None = None) -> list[Finding]:
    """Every check over the experiments (a list, or ``{notebook: [configs]}`` for per-notebook
    time estimates). A check that fails unexpectedly becomes a problem row; the others run."""
    if not isinstance(notebooks, Mapping):
        notebooks = {"experiments": list(notebooks)}
    configs = _distinct([c for cs in notebooks.values() for c in cs], lambda c: c.fingerprint() + c.name)
    plans = _Plans()
    checks: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("data", lambda: check_data(configs, plans)),
        ("images", lambda: check_images(configs, plans)),
        ("weights", lambda: check_weights(configs)),
        ("device", lambda: check_device(configs)),
        ("disk", lambda: check_disk(configs, plans)),
    ]
    if probe:
        checks.append(("time", lambda: estimate_times(notebooks, plans, budget_s, finished, seconds_by_run)))
    findings: list[Finding] = []
    for name, check in checks:
        try:
            findings += check()
        except Exception as err:
            findings.append(Finding(name, PROBLEM, f"the {name} check failed: {type(err).__name__}: {err}",
                                    "report this; the other checks ran"))
    return findings


def planned_experiments(profile: Profile, notebooks: Sequence[str | Path]) -> dict[str, list[ExperimentConfig]]:
    """``{notebook: [configs]}``: what each of the ``notebooks`` (paths) trains, with the
    parameters the report gives it (the notebook's own defaults, then the profile's)."""
    planned = {}
    for path in map(Path, notebooks):
        params = {**profiles.parameter_defaults(path), **profile.notebook_parameters(path.stem)}
        planned[path.stem] = experiments.notebook_configs(profile, path, params)
    return planned


def check_profile(profile: Profile, notebooks: Sequence[str | Path], probe: bool = True,
                  budget_s: float = PROBE_BUDGET_S, seconds_by_run: dict[str, float] | None = None) -> list[Finding]:
    """Every check for the report of ``notebooks`` (paths) with ``profile``; finished runs
    count no time (:func:`cxrlib.report.discover_notebooks` lists a folder's notebooks)."""
    planned = planned_experiments(profile, notebooks)
    if not any(planned.values()):  # nothing to train: the notebooks still read the data
        reader = profile.baseline.with_overrides({"model.pretrained": False})
        return run_checks([reader], probe=False)
    return run_checks(planned, probe=probe, budget_s=budget_s,
                      finished=lambda cfg: runs.is_finished(runs.run_folder(cfg), cfg), seconds_by_run=seconds_by_run)
