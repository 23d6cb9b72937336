"""Preflight: every missing piece listed at once with what to do, in seconds, network blocked."""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cxrlib import preflight
from cxrlib.config import ExperimentConfig
from cxrlib.data.cache import build_cache_from_config
from cxrlib.data.sources import make_plan
from cxrlib.models import weights

Usage = namedtuple("Usage", "total used free")


# Every test here runs on a machine with no network (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("offline")


def config(tmp_path: Path, **sections) -> ExperimentConfig:
    d = {"name": "baseline", "runs_dir": str(tmp_path / "runs"),
         "data": {"source": "phantoms", "num_phantoms": 60, "image_size": 32, "cache_dir": str(tmp_path / "cache")},
         "model": {"name": "resnet18"}, "train": {"device": "cpu", "batch_size": 4, "epochs": 2}}
    for key, values in sections.items():
        d[key] = {**d.get(key, {}), **values}
    return ExperimentConfig.from_dict(d)


def rows(findings, check, status=None):
    return [f for f in findings if f.check == check and (status is None or f.status == status)]


def test_everything_missing_is_listed_at_once(tmp_path, monkeypatch):
    """An empty data folder, absent weights, an absent GPU and a full disk: one problem row
    each (nothing stops at the first), every one saying what to do, in seconds."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    empty = tmp_path / "nih"
    empty.mkdir()
    cfg = config(tmp_path, data={"source": "chestxray14", "data_dir": str(empty)},
                 model={"name": "densenet121", "pretrained": True}, train={"device": "cuda"})
    phantoms = config(tmp_path, model={"name": "resnet50", "pretrained": True})
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: Usage(10**6, 10**6 - 10, 10))
    t0 = time.perf_counter()
    findings = preflight.run_checks({"01_baselines": [cfg, phantoms]}, probe=False)
    seconds = time.perf_counter() - t0
    assert seconds < 10, f"preflight took {seconds:.1f} s"
    problems = preflight.problems(findings)
    assert {f.check for f in problems} == {"data", "images", "weights", "device", "disk"}
    assert all(f.todo for f in problems)
    data = " ".join(f.what + f.todo for f in rows(findings, "data", preflight.PROBLEM))
    assert "Data_Entry_2017" in data and str(empty) in data
    assert "images_0XX" in rows(findings, "images", preflight.PROBLEM)[0].todo
    missing = {f.what.split(":")[0]: f for f in rows(findings, "weights", preflight.PROBLEM)}
    assert set(missing) == {"densenet121", "resnet50"}  # every pretrained backbone
    assert "densenet121.tv_in1k.safetensors" in missing["densenet121"].what
    assert f"curl -L --create-dirs -o {tmp_path / 'weights' / 'resnet50.tv_in1k.safetensors'}" in missing["resnet50"].todo
    assert "no CUDA GPU" in rows(findings, "device", preflight.PROBLEM)[0].what
    assert "--device cpu" in rows(findings, "device", preflight.PROBLEM)[0].todo
    table = preflight.format_table(findings)
    assert table.splitlines()[1].startswith("PROBLEM") and "problem(s)" in table.splitlines()[-1]


def test_real_sample_images_per_part_and_cache_size(cxr14_sample, tmp_path):
    cfg = config(tmp_path, data={"source": "chestxray14", "data_dir": str(cxr14_sample), "image_size": 224})
    findings = preflight.run_checks([cfg], probe=False)
    assert preflight.problems(findings) == []
    plan = make_plan(cfg.data)
    images = rows(findings, "images")
    assert [f.what.split(":")[0] for f in images] == ["train", "val", "test"]
    for f, part in zip(images, ("train", "val", "test")):
        used, missing = len(plan.parts[part].image_ids), plan.missing_by_part[part]
        assert missing > 0 and f.status == preflight.WARNING  # the sample is a partial download
        assert f"{missing:,} of the {used + missing:,} images are missing; {used:,} will be used" in f.what
    assert any("BBox_List_2017.csv" in f.what for f in rows(findings, "data", preflight.OK))
    need = len(plan.cache_ids) * (224 * 224 + 1)  # images.u8 and one progress byte per image
    summary = rows(findings, "disk")[-1].what
    assert summary.startswith(f"the caches to build need {preflight._gib(need)}; ") and summary.endswith(
        f" free at {tmp_path}")
    free = float(summary.split("; ")[1].split()[0])  # GiB as printed; other processes write meanwhile
    assert abs(free - shutil.disk_usage(tmp_path).free / 2**30) < 2


def test_disk_counts_masks_and_trusts_only_a_finished_cache(tmp_path, monkeypatch):
    small, large = config(tmp_path), config(tmp_path, data={"image_size": 48})
    plan = make_plan(small.data)
    n = len(plan.cache_ids)
    need = n * (32 * 32 + 48 * 48) * 3 + 2 * n  # uint8 images + uint16 masks, a progress byte each
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: Usage(10 * need, 0, need - 1))
    findings = preflight.check_disk([small, large])
    assert [f.status for f in findings] == ["ok", "ok", "problem"]
    assert findings[-1].what.startswith(f"the caches to build need {preflight._gib(need)}")
    assert "point data.cache_dir at a larger disk" in findings[-1].todo
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: Usage(10 * need, 0, 10 * need))
    assert [f.status for f in preflight.check_disk([small, large])] == ["ok", "ok", "ok"]
    build_cache_from_config(small.data, progress=False)
    done = preflight.check_disk([small, large])
    assert done[0].what.endswith("already built") and "48 px" in done[1].what and "to build" in done[1].what


def test_configs_that_read_the_same_images_make_one_row_and_one_cache(tmp_path, monkeypatch):
    """Label noise changes what the loader does to the labels, not the files or the cache: the
    data row and the cache are listed (and counted against the disk) once."""
    clean = config(tmp_path)
    noisy = config(tmp_path, data={"label_noise": ["train"], "label_sensitivity": 0.8})
    never = config(tmp_path, data={"label_noise": ["train", "val"], "label_sensitivity": {"Effusion": 0.0}})
    data_rows = preflight.check_data([clean, noisy, never])
    assert len(data_rows) == 1 and data_rows[0].status == "ok"
    plan = make_plan(clean.data)
    need = len(plan.cache_ids) * 32 * 32 * 3 + len(plan.cache_ids)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: Usage(10 * need, 0, 10 * need))
    disk_rows = preflight.check_disk([clean, noisy, never])
    assert [f.what.split(":")[0] for f in disk_rows[:-1]] == [f"cache {plan.cache_key} at 32 px"]
    assert disk_rows[-1].what.startswith(f"the caches to build need {preflight._gib(need)}")


def test_weights_found_locally_or_fetchable(tmp_path, monkeypatch):
    cfg = config(tmp_path, model={"name": "resnet18", "pretrained": True, "weights_dir": str(tmp_path / "w")})
    (problem,) = preflight.check_weights([cfg])
    assert problem.status == preflight.PROBLEM and str(tmp_path / "w") in problem.what + problem.todo
    (tmp_path / "w").mkdir()
    save_file({"x": torch.zeros(1)}, tmp_path / "w" / "resnet18.tv_in1k.safetensors")
    (found,) = preflight.check_weights([cfg])
    assert found.status == preflight.OK and str(tmp_path / "w" / "resnet18.tv_in1k.safetensors") in found.what
    # With a reachable hub a missing file is a warning: it will be downloaded on first use.
    monkeypatch.setattr(weights, "hub_state", lambda: weights.HubState(True, "huggingface.co:443 answered", 0.0))
    (later,) = preflight.check_weights([config(tmp_path, model={"name": "resnet50", "pretrained": True})])
    assert later.status == preflight.WARNING and "curl -L" in later.todo
    assert preflight.check_weights([config(tmp_path)]) == []  # pretrained off: nothing to check


def test_device_rows(tmp_path, monkeypatch):
    (cpu,) = preflight.check_device([config(tmp_path)])
    assert cpu.status == preflight.OK and "CPU" in cpu.what
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (auto,) = preflight.check_device([config(tmp_path, train={"device": "auto"})])
    assert auto.status == preflight.WARNING and "no GPU visible" in auto.what
    (absent,) = preflight.check_device([config(tmp_path, train={"device": "cuda:1"})])
    assert absent.status == preflight.PROBLEM


def test_time_per_notebook_counts_a_shared_run_once(tmp_path, monkeypatch):
    probed = []

    def fake_probe(cfg):
        probed.append(cfg.model.head)
        return preflight.Speed(0.0, 0.01 if cfg.model.head == "gap" else 0.02, 0.001, (2,))

    monkeypatch.setattr(preflight, "speed_probe", fake_probe)
    base = config(tmp_path)
    fpn = config(tmp_path, model={"head": "fpn"})
    fpn = ExperimentConfig.from_dict({**fpn.to_dict(), "name": "fpn"})
    n = {p: len(v.image_ids) for p, v in make_plan(base.data).parts.items()}
    monkeypatch.setattr(preflight.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    findings = preflight.estimate_times({"01": [base], "02": [base, fpn], "03": [base]})
    assert probed == ["gap", "fpn"]  # one probe per distinct model
    first, second, third = findings
    expected = preflight.run_seconds(base, preflight.Speed(0.0, 0.01, 0.001, (2,)), n["train"], n["val"], n["test"])
    assert first.what.startswith(f"01: about {preflight._duration(expected)}") and "baseline" in first.what
    assert "baseline" not in second.what and "fpn" in second.what  # counted where it was first trained
    assert third.what == "03: trains nothing new"
    done = preflight.estimate_times({"01": [base]}, finished=lambda c: True)
    assert "baseline done" in done[0].what
    spent = preflight.estimate_times({"02": [base, fpn]}, budget_s=-1)
    assert spent[0].status == preflight.WARNING and "probe time budget" in spent[0].what
    # On a busy machine the CPU estimates say so.
    monkeypatch.setattr(preflight.os, "getloadavg", lambda: (2.0 * os.cpu_count() + 1, 0.0, 0.0))
    busy = preflight.estimate_times({"01": [base]})
    assert busy[-1].status == preflight.WARNING and "this machine is busy" in busy[-1].what


def test_a_two_stage_run_after_its_baseline_is_timed_without_its_global_stage(tmp_path, monkeypatch):
    """The global stage is taken from the baseline planned before it (cxrlib.train reuses it),
    so the estimate counts the local and fusion stages only; alone, all three."""
    monkeypatch.setattr(preflight, "speed_probe", lambda cfg: preflight.Speed(0.0, 0.01, 0.001, (2,)))
    monkeypatch.setattr(preflight.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    base = config(tmp_path)
    two = ExperimentConfig.from_dict({**base.to_dict(), "name": "two_stage"}).with_overrides(
        {"model.wrapper": "two_stage", "train.stage_epochs": [2, 1, 1]})
    n_train = len(make_plan(base.data).parts["train"].image_ids)
    per_epoch = math.ceil(n_train / base.train.batch_size)
    after, = preflight.estimate_times({"05": [base, two]})
    alone, = preflight.estimate_times({"05": [two]})
    assert "two_stage" in after.what and f"({2 * per_epoch:,} steps, its global stage from the baseline)" in after.what
    assert f"({4 * per_epoch:,} steps)" in alone.what and "global stage" not in alone.what


def test_a_crashing_check_is_a_row_not_a_crash(tmp_path, monkeypatch):
    def broken(configs):
        raise RuntimeError("boom")

    monkeypatch.setattr(preflight, "check_device", broken)
    findings = preflight.run_checks([config(tmp_path)], probe=False)
    (row,) = rows(findings, "device")
    assert row.status == preflight.PROBLEM and "boom" in row.what
    assert rows(findings, "data") and rows(findings, "disk")  # the other checks ran


# --------------------------------------------------------------------------- the command and the report

REPO = Path(__file__).resolve().parent.parent


def test_cli_check_full_profile_on_the_sample_lists_each_missing_piece(cxr14_sample, tmp_path):
    """`cxrlib check --profile full --data-dir <sample>` here (no network, no weights): the
    table names each missing weights file and the command, exits 1, in seconds."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hf"),
               CXRLIB_WEIGHTS_DIR=str(tmp_path / "weights"))
    command = [sys.executable, "-m", "cxrlib", "check", "--profile", "full", "--data-dir", str(cxr14_sample),
               "--runs-dir", str(tmp_path / "runs"), "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    if torch.cuda.is_available():  # a GPU here would be probed; the probe has its own tests
        command.append("--no-probe")
    t0 = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t0
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    # The goal is 10 s on a quiet 2-core machine; these margins hold on a loaded one (34-39 s
    # measured for the whole command with the load at 9 on 2 cores, most of it importing torch).
    checked = float(out.splitlines()[-1].split(" in ")[1].split()[0])  # after the interpreter and torch load
    assert checked < 30 and seconds < 90, f"the check took {checked:.1f} s, the command {seconds:.1f} s"
    for timm_name in ("densenet121.tv_in1k", "resnet18.tv_in1k", "resnet50.tv_in1k", "inception_v3.tv_in1k",
                      "nasnetalarge.tf_in1k"):
        assert f"{timm_name}.safetensors is not in" in out
        assert f"https://huggingface.co/timm/{timm_name}/resolve/main/model.safetensors" in out.replace("\n", "").replace(" ", "")
    assert "HF_HUB_OFFLINE is set" in out  # no hub retries
    if not torch.cuda.is_available():
        assert "PROBLEM  device   train.device=cuda but no CUDA GPU is visible" in out
    for part in ("train", "val", "test"):
        assert f"WARNING  images   {part}: " in out
    assert "box list BBox_List_2017.csv" in out and "at 224 px" in out and "at 448 px" in out
    assert out.splitlines()[-2].startswith(("6 problem(s)", "5 problem(s)"))


def _notebook(path: Path, source: str) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    params = new_code_cell('PROFILE: str = "cpu"\nRUNS_DIR: str = ""')
    params.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[params, new_code_cell(source)]), str(path))


