"""The sweep: the report's runs trained by submitit workers, each exactly once.

Local workers are real processes (submitit's LocalExecutor); the Slurm path runs without a
cluster: fake ``srun``/``sbatch`` commands let submitit write and "submit" its batch script,
which is checked, and an array task's pickled call is then run here as a node would run it.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cxrlib import cli, profiles, report, runs, sweep
from cxrlib.train import FAULT_ENV

REPO = Path(__file__).resolve().parent.parent


def _profile(runs_dir: Path, **overrides):
    return profiles.load("smoke", runs_dir=str(runs_dir), overrides=[f"{k}={v}" for k, v in overrides.items()])


def _finished_events(plan: sweep.Plan) -> dict[str, int]:
    counts = {}
    for run in plan.runs:
        path = sweep.events_path(plan, run)
        lines = path.read_text().splitlines() if path.is_file() else []
        counts[run.key] = sum(json.loads(line)["event"] == "finished" for line in lines)
    return counts


@pytest.fixture()
def worker_env(monkeypatch):
    # workers are new processes: they import cxrlib from this checkout
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.slow
def test_two_local_workers_train_the_smoke_plan_and_the_report_has_nothing_left(tmp_path, worker_env):
    profile = _profile(tmp_path / "runs")
    notebooks = report.discover_notebooks()
    plan = sweep.plan_runs(profile, notebooks)
    assert len(plan.runs) >= 8 and len(sweep.pending(plan)) == len(plan.runs)

    submission = sweep.submit(plan, sweep.Options(executor="local", workers=2, poll_s=0.5))
    assert len(submission.jobs) == 2
    # CPU workers share the cores instead of each taking all of them
    assert [job.submission().function.threads for job in submission.jobs] == [sweep.cpu_threads(2)] * 2
    results = submission.wait()
    trained = [key for r in results for key in r["trained"]]
    assert sorted(trained) == sorted(r.key for r in plan.runs)  # every run by one worker, none twice
    assert all(r["trained"] for r in results)  # both workers took part
    assert set(_finished_events(submission.plan).values()) == {1}

    # the report's own plan, made afresh as `cxrlib report` makes it, finds nothing to train
    assert sweep.pending(sweep.plan_runs(_profile(tmp_path / "runs"), notebooks)) == []
    # a two_stage run took its global stage from the baseline instead of training it again
    two_stage = next(r for r in plan.runs if r.config.model.wrapper == "two_stage")
    assert "global" in runs.read_metrics(two_stage.folder)["reused_stages"]
    # only what reloading and the report need is kept, and no claim is left behind
    for run in plan.runs:
        assert not (run.folder / runs.LAST).exists(), run.key
        assert not list(run.folder.glob(".claim.*")), run.key
    rows = sweep.status(tmp_path / "runs")
    assert [r["state"] for r in rows] == [sweep.DONE] * len(plan.runs)


@pytest.mark.slow
def test_a_killed_worker_loses_nothing_and_no_run_trains_twice(tmp_path, worker_env, monkeypatch):
    import submitit

    profile = _profile(tmp_path / "runs", **{"notebooks.01_baselines.MODELS": "[resnet18]",
                                             "notebooks.01_baselines.FIFTEEN_LABELS": "false"})
    plan = sweep.write_plan(sweep.plan_runs(profile, report.select_notebooks(report.discover_notebooks(), "01")))
    assert [r.key for r in plan.runs] == ["baseline", "baseline+seed1"]
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=10)
    job = sweep.SweepJob(str(plan.path), poll_s=0.5, checkpoint_every=1)
    # the first worker dies (os._exit, no cleanup) right after the first step of its first run,
    # which it has checkpointed; the second worker lives
    monkeypatch.setenv(FAULT_ENV, "1")
    doomed = executor.submit(job)
    monkeypatch.delenv(FAULT_ENV)
    survivor = executor.submit(job)

    result = survivor.result()
    with pytest.raises(Exception):
        doomed.result()
    assert sorted(result["trained"]) == ["baseline", "baseline+seed1"]  # it took over the dead worker's run
    assert _finished_events(plan) == {"baseline": 1, "baseline+seed1": 1}
    assert sweep.pending(plan) == []
    log = Path(survivor.paths.stdout).read_text()
    assert "from its last.pt" in log  # resumed where the dead worker stopped
    starts = [json.loads(line) for r in plan.runs for line in sweep.events_path(plan, r).read_text().splitlines()]
    assert sum(e["event"] == "start" for e in starts) == 3  # two runs, one of them started twice


@pytest.mark.slow
def test_a_failed_run_is_tried_once_more_then_listed_with_its_error(tmp_path, monkeypatch, capsys):
    from cxrlib import experiments

    profile = _profile(tmp_path / "runs", **{"notebooks.01_baselines.MODELS": "[resnet18]",
                                             "notebooks.01_baselines.FIFTEEN_LABELS": "false"})
    plan = sweep.write_plan(sweep.plan_runs(profile, report.select_notebooks(report.discover_notebooks(), "01")))
    real, calls = experiments.run, []

    def flaky(cfg, **kwargs):  # the baseline fails once, then trains; seed 1 fails every time
        calls.append(runs.run_label(cfg))
        if cfg.seed == 1 or calls.count("baseline") == 1:
            raise RuntimeError(f"injected failure of {runs.run_label(cfg)}")
        return real(cfg, **kwargs)

    monkeypatch.setattr(experiments, "run", flaky)
    done = sweep.work(plan.path, poll_s=0.1)
    assert done == {"trained": ["baseline"], "failed": ["baseline", "baseline+seed1", "baseline+seed1"]}
    assert calls == ["baseline", "baseline seed 1", "baseline", "baseline seed 1"]  # once more each, no more
    rows = {r["run"]: r for r in sweep.status(tmp_path / "runs")}
    assert rows["baseline"]["state"] == sweep.DONE
    assert rows["baseline/seed1"]["state"] == sweep.FAILED
    assert "RuntimeError: injected failure of baseline seed 1" in rows["baseline/seed1"]["detail"]
    assert sweep.read_failure(plan, plan.runs[0])["attempts"] == 1  # failed once, then trained
    assert "Traceback" in sweep.read_failure(plan, plan.runs[1])["traceback"]
    # the command line prints the same, from the runs folder alone
    capsys.readouterr()
    assert cli.main(["sweep", "--status", "--profile", "smoke", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:2] == ["baseline", "done"] and out[2].split()[:2] == ["baseline/seed1", "failed"]
    assert out[-1] == "1 done, 0 running, 0 queued, 1 failed of 2 runs"


def _fake_slurm(bin_dir: Path, record: Path) -> None:
    """``srun`` that exists and ``sbatch`` that keeps the script it is given and answers as Slurm does."""
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {record}\necho "Submitted batch job 4242"\n')
    for name in ("srun", "sbatch"):
        (bin_dir / name).chmod(stat.S_IRWXU)


@pytest.mark.slow
def test_slurm_array_script_and_an_array_task_without_a_cluster(tmp_path, monkeypatch):
    from submitit.core.utils import DelayedSubmission

    record = tmp_path / "submitted.sh"
    _fake_slurm(tmp_path / "bin", record)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    profile = _profile(tmp_path / "runs")
    plan = sweep.plan_runs(profile, report.discover_notebooks())
    options = sweep.Options(executor="slurm", partition="gpu", time_min=90, array_parallelism=3, cpus_per_task=8,
                            slurm_options={"account": "mylab"}, checkpoint_every=100)
    submission = sweep.submit(plan, options)

    n = len(plan.runs)
    assert [j.job_id for j in submission.jobs] == [f"4242_{i}" for i in range(n)]
    script = record.read_text()
    for line in (f"#SBATCH --array=0-{n - 1}%3", "#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --account=mylab", "#SBATCH --signal=USR2@120"):
        assert line in script.splitlines(), line
    assert "srun" in script and "submitit.core._submit" in script

    # each array task holds one run; task 1 runs here as its node would run it
    task = DelayedSubmission.load(submission.jobs[1].paths.submitted_pickle)
    assert task.args == (plan.runs[1].key,)
    assert task.function(*task.args) == {"trained": [plan.runs[1].key], "failed": []}
    assert [r.key for r in sweep.pending(submission.plan)] == [r.key for r in plan.runs if r is not plan.runs[1]]
    # on preemption or timeout submitit requeues the same call (the run resumes from last.pt)
    again = task.function.checkpoint(*task.args)
    assert isinstance(again, DelayedSubmission) and again.args == task.args


def test_cpu_workers_get_a_share_of_the_cores():
    assert sweep.cpu_threads(1, cores=2) == 2
    assert sweep.cpu_threads(2, cores=2) == 1
    assert sweep.cpu_threads(3, cores=16) == 5
    assert sweep.cpu_threads(4, cores=2) == 1  # never none


def test_the_study_on_n_gpus_is_its_runs_taken_in_order_by_n_workers(tmp_path):
    assert sweep.wall_seconds([3, 1, 1, 1], 1) == 6
    assert sweep.wall_seconds([3, 1, 1, 1], 2) == 3  # one worker on the long run, the other on the rest
    assert sweep.wall_seconds([2, 2, 2], 2) == 4
    assert sweep.wall_seconds([], 8) == 0
    plan = sweep.plan_runs(_profile(tmp_path / "runs"), report.select_notebooks(report.discover_notebooks(), "01"))
    seconds = {r.config.fingerprint(): 600.0 for r in plan.runs[:-1]}  # the last run was not probed
    one, eight = sweep.study_estimates(plan, seconds, [1, 8], "cuda")
    n = len(plan.runs) - 1
    assert f"on 1 x cuda, one run each: about {10 * n} min for {n} runs (1 more without an estimate)" in one
    assert f"on 8 x cuda, one run each: about 10 min for {n} runs" in eight


def test_status_shows_a_running_run_with_its_epoch_and_time_left(tmp_path, monkeypatch):
    from cxrlib import claims, progress

    profile = _profile(tmp_path / "runs", **{"notebooks.01_baselines.MODELS": "[resnet18]",
                                             "notebooks.01_baselines.FIFTEEN_LABELS": "false"})
    plan = sweep.write_plan(sweep.plan_runs(profile, report.select_notebooks(report.discover_notebooks(), "01")))
    running, dead = plan.runs
    events = sweep.events_path(plan, running)
    events.parent.mkdir(parents=True)
    monkeypatch.setenv(progress.ENV, str(events))
    progress.emit("start", "baseline", total=3, done=0)
    progress.emit("epoch", "baseline", epoch=1, epochs=3, done=1, total=3, ran=1, seconds=20.0)
    claim = claims.try_claim(running.folder)  # this process is the worker
    dead.folder.mkdir(parents=True)
    (dead.folder / ".claim.000001").write_text(json.dumps(  # a worker that died mid-run
        {"host": claims.me().host, "pid": 2**22 + 12345, "job_id": "", "token": "x", "since": 0.0}))  # above Linux pid_max
    runs.save_last(dead.folder, {"state": {}})
    try:
        rows = sweep.status(tmp_path / "runs")
    finally:
        claim.release()
    assert rows[0]["state"] == sweep.RUNNING
    assert rows[0]["detail"].startswith("epoch 1/3, 20 s, about 40 s left (") and str(os.getpid()) in rows[0]["detail"]
    assert rows[1]["state"] == sweep.QUEUED and "its worker stopped" in rows[1]["detail"]
