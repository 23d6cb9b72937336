"""The whole planned study as jobs: every run the report needs, trained by submitit workers.

``cxrlib sweep`` asks the plan that ``cxrlib check`` makes (:func:`plan_runs`, from
:func:`cxrlib.preflight.planned_experiments`: exactly the runs the report's notebooks train),
writes it into the runs folder, submits the jobs through submitit and returns:

* ``--executor slurm``: one job per (experiment, seed) as a Slurm job array, at most
  ``--array-parallelism`` at once, one GPU each; a job preempted or out of time is requeued
  by submitit (:class:`SweepJob` is ``Checkpointable``) and resumes from the run's ``last.pt``.
* ``--executor local``: one worker per visible GPU of this machine (``--workers N`` on a
  CPU). submitit's local executor starts every submitted job at once and has no queue, so
  each worker takes the plan's runs in order, one at a time, skipping those another holds.
* ``--executor debug``: the same jobs run in this process (for trying a plan).

Afterwards ``cxrlib report`` finds every run finished and trains nothing.

**Never twice, never lost.** A worker trains a run only under its claim (:mod:`cxrlib.claims`:
an ``O_EXCL`` file in the run folder with host, pid, job id and a heartbeat, released when the
worker dies). A worker does not leave while a run it could take is held by another: if that
holder dies, the claim goes stale and the run is taken over, resuming from ``last.pt``. A run
that fails is recorded with its error and its job's log and tried once more
(:data:`MAX_ATTEMPTS`); after that it is listed as failed.

**Bookkeeping** lives in ``<runs_dir>/.sweep/``: ``plans/<hash>.json`` (the plan a job
reads), ``plan.json`` (the latest sweep's, for ``--status``), ``events/<run>.jsonl`` (each
run's :mod:`cxrlib.progress` events) and ``failures/<run>.json``; ``jobs/`` is submitit's
folder of pickles and logs. ``cxrlib sweep --status`` reads only these and the run folders,
so it answers from any node that mounts the runs folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import submitit
from submitit.helpers import Checkpointable

from cxrlib import claims, runs
from cxrlib import progress as progress_events
from cxrlib.config import ExperimentConfig
from cxrlib.fileio import atomic_write_text
from cxrlib.profiles import Profile

SWEEP_DIR = ".sweep"
MAX_ATTEMPTS = 2  # a failed run is tried once more, then listed as failed
EXECUTORS = ("local", "slurm", "debug")
LOST_EXIT = 70  # exit status of a worker whose run another worker took over
# The local executor ends a job after its timeout (two minutes unless told): a worker's
# timeout is the whole sweep's, so by default it is long.
LOCAL_TIMEOUT_MIN = 7 * 24 * 60


# ----------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class PlannedRun:
    key: str  # the run folder relative to the sweep's runs folder, '/' as '+': names its files
    notebook: str  # the first notebook that trains it
    config: ExperimentConfig

    @property
    def folder(self) -> Path:
        return runs.run_folder(self.config)


@dataclass(frozen=True)
class Plan:
    root: Path  # the profile's runs folder: .sweep/ lives there
    runs: tuple[PlannedRun, ...]
    path: Path | None = None  # the plan file jobs read

    @property
    def sweep_dir(self) -> Path:
        return self.root / SWEEP_DIR


def sweep_dir(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / SWEEP_DIR


def _key(root: Path, folder: Path) -> str:
    try:
        rel = folder.absolute().relative_to(root.absolute())
        return "+".join(rel.parts)
    except ValueError:  # a run outside the sweep's folder: named by its path
        return hashlib.sha1(str(folder.absolute()).encode()).hexdigest()[:16]


def plan_runs(profile: Profile, notebooks: Sequence[str | Path]) -> Plan:
    """Every run the report of ``notebooks`` trains with ``profile``, once, in the order the
    notebooks train them (so a worker trains the baseline before the runs that reuse it)."""
    from cxrlib import preflight  # the check's own plan; it imports the model code

    root = Path(profile.baseline.runs_dir)
    planned: dict[Path, PlannedRun] = {}
    for notebook, configs in preflight.planned_experiments(profile, notebooks).items():
        for cfg in configs:
            folder = runs.run_folder(cfg)
            if folder in planned:
                if planned[folder].config.fingerprint() != cfg.fingerprint():
                    raise ValueError(f"{notebook} and {planned[folder].notebook} plan different runs in one folder "
                                     f"{folder}: give one of them another name")
                continue
            planned[folder] = PlannedRun(_key(root, folder), notebook, cfg)
    return Plan(root, tuple(planned.values()))


def write_plan(plan: Plan) -> Plan:
    """Store the plan under ``.sweep/plans/<hash>.json`` (what jobs read; a later sweep with
    another plan cannot change it under them) and as ``.sweep/plan.json`` (for ``--status``)."""
    body = json.dumps({"root": str(plan.root.absolute()),
                       "runs": [{"key": r.key, "notebook": r.notebook, "config": r.config.to_dict()}
                                for r in plan.runs]}, indent=1, sort_keys=True)
    digest = hashlib.sha1(body.encode()).hexdigest()[:12]
    path = plan.sweep_dir / "plans" / f"{digest}.json"
    atomic_write_text(body, path)
    atomic_write_text(body, plan.sweep_dir / "plan.json")
    return Plan(plan.root, plan.runs, path.absolute())


def read_plan(path: str | Path) -> Plan:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no sweep plan at {path}: start one with `cxrlib sweep --profile ...`") from None
    except ValueError as err:
        raise ValueError(f"sweep plan {path} cannot be read ({err}): start the sweep again") from err
    return Plan(Path(data["root"]), tuple(PlannedRun(r["key"], r["notebook"], ExperimentConfig.from_dict(r["config"]))
                                          for r in data["runs"]), path)


def pending(plan: Plan) -> list[PlannedRun]:
    """The planned runs not finished with their config (what a report would still train)."""
    return [r for r in plan.runs if not runs.is_finished(r.folder, r.config)]


# ----------------------------------------------------------------------------- failures and events

def events_path(plan: Plan, run: PlannedRun) -> Path:
    return plan.sweep_dir / "events" / f"{run.key}.jsonl"


def _failure_path(plan: Plan, run: PlannedRun) -> Path:
    return plan.sweep_dir / "failures" / f"{run.key}.json"


def read_failure(plan: Plan, run: PlannedRun) -> dict[str, Any] | None:
    try:
        return json.loads(_failure_path(plan, run).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _record_failure(plan: Plan, run: PlannedRun, error: BaseException) -> dict[str, Any]:
    before = read_failure(plan, run) or {}
    record = {"attempts": int(before.get("attempts", 0)) + 1, "time": time.time(),
              "error": f"{type(error).__name__}: {error}",
              "traceback": "".join(traceback.format_exception(error))[-4000:],
              "log": _job_log(), "host": claims.me().host, "job_id": claims.current_job_id()}
    atomic_write_text(json.dumps(record, indent=1), _failure_path(plan, run))
    return record


def _job_log() -> str | None:
    """This submitit job's stderr file, where the traceback and the training output are."""
    try:
        return str(submitit.JobEnvironment().paths.stderr)
    except Exception:  # not inside a submitit job (the debug executor, a plain call)
        return None


