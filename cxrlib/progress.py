"""Training progress as JSON lines, for a watcher in another process.

A report runs each notebook in a kernel of its own, whose output it sees only when the
notebook ends. So the runner names a file in the ``CXRLIB_PROGRESS`` environment variable
(kernels inherit it); :func:`emit`, called by training, appends one JSON line per event to
that file (and does nothing when the variable is unset); :class:`Watcher` tails the file in
a thread and prints each event as a line::

    baseline: training, 3 epochs
    baseline: epoch 1/3, 17 s, about 34 s left
    two_stage: epoch 1/2 [local, stage 2/3], 41 s, about 1 min 10 s left
    baseline: done, test mean AUROC 0.712
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

ENV = "CXRLIB_PROGRESS"


def emit(event: str, run: str, **fields: Any) -> None:
    """Append ``{"event", "run", "time", **fields}`` to the progress file, if one is named."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"event": event, "run": run, "time": time.time(), **fields}, default=str) + "\n"
    # one short write in append mode: a reader sees whole lines or nothing of this one
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


def describe(event: dict[str, Any]) -> str | None:
    """One event as a line of text (None for an event kind it does not know)."""
    run, kind = event.get("run", "?"), event.get("event")
    if kind == "start":
        stages = event.get("stages") or []
        where = f", stages {' -> '.join(stages)}" if stages else ""
        resumed = f", resuming after epoch {event['done']}" if event.get("done") else ""
        return f"{run}: training, {event.get('total')} epochs{where}{resumed}"
    if kind == "epoch":
        stage = ""
        if event.get("stage"):
            stage = f" [{event['stage']}, stage {event.get('stage_index', 0) + 1}/{event.get('n_stages')}]"
        # time per epoch so far, times the epochs the plan still holds (early stopping and
        # max_steps can only make it shorter)
        seconds, ran = float(event.get("seconds", 0.0)), int(event.get("ran", 0))
        done, total = int(event.get("done", 0)), int(event.get("total", 0))
        left = seconds / ran * (total - done) if ran else float("nan")
        left_text = "finishing" if done >= total else f"about {_duration(left)} left"
        return (f"{run}: epoch {event.get('epoch')}/{event.get('epochs')}{stage}, {_duration(seconds)}, "
                f"{left_text}")
    if kind == "reused":
        return f"{run}: finished earlier with the same config, reused"
    if kind == "finished":
        auroc = event.get("mean_auroc")
        text = "n/a" if auroc is None else f"{float(auroc):.3f}"
        return f"{run}: done, test mean AUROC {text}"
    return None


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan: nothing to estimate from yet
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Watcher:
    """Tail a progress file in a thread, passing each event's line to ``echo``.

    Use as a context manager around the work that writes the file; leaving it prints what
    is left. A partly written last line waits for its end.
    """

    def __init__(self, path: str | Path, echo: Callable[[str], None], prefix: str = "    ", interval: float = 0.5):
        self.path, self.echo, self.prefix, self.interval = Path(path), echo, prefix, interval
        self._offset, self._partial = 0, b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cxrlib-progress", daemon=True)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._drain()

    def _drain(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                text = describe(json.loads(line.decode("utf-8")))
            except (ValueError, TypeError, AttributeError, KeyError):
                continue  # not ours, or damaged: progress must never stop a report
            if text:
                self.echo(self.prefix + text)
