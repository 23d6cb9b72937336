"""Start-up: the wall time of ``cxrlib check`` and what a notebook kernel spends importing cxrlib.

    python bench/startup.py                       # this checkout, 5 times each
    python bench/startup.py --against 7bc6bf5     # and a git revision, alternately, for a fair comparison

The check is ``python -m cxrlib check --profile full --data-dir ../shared/data/chestxray14-sample``
(its mark: 10 s on two cores); the notebook import is what the numbered notebooks' first
code cell imports. Each is timed ``--repeat`` times as a new process; the table gives the
fastest (other processes only ever add time) and the median, and ``python -X importtime``
names the modules that cost most. With ``--against`` the revision is unpacked with
``git archive`` into a temporary folder and both are timed in turn, so a change in the
machine's load affects both alike. Writes ``bench/results/startup.md`` under the shared header
(bench/_header.py); a 1-minute load average above half the core count before the run is
written beside the numbers, which then are not a quiet machine's.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cxrlib.fileio import atomic_write_text
from _header import header_lines, is_busy  # bench/_header.py: the machine line every result starts with

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO.parent / "shared" / "data" / "chestxray14-sample"
NOTEBOOK_IMPORTS = "import cxrlib; from cxrlib import experiments, profiles, references, plots"


def _commands() -> dict[str, list[str]]:
    return {
        "check": [sys.executable, "-m", "cxrlib", "check", "--profile", "full", "--data-dir", str(SAMPLE)],
        "notebook imports": [sys.executable, "-c", NOTEBOOK_IMPORTS],
    }


def _time(command: list[str], tree: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # the check exits 1 for the sample's problems (no GPU, weights)
        raise RuntimeError(f"{' '.join(command)} failed in {tree}:\n{proc.stderr[-2000:]}")
    return wall


def _heaviest(command: list[str], tree: Path, n: int = 8) -> list[tuple[str, float]]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([command[0], "-X", "importtime", *command[1:]], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=600)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        try:
            rows.append((name.rstrip(), int(cumulative) / 1e6))
        except ValueError:
            continue
    top: dict[str, float] = {}
    for name, s in rows:
        if len(name) - len(name.lstrip()) <= 3:  # imported by the program or by a top-level import
            top[name.strip()] = max(s, top.get(name.strip(), 0.0))
    return sorted(top.items(), key=lambda r: -r[1])[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--against", default=None, help="a git revision to time alternately with this checkout")
    parser.add_argument("--results", default=str(REPO / "bench" / "results" / "startup.md"))
    args = parser.parse_args(argv)

    trees = {"this checkout": REPO}
    tmp = None
    if args.against:
        tmp = tempfile.TemporaryDirectory(prefix="cxrlib-startup-")
        archive = subprocess.run(["git", "archive", args.against], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp.name], input=archive, check=True)
        trees[f"revision {args.against}"] = Path(tmp.name)
    before = os.getloadavg()  # other work on the machine: read before the timed commands add their own
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):  # alternately, so load changes hit every tree alike
        for label, tree in trees.items():
            for what, command in _commands().items():
                times.setdefault((label, what), []).append(_time(command, tree))
    heaviest = {what: _heaviest(command, REPO) for what, command in _commands().items()}
    load = os.getloadavg()
    busy = is_busy(before[0])
    lines = [
        "# Start-up: `cxrlib check` and a notebook kernel's imports",
        "",
        *header_lines(' '.join(['python bench/startup.py', *(argv if argv is not None else sys.argv[1:])]),
                      load=before[0], note="load read before the timed commands"),
        f"- load averages at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min, "
        "the timed commands' own included)"
        + (" - **a busy machine: these are not a quiet machine's times; rerun on a quiet one for the 10 s mark**"
           if busy else ""),
        f"- check: `python -m cxrlib check --profile full --data-dir {SAMPLE.relative_to(REPO.parent)}` "
        "(mark: 10 s wall on two cores)",
        f"- notebook imports: `python -c \"{NOTEBOOK_IMPORTS}\"`",
        "",
        "| code | what | fastest | median | runs |",
        "|---|---|---|---|---|",
    ]
    for (label, what), ts in times.items():
        lines.append(f"| {label} | {what} | {min(ts):.1f} s | {statistics.median(ts):.1f} s | {len(ts)} |")
    for what, rows in heaviest.items():
        lines += ["", f"Heaviest top-level imports of the {what} (this checkout, `python -X importtime`, "
                      "cumulative seconds, one run):", ""]
        lines += [f"- `{name}`: {s:.2f} s" for name, s in rows]
    atomic_write_text("\n".join(lines) + "\n", args.results)
    print("\n".join(lines))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
