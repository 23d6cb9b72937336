"""Pretrained ImageNet weights on a machine that may have no network.

Where a backbone's weights are looked for, in order:

1. the weights folder: ``model.weights_dir`` in the config, else ``$CXRLIB_WEIGHTS_DIR``,
   else ``data/weights`` in the project. It holds one file per model, named as timm names
   the pretrained model: ``densenet121.tv_in1k.safetensors`` (or ``.pth`` / ``.pt`` / ``.bin``);
2. the Hugging Face cache (``$HF_HUB_CACHE``), where timm itself would have downloaded it;
3. the hub, only when it can be reached.

Whether the hub can be reached is asked once per process: ``HF_HUB_OFFLINE`` answers at
once, otherwise one TCP connection to the hub (or the HTTPS proxy) with a short timeout, and
the answer is remembered. Without that, an offline machine spends over a minute in the hub
client's retries before it fails, and again for every model.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
# timm is imported inside the functions that ask it for a model's pretrained config: the
# check imports this module for every profile, and timm (with torchvision) costs about 1.5 s.
from huggingface_hub import constants as hub_constants

from cxrlib.models.errors import PretrainedWeightsError
from cxrlib.project import PROJECT_ROOT

WEIGHTS_DIR_ENV = "CXRLIB_WEIGHTS_DIR"
SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# The file timm's hub repositories hold (timm falls back to pytorch_model.bin when absent).
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class HubState:
    """The answer of the one connectivity probe: reachable or not, and why."""

    reachable: bool
    reason: str  # "HF_HUB_OFFLINE is set", "huggingface.co:443 answered in 0.05 s", ...
    seconds: float  # time the probe took


_state: HubState | None = None
_state_lock = threading.Lock()


def default_weights_dir() -> Path:
    """``$CXRLIB_WEIGHTS_DIR``, else ``data/weights`` in the project (beside ``data/cache``)."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env).expanduser() if env else PROJECT_ROOT / "data" / "weights"


def weights_dir(configured: str | os.PathLike | None = None) -> Path:
    """The weights folder to use: the configured one, else :func:`default_weights_dir`."""
    return Path(configured).expanduser() if configured else default_weights_dir()


def _registered(timm_name: str) -> bool:
    """Whether ``timm_name`` is a registered backbone's: each of those is timm's own, on the hub
    as ``timm/<timm_name>`` with ``model.safetensors`` (tests/test_startup.py checks that against
    timm), so the check answers for them without importing timm."""
    from cxrlib.models.registry import get_model_spec, list_models  # a leaf module: no cycle

    return timm_name in {get_model_spec(m).timm_name for m in list_models()}


def hub_repo(timm_name: str) -> str | None:
    """The Hugging Face repository timm downloads ``timm_name`` from (``timm/densenet121.tv_in1k``)."""
    if _registered(timm_name):
        return f"timm/{timm_name}"
    import timm
    cfg = timm.models.get_pretrained_cfg(timm_name)
    return cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else None


def hub_filename(timm_name: str) -> str:
    if _registered(timm_name):
        return HUB_FILES[0]
    import timm
    cfg = timm.models.get_pretrained_cfg(timm_name)
    return (cfg.hf_hub_filename if cfg is not None and cfg.hf_hub_filename else None) or HUB_FILES[0]


def hub_cache_folder(timm_name: str) -> Path | None:
    """Where the Hugging Face cache keeps ``timm_name`` (``.../hub/models--timm--densenet121.tv_in1k``)."""
    repo = hub_repo(timm_name)
    if repo is None:
        return None
    return Path(hub_constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))


def in_weights_dir(timm_name: str, folder: str | os.PathLike | None = None) -> Path | None:
    """``<folder>/<timm_name><suffix>`` if present."""
    base = weights_dir(folder)
    for suffix in SUFFIXES:
        path = base / f"{timm_name}{suffix}"
        if path.is_file():
            return path
    return None


def in_hub_cache(timm_name: str) -> Path | None:
    """The file timm would load from the Hugging Face cache, if it is there (no network)."""
    repo = hub_repo(timm_name)
    if repo is None:
        return None
    names = dict.fromkeys([hub_filename(timm_name), *HUB_FILES])
    for name in names:
        found = huggingface_hub.try_to_load_from_cache(repo, name, cache_dir=hub_constants.HF_HUB_CACHE)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def find_local(timm_name: str, folder: str | os.PathLike | None = None) -> Path | None:
    """The local weights file of ``timm_name``: the weights folder first, then the HF cache."""
    return in_weights_dir(timm_name, folder) or in_hub_cache(timm_name)


# --------------------------------------------------------------------------- the hub

