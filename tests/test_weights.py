"""Pretrained weights without network: the weights folder, the Hugging Face cache, and a fast,
clear failure when neither has the file (no hub retries)."""
from __future__ import annotations

import socket
import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from cxrlib import profiles
from cxrlib.config import ModelConfig
from cxrlib.models import PretrainedWeightsError, create_model, create_model_from_config, get_model_spec
from cxrlib.models import weights


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Sockets refuse, the HF cache is empty, and the hub state is probed afresh (probes counted)."""
    import huggingface_hub.constants as hub

    probes = []
    probe = weights._probe

    def refuse(self, address, *args, **kwargs):
        raise OSError("network access is disabled in tests")

    def counted_probe(timeout):
        probes.append(timeout)
        return probe(timeout)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(weights, "_probe", counted_probe)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)  # the probe itself must find out
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", weights.WEIGHTS_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setattr(weights, "PROJECT_ROOT", tmp_path / "project")  # no data/weights of the checkout
    weights.forget_hub_state()
    yield probes
    weights.forget_hub_state()


def resnet18_imagenet_like(seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model("resnet18", num_classes=1000).state_dict()  # 3-channel conv1, random


def assert_loaded_exactly(model, saved: dict[str, torch.Tensor]) -> None:
    loaded = model.backbone.body.state_dict()
    assert torch.equal(loaded["conv1.weight"], saved["conv1.weight"].sum(dim=1, keepdim=True))
    for key, value in loaded.items():
        if key != "conv1.weight":
            assert torch.equal(value, saved[key]), key


def test_offline_failure_is_fast_names_the_file_and_probes_once(no_network):
    spec = get_model_spec("densenet121")
    t0 = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as err:
        create_model("densenet121", pretrained=True)
    first = time.perf_counter() - t0
    message = str(err.value)
    assert "densenet121.tv_in1k.safetensors" in message  # the file, named as timm names it
    assert str(weights.default_weights_dir()) in message  # where to put it
    assert "curl -L" in message and "https://huggingface.co/timm/densenet121.tv_in1k/resolve/main/model.safetensors" in message
    assert "hf download timm/densenet121.tv_in1k" in message  # or the Hugging Face cache
    assert str(weights.hub_cache_folder(spec.timm_name)) in message
    assert "cannot be reached" in message
    assert first < 3.0, f"offline failure took {first:.1f} s"
    assert len(no_network) == 1  # one probe

    # Every later model in this process: no new probe, no wait.
    t0 = time.perf_counter()
    for name in ("resnet18", "resnet50"):
        with pytest.raises(PretrainedWeightsError, match=f"{get_model_spec(name).timm_name}.safetensors"):
            create_model(name, pretrained=True)
    assert time.perf_counter() - t0 < 2.0
    assert len(no_network) == 1


def test_hf_hub_offline_is_honoured_without_any_probe(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsError, match="HF_HUB_OFFLINE is set.*resnet18.tv_in1k.safetensors"):
        create_model("resnet18", pretrained=True)
    assert no_network == []


def test_a_slow_network_counts_as_offline_after_the_probe_timeout(monkeypatch):
    def hang(*args, **kwargs):  # a DNS lookup or SYN that never answers
        time.sleep(30)

    monkeypatch.setattr(socket, "create_connection", hang)
    t0 = time.perf_counter()
    state = weights.hub_state(timeout=0.3)
    assert not state.reachable and "no answer within 0.3 s" in state.reason
    assert time.perf_counter() - t0 < 2.0


def test_the_probe_asks_the_proxy_when_one_is_set(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert weights._probe_address() == ("proxy.example", 3128)
    assert not weights.hub_state().reachable and "proxy.example:3128" in weights.hub_state().reason


def test_weights_folder_file_loads_exactly(tmp_path, monkeypatch, no_network):
    saved = resnet18_imagenet_like()
    folder = tmp_path / "weights"
    folder.mkdir()
    save_file(saved, folder / "resnet18.tv_in1k.safetensors")
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(folder))
    assert weights.find_local("resnet18.tv_in1k") == folder / "resnet18.tv_in1k.safetensors"
    model = create_model("resnet18", in_chans=1, pretrained=True)
    assert_loaded_exactly(model, saved)
    assert no_network == []  # found locally: the hub is not even probed


def test_weights_folder_takes_torch_files_and_an_explicit_folder(tmp_path, no_network):
    saved = resnet18_imagenet_like(seed=2)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    torch.save(saved, folder / "resnet18.tv_in1k.pth")
    path = weights.resolve("resnet18", "resnet18.tv_in1k", folder)
    assert path == folder / "resnet18.tv_in1k.pth"
    assert_loaded_exactly(create_model("resnet18", weights_path=path), saved)
    # Another folder without the file: the message names that folder.
    with pytest.raises(PretrainedWeightsError, match=str(tmp_path / "empty")):
        weights.resolve("resnet18", "resnet18.tv_in1k", tmp_path / "empty")


def test_hugging_face_cache_is_used_offline(tmp_path, no_network):
    """A cache filled elsewhere by `hf download` and copied here serves the weights."""
    saved = resnet18_imagenet_like(seed=3)
    repo = weights.hub_cache_folder("resnet18.tv_in1k")
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file(saved, snapshot / "model.safetensors")
    assert weights.find_local("resnet18.tv_in1k") == snapshot / "model.safetensors"
    assert_loaded_exactly(create_model("resnet18", pretrained=True), saved)
    assert no_network == []


def test_weights_of_another_model_in_the_folder_are_refused(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    save_file(timm.create_model("densenet121").state_dict(), folder / "resnet18.tv_in1k.safetensors")
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(folder))
    with pytest.raises(PretrainedWeightsError, match="resnet18.tv_in1k.safetensors do not fit resnet18"):
        create_model("resnet18", pretrained=True)


def test_a_configs_weights_dir_serves_every_backbone(tmp_path, no_network):
    """One model.weights_dir for all the backbones a profile trains, each its own file."""
    folder = tmp_path / "weights"
    folder.mkdir()
    saved = resnet18_imagenet_like(seed=4)
    save_file(saved, folder / "resnet18.tv_in1k.safetensors")
    cfg = ModelConfig(name="resnet18", pretrained=True, weights_dir=str(folder))
    model = create_model_from_config(cfg, num_classes=14)
    assert_loaded_exactly(model, saved)
    assert model.info.pretrained == str(folder / "resnet18.tv_in1k.safetensors")
    with pytest.raises(PretrainedWeightsError, match=f"resnet50.tv_in1k.safetensors in the weights folder {folder}"):
        create_model_from_config(ModelConfig(name="resnet50", pretrained=True, weights_dir=str(folder)), 14)
    # A finished run is rebuilt without them (its best.pt replaces them anyway).
    assert create_model_from_config(ModelConfig(name="resnet50", pretrained=True, weights_dir=str(folder)), 14,
                                    pretrained=False).info.pretrained == "none"
    assert len(no_network) == 1  # one probe, for the missing resnet50


def test_profile_anchors_a_relative_weights_dir_at_the_project(monkeypatch):
    """A notebook's kernel starts in notebooks/: a relative weights folder still means the project's."""
    monkeypatch.chdir(profiles.PROJECT_ROOT / "notebooks")
    profile = profiles.load("full", overrides=["model.weights_dir=data/weights"])
    assert profile.baseline.model.weights_dir == str(profiles.PROJECT_ROOT / "data" / "weights")
    assert profiles.load("full").baseline.model.weights_dir is None  # unset: the default folder
