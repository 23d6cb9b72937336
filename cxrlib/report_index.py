"""The report's front page, ``reports/index.html``: the forest plot of every run against the
baseline and the controls, the conclusions in words (:mod:`cxrlib.conclusions`), the results
table, what the profile leaves to the full profile, notebook 12's strata, the localization
summaries, the notebooks with their status and time, and the published figures with their
splits. The runner (:mod:`cxrlib.report`) calls :func:`write_index` once the notebooks ran.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd

from cxrlib import plots, references, runs
from cxrlib.conclusions import conclusions, strata_words
from cxrlib.fileio import atomic_write_text
from cxrlib.profiles import Profile
from cxrlib.results import format_results, results_table

if TYPE_CHECKING:  # the runner imports this module, not the other way round
    from cxrlib.report import ReportResult


# ----------------------------------------------------------------------------- localization


def localization_summaries(runs_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The localization summaries (:func:`cxrlib.runs.read_localization`) of the runs in
    ``runs_dir``, by run name: the first seed of each experiment that has one."""
    out = {}
    for name, dirs in runs.experiment_runs(runs_dir).items():
        for d in dirs:
            table = runs.read_localization(d)
            if table is not None:
                out[name] = table
                break
    return out


# ----------------------------------------------------------------------------- index page


def write_index(report: ReportResult, profile: Profile) -> Path:
    """``index.html``: the forest plot of every run, the conclusions in words, the results
    table, the models this profile leaves to the full profile, the localization summaries
    (when runs have them), the notebooks with status and time, and the references."""
    n_boot = profile.baseline.train.n_bootstrap
    rows = []
    ran = {r.stem: r for r in report.notebooks}
    # Notebooks not run this time (--only) keep their line, linking to an earlier page if any.
    earlier = [s for s in report.all_stems if s not in ran and (report.out_dir / f"{s}.html").is_file()]
    for stem in sorted(set(ran) | set(earlier)):
        r = ran.get(stem)
        page = report.out_dir / f"{stem}.html"
        link = f'<a href="{html.escape(page.name)}">{html.escape(stem)}</a>' if page.is_file() else html.escape(stem)
        executed_path = report.out_dir / "executed" / f"{stem}.ipynb"
        executed = f'<a href="executed/{html.escape(executed_path.name)}">ipynb</a>' if executed_path.is_file() else ""
        if r is None:
            status, seconds = '<span class="note">not run this time (earlier output)</span>', ""
        else:
            status = "ok" if r.ok else f'<span class="fail">failed: {html.escape(r.error or "")}</span>'
            seconds = fmt_seconds(r.seconds)
        rows.append(f"<tr><td>{link}</td><td>{status}</td><td>{seconds}</td><td>{executed}</td></tr>")
    notebooks_html = (
        "<table><thead><tr><th>notebook</th><th>status</th><th>time</th><th>executed</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    figure_html = words_html = ""
    try:
        table = results_table(report.runs_dir, n_bootstrap=n_boot, leave_out=list(profile.full_profile_only))
        results_html = _results_html(table) if len(table) else "<p>No finished runs yet.</p>"
    except Exception as err:
        table = None
        results_html = f'<p class="fail">Results table unavailable: {html.escape(f"{type(err).__name__}: {err}")}</p>'
    if table is not None and len(table):
        figure_html = _section("forest plot", lambda: _figure_html(plots.forest_plot(table)))
        words_html = _section("conclusions", lambda: conclusions(table).html())
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    machine = f"{platform.node()} · {os.cpu_count()} CPU · Python {platform.python_version()}"
    page = _INDEX_TEMPLATE.format(
        profile=html.escape(profile.name),
        stamp=stamp,
        machine=html.escape(machine),
        total=fmt_seconds(report.seconds),
        runs=html.escape(str(report.runs_dir)),
        figure=figure_html,
        conclusions=words_html or "<p>No finished runs yet.</p>",
        notebooks=notebooks_html,
        results=results_html,
        skipped=_skipped_html(profile),
        localization=_section("localization section", lambda: _localization_html(report.runs_dir)),
        strata=_section("hidden stratification section", lambda: _strata_html(report.runs_dir)),
        study=references.study_table().to_html(index=False, na_rep="", border=0, float_format=lambda v: f"{v:.4f}"),
        published=references.published_table().to_html(index=False, na_rep="", border=0,
                                                        float_format=lambda v: f"{v:.3f}"),
    )
    index = report.out_dir / "index.html"
    atomic_write_text(page, index)
    return index


def _section(what: str, make: Callable[[], str]) -> str:
    """One part of the index; a part that fails says so in its place and spoils nothing else."""
    try:
        return make()
    except Exception as err:
        return f'<p class="fail">The {what} is unavailable: {html.escape(f"{type(err).__name__}: {err}")}</p>'


def _figure_html(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<img class="figure" alt="forest plot of every run against the baseline" '
            f'src="data:image/png;base64,{data}">')


def _results_html(table) -> str:
    return format_results(table).to_html(index=False, na_rep="–", escape=True, border=0, classes="results")


def _skipped_html(profile: Profile) -> str:
    if not profile.full_profile_only:
        return ""
    items = "".join(f"<li><b>{html.escape(m)}</b>: {html.escape(why)}</li>"
                    for m, why in profile.full_profile_only.items())
    return (f"<h3>Full profile only</h3><p class=\"note\">Not trained by the {html.escape(profile.name)} profile, so "
            f"no result is shown for them; measured reasons:</p><ul>{items}</ul>")


def _strata_html(runs_dir: Path) -> str:
    """Every test set stratified by a confounder under ``runs_dir`` (notebook 12's drained and
    undrained pneumothoraces), in words and as its table."""
    found = runs.strata_under(runs_dir)
    if not found:
        return ""  # the lesson did not run: nothing measured, nothing said
    parts = ["<h2>Hidden stratification: one label, two strata (notebook 12)</h2>"]
    for where, table in found.items():
        notes = table.attrs.get("notes", {})
        drawn = "; ".join(f"{k}: {v}" for k, v in notes.items())
        parts.append(f'<p class="note">Run <code>{html.escape(where)}</code>. {html.escape(drawn)}. Each model scored '
                     "the one test set once; its AUROC over all positives, then over each stratum of them, each "
                     "against the same negatives (Oakden-Rayner et al. 2020). A model that learnt the confounder "
                     "ranks one stratum far above the other: the label's AUROC hides the patients without it.</p>")
        items = "".join(f"<li>{html.escape(line)}</li>" for line in strata_words(table))
        parts.append(f'<ul class="conclusions">{items}</ul>'
                     + table.drop(columns=["low", "high"]).to_html(na_rep="–", border=0,
                                                                   float_format=lambda v: f"{v:.3f}"))
    return "".join(parts)


def _localization_html(runs_dir: Path) -> str:
    summaries = localization_summaries(runs_dir)
    if not summaries:
        return ""  # nothing measured: nothing said
    # Wang et al.'s columns are in a summary only when it was scored against boxes, as theirs were
    parts = ["<h2>Localization: model vs random maps (and Wang et al. where scored against boxes)</h2>"]
    for name, table in summaries.items():
        notes = "; ".join(f"{k}: {v}" for k, v in table.attrs.get("notes", {}).items())
        parts.append(f"<h3>{html.escape(name)}</h3>" + (f'<p class="note">{html.escape(notes)}</p>' if notes else ""))
        parts.append(table.to_html(na_rep="–", border=0, float_format=lambda v: f"{v:.3f}"))
    return "".join(parts)


_INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cxrlib report ({profile})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }}
th {{ background: #f3f3f3; }}
tr:hover td {{ background: #fafafa; }}
.fail {{ color: #b00; }}
.note {{ color: #555; font-size: 0.9em; max-width: 60em; }}
.figure {{ max-width: 100%; }}
ul.conclusions li {{ margin: 0.35em 0; max-width: 70em; }}
</style></head><body>
<h1>cxrlib report — profile <code>{profile}</code></h1>
<p class="note">Generated {stamp} on {machine}; {total} in all. Runs: <code>{runs}</code>.</p>
{figure}
<h2>Conclusions</h2>
{conclusions}
{strata}
<h2>Results: every run</h2>
<p class="note">Mean AUROC over the 14 findings on the test part of the split named beside it: the mean
over the run's training seeds, with the 95% confidence interval of that mean over seeds and test
patients (over test patients only for a run of one seed or a fitted control) and the spread across
seeds (SD, lowest and highest seed). "vs baseline" is the difference from the baseline on the same test
images, with its 95% CI and p-value over seeds and test patients; "per-seed differences" the range of
every seed of the run minus every seed of the baseline, shown, not tested; "verdict" applies the rule
above, and a comparison that calls nothing names the smallest difference it would have called 80% of
the time. The A/A control (the baseline against more seeds of itself, simulated from its spread) must
show no difference, the planted-loss control (the baseline made worse by twice that smallest
difference) must be called worse: together they show the rule works on these test images.
The shortcut control sees only each image's grey-level statistics. Numbers from different splits, or
from synthetic phantoms, are not comparable with each other or with the tables below.</p>
{results}
{skipped}
{localization}
<h2>Notebooks</h2>
{notebooks}
<h2>The study this project grows from</h2>
<p class="note">Its own split; ChestX-ray14, 14 labels unless noted.</p>
{study}
<h2>Published references</h2>
<p class="note">The split matters: an image-level random split lets one patient's images fall in both
train and test, which inflates AUROC.</p>
{published}
</body></html>
"""


# ----------------------------------------------------------------------------- helpers


def fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s"

