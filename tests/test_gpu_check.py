"""bench/gpu_check.sh: refuses at once without CUDA; its CPU rehearsal runs every part it can."""
from __future__ import annotations

import importlib.util
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


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_part(tmp_path):
    out = tmp_path / "gpu.md"
    proc = _run("--device", "cpu", "--tiny", "--skip", "report", "--out", str(out), "--cache-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert "CPU rehearsal" in text and "## Training throughput" in text and "## Targets (H100/H200)" in text
    for part, status in [("env", "ok"), ("train", "ok"), ("pipeline", "ok"), ("report", "skipped (--skip)")]:
        assert f"| {part} | {status} |" in text, part
    assert "| resnet18 | 8 |" in text  # a measured row: batch 8 in the rehearsal
    assert "Pipeline (resident on the GPU) / bare step" in text and "ten crops" in text and "`fit` end to end" in text