# ----------------------------------------------------------------------------- the worker

def _global_stage_run(plan: Plan, run: PlannedRun) -> PlannedRun | None:
    """The planned run that trains ``run``'s global stage (a two_stage run takes it from there)."""
    from cxrlib.experiments import global_stage_equivalent  # the model code, in the worker only

    want = global_stage_equivalent(run.config)
    if want is None:
        return None
    key = want.training_key()
    return next((r for r in plan.runs if r is not run and r.config.training_key() == key), None)


def _defer(plan: Plan, run: PlannedRun) -> bool:
    """Wait with a two_stage run while another worker trains the run it takes its global stage
    from: started now, it would train that stage a second time."""
    source = _global_stage_run(plan, run)
    if source is None or runs.is_finished(source.folder, source.config):
        return False
    holder, _, stale = claims.holder_of(source.folder)
    return holder is not None and stale is None


def _lost(reason: str) -> None:
    # Another worker judged this one dead and took its run over: stop before both write it.
    print(f"cxrlib sweep: this worker lost its run ({reason}); stopping", file=sys.stderr, flush=True)
    os._exit(LOST_EXIT)


def _train(plan: Plan, run: PlannedRun, checkpoint_every: int | None) -> bool:
    """Train (or resume) one run under its claim; False when it failed (recorded)."""
    from cxrlib import experiments  # the model code, in the worker only; trains a run as its notebook does

    events = events_path(plan, run)
    events.parent.mkdir(parents=True, exist_ok=True)
    os.environ[progress_events.ENV] = str(events)
    resumed = " from its last.pt" if (run.folder / runs.LAST).is_file() else ""
    print(f"cxrlib sweep: training {run.key} ({run.notebook}){resumed}", flush=True)
    try:
        experiments.run(run.config, progress=False, checkpoint_every=checkpoint_every)
        if not runs.is_finished(run.folder, run.config):  # never retrain forever a run that cannot finish
            raise RuntimeError(f"training returned but {run.folder} is not a finished run of its config")
    except Exception as err:  # recorded and tried once more; preemption (SystemExit) passes through
        record = _record_failure(plan, run, err)
        progress_events.emit("failed", runs.run_label(run.config), error=record["error"], attempt=record["attempts"])
        print(f"cxrlib sweep: {run.key} failed (attempt {record['attempts']} of {MAX_ATTEMPTS}): {record['error']}",
              file=sys.stderr, flush=True)
        traceback.print_exc()
        return False
    finally:
        os.environ.pop(progress_events.ENV, None)
    return True


