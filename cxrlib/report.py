"""The report runner: every numbered notebook through papermill, HTML through nbconvert.

``python -m cxrlib report`` re-runs the study headlessly. Each notebook in ``notebooks/``
whose name starts with two digits (``00_data_exploration.ipynb`` ...) runs in order with the
profile's parameters into ``reports/executed/``, is exported to ``reports/<stem>.html``, and
then ``reports/index.html`` is written by :mod:`cxrlib.report_index` (the forest plot, the
conclusions in words, the results table and the notebooks' links).

Why a separate process per notebook (papermill's kernel) rather than ``exec``: the executed
notebook with its outputs *is* the report, and a notebook that crashes or leaks memory takes
only itself down; the runner goes on with the next one and says at the end what failed.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from cxrlib import preflight, profiles, progress
from cxrlib.experiments import REDO_SINCE_ENV
from cxrlib.fileio import atomic_write_text
from cxrlib.models import weights
from cxrlib.profiles import Profile
from cxrlib.report_index import fmt_seconds, write_index
from cxrlib.project import NOTEBOOKS_DIR

# The check before the first notebook probes each model's speed for at most this long.
CHECK_PROBE_BUDGET_S = 15.0
NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[A-Za-z0-9_\-]+\.ipynb$")
KERNEL_NAME = "cxrlib-python"


@dataclass
class NotebookResult:
    """What happened to one notebook: ``ok`` or ``failed``, where its outputs are."""

    stem: str
    status: str
    seconds: float
    executed: Path
    html: Path | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class ReportResult:
    profile: str
    out_dir: Path
    runs_dir: Path
    index: Path | None
    notebooks: list[NotebookResult] = field(default_factory=list)
    seconds: float = 0.0
    all_stems: list[str] = field(default_factory=list)  # every numbered notebook, run or not
    blocked: list = field(default_factory=list)  # the check's problems that stopped the report before it ran

    @property
    def failed(self) -> list[NotebookResult]:
        return [r for r in self.notebooks if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


# ----------------------------------------------------------------------------- discovery


def summarises(path: Path) -> bool:
    """Whether a notebook declares itself a summary of the others (``metadata.cxrlib.summary``):
    it runs after every other notebook of a report, whatever its number, so it can show what
    the lessons after it measured."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the notebook {path}: {err}") from err
    return bool((meta.get("cxrlib") or {}).get("summary", False))


def run_order(notebooks: Sequence[Path]) -> list[Path]:
    """By number, the summary notebooks (:func:`summarises`) last."""
    return sorted(notebooks, key=lambda p: (summarises(p), p.name))


def discover_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) of a folder, in the order they run."""
    folder = Path(notebooks_dir) if notebooks_dir else NOTEBOOKS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"notebooks folder {folder} does not exist; pass --notebooks-dir")
    found = run_order([p for p in folder.iterdir() if NOTEBOOK_PATTERN.match(p.name)])
    if not found:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) in {folder}")
    return found


def select_notebooks(notebooks: Sequence[Path], only: str | Sequence[str] | None) -> list[Path]:
    """Keep the notebooks named by ``only``: numbers (``02``, ``2``) or stems, comma-separated."""
    if not only:
        return list(notebooks)
    wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only) if w.strip()]
    chosen: list[Path] = []
    for item in wanted:
        key = item[:-6] if item.endswith(".ipynb") else item
        matches = [
            p for p in notebooks
            if p.stem == key or (key.isdigit() and int(p.name[:2]) == int(key))
        ]
        if not matches:
            names = ", ".join(p.stem for p in notebooks)
            raise ValueError(f"--only {item!r} matches no notebook; available: {names}")
        chosen.extend(m for m in matches if m not in chosen)
    return run_order(chosen)


# ----------------------------------------------------------------------------- kernel


def kernel_dir(root: str | Path) -> Path:
    """Write a kernelspec that runs *this* interpreter, under ``root``; return the data dir.

    A ``python3`` kernelspec found on the machine may belong to another Python (a user-wide
    Jupyter, a system interpreter) where cxrlib is not installed, or is another version. A
    private spec whose argv is ``sys.executable`` removes that doubt.
    """
    data_dir = Path(root)
    spec_dir = data_dir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"cxrlib ({sys.executable})",
        "language": "python",
        "metadata": {"debugger": False, "supported_encryption": ["curve"]},
    }
    atomic_write_text(json.dumps(spec, indent=1), spec_dir / "kernel.json")
    return data_dir


@contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` while inside (None: unchanged); kernels started inside inherit it."""
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _private_kernel(root: Path):
    data_dir = kernel_dir(root)
    old = os.environ.get("JUPYTER_PATH")
    return _environment("JUPYTER_PATH", os.pathsep.join([str(data_dir.resolve())] + ([old] if old else [])))


