"""The report runner: notebook selection, parameters, the results table, failures, the index."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from cxrlib import cli, conclusions, plots, profiles, references, report, report_index, results, runs

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- selection, parameters


def _touch_notebooks(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), str(folder / n))
    return report.discover_notebooks(folder)


def test_discover_and_select(tmp_path):
    found = _touch_notebooks(tmp_path, ["00_a.ipynb", "01_b.ipynb", "02_c.ipynb", "10_z.ipynb", "notes.ipynb"])
    assert [p.name for p in found] == ["00_a.ipynb", "01_b.ipynb", "02_c.ipynb", "10_z.ipynb"]
    assert [p.stem for p in report.select_notebooks(found, "02,0")] == ["00_a", "02_c"]
    assert [p.stem for p in report.select_notebooks(found, ["01_b"])] == ["01_b"]
    assert report.select_notebooks(found, None) == found
    with pytest.raises(ValueError, match="'7' matches no notebook; available: 00_a"):
        report.select_notebooks(found, "7")


def test_discover_empty_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        report.discover_notebooks(tmp_path)


def test_bad_profile_fails_early():
    with pytest.raises(FileNotFoundError, match="profile 'nope' not found"):
        report.run_report("nope", echo=None)


def test_reference_tables_carry_their_split():
    study = references.study_table()
    assert dict(zip(study["model"], study["mean AUROC"]))["DenseNet-121"] == 0.8412
    pub = references.published_table()
    assert pub["split"].notna().all() and (pub["split"] != "").all()
    chexnet = pub[pub["reference"].str.contains("CheXNet\\)")].iloc[0]
    assert chexnet["mean AUROC"] == 0.841 and "random patient-wise" in chexnet["split"]
    assert len(references.chexnet_per_class()) == 14
    loc = references.localization_reference()
    v5 = loc[loc["source"].str.contains("1705.02315v5") & (loc["T(IoBB)"] == 0.5)]
    assert v5["Cardiomegaly"].item() == 0.945 and "880 boxed images" in v5["protocol"].item()


# ----------------------------------------------------------------------------- the runner


def _notebook(path: Path, source: str) -> None:
    params = new_code_cell('PROFILE: str = "cpu"\nRUNS_DIR: str = ""')
    params.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[params, new_code_cell(source)]), str(path))


@pytest.mark.slow
def test_runner_goes_on_after_a_failure_and_names_it(tmp_path, fake_runs, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_ok.ipynb", "import json, pathlib, sys\n"
              "pathlib.Path(RUNS_DIR, 'ok.json').write_text(json.dumps({'exe': sys.executable, 'profile': PROFILE}))")
    _notebook(nbs / "02_broken.ipynb", "raise RuntimeError('deliberate failure')")
    _notebook(nbs / "03_after.ipynb", "import pathlib\npathlib.Path(RUNS_DIR, 'after.txt').write_text('ran')")
    out = tmp_path / "reports"
    code = cli.main(["report", "--profile", "smoke", "--notebooks-dir", str(nbs), "--out", str(out),
                     "--runs-dir", str(fake_runs)])
    captured = capsys.readouterr()
    assert code == 1
    assert "02_broken" in captured.err and "RuntimeError" in captured.out and "deliberate failure" in captured.out
    assert str(out / "executed" / "02_broken.ipynb") in captured.out  # where the partial output is
    assert (fake_runs / "after.txt").read_text() == "ran"  # the failure did not stop the next one
    ran = json.loads((fake_runs / "ok.json").read_text())
    assert ran["profile"] == "smoke"
    # the kernel is this interpreter, whatever python3 kernelspec the machine has
    assert Path(ran["exe"]).resolve() == Path(sys.executable).resolve()
    partial = nbformat.read(str(out / "executed" / "02_broken.ipynb"), as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in partial.cells for o in c.get("outputs", []))
    for stem in ("01_ok", "02_broken", "03_after"):
        assert (out / f"{stem}.html").is_file()
    index = (out / "index.html").read_text()
    assert "failed: RuntimeError" in index and 'href="01_ok.html"' in index
    # the results table of the runs folder, and the references with their splits
    assert "fpn" in index and "vs baseline [95% CI]" in index and "other_split" in index
    assert "0.8412" in index and "random patient-wise 70/10/20 (CheXNet)" in index


@pytest.mark.slow
def test_cli_report_end_to_end_on_smoke(tmp_path, fake_runs):
    """`python -m cxrlib report --only 00,13` on the smoke profile: real notebooks, real kernel."""
    out = tmp_path / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "cxrlib", "report", "--profile", "smoke", "--only", "00,13", "--out", str(out),
         "--runs-dir", str(fake_runs)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[1/2] 00_data_exploration ok" in proc.stdout and "[2/2] 13_results ok" in proc.stdout
    for stem in ("00_data_exploration", "13_results"):
        assert (out / f"{stem}.html").is_file() and (out / "executed" / f"{stem}.ipynb").is_file()
    results = nbformat.read(str(out / "executed" / "13_results.ipynb"), as_version=4)
    text = "\n".join(o.get("data", {}).get("text/plain", "") for c in results.cells for o in c.get("outputs", []))
    assert "fpn" in text and "other_split" in text
    assert "<table" in (out / "index.html").read_text()


@pytest.mark.slow
def test_cli_report_streams_training_progress(tmp_path):
    """`python -m cxrlib report --profile smoke`: which run trains, epoch n/N, stage, time left,
    printed while the notebook runs; and no kernel warning about unencrypted transport."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    params = new_code_cell('PROFILE: str = "cpu"\nDATA_DIR: str = ""\nDEVICE: str = ""\nRUNS_DIR: str = ""\n'
                           'REDO: bool = False\nOVERRIDES: list = []')
    params.metadata["tags"] = ["parameters"]
    cells = [
        params,
        new_code_cell("from cxrlib import experiments, profiles\n"
                      "profile = profiles.load(PROFILE, data_dir=DATA_DIR, device=DEVICE, runs_dir=RUNS_DIR, "
                      "overrides=OVERRIDES)\n"
                      "experiments.run(profile.config(), redo=REDO)"),
        new_code_cell("import time\ntime.sleep(3)  # the baseline's lines must be out before this ends"),
        new_code_cell("experiments.run(profile.config('two_stage', {'model.wrapper': 'two_stage', "
                      "'train.stage_epochs': [1, 1, 1]}), redo=REDO)"),
    ]
    nbformat.write(new_notebook(cells=cells), str(nbs / "01_train.ipynb"))
    argv = [sys.executable, "-m", "cxrlib", "report", "--profile", "smoke", "--notebooks-dir", str(nbs),
            "--out", str(tmp_path / "reports"), "--runs-dir", str(tmp_path / "runs"),
            "--set", "train.epochs=2", "--set", "train.max_steps=null"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    arrived: list[tuple[float, str]] = []
    for line in proc.stdout:
        arrived.append((time.monotonic(), line.rstrip("\n")))
    err = proc.stderr.read()
    assert proc.wait(timeout=600) == 0, "\n".join(t for _, t in arrived)[-3000:] + err[-3000:]
    lines = [t.strip() for _, t in arrived]
    when = {t.strip(): at for at, t in arrived}

    def one(prefix: str) -> str:
        found = [t for t in lines if t.startswith(prefix)]
        assert len(found) == 1, (prefix, lines)
        return found[0]

    assert one("baseline: training, 2 epochs")
    assert one("baseline: epoch 1/2, ").endswith(" left")
    assert one("baseline: epoch 2/2, ").endswith("finishing")
    done = one("baseline: done, test mean AUROC ")
    two = one("two_stage: training, 3 epochs, stages global -> local -> fusion")
    for k, stage in enumerate(("global", "local", "fusion"), 1):
        assert one(f"two_stage: epoch 1/1 [{stage}, stage {k}/3], ")
    assert one("two_stage: done, test mean AUROC ")
    # the baseline's lines were printed while the notebook ran, not collected at its end
    assert when[two] - when[done] >= 2.0
    assert lines.index(done) > lines.index("[1/1] 01_train ...") and lines[-1].startswith("report: 1/1")
    assert "without encryption" not in err + "\n".join(lines)


def test_notebooks_are_committed_clean():
    """No outputs, no execution counts, one annotated parameters cell with the common names;
    no function or class, except a student's exercise (a cell tagged 'exercise' that runs the
    function's check from cxrlib.exercises)."""
    from papermill.translators import PythonTranslator

    paths = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(paths) >= 9
    for path in paths:
        nb = nbformat.read(str(path), as_version=4)
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        for c in code_cells:
            assert not c.get("outputs") and c.get("execution_count") is None, f"{path.name} has outputs"
        tagged = [c for c in code_cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters'"
        if path.stem == "08_demo":
            continue  # the demo has its own parameters and tests
        names = {p.name: p for p in PythonTranslator.inspect(tagged[0])}
        for common in profiles.COMMON_PARAMETERS:
            assert common in names, f"{path.name}: parameter {common} missing or not parseable by papermill"
        assert all(p.help for p in names.values()), f"{path.name}: every parameter needs a # comment"
        for c in code_cells:
            src = c.source
            if "exercise" in c.metadata.get("tags", []):  # the student's own function, checked at once
                assert "exercises.check_" in src, f"{path.name}: an exercise cell runs its check"
                continue
            assert "\ndef " not in "\n" + src and "\nclass " not in "\n" + src, f"{path.name} defines code"
            assert "sys.path" not in src


def test_exported_html_needs_no_widget_javascript(tmp_path):
    """Saved widget state would make the page fetch widget JavaScript from a CDN (blank
    offline); the export drops it so widgets show their static picture instead."""
    nb = new_notebook(cells=[new_code_cell("1")])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                          "version_minor": 0}}
    nb.cells[0].outputs = [nbformat.v4.new_output(
        "display_data", data={"text/html": "<b>static chart</b>", "text/plain": "DemoApp()",
                              "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                                            "version_minor": 0}})]
    executed = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(executed))
    html = report.export_html(executed, tmp_path / "nb.html").read_text()
    assert "static chart" in html
    assert "widget-state+json" not in html


# ----------------------------------------------------------------------------- the index: picture and words


def test_forest_plot_draws_every_run_its_seeds_and_the_references(study):
    table = results.results_table(study, n_bootstrap=100)
    fig = plots.forest_plot(table)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(table["experiment"])
    seed_dots = sum(len(c.get_offsets()) for c in ax.collections if len(c.get_offsets()) > 1)
    # three experiments and the design's two controls with three seeds; the shortcut control's one point is its mean
    assert seed_dots == 5 * 3
    lines = {line.get_label() for line in ax.get_lines()}
    assert {"baseline", "shortcut_control (no spatial information)", "chance"} <= lines
    notes = [t.get_text() for t in ax.texts]
    assert any(n.endswith("better") and n.startswith("+0.") for n in notes)
    assert any(n.endswith("worse") and n.startswith("-0.") for n in notes)  # the planted-loss control
    assert any("no difference larger than" in n for n in notes)  # the A/A control
    png = io.BytesIO()
    fig.savefig(png, format="png")
    assert png.getvalue()[:4] == b"\x89PNG" and len(png.getvalue()) > 10_000


def test_index_opens_with_the_forest_plot_and_the_conclusions(study, tmp_path):
    profile = profiles.load("smoke")
    result = report.ReportResult("smoke", tmp_path, study, None, [], 1.0, [])
    html = report.write_index(result, profile).read_text()
    assert html.index("data:image/png;base64,") < html.index("<h2>Conclusions</h2>") < html.index("<h2>Results")
    assert "Verdict: better than the baseline" in html and "A side with fewer than 2 seeds is not tested" in html
    assert "A/A control" in html and "planted-loss control" in html  # the design's controls, in words and table
    assert "above that of shortcut_control" in html and "none (fitted)" in html
    assert "Localization" not in html  # no run has a localization summary: nothing said
    table = pd.DataFrame({"model": [0.41], "random map": [0.12], "Wang et al.": [0.69]}, index=["Atelectasis"])
    runs.write_localization(study / "better", table, notes={"metric": "T(IoBB>0.1)"})
    html = report.write_index(result, profile).read_text()
    assert "Localization: model vs random maps (and Wang et al. where scored against boxes)" in html and "T(IoBB&gt;0.1)" in html
    assert "0.690" in html


def test_index_lists_what_the_profile_leaves_to_the_full_profile(study, tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("full_profile_only:\n  mixed: measured 0.50 after 8 steps\n")
    result = report.ReportResult("mine", tmp_path, study, None, [], 1.0, [])
    html = report.write_index(result, profiles.load(own)).read_text()
    assert "Full profile only" in html and "measured 0.50 after 8 steps" in html
    results = html[html.index("<h2>Results"):html.index("Full profile only")]
    assert "mixed" not in results  # never shown as a result


def test_a_summary_notebook_runs_after_every_other(tmp_path):
    """A summary notebook (here a made-up 09, before lessons 10 and 11) declares itself a summary,
    and the report runs it after every other, however the notebooks are chosen."""
    found = _touch_notebooks(tmp_path, ["00_a.ipynb", "09_results.ipynb", "10_z.ipynb", "11_y.ipynb"])
    assert [p.stem for p in found] == ["00_a", "09_results", "10_z", "11_y"]
    nb = nbformat.read(str(tmp_path / "09_results.ipynb"), as_version=4)
    nb.metadata["cxrlib"] = {"summary": True}
    nbformat.write(nb, str(tmp_path / "09_results.ipynb"))
    found = report.discover_notebooks(tmp_path)
    assert [p.stem for p in found] == ["00_a", "10_z", "11_y", "09_results"]
    assert [p.stem for p in report.select_notebooks(found, "9,10")] == ["10_z", "09_results"]
    # the project's own results notebook is one
    assert report.summarises(REPO / "notebooks" / "13_results.ipynb")
    assert not report.summarises(REPO / "notebooks" / "12_shortcuts.ipynb")


def test_the_index_says_what_the_stratified_test_set_showed(tmp_path):
    import pandas as pd

    assert report_index._strata_html(tmp_path) == ""  # the lesson did not run: nothing said
    rows = [("trained with drains", "all positives", 10, 40, 0.8, 0.7, 0.9),
            ("trained with drains", "positives with a drain", 5, 40, 0.95, 0.9, 1.0),
            ("trained with drains", "positives without a drain", 5, 40, 0.65, 0.5, 0.8)]
    table = pd.DataFrame(rows, columns=["model", "stratum", "positives", "negatives", "Pneumothorax AUROC", "low",
                                        "high"]).set_index(["model", "stratum"])
    run_dir = tmp_path / "shortcuts" / "drain"
    run_dir.mkdir(parents=True)
    runs.write_strata(run_dir, table, {"test drain rate": 0.5})
    page = report_index._strata_html(tmp_path)
    words = conclusions.strata_words(runs.read_strata(run_dir))
    assert words == ["trained with drains: Pneumothorax AUROC 0.800 [0.700, 0.900] over all positives (10) of one "
                     "test set; 0.950 [0.900, 1.000] on the 5 positives with a drain and 0.650 [0.500, 0.800] on the "
                     "5 positives without a drain, each against the same 40 negatives (gap +0.300)."]
    assert "Hidden stratification" in page and "test drain rate: 0.5" in page and f"<li>{words[0]}</li>" in page
