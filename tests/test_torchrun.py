"""One run on several GPUs is README's torchrun command; here it is rehearsed on the CPU, where
the same command joins a gloo process group instead of NCCL. (That two ranks give the numbers
of one process is tests/test_ddp.py's, on a model without batch norm: ResNet-18's batch norm
is synchronised across ranks on GPUs only.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cxrlib import runs

REPO = Path(__file__).resolve().parent.parent


def _train(runs_dir: Path, name: str, launcher: list[str]) -> tuple[dict, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    command = [*launcher, "-m", "cxrlib", "train", "--profile", "smoke", "--device", "cpu", "--name", name,
               "--runs-dir", str(runs_dir), "--quiet", "--set", "train.batch_size=8", "--set", "train.augment=false"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((runs_dir / name / "metrics.json").read_text()), proc.stdout


@pytest.mark.slow
def test_the_readme_torchrun_command_on_two_cpu_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch: the README's multi-GPU command needs it"
    metrics, out = _train(tmp_path, "ddp", [torchrun, "--standalone", "--nproc_per_node", "2"])
    assert out.count("run folder:") == 1  # one run of two ranks (rank 0 reports), not two runs
    assert metrics["n_images"] == 24  # the smoke test split, every image scored once across the ranks
    history = (tmp_path / "ddp" / "history.csv").read_text().splitlines()
    assert len(history) == 2 and history[1].split(",")[history[0].split(",").index("step")] == "2"
    steps = runs.read_steps(tmp_path / "ddp")  # rank 0 writes the step log of both ranks' batches
    assert steps["step"].tolist() == [1, 2] and steps["samples"].tolist() == [8, 8]
    assert not (tmp_path / "ddp" / "last.pt").exists()  # rank 0 wrote and pruned the folder like any run