def _redo_since(redo: bool):
    """Under --redo, tell the kernels when this report started: a run retrained after that is
    reused, so the baseline every notebook shares trains once, not once per notebook."""
    return _environment(REDO_SINCE_ENV, repr(time.time()) if redo else None)


@contextmanager
def _watch_progress(path: Path, echo: Callable[[str], None]) -> Iterator[None]:
    """The kernels started inside report their training to ``path``; its lines reach ``echo``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with _environment(progress.ENV, str(path)), progress.Watcher(path, echo):
        yield


def kernel_manager_class():
    """A kernel manager that gives each kernel CurveZMQ keys, or None where libzmq has no Curve.

    Kernels talk to the runner over TCP on localhost; without keys ipykernel warns, for every
    notebook, that the traffic is unencrypted. Our kernelspec declares Curve support, so with
    ``transport_encryption = "auto"`` jupyter_client provisions the keys: the sockets are
    encrypted and there is nothing to warn about.
    """
    import zmq
    from jupyter_client import AsyncKernelManager  # nbclient's default manager
    from traitlets import default

    if not zmq.has("curve"):
        return None

    class CurveKernelManager(AsyncKernelManager):
        @default("transport_encryption")
        def _transport_encryption_default(self) -> str:
            return "auto"

    return CurveKernelManager


# ----------------------------------------------------------------------------- execution


def execute_notebook(
    notebook: Path,
    executed: Path,
    parameters: dict[str, Any],
    *,
    kernel_name: str,
    cwd: Path,
    timeout: float | None = None,
    log_output: bool = False,
) -> str | None:
    """Run one notebook with papermill; return None on success, else a one-line error.

    papermill writes the output notebook after every cell, so a failure leaves the
    partial notebook (with the failing cell marked) at ``executed``.
    """
    import papermill as pm

    executed.parent.mkdir(parents=True, exist_ok=True)
    manager = kernel_manager_class()
    try:
        pm.execute_notebook(
            str(notebook),
            str(executed),
            parameters=parameters,
            kernel_name=kernel_name,
            language="python",  # notebooks written without kernel metadata still run
            cwd=str(cwd),
            progress_bar=False,
            log_output=log_output,
            execution_timeout=timeout,
            request_save_on_cell_execute=True,
            **({"kernel_manager_class": manager} if manager is not None else {}),
        )
    except Exception as err:  # a notebook error must not stop the others
        if err.__class__.__name__ == "PapermillExecutionError":
            ename = getattr(err, "ename", type(err).__name__)
            evalue = str(getattr(err, "evalue", "")).strip().splitlines()
            cell = getattr(err, "exec_count", None)
            where = f" in cell [{cell}]" if cell else ""
            return f"{ename}{where}: {evalue[0] if evalue else ''}"
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return None


def export_html(executed: Path, html_path: Path) -> Path:
    """The executed notebook as a self-contained HTML page (figures are inline PNGs)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    # With saved widget state, the page would render widgets through JavaScript fetched from
    # a CDN, which shows nothing offline. Without it each widget falls back to the static
    # picture it also provides (the demo's chart and heatmap, a progress bar's text).
    nb.metadata.pop("widgets", None)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    atomic_write_text(body, html_path)
    return html_path


def _print(message: str) -> None:
    print(message, flush=True)  # progress lines must reach a pipe (| tee) as they happen


