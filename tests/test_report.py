"""The report runner: notebook selection, parameters, the results table, failures, the index."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from cxrlib import experiments, references, report
from cxrlib.labels import FINDINGS

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


def test_notebook_parameters_from_profile_and_overrides():
    params = report.notebook_parameters(
        "01_baselines", "smoke", data_dir="/data/cxr", device="cuda", runs_dir="/r", redo=True,
        overrides=["train.epochs=3", "notebooks.01_baselines.MODELS=[resnet50]", "06_losses.LOSSES=[focal]"],
    )
    assert params["PROFILE"] == "smoke" and params["DATA_DIR"] == "/data/cxr" and params["DEVICE"] == "cuda"
    assert params["RUNS_DIR"] == "/r" and params["REDO"] is True
    assert params["OVERRIDES"] == ["train.epochs=3"]  # experiment overrides reach every notebook
    assert params["MODELS"] == ["resnet50"]  # the command line beats the profile
    assert params["FIFTEEN_LABELS"] is True  # from profiles/smoke.yaml
    assert "LOSSES" not in params  # that override belongs to 06
    assert report.notebook_parameters("06_losses", "smoke", overrides=["06_losses.LOSSES=[focal]"])["LOSSES"] == ["focal"]


def test_bad_override_and_profile_fail_early():
    with pytest.raises(ValueError, match="unknown key 'epochz'"):
        report.check_overrides("smoke", ["train.epochz=3"])
    with pytest.raises(FileNotFoundError, match="profile 'nope' not found"):
        report.run_report("nope", echo=None)


def test_profiles_build_configs():
    for name in ("smoke", "cpu", "full"):
        cfg = experiments.base_config(name)
        assert cfg.name == "baseline" and cfg.runs_dir == f"runs/{name}"
        for stem, params in (report.load_profile(name).get("notebooks") or {}).items():
            assert (REPO / "notebooks" / f"{stem}.ipynb").is_file(), f"{name}.yaml names a missing notebook {stem}"
            assert isinstance(params, dict)
    full = experiments.base_config("full", data_dir="/data/ChestX-ray14")
    assert (full.data.source, full.data.split, full.data.image_size, full.model.name) == (
        "chestxray14", "official", 224, "densenet121")
    assert full.train.batch_size == 16 and full.model.pretrained
    # a data dir given to the phantom profile switches it to the real data
    assert experiments.base_config("cpu", data_dir="/x").data.source == "chestxray14"


def test_variants_share_the_baseline():
    configs = experiments.variants("smoke", {"bce": {"train.loss": "bce"}, "focal": {"train.loss": "focal"}},
                                   overrides=["train.epochs=2"])
    assert [c.name for c in configs] == ["baseline", "focal"]
    assert all(c.train.epochs == 2 for c in configs)
    assert experiments.experiment_config("smoke", overrides=["train.epochs=2"]).fingerprint() == configs[0].fingerprint()
    named = experiments.backbones("smoke", ["resnet18", "inception_v3"], max_steps={"inception_v3": 7})
    assert [c.name for c in named] == ["baseline", "inception_v3"]
    assert named[1].train.max_steps == 7 and named[1].data.image_size >= 75  # its stem's minimum


# ----------------------------------------------------------------------------- results table


def _fake_run(runs: Path, name: str, scores: np.ndarray, targets: np.ndarray, ids: np.ndarray,
              split: str = "synthetic phantoms, patient-wise 70/10/20", **cfg_changes) -> Path:
    """A finished run folder as run_experiment writes it (numbers from real AUROCs)."""
    from cxrlib.metrics import auroc_report

    cfg = experiments.experiment_config("smoke", name, cfg_changes or None)
    d = runs / name
    d.mkdir(parents=True)
    patients = np.arange(len(ids)) // 2
    metrics = auroc_report(targets, scores, list(FINDINGS), patient_ids=patients, n_bootstrap=50)
    metrics.update({"experiment": name, "split": split, "source": "phantoms", "n_images": len(ids),
                    "train_seconds": 12.5, "fingerprint": cfg.fingerprint()})
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "config.json").write_text(cfg.to_json())
    np.savez(d / "test_predictions.npz", ids=ids, patient_ids=patients, targets=targets, scores=scores,
             label_names=np.array(FINDINGS))
    return d


@pytest.fixture()
def fake_runs(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    targets = (rng.random((n, len(FINDINGS))) < 0.3).astype(np.float32)
    targets[:2] = 1 - targets[2:4]  # every class has both labels
    ids = np.array([f"img_{i:03d}.png" for i in range(n)])
    runs = tmp_path / "runs"
    noise = rng.random((n, len(FINDINGS)))
    _fake_run(runs, "baseline", 0.15 * targets + noise, targets, ids)
    _fake_run(runs, "fpn", 0.6 * targets + noise, targets, ids, **{"model.head": "fpn"})
    _fake_run(runs, "other_split", noise, targets, np.array([f"x_{i}" for i in range(n)]),
              split="official patient-wise split (test_list.txt)")
    (runs / "unfinished").mkdir()  # no metrics: not listed
    return runs


def test_results_table_pairs_runs_with_the_baseline(fake_runs):
    table = experiments.results_table(fake_runs, n_bootstrap=200)
    assert list(table["experiment"]) == ["baseline", "fpn", "other_split"]
    base, fpn, other = (table.iloc[i] for i in range(3))
    assert 0 <= base["CI low"] <= base["mean AUROC"] <= base["CI high"] <= 1
    assert np.isnan(base["diff vs baseline"])
    assert fpn["head"] == "fpn" and fpn["mean AUROC"] > base["mean AUROC"]
    assert fpn["diff vs baseline"] == pytest.approx(fpn["mean AUROC"] - base["mean AUROC"], abs=1e-9)
    assert fpn["diff CI low"] > 0 and fpn["p-value"] < 0.05
    assert np.isnan(other["diff vs baseline"])  # another test set: no paired difference
    text = experiments.format_results(table)
    assert text.loc[1, "vs baseline [95% CI]"].startswith("+0.")
    assert text.loc[2, "split"].startswith("official")
    assert "[" in text.loc[0, "mean AUROC [95% CI]"]


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
    code = report.main(["--profile", "smoke", "--notebooks-dir", str(nbs), "--out", str(out),
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
    """`python -m cxrlib report --only 00,09` on the smoke profile: real notebooks, real kernel."""
    out = tmp_path / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "cxrlib", "report", "--profile", "smoke", "--only", "00,09", "--out", str(out),
         "--runs-dir", str(fake_runs)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[1/2] 00_data_exploration ok" in proc.stdout and "[2/2] 09_results ok" in proc.stdout
    for stem in ("00_data_exploration", "09_results"):
        assert (out / f"{stem}.html").is_file() and (out / "executed" / f"{stem}.ipynb").is_file()
    results = nbformat.read(str(out / "executed" / "09_results.ipynb"), as_version=4)
    text = "\n".join(o.get("data", {}).get("text/plain", "") for c in results.cells for o in c.get("outputs", []))
    assert "fpn" in text and "other_split" in text
    assert "<table" in (out / "index.html").read_text()


def test_notebooks_are_committed_clean():
    """No outputs, no execution counts, one annotated parameters cell with the common names."""
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
        for common in report.COMMON_PARAMETERS:
            assert common in names, f"{path.name}: parameter {common} missing or not parseable by papermill"
        assert all(p.help for p in names.values()), f"{path.name}: every parameter needs a # comment"
        for c in code_cells:
            src = c.source
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