def _hub_offline_flag() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE when imported; a variable set later (by the
    # report for its notebooks, or by a user in a notebook) still counts.
    env = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return bool(hub_constants.HF_HUB_OFFLINE) or env.strip().upper() in ("1", "ON", "YES", "TRUE")


def _probe_address() -> tuple[str, int]:
    """The hub host, or the HTTPS proxy when one is set (then only the proxy is reachable)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy if proxy else hub_constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.hostname or "huggingface.co", port


def _probe(timeout: float) -> HubState:
    host, port = _probe_address()
    result: dict[str, object] = {}

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError as err:
            result["error"] = f"{type(err).__name__}: {err}"

    t0 = time.perf_counter()
    # A thread, because a DNS lookup ignores the socket timeout and can hang for long.
    thread = threading.Thread(target=connect, name="cxrlib-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    seconds = time.perf_counter() - t0
    if result.get("ok"):
        return HubState(True, f"{host}:{port} answered in {seconds:.2f} s", seconds)
    why = result.get("error") or f"no answer within {timeout:g} s"
    return HubState(False, f"{host}:{port} cannot be reached ({why})", seconds)


def hub_state(timeout: float = PROBE_TIMEOUT_S) -> HubState:
    """Whether the Hugging Face hub can be reached, found out once per process."""
    global _state
    if _hub_offline_flag():
        return HubState(False, "HF_HUB_OFFLINE is set", 0.0)
    with _state_lock:
        if _state is None:
            _state = _probe(timeout)
        return _state


def known_offline() -> bool:
    """True when this process already found the hub out of reach (asks nothing itself)."""
    return _hub_offline_flag() or (_state is not None and not _state.reachable)


def hub_reachable() -> bool:
    return hub_state().reachable


def forget_hub_state() -> None:
    """Probe again at the next question (after the network came back; tests)."""
    global _state
    with _state_lock:
        _state = None


# --------------------------------------------------------------------------- what to do

def download_url(timm_name: str) -> str | None:
    repo = hub_repo(timm_name)
    if repo is None:
        return None
    return f"{hub_constants.ENDPOINT}/{repo}/resolve/main/{hub_filename(timm_name)}"


def target_file(timm_name: str, folder: str | os.PathLike | None = None) -> Path:
    """Where a fetched file goes in the weights folder: ``<folder>/<timm_name>.safetensors``."""
    name = hub_filename(timm_name)
    suffix = Path(name).suffix if Path(name).suffix in SUFFIXES else ".safetensors"
    return weights_dir(folder) / f"{timm_name}{suffix}"


def fetch_command(timm_name: str, folder: str | os.PathLike | None = None) -> str | None:
    """The shell command that puts ``timm_name``'s file in the weights folder (needs network)."""
    url = download_url(timm_name)
    return None if url is None else f"curl -L --create-dirs -o {target_file(timm_name, folder)} {url}"


def fetch_help(timm_name: str, folder: str | os.PathLike | None = None) -> str:
    """What to do: the file, where to put it, and the command that fetches it."""
    target = target_file(timm_name, folder)
    command = fetch_command(timm_name, folder)
    if command is None:
        import timm
        cfg = timm.models.get_pretrained_cfg(timm_name)
        source = cfg.url if cfg is not None and cfg.url else "the model's ImageNet weights"
        return (f"download {source} on a machine with network and save it as {target} "
                "(or pass weights_path=<that file>, ModelConfig.weights_path)")
    return (
        f"put the file {target.name} in the weights folder {target.parent} (model.weights_dir or "
        f"${WEIGHTS_DIR_ENV}); on a machine with network: `{command}`, then copy it here. Or fill the "
        f"Hugging Face cache: `hf download {hub_repo(timm_name)} {hub_filename(timm_name)}` there, then copy "
        f"its folder to {hub_cache_folder(timm_name)}. Or pass weights_path=<file> (ModelConfig.weights_path) "
        "for this one backbone"
    )


def missing_message(name: str, timm_name: str, folder: str | os.PathLike | None = None) -> str:
    """Why pretrained weights cannot be had here, for :class:`PretrainedWeightsError`."""
    state = hub_state()
    return (f"pretrained weights for {name} (timm {timm_name}) are not on this machine and there is "
            f"no network to fetch them ({state.reason}): {fetch_help(timm_name, folder)}.")


def resolve(name: str, timm_name: str, folder: str | os.PathLike | None = None) -> Path | None:
    """The local weights file for ``timm_name``, or None when the hub will serve it; offline
    and not here, :class:`PretrainedWeightsError` at once, naming the file and what to do."""
    local = find_local(timm_name, folder)
    if local is None and not hub_reachable():
        raise PretrainedWeightsError(missing_message(name, timm_name, folder))
    return local
