"""Profiles: resolved once into a baseline config, notebook parameters and anchored folders."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from cxrlib import profiles
from cxrlib.profiles import PROJECT_ROOT, project_path

REPO = Path(__file__).resolve().parent.parent


def test_notebook_parameters_from_profile_and_overrides():
    profile = profiles.load(
        "smoke", data_dir="/data/cxr", device="cuda", runs_dir="/r",
        overrides=["train.epochs=3", "notebooks.01_baselines.MODELS=[resnet50]", "06_losses.LOSSES=[focal]"],
    )
    params = profile.notebook_parameters("01_baselines", redo=True)
    assert params["PROFILE"] == "smoke" and params["DATA_DIR"] == "/data/cxr" and params["DEVICE"] == "cuda"
    assert params["RUNS_DIR"] == "/r" and params["REDO"] is True
    assert params["OVERRIDES"] == ["train.epochs=3"]  # experiment overrides reach every notebook
    assert params["MODELS"] == ["resnet50"]  # the command line beats the profile
    assert params["FIFTEEN_LABELS"] is True  # from profiles/smoke.yaml
    assert "LOSSES" not in params  # that override belongs to 06
    assert profiles.load("smoke", overrides=["06_losses.LOSSES=[focal]"]).notebook_parameters("06_losses")[
        "LOSSES"] == ["focal"]
    # the resolved baseline carries the same choices
    assert (profile.baseline.train.epochs, profile.baseline.train.device, str(profile.runs_dir)) == (3, "cuda", "/r")


def test_a_profile_file_outside_profiles_is_passed_by_its_full_path(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("experiment:\n  train:\n    epochs: 2\nnotebooks:\n  01_baselines:\n    MODELS: [resnet18]\n")
    profile = profiles.load(own)
    assert profile.name == "mine" and profile.baseline.train.epochs == 2
    assert str(profile.runs_dir) == "runs/mine"  # runs/<profile> when the file names none
    assert profiles.load(profile.notebook_parameters("01_baselines")["PROFILE"]).path.resolve() == own.resolve()


def test_bad_override_and_profile_fail_early():
    with pytest.raises(ValueError, match="unknown key 'epochz'"):
        profiles.load("smoke", overrides=["train.epochz=3"])
    with pytest.raises(FileNotFoundError, match="profile 'nope' not found"):
        profiles.load("nope")


def test_profiles_build_configs():
    for name in ("smoke", "cpu", "full", "sample"):
        profile = profiles.load(name)
        cfg = profile.baseline
        assert cfg.name == "baseline" and cfg.runs_dir == f"runs/{name}" and profile.runs_dir == Path(f"runs/{name}")
        for stem, params in profile.notebooks.items():
            path = REPO / "notebooks" / f"{stem}.ipynb"
            assert path.is_file(), f"{name}.yaml names a missing notebook {stem}"
            assert isinstance(params, dict)
            cell = next(c for c in nbformat.read(str(path), as_version=4).cells
                        if "parameters" in c.metadata.get("tags", []))
            declared = {line.split(":")[0].strip() for line in cell.source.splitlines() if ":" in line}
            assert set(params) <= declared, f"{name}.yaml sets {set(params) - declared} that {stem} does not declare"
    # the real-sample profile: real files, the official split, nothing to download
    sample = profiles.load("sample", data_dir="/data/sample").baseline
    assert (sample.data.source, sample.data.split, sample.data.data_dir) == ("chestxray14", "official", "/data/sample")
    assert not sample.model.pretrained
    full = profiles.load("full", data_dir="/data/ChestX-ray14").baseline
    assert (full.data.source, full.data.split, full.data.image_size, full.model.name) == (
        "chestxray14", "official", 224, "densenet121")
    assert full.train.batch_size == 16 and full.model.pretrained
    # a data dir given to the phantom profile switches it to the real data
    assert profiles.load("cpu", data_dir="/x").baseline.data.source == "chestxray14"


def test_without_a_profile_the_config_defaults_apply():
    profile = profiles.load(None)
    assert profile.path is None and profile.baseline.runs_dir == "runs" and profile.baseline.data.image_size == 128


def test_config_names_variants_by_their_changes():
    profile = profiles.load("smoke")
    assert profile.config().name == "baseline" and profile.config().fingerprint() == profile.baseline.fingerprint()
    fpn = profile.config(changes={"model.head": "fpn", "data.include_no_finding": True})
    assert fpn.name == "fpn+include_no_finding" and fpn.model.head == "fpn"
    assert profile.config("mine", {"train.loss": "focal"}).name == "mine"
    assert profiles.variant_name({"model.options": {"low_res": 0.5}}) == 'options={"low_res":0.5}'


def test_project_path_from_inside_the_project(monkeypatch, tmp_path):
    monkeypatch.chdir(PROJECT_ROOT / "notebooks")  # where JupyterLab starts a kernel
    assert project_path("runs/cpu") == PROJECT_ROOT / "runs" / "cpu"
    assert profiles.load("smoke").runs_dir == PROJECT_ROOT / "runs" / "smoke"
    assert profiles.load("smoke").cache_dir == PROJECT_ROOT / "data" / "cache"
    monkeypatch.chdir(PROJECT_ROOT)
    assert project_path("runs/cpu") == Path("runs/cpu")
    monkeypatch.chdir(tmp_path)  # outside the project: relative to where the command runs
    assert project_path("runs/cpu") == Path("runs/cpu")
    assert project_path(tmp_path / "abs") == tmp_path / "abs"


def test_seeds_are_a_profile_setting_with_overrides(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("experiment:\n  seed: 4\nseeds:\n  baseline: [4, 5, 6]\n")
    profile = profiles.load(own)
    assert profile.seeds.of(profile.baseline) == (4, 5, 6) and profile.seeds.of("fpn") == (4,)  # variants: the seed
    changed = profiles.load(own, overrides=["seeds.variants=[0, 1]"])
    assert changed.seeds == profiles.Seeds((4, 5, 6), (0, 1))
    # seed overrides travel to the notebooks with the others, and come back the same
    params = changed.notebook_parameters("01_baselines")
    assert params["OVERRIDES"] == ["seeds.variants=[0, 1]"]
    assert profiles.load(own, overrides=params["OVERRIDES"]).seeds == changed.seeds
    assert profiles.load(own, overrides=["seeds=[2]"]).seeds == profiles.Seeds((2,), (2,))
    assert profiles.load(None).seeds == profiles.Seeds((0,), (0,))
    for bad, match in ((["seeds=[1, 1]"], "listed twice"), (["seeds=[]"], "non-empty list"),
                       (["seeds=[-1]"], "whole numbers"), (["seeds.others=[0]"], "unknown key"),
                       (["seeds"], "must look like")):
        with pytest.raises(ValueError, match=match):
            profiles.load(own, overrides=bad)
    own.write_text("full_profile_only:\n  nasnet: ''\n")
    with pytest.raises(ValueError, match="full_profile_only must map each model to the measured reason"):
        profiles.load(own)


def test_built_in_profiles_measure_seed_spread():
    cpu, full = profiles.load("cpu"), profiles.load("full")
    assert len(cpu.seeds.baseline) >= 3 and len(cpu.seeds.variants) >= 3  # every compared run
    assert len(full.seeds.baseline) >= 3  # the spread measured on real data too
    for name, why in cpu.full_profile_only.items():
        assert "measured" in why, f"cpu.yaml: {name} is left to the full profile without a measured reason"
