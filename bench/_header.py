"""The header of every benchmark result: the command that reruns it, when, and on what machine.

A time means nothing without the machine it was measured on, and a time measured while
other work shared the CPUs is an upper bound, not the machine's speed. Every script in
``bench/`` writes these same lines (:func:`header_lines`) at the top of its results file, so
each result says how to rerun it and whether the machine was quiet::

    from _header import header_lines   # bench/ is on the path of a script run from it
    lines = ["# Title", "", *header_lines("python bench/bench_x.py --quick"), "", ...]

The load average is read when the header is written (usually at the end of the run) unless
the script passes the one it read earlier (:func:`load_average`).
"""
from __future__ import annotations

import datetime as dt
import os
import platform

import torch

# Above this share of the CPU count the 1-minute load average says other work shared the machine.
BUSY_SHARE = 0.5


def load_average() -> float | None:
    """The 1-minute load average; None where the system does not report one."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def is_busy(load: float | None) -> bool:
    return load is not None and load > BUSY_SHARE * (os.cpu_count() or 1)


def machine() -> str:
    """The machine in one line: processor, CPU count, GPU, torch and its threads, Python."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{platform.processor() or platform.machine()} ({platform.system()}), {os.cpu_count()} CPUs, "
            f"GPU {gpu}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}")


def load_line(load: float | None) -> str:
    """The load average, and what it means for the times beside it."""
    if load is None:
        return "load average: not reported by this system"
    cpus = os.cpu_count() or 1
    if is_busy(load):
        return (f"load average: {load:.1f} on {cpus} CPUs: **a busy machine**, other work shared the CPUs, so "
                "the times are upper bounds; rerun on a quiet machine for times to quote")
    return f"load average: {load:.1f} on {cpus} CPUs (quiet: below half the CPU count)"


def header_lines(command: str, *, note: str = "", load: float | None = None, extra: str = "") -> list[str]:
    """Markdown bullet lines: the command (run from the repository root; ``note`` says more
    about it), the date, the machine (``extra`` appended to it) and the load average
    (``load``, else read now)."""
    load = load_average() if load is None else load
    return [
        f"- command: `{command.strip()}` (from the repository root{'; ' + note if note else ''})",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {machine()}" + (f", {extra}" if extra else ""),
        f"- {load_line(load)}",
    ]