def work(plan_path: str | Path, keys: Sequence[str] | None = None, poll_s: float = 10.0,
         checkpoint_every: int | None = None, threads: int | None = None) -> dict[str, list[str]]:
    """A worker: train every run of the plan (or of ``keys``) that is not finished, one at a
    time under its claim, until each is finished or has failed :data:`MAX_ATTEMPTS` times.

    Runs held by live workers are passed over and looked at again every ``poll_s`` seconds, so
    the worker stays while any could still come back to it (its holder may die); after a pass
    that trained or failed something, the next pass retries what failed. Returns
    ``{"trained": keys, "failed": keys}`` for this worker. ``threads``: the torch CPU threads
    of this worker where its runs leave them unset (:func:`cpu_threads`).
    """
    if threads:
        import torch  # the worker only: submitting and --status stay free of torch

        torch.set_num_threads(int(threads))
    plan = read_plan(plan_path)
    chosen = [r for r in plan.runs if keys is None or r.key in set(keys)]
    if keys is not None and len(chosen) != len(set(keys)):
        unknown = sorted(set(keys) - {r.key for r in chosen})
        raise ValueError(f"runs {', '.join(unknown)} are not in the sweep plan {plan_path}")
    done: dict[str, list[str]] = {"trained": [], "failed": []}
    while True:
        waiting = worked = False
        for run in chosen:
            if runs.is_finished(run.folder, run.config):
                continue
            if int((read_failure(plan, run) or {}).get("attempts", 0)) >= MAX_ATTEMPTS:
                continue
            if _defer(plan, run):
                waiting = True
                continue
            claim = claims.try_claim(run.folder, on_lost=_lost)
            if claim is None:
                waiting = True
                continue
            with claim:
                if runs.is_finished(run.folder, run.config):  # finished just before we claimed it
                    continue
                worked = True
                ok = _train(plan, run, checkpoint_every)
                done["trained" if ok else "failed"].append(run.key)
        if not waiting and not worked:
            return done
        if not worked:
            time.sleep(poll_s)


class SweepJob(Checkpointable):
    """What a submitit job runs: :func:`work` over one run (a Slurm array task) or the whole
    plan (a local worker). Checkpointable: on preemption or timeout submitit requeues the
    same call, which resumes the run from ``last.pt`` (its old claim belongs to its own job
    id, so it is taken back at once)."""

    def __init__(self, plan_path: str, poll_s: float = 10.0, checkpoint_every: int | None = None,
                 threads: int | None = None):
        self.plan_path, self.poll_s, self.checkpoint_every = str(plan_path), float(poll_s), checkpoint_every
        self.threads = threads

    def __call__(self, key: str | None = None) -> dict[str, list[str]]:
        return work(self.plan_path, None if key is None else [key], self.poll_s, self.checkpoint_every,
                    self.threads)


