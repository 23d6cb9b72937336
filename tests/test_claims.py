"""Run claims: one holder at a time, released by a dead holder, taken over exactly once."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from dataclasses import asdict

from cxrlib import claims


def _fake_claim(folder, generation: int, **holder) -> None:
    """A claim file as another worker would have left it."""
    me = claims.me()
    fields = {**asdict(me), **holder}
    (folder / f"{claims.PREFIX}{generation:06d}").write_text(json.dumps(fields))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_run_cannot_be_claimed_again(tmp_path):
    first = claims.try_claim(tmp_path / "run")
    assert first is not None and first.generation == 1
    assert claims.try_claim(tmp_path / "run") is None  # held by a live worker (this very process)
    holder, _, stale = claims.holder_of(tmp_path / "run")
    assert holder == first.holder and stale is None
    first.release()
    assert claims.holder_of(tmp_path / "run") == (None, None, None)
    again = claims.try_claim(tmp_path / "run")
    assert again is not None and again.generation == 1  # released: claimable afresh
    again.release()


def test_a_dead_holder_on_this_host_is_taken_over_by_a_new_generation(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _fake_claim(run, 1, pid=_dead_pid(), job_id="")
    _, _, stale = claims.holder_of(run)
    assert stale and "is gone" in stale
    taken = claims.try_claim(run)
    assert taken is not None and taken.generation == 2
    assert sorted(p.name for p in run.iterdir()) == [".claim.000001", ".claim.000002"]  # the dead one is kept...
    taken.release()
    assert not list(run.iterdir())  # ...until the new holder releases: then both go


def test_another_host_is_judged_by_its_heartbeat(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _fake_claim(run, 1, host="other-node", pid=1, job_id="")
    assert claims.try_claim(run) is None  # fresh heartbeat: alive, whatever its pid means here
    old = time.time() - claims.STALE_AFTER_S - 5
    os.utime(run / ".claim.000001", (old, old))
    _, _, stale = claims.holder_of(run)
    assert stale and "no heartbeat" in stale
    taken = claims.try_claim(run)
    assert taken is not None and taken.generation == 2
    taken.release()


def test_a_requeued_job_takes_back_its_own_claim(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert claims.current_job_id() == "4242_3"
    # the job's earlier incarnation ran on another node, whose heartbeat is still fresh
    _fake_claim(run, 1, host="other-node", pid=1, job_id="4242_3")
    taken = claims.try_claim(run)
    assert taken is not None and taken.generation == 2
    taken.release()
    _fake_claim(run, 1, host="other-node", pid=1, job_id="4242_4")  # another task of the array: alive
    assert claims.try_claim(run) is None


def test_a_claim_still_being_written_counts_as_held(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".claim.000001").write_text("")  # created with O_EXCL, its content not yet written
    assert claims.try_claim(run) is None


def test_a_holder_that_was_taken_over_is_told(tmp_path):
    lost = []
    mine = claims.try_claim(tmp_path / "run", on_lost=lost.append, heartbeat_s=0.05)
    assert mine is not None and mine.lost() is None
    _fake_claim(tmp_path / "run", 2, host="other-node", pid=1, job_id="")  # judged dead, taken over
    deadline = time.time() + 10
    while not lost and time.time() < deadline:
        time.sleep(0.05)
    assert lost and ".claim.000002 took the run over" in lost[0]
    mine.release()  # leaves the new holder's claim alone
    assert (tmp_path / "run" / ".claim.000002").is_file()


def _race(folder: str, start: float, queue) -> None:
    while time.time() < start:
        pass
    claim = claims.try_claim(folder)
    queue.put(claim is not None)
    time.sleep(1.0)  # hold it while the others try


def _race_six(run_dir) -> list:
    """Six processes that each try to claim ``run_dir`` at the same moment: who won."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    start = time.time() + 1.0
    procs = [ctx.Process(target=_race, args=(str(run_dir), start, queue)) for _ in range(6)]
    for p in procs:
        p.start()
    won = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return won


def test_of_many_racing_processes_exactly_one_wins(tmp_path):
    assert sum(_race_six(tmp_path / "run")) == 1


def test_of_many_processes_taking_over_a_dead_claim_exactly_one_wins(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _fake_claim(run, 1, pid=_dead_pid(), job_id="")
    assert sum(_race_six(run)) == 1
