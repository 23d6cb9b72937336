"""bench/_header.py: every benchmark result starts with the same command, date, machine and load lines."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _header():
    spec = importlib.util.spec_from_file_location("_header", BENCH / "_header.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_header_names_command_date_machine_and_load():
    header = _header()
    cpus = os.cpu_count() or 1
    lines = header.header_lines("python bench/x.py --quick", note="runs y", load=0.0, extra="device cpu")
    assert lines[0] == "- command: `python bench/x.py --quick` (from the repository root; runs y)"
    assert lines[1].startswith("- date: 20")
    assert lines[2].startswith("- machine: ") and f"{cpus} CPUs" in lines[2] and lines[2].endswith(", device cpu")
    assert "torch " in lines[2] and "Python " in lines[2] and "GPU " in lines[2]
    assert lines[3] == f"- load average: 0.0 on {cpus} CPUs (quiet: below half the CPU count)"
    busy = header.header_lines("python bench/x.py", load=cpus + 1.0)[3]
    assert "**a busy machine**" in busy and "upper bounds" in busy
    assert header.load_line(None) == "load average: not reported by this system"


def test_every_benchmark_writes_the_shared_header():
    """One owner of the machine line: no script describes the machine itself. Not measurements:
    gpu_check records its environment as data, field by field, for its own report (and
    gpu_check_ddp, a part of gpu_check, records its environment as data for gpu_check's record),
    step_ops prints operator counts, which do not depend on the machine, and screenshot_report
    takes pictures."""
    others = ("_header.py", "gpu_check.py", "gpu_check_ddp.py", "step_ops.py", "screenshot_report.py")
    scripts = sorted(p for p in BENCH.glob("*.py") if p.name not in others)
    assert len(scripts) >= 10
    for path in scripts:
        source = path.read_text()
        assert "from _header import" in source and "header_lines(" in source, path.name
        assert "platform." not in source and "cpu_count()" not in source, path.name