@pytest.mark.slow
def test_report_stops_on_a_problem_before_the_first_notebook(tmp_path):
    from cxrlib import profiles, report

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_writes.ipynb", "import pathlib\npathlib.Path(RUNS_DIR, 'ran.txt').write_text('ran')")
    lines = []
    missing = profiles.load("smoke", data_dir=tmp_path / "no-such-release")
    result = report.run_report(missing, notebooks_dir=nbs, out_dir=tmp_path / "out", runs_dir=tmp_path / "runs",
                               echo=lines.append)
    assert result.blocked and not result.ok and result.notebooks == []
    assert not (tmp_path / "runs" / "ran.txt").exists()
    text = "\n".join(lines)
    assert "PROBLEM  data     ChestX-ray14 folder" in text and "stopped before the first notebook" in text
    # Warnings only (the smoke profile's phantoms on this machine): the notebooks run.
    ok = report.run_report("smoke", notebooks_dir=nbs, out_dir=tmp_path / "out", runs_dir=tmp_path / "runs",
                           echo=None)
    assert ok.ok and (tmp_path / "runs" / "ran.txt").read_text() == "ran"


def test_the_estimate_states_what_the_seeds_cost(tmp_path, monkeypatch):
    """Every experiment trained with seeds [0, 1, 2]: the time line says how many runs and how much
    time the seeds after the first are; a profile with one seed each gets no such line."""
    monkeypatch.setattr(preflight, "speed_probe", lambda cfg: preflight.Speed(0.0, 0.01, 0.001, (2,)))
    monkeypatch.setattr(preflight.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    base = config(tmp_path)
    fpn = ExperimentConfig.from_dict({**config(tmp_path, model={"head": "fpn"}).to_dict(), "name": "fpn"})
    seeded = [dataclasses.replace(c, seed=s) for c in (base, fpn) for s in (0, 1, 2)]
    findings = preflight.estimate_times({"01": seeded[:3], "02": seeded})
    line = next(f for f in findings if f.what.startswith("training seeds"))
    n = {p: len(v.image_ids) for p, v in make_plan(base.data).parts.items()}
    one = preflight.run_seconds(base, preflight.Speed(0.0, 0.01, 0.001, (2,)), n["train"], n["val"], n["test"])
    assert "2 experiments with seeds [0, 1, 2]" in line.what
    assert "are 4 of the 6 runs" in line.what
    assert f"about {preflight._duration(4 * one)} on this device, 67% of the {preflight._duration(6 * one)}" in line.what
    # one seed each: nothing to state
    assert not [f for f in preflight.estimate_times({"01": [base]}) if f.what.startswith("training seeds")]
    # finished seeds cost nothing more; a device that was not probed says so
    done = preflight.estimate_times({"01": seeded[:3]}, finished=lambda c: c.seed > 0)
    assert "about 0 s on this device" in next(f.what for f in done if f.what.startswith("training seeds"))
    monkeypatch.setattr(preflight, "speed_probe", lambda cfg: (_ for _ in ()).throw(RuntimeError("no device")))
    unprobed = preflight.estimate_times({"01": seeded[:3]})
    assert "not estimated" in next(f.what for f in unprobed if f.what.startswith("training seeds"))
