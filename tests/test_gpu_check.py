"""bench/gpu_check.sh: refuses at once without CUDA; its CPU rehearsal runs every part it can."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_check.sh"


def _run(*args, timeout=600):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_refuses_clearly_and_fast_without_cuda(tmp_path):
    out = tmp_path / "gpu.md"
    t = time.perf_counter()
    proc = _run("--out", str(out))
    assert proc.returncode == 2
    assert time.perf_counter() - t < 60  # no model, no cache, no part was started
    assert "CUDA" in proc.stderr and "README" in proc.stderr and "--device cpu --tiny" in proc.stderr
    assert not out.exists()
    proc = _run("--device", "cpu", "--out", str(out))
    assert proc.returncode == 2 and "--tiny" in proc.stderr and not out.exists()


def test_a_part_past_its_cap_is_stopped_and_reported(tmp_path):
    mod = _module()
    args = Namespace(passthrough=["--device", "cpu", "--tiny"])
    t = time.perf_counter()
    res = mod.launch("train", args, tmp_path, cap=1.0)
    assert time.perf_counter() - t < 30
    assert res["status"] == "stopped at its 1 s cap"


def test_parts_import_cxrlib_without_an_editable_install(tmp_path, monkeypatch):
    """A part runs as `python bench/gpu_check.py` (sys.path starts at bench/): the runner puts
    the repository root on PYTHONPATH, so cxrlib imports with nothing installed."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    mod = _module()
    res = mod.launch("env", Namespace(passthrough=["--device", "cpu", "--tiny"]), tmp_path, cap=120.0)
    assert res["status"] == "ok", res["log_tail"]
    assert res["data"]["torch"] == torch.__version__


def test_caps_fit_the_budget_and_the_compile_row_is_not_last():
    mod = _module()
    assert sum(mod.CAPS.values()) <= mod.BUDGET_S
    assert mod.PARTS.index("compile") < mod.PARTS.index("pipeline") < mod.PARTS.index("report") == len(mod.PARTS) - 1


def _partial_results(mod):
    """What the parts leave when the pipeline is killed between rounds and the report never ran."""
    empty = {"status": "not run: the time budget was spent", "seconds": 0, "data": {}, "log_tail": ""}
    results = {p: dict(empty) for p in mod.PARTS}
    results["env"] = {"status": "ok", "seconds": 1, "data": {"gpu": "NVIDIA H100 80GB HBM3", "host": "h"},
                      "log_tail": ""}
    results["compile"] = {"status": "ok", "seconds": 90, "log_tail": "", "data": {"rows": [
        {"model": "densenet121", "mode": "amp+channels_last+compile", "batch": 16, "size": 224,
         "images_per_s": 2500.0, "timed_images": 5000, "warmup_s": 70.0, "peak_gb": 3.1}]}}
    results["pipeline"] = {"status": "stopped at its 130 s cap", "seconds": 130, "log_tail": "killed", "data": {
        "cache": {"phantoms": 3000, "train_images": 2100, "size": 224, "seconds": 20.0},
        "fit": {"epochs": 2, "train_images": 2100, "val_images": 450, "batch": 16, "compile": "auto", "lr": 0.001,
                "epoch_seconds": 1.5, "cumulative_seconds": [80.0, 81.5], "peak_gb": 3.0},
        "rounds": {"bare step (batches already on the device)": [1000.0], "pipeline, resident on the GPU": [],
                   "pipeline, resident in pinned host memory": []}}}
    return results


def test_the_record_renders_from_partial_results(tmp_path):
    mod = _module()
    args = Namespace(tiny=False, size=224, out=tmp_path / "gpu.md", models=["densenet121"])
    text = mod.render(_partial_results(mod), args, [], 300.0)
    assert "| densenet121 | 16 | - | - | - | 2,500 |" in text
    assert "| pipeline, resident on the GPU | - |  |" in text  # killed before its round: shown, not a crash
    assert "stopped at its 130 s cap" in text and "killed" in text
    minutes = mod.implied_minutes(2100 / 1.5, None)
    assert f"{minutes:,.1f} min | **NOT met**" in text  # judged at the profile's own set-up (fit, batch 16)
    assert "| DenseNet-121 compiled at batch 16 >= 3,000 images/s | 2,500 | **NOT met** |" in text


def test_raw_results_are_written_before_the_record_is_rendered(tmp_path, monkeypatch):
    mod = _module()
    partial = _partial_results(mod)
    monkeypatch.setattr(mod, "cuda_missing", lambda device: None)
    monkeypatch.setattr(mod, "launch", lambda part, args, folder, cap: partial[part])

    def broken_render(*a, **k):
        raise KeyError("a record that cannot be rendered")

    monkeypatch.setattr(mod, "render", broken_render)
    out = tmp_path / "gpu.md"
    assert mod.main(["--out", str(out)]) == 1
    assert json.loads((tmp_path / "gpu.json").read_text())["pipeline"]["data"]["fit"]["batch"] == 16
    assert "could not be rendered" in out.read_text() and "gpu.json" in out.read_text()


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_part(tmp_path):
    """The rehearsal runs every part: the compiled step, a batch-16 fit compiled as the full
    profile compiles it, two DDP processes against one, and the record from what they left."""
    out = tmp_path / "gpu.md"
    proc = _run("--device", "cpu", "--tiny", "--skip", "report", "--out", str(out), "--cache-dir", str(tmp_path),
                timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert "CPU rehearsal" in text and "## Training throughput" in text and "## Targets (H100/H200)" in text
    for part in ("env", "train", "compile", "pipeline", "ddp"):
        assert f"| {part} | ok |" in text, part
    assert "| report | skipped (--skip) |" in text
    assert "| resnet18 | 8 |" in text  # a measured row: batch 8 in the rehearsal
    assert "`fit` at the full profile's set-up (resnet18, batch 16, compile True)" in text
    assert "Pipeline (resident on the GPU) / bare step" in text and "ten crops" in text
    assert "**same as one process**" in text
    raw = json.loads((tmp_path / "gpu.json").read_text())
    assert raw["pipeline"]["data"]["fit"]["batch"] == 16
