"""Run claims: which worker trains a run, decided in the run folder itself, on any file system.

Workers of a sweep (processes on one machine, or Slurm jobs on many nodes sharing the runs
folder over NFS) must never train the same run at once, and a run whose worker died must not
stay taken. ``flock`` does neither across nodes, so a claim is a small JSON file created with
``O_CREAT | O_EXCL`` (atomic on local disks and on NFS v3 and later) beside the run's files:

    <run folder>/.claim.000001   {"host", "pid", "job_id", "token", "since"}

The holder touches it every :data:`HEARTBEAT_S` seconds (:class:`Claim` does it in a thread).
A claim is **stale** when its holder is known dead: same host and its pid gone; the same
scheduler job id as the asker's (a requeued job taking over from its own killed self); or,
from any other node, a heartbeat older than :data:`STALE_AFTER_S`. A stale claim is never
deleted by the one who takes over: it creates the next generation (``.claim.000002``) with
``O_EXCL``, so of several workers that all judged it stale exactly one wins. The newest
generation is the claim; a holder that finds a newer one has lost its run and is told so
(``on_lost``), so that two workers never write the same run folder.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

PREFIX = ".claim."
_NAME = re.compile(r"^\.claim\.(\d{6})$")
HEARTBEAT_S = 30.0
# Across nodes only the heartbeat tells a dead holder; ten missed beats allow for NFS attribute
# caching and clock skew between nodes without leaving a dead worker's run taken for long.
STALE_AFTER_S = 300.0
# Variables that name the scheduler job a process runs in (Slurm array task, Slurm job,
# submitit's local job), so a requeued job recognises the claim of its own earlier run.
_JOB_ENV = (("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"), ("SLURM_JOB_ID",), ("SUBMITIT_LOCAL_JOB_ID",))


@dataclass(frozen=True)
class Holder:
    """Who holds a claim."""

    host: str
    pid: int
    job_id: str
    token: str  # unique per claim: tells this claim from an earlier one of the same process
    since: float  # when it was claimed (seconds since the epoch)


def current_job_id() -> str:
    """The scheduler job this process runs in (``1234_7`` for a Slurm array task), or ''."""
    for names in _JOB_ENV:
        values = [os.environ.get(n, "") for n in names]
        if all(values):
            return "_".join(values)
    return ""


def me() -> Holder:
    """This process as a claim's holder (a fresh token each call)."""
    return Holder(socket.gethostname(), os.getpid(), current_job_id(), uuid.uuid4().hex, time.time())


def _generations(folder: Path) -> list[tuple[int, Path]]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), folder / n) for n in names if (m := _NAME.match(n))]
    return sorted(found)


def _path(folder: Path, generation: int) -> Path:
    return folder / f"{PREFIX}{generation:06d}"


def _read(path: Path) -> tuple[Holder | None, float | None]:
    """(holder, heartbeat time) of a claim file; (None, mtime) while it is being written,
    (None, None) when it is gone."""
    try:
        mtime = path.stat().st_mtime
        holder = Holder(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None, None
    except (ValueError, TypeError):  # created, not yet written (or damaged): judged by its age alone
        try:
            return None, path.stat().st_mtime
        except FileNotFoundError:
            return None, None
    return holder, mtime


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_reason(holder: Holder | None, heartbeat: float, asker: Holder | None = None,
                 now: float | None = None, stale_after: float = STALE_AFTER_S) -> str | None:
    """Why a claim is stale (its holder is dead), or None while it may be alive."""
    asker = asker or me()
    now = time.time() if now is None else now
    age = now - heartbeat
    if age > stale_after:
        return f"no heartbeat for {age:.0f} s"
    if holder is None:
        return None  # still being written
    if holder.host == asker.host and holder.pid != asker.pid and not _pid_alive(holder.pid):
        return f"process {holder.pid} on {holder.host} is gone"
    if holder.job_id and holder.job_id == asker.job_id and (holder.host, holder.pid) != (asker.host, asker.pid):
        return f"job {holder.job_id} was restarted"
    return None


def holder_of(folder: str | Path, stale_after: float = STALE_AFTER_S) -> tuple[Holder | None, float | None, str | None]:
    """The newest claim in ``folder``: (holder, heartbeat time, why it is stale or None);
    (None, None, None) when the run is not claimed."""
    gens = _generations(Path(folder))
    if not gens:
        return None, None, None
    holder, heartbeat = _read(gens[-1][1])
    if heartbeat is None:  # released while we looked
        return holder_of(folder, stale_after) if _generations(Path(folder)) != gens else (None, None, None)
    return holder, heartbeat, stale_reason(holder, heartbeat, stale_after=stale_after)


class Claim:
    """A claim held by this process: heartbeat in a thread, released by :meth:`release` (or
    leaving the ``with`` block). ``on_lost(reason)`` is called from the heartbeat thread when
    another worker took the run over (this process was judged dead)."""

    def __init__(self, folder: Path, generation: int, holder: Holder, on_lost: Callable[[str], None] | None,
                 heartbeat_s: float):
        self.folder, self.generation, self.holder = folder, generation, holder
        self.path = _path(folder, generation)
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), name="cxrlib-claim", daemon=True)
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            lost = self.lost()
            if lost:
                if self._on_lost is not None:
                    self._on_lost(lost)
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass  # lost() says so at the next beat

    def lost(self) -> str | None:
        """Why this claim no longer holds the run, or None while it does."""
        gens = _generations(self.folder)
        if not self.path.exists():
            return f"{self.path} was removed"
        if gens and gens[-1][0] > self.generation:
            return f"{gens[-1][1].name} took the run over"
        return None

    def release(self) -> None:
        """Stop the heartbeat and remove this claim with the stale ones it superseded."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        if self.lost():
            return  # a newer claim holds the run: its files are not ours to remove
        for gen, path in _generations(self.folder):
            if gen <= self.generation:
                path.unlink(missing_ok=True)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(folder: str | Path, on_lost: Callable[[str], None] | None = None, heartbeat_s: float = HEARTBEAT_S,
              stale_after: float = STALE_AFTER_S) -> Claim | None:
    """Claim the run in ``folder`` for this process, or None when a live worker holds it.

    Creates ``folder`` if needed. The caller must look again, under the claim, whether the
    run is still to be done: another worker may have finished it just before.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # each retry follows another worker's move: a new claim or a release
        gens = _generations(folder)
        generation = 1
        if gens:
            holder, heartbeat = _read(gens[-1][1])
            if heartbeat is None:
                continue  # released while we looked
            if stale_reason(holder, heartbeat, stale_after=stale_after) is None:
                return None
            generation = gens[-1][0] + 1
        mine = me()
        try:
            fd = os.open(_path(folder, generation), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue  # another worker won this generation: look at what it holds
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(asdict(mine)))
            f.flush()
            os.fsync(f.fileno())
        return Claim(folder, generation, mine, on_lost, heartbeat_s)
    return None