# ----------------------------------------------------------------------------- submitting

@dataclass
class Options:
    """How the jobs run (the ``cxrlib sweep`` options)."""

    executor: str = "local"
    workers: int | None = None  # local: default one per visible GPU, else 1
    partition: str | None = None  # slurm
    time_min: int | None = None  # slurm: per job (default 24 h); local: per worker
    array_parallelism: int = 8  # slurm: jobs of the array running at once
    cpus_per_task: int | None = None  # slurm
    slurm_options: dict[str, Any] = field(default_factory=dict)  # further #SBATCH lines, e.g. {"account": "x"}
    poll_s: float = 10.0
    checkpoint_every: int | None = None  # also checkpoint every N steps (long epochs under preemption)

    def check(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}: expected one of {', '.join(EXECUTORS)}")
        for name in ("workers", "time_min", "array_parallelism", "cpus_per_task", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) < 1):
                raise ValueError(f"sweep option {name} must be a whole number >= 1, got {value!r}")


@dataclass
class Submission:
    plan: Plan
    jobs: list  # submitit Jobs
    executor: str

    def wait(self) -> list[Any]:
        """Every job's result (raises the first job's error, with its log)."""
        return [job.result() for job in self.jobs]


def cpu_threads(workers: int, cores: int | None = None) -> int:
    """Torch threads of each of ``workers`` CPU workers on one machine: a share of its cores.
    Each process would otherwise take every core, and ``workers`` of them oversubscribe the
    machine (two workers of two threads on 2 cores trained the cpu plan 2.3 times slower
    than one, bench/results/sweep.md)."""
    cores = int(cores or os.cpu_count() or 1)
    return max(1, cores // max(1, int(workers)))


def local_workers(options: Options) -> list[tuple[int, ...]]:
    """The GPUs of each local worker: one visible GPU each, or ``workers`` CPU workers."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus and options.workers is None:
        return [(i,) for i in range(gpus)]
    n = int(options.workers or 1)
    return [((i % gpus),) for i in range(n)] if gpus else [() for _ in range(n)]


def slurm_parameters(options: Options, job_name: str) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters: one GPU and one task per job, the array's
    parallelism, requeue warning 120 s before the time limit so a checkpoint can be written."""
    params: dict[str, Any] = {"job_name": job_name, "time": int(options.time_min or 24 * 60), "nodes": 1,
                              "ntasks_per_node": 1, "gpus_per_node": 1,
                              "array_parallelism": int(options.array_parallelism), "signal_delay_s": 120}
    if options.partition:
        params["partition"] = options.partition
    if options.cpus_per_task:
        params["cpus_per_task"] = int(options.cpus_per_task)
    if options.slurm_options:
        params["additional_parameters"] = dict(options.slurm_options)
    return params


def submit(plan: Plan, options: Options) -> Submission:
    """Write the plan, clear the failure records of its unfinished runs (a new sweep tries
    them afresh), and submit its jobs; returns at once (``Submission.wait`` waits)."""
    options.check()
    plan = write_plan(plan)
    for run in pending(plan):
        _failure_path(plan, run).unlink(missing_ok=True)
    folder = plan.sweep_dir / "jobs"
    job = SweepJob(str(plan.path), options.poll_s, options.checkpoint_every)
    todo = [r.key for r in pending(plan)]
    if options.executor == "slurm":
        executor = submitit.SlurmExecutor(folder=folder)
        executor.update_parameters(**slurm_parameters(options, f"cxrlib-{plan.root.name}"))
        jobs = executor.map_array(job, todo) if todo else []
    elif options.executor == "debug":
        executor = submitit.DebugExecutor(folder=folder)
        jobs = [executor.submit(job, key) for key in todo]
    else:
        executor = submitit.LocalExecutor(folder=folder)
        jobs = []
        workers = local_workers(options) if todo else []
        for gpus in workers:
            executor.update_parameters(timeout_min=int(options.time_min or LOCAL_TIMEOUT_MIN), gpus_per_node=len(gpus),
                                       visible_gpus=gpus)
            threads = None if gpus else cpu_threads(len(workers))
            jobs.append(executor.submit(SweepJob(str(plan.path), options.poll_s, options.checkpoint_every, threads)))
    return Submission(plan, jobs, options.executor)


# ----------------------------------------------------------------------------- time on N GPUs

def wall_seconds(seconds: Sequence[float], workers: int) -> float:
    """Wall time of runs taken in order by ``workers`` workers, each taking the next run as it
    becomes free (as local workers and a Slurm array at that parallelism do)."""
    free = [0.0] * max(int(workers), 1)
    for s in seconds:
        i = free.index(min(free))
        free[i] += float(s)
    return max(free) if seconds else 0.0


def study_estimates(plan: Plan, seconds_by_run: Mapping[str, float], gpus: Sequence[int], device: str) -> list[str]:
    """Lines for ``cxrlib check --gpus``: the study's pending runs (estimated by the check's
    speed probe, ``seconds_by_run`` by fingerprint) spread over each count of GPUs, one run per
    GPU; ``device`` names what the probe ran on."""
    from cxrlib.preflight import _duration  # the check's own way of writing a duration (it imports the model code)

    todo = pending(plan)
    known = [seconds_by_run[r.config.fingerprint()] for r in todo if r.config.fingerprint() in seconds_by_run]
    unknown = len(todo) - len(known)
    if not known:
        return [f"no estimate for the sweep: none of its {len(todo)} pending runs was probed on {device}"]
    lines = []
    for n in gpus:
        lines.append(f"the whole study as `cxrlib sweep` jobs on {n} x {device}, one run each: about "
                     f"{_duration(wall_seconds(known, n))} for {len(known)} runs"
                     + (f" ({unknown} more without an estimate)" if unknown else ""))
    return lines


# ----------------------------------------------------------------------------- status

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


def _last_event(path: Path) -> dict[str, Any] | None:
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue  # a line being written
    return None


def status(runs_dir: str | Path) -> list[dict[str, Any]]:
    """One row per planned run of the latest sweep under ``runs_dir``: ``run``, ``state``
    (queued, running, done, failed) and ``detail``, read from the runs folder alone."""
    plan = read_plan(sweep_dir(runs_dir) / "plan.json")
    rows = []
    for run in plan.runs:
        failure = read_failure(plan, run)
        holder, _, stale = claims.holder_of(run.folder)
        event = _last_event(events_path(plan, run))
        text = progress_events.describe(event) if event else None
        if runs.is_finished(run.folder, run.config):
            metrics = runs.read_metrics(run.folder) or {}
            auroc = metrics.get("mean_auroc")
            state, detail = DONE, "test mean AUROC " + ("n/a" if auroc is None else f"{float(auroc):.3f}")
        elif holder is not None and stale is None:
            where = f"{holder.host} pid {holder.pid}" + (f" job {holder.job_id}" if holder.job_id else "")
            now = text.split(": ", 1)[1] if text and event.get("event") in ("start", "epoch") else "starting"
            state, detail = RUNNING, f"{now} ({where})"
        elif failure and int(failure.get("attempts", 0)) >= MAX_ATTEMPTS:
            state, detail = FAILED, f"{failure.get('error')}; log: {failure.get('log') or 'none'}"
        else:
            state = QUEUED
            notes = []
            if failure:
                notes.append(f"failed once ({failure.get('error')}; log: {failure.get('log') or 'none'}), "
                             "to be tried again")
            if holder is not None and stale:
                notes.append(f"its worker stopped ({stale}): the next worker resumes it")
            elif (run.folder / runs.LAST).is_file():
                notes.append("resumes from last.pt")
            detail = "; ".join(notes)
        rows.append({"run": run.key.replace("+", "/"), "notebook": run.notebook, "state": state, "detail": detail})
    return rows


def format_status(rows: Sequence[Mapping[str, Any]]) -> str:
    width = max([len(r["run"]) for r in rows] + [3])
    lines = [f"{'RUN':<{width}}  {'STATE':<8} DETAIL"]
    lines += [f"{r['run']:<{width}}  {r['state']:<8} {r['detail']}".rstrip() for r in rows]
    counts = {s: sum(r["state"] == s for r in rows) for s in (DONE, RUNNING, QUEUED, FAILED)}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(rows)} runs")
    return "\n".join(lines)