def run_report(
    profile: Profile | str | Path = "cpu",
    *,
    only: str | Sequence[str] | None = None,
    redo: bool = False,
    out_dir: str | Path = "reports",
    runs_dir: str | Path | None = None,
    notebooks_dir: str | Path | None = None,
    timeout: float | None = None,
    log_output: bool = False,
    check: bool = True,
    echo: Callable[[str], None] | None = _print,
) -> ReportResult:
    """Execute the notebooks, export HTML, write ``index.html``; never stop at a failure.

    ``profile`` is a resolved :class:`~cxrlib.profiles.Profile` (or a profile name, resolved
    with no changes); ``runs_dir`` moves its runs. ``only`` selects notebooks by number or
    stem. Runs are reused by the notebooks when their config is unchanged unless ``redo``.
    With ``check``, :func:`cxrlib.preflight.check_profile` runs first and prints its table:
    a problem (missing data, weights, device, disk) stops the report before any notebook
    (``result.blocked``), warnings do not.
    """
    say = echo or (lambda _msg: None)
    t_start = time.perf_counter()
    if not isinstance(profile, Profile):
        profile = profiles.load(profile)  # fails early, naming the profile
    # absolute: the kernels may start elsewhere, and must write where this report reads
    profile = profile.with_runs_dir(Path(runs_dir or profile.runs_dir).resolve())
    available = discover_notebooks(notebooks_dir)
    chosen = select_notebooks(available, only)
    out = Path(out_dir).resolve()
    executed_dir = out / "executed"
    runs = profile.runs_dir
    runs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()

    say(f"report: profile {profile.name} ({profile.path or 'built-in defaults'}), {len(chosen)} notebook(s), "
        f"runs in {runs}, output in {out}")
    if check:
        findings = preflight.check_profile(profile, chosen, budget_s=CHECK_PROBE_BUDGET_S)
        say(preflight.format_table(findings))
        blocked = preflight.problems(findings)
        if blocked:
            say(f"report: stopped before the first notebook: {len(blocked)} problem(s) above")
            return ReportResult(profile.name, out, runs, None, [], time.perf_counter() - t_start,
                                [p.stem for p in available], blocked)
    results: list[NotebookResult] = []
    # Found offline once here: the kernels are told, instead of each asking the hub again.
    offline = "1" if weights.known_offline() else None
    with _private_kernel(out / ".jupyter"), _redo_since(redo), _environment("HF_HUB_OFFLINE", offline):
        for i, nb_path in enumerate(chosen, 1):
            stem = nb_path.stem
            params = profile.notebook_parameters(stem, redo=redo)
            executed = executed_dir / nb_path.name
            say(f"[{i}/{len(chosen)}] {stem} ...")
            t0 = time.perf_counter()
            with _watch_progress(out / ".progress" / f"{stem}.jsonl", say):
                error = execute_notebook(
                    nb_path, executed, params, kernel_name=KERNEL_NAME, cwd=cwd, timeout=timeout,
                    log_output=log_output,
                )
            seconds = time.perf_counter() - t0
            html_path: Path | None = None
            if executed.exists():
                try:
                    html_path = export_html(executed, out / f"{stem}.html")
                except Exception as err:  # an export failure is reported, not fatal
                    error = error or f"HTML export failed: {type(err).__name__}: {err}"
            result = NotebookResult(stem, "ok" if error is None else "failed", seconds, executed, html_path, error)
            results.append(result)
            status = "ok" if result.ok else f"FAILED ({error})"
            say(f"[{i}/{len(chosen)}] {stem} {status} in {fmt_seconds(seconds)}")

    report = ReportResult(profile.name, out, runs, None, results, time.perf_counter() - t_start,
                          [p.stem for p in available])
    try:
        report.index = write_index(report, profile)
    except Exception:  # the index must not hide the notebooks' own outcome
        say("could not write index.html:\n" + traceback.format_exc())
    report.seconds = time.perf_counter() - t_start
    say(f"report: {len(results) - len(report.failed)}/{len(results)} notebook(s) ok in "
        f"{fmt_seconds(report.seconds)}; index: {report.index}")
    for r in report.failed:
        say(f"FAILED {r.stem}: {r.error}\n    partial output: {r.executed}"
            + (f" (HTML: {r.html})" if r.html else ""))
    return report
