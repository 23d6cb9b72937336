"""The interactive demo: pick or upload a chest X-ray, see 14 probabilities and a heatmap.

Logic and display are kept apart so that the logic can be tested without a browser:

- :class:`DemoSession` holds the state (the model, the image, the CAM method), reads
  uploads, runs the model once per (image, model) and Grad-CAM once per (image, model,
  method, finding), and hands out plain arrays: :meth:`DemoSession.chart_data` and
  :meth:`DemoSession.heatmap`.
- :func:`build_demo` wraps a session in ipywidgets (:class:`DemoApp`, a ``VBox``). The
  same widget runs in JupyterLab, under papermill and as a Voila app.

The bar chart is made of widgets (a button per finding beside an HTML bar), not a
matplotlib figure, so that a click on a finding works in every frontend, Voila included,
without ipympl, and so that it redraws in milliseconds.
"""
from __future__ import annotations

import functools
import hashlib
import html
import io
import json
import os
import time
import traceback
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import ipywidgets as widgets
import numpy as np

from cxrlib.labels import FINDINGS, NO_FINDING, canonical

DEFAULT_UNTRAINED: tuple[str, ...] = ("resnet18", "densenet121")
DEFAULT_METHOD = "gradcam"
DEFAULT_THRESHOLD = 0.5
# An upload is held in memory several times over (bytes, decoded array, display copy):
# these caps keep one careless upload from taking the kernel down. 40 Mpx is well above
# any chest radiograph (the largest detectors are about 4300 x 4300).
MAX_UPLOAD_BYTES = 64 * 2**20
MAX_PIXELS = 40_000_000
# The overlay is sent to the browser as a JPEG; beyond this side it is only slower.
MAX_DISPLAY_SIDE = 2048
UPLOAD_ACCEPT = ".png,.jpg,.jpeg,.dcm,.dicom,image/png,image/jpeg,application/dicom"

ENV_PREFIX = "CXRLIB_DEMO_"


class UploadError(ValueError):
    """An uploaded file the demo cannot show; the message says why and what to do."""


# --------------------------------------------------------------------------------------
# model choices
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model menu: a trained run, or a freshly initialised architecture."""

    key: str  # "run:<folder name>" or "untrained:<architecture>"
    label: str  # what the menu shows
    arch: str
    run_dir: Path | None = None
    mean_auroc: float | None = None
    split: str | None = None

    @property
    def untrained(self) -> bool:
        return self.run_dir is None


def list_model_choices(
    runs_dir: str | Path | None,
    untrained: Iterable[str] = DEFAULT_UNTRAINED,
    problems: list[str] | None = None,
) -> list[ModelChoice]:
    """Trained runs under ``runs_dir`` (best test mean AUROC first), then untrained models.

    A run counts when its folder holds ``metrics.json`` (written last by the engine, so a
    run still training is not offered). A run whose metrics cannot be read is left out and
    described in ``problems`` when a list is given.
    """
    choices: list[ModelChoice] = []
    root = Path(runs_dir) if runs_dir else None
    if root is not None and root.is_dir():
        for metrics_path in sorted(root.glob("*/metrics.json")):
            run_dir = metrics_path.parent
            try:
                metrics = json.loads(metrics_path.read_text())
                auroc = metrics.get("mean_auroc")
                auroc = None if auroc is None else float(auroc)
            except (OSError, ValueError, TypeError, AttributeError) as err:
                if problems is not None:
                    problems.append(f"run {run_dir} skipped: cannot read {metrics_path.name} ({err})")
                continue
            arch = _run_arch(run_dir, metrics)
            auc_text = "n/a" if auroc is None or not np.isfinite(auroc) else f"{auroc:.3f}"
            label = f"{run_dir.name} ({arch}) · test mean AUROC {auc_text}"
            choices.append(
                ModelChoice(
                    key=f"run:{run_dir.name}",
                    label=label,
                    arch=arch,
                    run_dir=run_dir,
                    mean_auroc=auroc,
                    split=metrics.get("split"),
                )
            )
    choices.sort(key=lambda c: -(c.mean_auroc if c.mean_auroc is not None and np.isfinite(c.mean_auroc) else -1.0))
    for arch in untrained:
        choices.append(
            ModelChoice(key=f"untrained:{arch}", label=f"untrained {arch} (random weights)", arch=arch)
        )
    return choices


def _run_arch(run_dir: Path, metrics: dict[str, Any]) -> str:
    """The architecture name of a run, from metrics.json's model section or config.json."""
    model = metrics.get("model")
    if isinstance(model, dict) and model.get("name"):
        return str(model["name"])
    try:
        config = json.loads((run_dir / "config.json").read_text())
        return str(config["model"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return "model"


# --------------------------------------------------------------------------------------
# the loaded model
# --------------------------------------------------------------------------------------


class DemoModel:
    """A model ready for the demo: eval mode, on its device, with its input size and labels."""

    def __init__(self, choice: ModelChoice, module, label_names: Sequence[str], image_size: int,
                 channels: int, device: str = "cpu"):
        self.choice = choice
        self.module = module
        self.label_names = list(label_names)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.device = device

    @property
    def key(self) -> str:
        return self.choice.key

    @property
    def untrained(self) -> bool:
        return self.choice.untrained

    @classmethod
    def load(cls, choice: ModelChoice, image_size: int = 224, device: str = "cpu") -> "DemoModel":
        """Load a run's checkpoint (its own input size) or build an untrained model."""
        if choice.untrained:
            module = _untrained_module(choice.arch, str(_torch_device(device)))
            names, size, channels = list(FINDINGS), image_size, 1
        else:
            from cxrlib.config import ExperimentConfig
            from cxrlib.labels import label_names as _label_names
            from cxrlib.train import load_run

            run = load_run(choice.run_dir)
            module = run.model
            if module is None:
                raise RuntimeError(f"run {choice.run_dir} has no model checkpoint (best.pt / last.pt)")
            config = run.config
            if isinstance(config, dict):
                config = ExperimentConfig.from_dict(config)
            metrics = run.metrics or {}
            names = (getattr(module, "label_names", None) or metrics.get("label_names")
                     or _label_names(config.data.include_no_finding))
            size, channels = config.data.image_size, config.model.in_chans
        module = module.to(_torch_device(device)).eval()
        return cls(choice, module, names, size, channels, str(_torch_device(device)))

    def analyse(self, x, method: str = DEFAULT_METHOD) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``[K]`` and every output's heatmap ``[K,H,W]`` for one image ``[C,H,W]``.

        One forward pass serves both: cxrlib.cam computes all the maps from a single forward
        (one cheap backward through the head per finding), and a hook on the model keeps the
        logits of that same forward. Against a separate inference pass this halves the wait
        after choosing an image, and makes every later click on a finding free.
        """
        import torch

        from cxrlib.cam import heatmaps_all_findings

        outputs: list = []
        handle = self.module.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
        try:
            maps = heatmaps_all_findings(self.module, x.to(self.device), method=method)
        finally:
            handle.remove()
        probs = torch.sigmoid(outputs[-1].float())[0].cpu().numpy().astype(np.float32)
        return probs, np.asarray(maps, dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _untrained_module(arch: str, device: str):
    """A freshly initialised model, shared by every session of the process (it is only read)."""
    import torch

    from cxrlib.models import create_model

    # Seeded and isolated, so "untrained resnet18" is the same model every time (and in
    # every test run) without touching the global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = create_model(arch, num_classes=len(FINDINGS), in_chans=1, pretrained=False)
    return module.to(device).eval()


def _torch_device(device: str):
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------


@dataclass
class DemoImage:
    """An image the demo shows, at its full resolution, with what is known about it."""

    key: str  # cache key: "dataset:<id>" or "upload:<sha1 of the bytes>"
    name: str
    pixels: np.ndarray  # uint8 [H,W], original resolution
    source: str  # "dataset" | "upload"
    labels: list[str] | None = None  # true findings (dataset images only)
    boxes: list = field(default_factory=list)  # cxrlib.data Box objects, full-image pixels

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape[:2])


def read_upload(content: bytes | memoryview, name: str = "upload", max_bytes: int = MAX_UPLOAD_BYTES,
                max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded file to uint8 gray ``[H,W]``; UploadError with a clear message if not.

    The checks on size come before decoding: an enormous image is refused from its header,
    so it is never decompressed into memory.
    """
    content = bytes(content)
    if not content:
        raise UploadError(f"'{name}' is empty (0 bytes): upload a PNG, JPEG or DICOM chest X-ray")
    if len(content) > max_bytes:
        raise UploadError(
            f"'{name}' is {len(content) / 2**20:.1f} MiB; the demo accepts files up to "
            f"{max_bytes / 2**20:.0f} MiB: downsize the image first"
        )
    _check_header_size(content, name, max_pixels)
    from cxrlib.data.imageio import ImageError, read_image

    try:
        pixels = _call_read_image(read_image, content, name, max_pixels)
    except ImageError as err:
        raise UploadError(str(err)) from None  # read_image's message already names the file
    except MemoryError:
        raise UploadError(f"'{name}' is too large to decode: downsize the image first") from None
    except Exception as err:  # a decoder's own error on a hostile file must not escape the demo
        raise UploadError(f"cannot read '{name}' as an image ({type(err).__name__}: {err}); "
                          "upload a PNG, JPEG or DICOM chest X-ray") from None
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8 or min(pixels.shape) < 1:
        raise UploadError(f"'{name}' decoded to an unexpected array {pixels.dtype} {pixels.shape}")
    if pixels.size > max_pixels:
        raise UploadError(_too_big(name, pixels.shape[1], pixels.shape[0], max_pixels))
    return pixels


def _call_read_image(read_image: Callable, content: bytes, name: str, max_pixels: int):
    """Pass the demo's pixel cap to read_image when it takes one (its signature may vary)."""
    import inspect

    try:
        accepts = "max_pixels" in inspect.signature(read_image).parameters
    except (TypeError, ValueError):
        accepts = False
    if accepts:
        return read_image(content, name, max_pixels=max_pixels)
    return read_image(content, name)


def _too_big(name: str, width: int, height: int, max_pixels: int) -> str:
    return (f"'{name}' is {width} x {height} pixels ({width * height / 1e6:.0f} Mpx); the demo accepts "
            f"up to {max_pixels / 1e6:.0f} Mpx: downsize the image first")


def _check_header_size(content: bytes, name: str, max_pixels: int) -> None:
    """Refuse an image whose header declares more than ``max_pixels``, without decoding it."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as im:  # lazy: reads the header only
                width, height = im.size
    except Image.DecompressionBombError:
        raise UploadError(f"'{name}' declares an enormous image (a decompression bomb?); "
                          "the demo refuses it: upload an ordinary chest X-ray") from None
    except Exception:  # not something PIL recognises (DICOM, text, ...): read_image decides
        return
    if width * height > max_pixels:
        raise UploadError(_too_big(name, width, height, max_pixels))


# --------------------------------------------------------------------------------------
# overlay
# --------------------------------------------------------------------------------------


def upsample_heatmap(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A ``[h,w]`` heatmap resized to ``shape`` (H, W), kept in [0,1] (cxrlib.overlay's resize)."""
    from cxrlib.overlay import resize_heatmap

    return resize_heatmap(heatmap, shape)


def render_overlay(image_u8: np.ndarray, heatmap: np.ndarray, boxes: Sequence = (),
                   max_side: int = MAX_DISPLAY_SIDE, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 picture: the gray image, the heatmap in colour on top, the boxes outlined
    (cxrlib.overlay's picture, the one the notebooks draw)."""
    from cxrlib.overlay import render

    return render(image_u8, heatmap, boxes, max_side=max_side, alpha=alpha)


def encode_jpeg(rgb: np.ndarray, quality: int = 88) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------
# the session: all of the demo's logic
# --------------------------------------------------------------------------------------


@dataclass
class ChartData:
    """What the bar chart shows: findings sorted by probability, highest first."""

    names: list[str]
    probabilities: np.ndarray  # float32 [14], sorted descending
    threshold: float
    truth: list[bool | None]  # the true label per finding, None for an upload

    @property
    def above(self) -> list[bool]:
        return [bool(p >= self.threshold) for p in self.probabilities]


class _LRU(OrderedDict):
    """A small least-recently-used cache (uploads and heatmaps must not pile up)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key, make: Callable[[], Any]):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return self.put(key, make())

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


class DemoSession:
    """The demo's state and logic, with no widgets: choose a model and an image, read results.

    ``data`` is a :class:`cxrlib.data.DataBundle` (or anything with ``.test.image_ids``,
    ``.test.targets``, ``.label_names``, ``.full_image(id)`` and ``.boxes(id)``), or None
    for an upload-only demo. Nothing is computed until asked for; every result is cached
    per (image, model[, method, finding]).
    """

    def __init__(self, data=None, runs_dir: str | Path | None = "runs",
                 untrained: Iterable[str] = DEFAULT_UNTRAINED, image_size: int = 224,
                 device: str = "cpu", threshold: float = DEFAULT_THRESHOLD, max_images: int = 200,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
                 cache_size: int = 8):
        self.data = data
        self.image_size = int(image_size)
        self.device = device
        self.threshold = float(threshold)
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.notes: list[str] = []  # problems met while scanning runs, shown by the widget
        self.model_choices = list_model_choices(runs_dir, untrained, self.notes)
        if not self.model_choices:
            raise ValueError(f"no model to offer: no runs with metrics.json under {runs_dir!r} "
                             "and no untrained architecture given")
        self.method = DEFAULT_METHOD
        self.model: DemoModel | None = None
        self.image: DemoImage | None = None
        self.timings: dict[str, float] = {}
        self._max_images = max_images
        # Bounded caches: an upload may be 40 Mpx, and 14 maps at 224 px are ~3 MB, so a long
        # session must not grow without limit. Two models let a person compare quickly.
        self._models = _LRU(2)
        self._images = _LRU(cache_size)
        self._inputs = _LRU(4 * cache_size)
        self._probs = _LRU(16 * cache_size)
        self._heatmaps = _LRU(2 * cache_size)  # (image, model, method) -> (probs, maps [K,h,w])

    # -- menus ----------------------------------------------------------------------
    @property
    def image_choices(self) -> list[tuple[str, str]]:
        """``(label, image id)`` for the test images of the dataset (first ``max_images``)."""
        if self.data is None:
            return []
        test = self.data.test
        ids = [str(i) for i in test.image_ids[: self._max_images]]
        targets = np.asarray(test.targets)[: len(ids)]
        names = list(self.data.label_names)
        return [(f"{image_id} — {_labels_text(_true_labels(row, names))}", image_id)
                for image_id, row in zip(ids, targets)]

    @property
    def method_choices(self) -> list[str]:
        from cxrlib.cam import CAM_METHODS

        return list(CAM_METHODS)

    @property
    def method_options(self) -> list[tuple[str, str]]:
        """``(label, method)`` for the menu; the class-free baselines say so."""
        from cxrlib.cam import SCORE_FREE_METHODS

        return [(m + (" (baseline: ignores the finding)" if m in SCORE_FREE_METHODS else ""), m)
                for m in self.method_choices]

    @property
    def findings(self) -> list[str]:
        """The findings charted: the model's outputs without No Finding (the 14)."""
        names = self.model.label_names if self.model is not None else list(FINDINGS)
        return [n for n in names if n != NO_FINDING]

    # -- choosing -------------------------------------------------------------------
    def select_model(self, key: str) -> DemoModel:
        choice = next((c for c in self.model_choices if c.key == key), None)
        if choice is None:
            raise ValueError(f"unknown model {key!r}: choose one of {[c.key for c in self.model_choices]}")
        self.model = self._models.get_or(key, lambda: self._timed(
            "load_model", lambda: DemoModel.load(choice, self.image_size, self.device)))
        return self.model

    def select_method(self, method: str) -> None:
        if method not in self.method_choices:
            raise ValueError(f"unknown CAM method {method!r}: choose one of {self.method_choices}")
        self.method = method

    def select_dataset_image(self, image_id: str) -> DemoImage:
        if self.data is None:
            raise ValueError("this demo has no dataset: upload an image instead")
        test = self.data.test
        ids = [str(i) for i in test.image_ids]
        if image_id not in ids:
            raise ValueError(f"image {image_id!r} is not in the test split of the dataset")

        def make() -> DemoImage:
            row = np.asarray(test.targets)[ids.index(image_id)]
            pixels = np.asarray(self._timed("decode", lambda: self.data.full_image(image_id)))
            try:
                boxes = list(self.data.boxes(image_id) or [])
            except (KeyError, LookupError):
                boxes = []
            return DemoImage(key=f"dataset:{image_id}", name=image_id, pixels=pixels, source="dataset",
                             labels=_true_labels(row, list(self.data.label_names)), boxes=boxes)

        self.image = self._images.get_or(f"dataset:{image_id}", make)
        return self.image

    def load_upload(self, content: bytes | memoryview, name: str = "upload") -> DemoImage:
        """Make an uploaded file the current image; UploadError (current image kept) if unusable."""
        content = bytes(content)
        key = "upload:" + hashlib.sha1(content).hexdigest()

        def make() -> DemoImage:
            pixels = self._timed("decode", lambda: read_upload(content, name, self.max_upload_bytes,
                                                                self.max_pixels))
            return DemoImage(key=key, name=name, pixels=pixels, source="upload")

        self.image = self._images.get_or(key, make)
        return self.image

    # -- results --------------------------------------------------------------------
    def _require(self) -> tuple[DemoModel, DemoImage]:
        if self.model is None:
            self.select_model(self.model_choices[0].key)
        if self.image is None:
            raise ValueError("no image yet: pick one from the dataset or upload one")
        return self.model, self.image

    def _input(self, model: DemoModel, image: DemoImage):
        from cxrlib.data.datasets import preprocess

        key = (image.key, model.image_size, model.channels)
        return self._inputs.get_or(key, lambda: self._timed(
            "preprocess", lambda: preprocess(image.pixels, model.image_size, model.channels)))

    def _analysis(self, method: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, all heatmaps) of the current image and model for ``method``, cached."""
        model, image = self._require()
        method = method or self.method
        x = self._input(model, image)

        def make():
            probs, maps = self._timed("analyse", lambda: model.analyse(x, method))
            self._probs.put((image.key, model.key), probs)
            return probs, maps

        return self._heatmaps.get_or((image.key, model.key, method), make)

    def probabilities(self) -> np.ndarray:
        """The model's probabilities for the current image, in the model's label order."""
        model, image = self._require()
        cached = self._probs.get((image.key, model.key))
        return cached if cached is not None else self._analysis()[0]

    def probability_table(self) -> dict[str, float]:
        probs = self.probabilities()
        return {name: float(p) for name, p in zip(self.model.label_names, probs) if name != NO_FINDING}

    def chart_data(self) -> ChartData:
        table = self.probability_table()
        names = sorted(table, key=lambda n: -table[n])
        truth = [None if self.image.labels is None else (n in self.image.labels) for n in names]
        return ChartData(names=names, probabilities=np.array([table[n] for n in names], dtype=np.float32),
                         threshold=self.threshold, truth=truth)

    def top_finding(self) -> str:
        return self.chart_data().names[0]

    def heatmap(self, finding: str, method: str | None = None, full_size: bool = False) -> np.ndarray:
        """The CAM of ``finding`` for the current image: ``[S,S]`` at the model's input size,
        or at the image's full resolution when ``full_size``."""
        model, image = self._require()
        finding = canonical(finding)
        if finding not in model.label_names:
            raise ValueError(f"the model has no output {finding!r}")
        heat = self._analysis(method)[1][model.label_names.index(finding)]
        return upsample_heatmap(heat, image.shape) if full_size else heat

    def boxes_for(self, finding: str) -> list:
        if self.image is None:
            return []
        finding = canonical(finding)
        return [b for b in self.image.boxes if _box_finding(b) == finding]

    def overlay(self, finding: str, method: str | None = None) -> np.ndarray:
        """RGB picture of the heatmap of ``finding`` on the full-resolution image, with its boxes."""
        heat = self.heatmap(finding, method)
        return self._timed("render", lambda: render_overlay(self.image.pixels, heat, self.boxes_for(finding)))

    def _timed(self, step: str, fn: Callable[[], Any]):
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.timings[step] = time.perf_counter() - start


def _true_labels(row: np.ndarray, names: Sequence[str]) -> list[str]:
    return [n for n, v in zip(names, np.asarray(row)) if v > 0.5 and n != NO_FINDING]


def _labels_text(labels: list[str] | None) -> str:
    if labels is None:
        return "labels unknown"
    return ", ".join(labels) if labels else NO_FINDING


def _box_finding(box) -> str | None:
    try:
        return canonical(str(getattr(box, "finding")))
    except (AttributeError, ValueError):
        return None


# --------------------------------------------------------------------------------------
# settings: notebook parameters, overridable from the environment for Voila
# --------------------------------------------------------------------------------------


def demo_settings(**params: Any) -> dict[str, Any]:
    """The notebook's parameters, each overridden by ``CXRLIB_DEMO_<NAME>`` when that is set.

    Voila cannot inject papermill parameters, so a server is pointed at other runs, data or
    a tiny setup through the environment (its kernels inherit it), for example
    ``CXRLIB_DEMO_OVERRIDES="data.num_phantoms=40;data.limit=8" voila notebooks/08_demo.ipynb``.
    Lists are written ``a;b`` (OVERRIDES) or ``a,b`` (UNTRAINED).
    """
    out = dict(params)
    for name, value in params.items():
        raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if isinstance(value, (list, tuple)):
            sep = ";" if name.lower() == "overrides" else ","
            out[name] = [part.strip() for part in raw.split(sep) if part.strip()]
        elif isinstance(value, bool):
            out[name] = raw.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(value, int):
            out[name] = int(raw)
        elif isinstance(value, float):
            out[name] = float(raw)
        else:
            out[name] = None if raw.strip().lower() in ("", "none", "null") else raw
    return out


def project_path(path: str | Path) -> Path:
    """A relative path of the project (``runs/...``, ``data/cache``) as the report means it.

    The report runs notebooks from the project root, but JupyterLab and Voila start the
    kernel in ``notebooks/``; relative paths are taken from the project root in that case,
    so every frontend sees the same runs and the same image cache.
    """
    from cxrlib.config import PROFILES_DIR

    path = Path(path)
    root = PROFILES_DIR.parent
    if path.is_absolute() or Path.cwd().resolve() != (root / "notebooks").resolve():
        return path
    return root / path


def demo_config(profile: str | Path = "cpu", data_dir: str | None = "", device: str | None = "",
                runs_dir: str | Path | None = "", overrides: Sequence[str] = ()):
    """The profile's baseline experiment with the notebook's common parameters applied,
    exactly as the other notebooks build it (:func:`cxrlib.experiments.base_config`)."""
    from cxrlib.experiments import base_config

    config = base_config(profile, data_dir=data_dir or "", device=device or "", runs_dir=runs_dir or "",
                         overrides=list(overrides or ()))
    config.runs_dir = str(project_path(config.runs_dir))
    config.data.cache_dir = str(project_path(config.data.cache_dir))
    return config


# --------------------------------------------------------------------------------------
# the widget
# --------------------------------------------------------------------------------------


def _bar_html(p: float, threshold: float, above: bool) -> str:
    colour = "#d62728" if above else "#4c78a8"
    return (
        '<div class="cxr-demo-bar" title="probability {p:.3f}" style="position:relative;width:240px;'
        'height:16px;background:#eee;border-radius:2px">'
        '<div style="width:{w:.1f}%;height:100%;background:{c};border-radius:2px"></div>'
        '<div class="cxr-demo-threshold" title="threshold {t:.2f}" style="position:absolute;left:{tw:.1f}%;'
        'top:-3px;bottom:-3px;border-left:2px dashed #222"></div></div>'
    ).format(p=p, w=100 * p, c=colour, t=threshold, tw=100 * threshold)


class DemoApp(widgets.VBox):
    """The demo's widget: menus, upload, the probability chart and the heatmap.

    Every control calls the :class:`DemoSession` in ``.session``; whatever goes wrong
    (a bad upload, a run that will not load) is written in the message line at the
    top and the demo stays usable.
    """

    def __init__(self, session: DemoSession, initial_image: str | None = None):
        self.session = session
        self._busy = False
        layout = widgets.Layout
        self.header = widgets.HTML("<h3 style='margin:4px 0'>Chest X-ray: 14 findings and where the model looks</h3>")
        self.warning = widgets.HTML("").add_class("cxr-demo-warning")
        self.message = widgets.HTML("").add_class("cxr-demo-message")
        # Problems found at start (unreadable runs, no dataset) stay on screen; the message
        # line above is for the latest action only.
        self.notes = widgets.HTML("".join(
            f"<div style='color:#a15c00;margin:2px 0'>{html.escape(n)}</div>" for n in session.notes
        )).add_class("cxr-demo-notes")
        self.model_menu = widgets.Dropdown(
            options=[(c.label, c.key) for c in session.model_choices], value=None,
            description="Model", layout=layout(width="460px"), style={"description_width": "70px"},
        ).add_class("cxr-demo-model")
        self.method_menu = widgets.Dropdown(
            options=session.method_options, value=session.method, description="CAM",
            layout=layout(width="330px"), style={"description_width": "40px"},
        ).add_class("cxr-demo-method")
        choices = session.image_choices
        self.image_menu = widgets.Dropdown(
            options=choices, value=None, description="Image",
            layout=layout(width="460px", display="flex" if choices else "none"),
            style={"description_width": "70px"},
        ).add_class("cxr-demo-image")
        self.upload = widgets.FileUpload(accept=UPLOAD_ACCEPT, multiple=False,
                                         description="Upload X-ray").add_class("cxr-demo-upload")
        self.finding_menu = widgets.Dropdown(
            options=session.findings, value=None, description="Finding",
            layout=layout(width="300px"), style={"description_width": "60px"},
        ).add_class("cxr-demo-finding-menu")
        self.chart_header = widgets.HTML("")
        self._rows = []
        for _ in range(len(FINDINGS)):
            button = widgets.Button(description="", layout=layout(width="170px", height="22px"),
                                    tooltip="show this finding's heatmap").add_class("cxr-demo-finding")
            bar = widgets.HTML("")
            value = widgets.HTML("").add_class("cxr-demo-prob")
            button.on_click(self._on_bar_click)
            self._rows.append((button, bar, value))
        self.chart = widgets.VBox(
            [self.chart_header] + [widgets.HBox(list(r), layout=layout(align_items="center"))
                                   for r in self._rows],
            layout=layout(min_width="470px"),
        ).add_class("cxr-demo-chart")
        self.heatmap = widgets.Image(format="jpeg", layout=layout(width="512px", max_width="100%"))
        self.heatmap.add_class("cxr-demo-heatmap")
        self.caption = widgets.HTML("").add_class("cxr-demo-caption")
        super().__init__([
            self.header, self.warning, self.notes, self.message,
            widgets.HBox([self.model_menu, self.method_menu]),
            widgets.HBox([self.image_menu, self.upload]),
            widgets.HBox([self.chart, widgets.VBox([self.finding_menu, self.heatmap, self.caption])],
                         layout=layout(align_items="flex-start", flex_flow="row wrap")),
        ])
        self.add_class("cxr-demo")
        self.model_menu.observe(self._on_model, names="value")
        self.method_menu.observe(self._on_method, names="value")
        self.image_menu.observe(self._on_image, names="value")
        self.finding_menu.observe(self._on_finding, names="value")
        self.upload.observe(self._on_upload, names="value")
        # The best run first; if it will not load, the next choice (the message says why).
        startup_error = ""
        for choice in session.model_choices:
            startup_error = startup_error or self.message.value
            self.model_menu.value = choice.key
            if session.model is not None:
                break
        if initial_image is not None:
            self.image_menu.value = initial_image
        elif not choices:
            self._say("No dataset loaded: upload a PNG, JPEG or DICOM chest X-ray.", "info")
        if startup_error and "cxr-demo-error" not in self.message.value:
            self.message.value = startup_error  # why the best run is not the one shown

    # -- static fallback ------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        """The live widget, plus a static HTML picture of it for pages without a kernel.

        Frontends with widgets (JupyterLab, Voila) show the widget; the HTML report of an
        executed notebook has no widget state, so nbconvert falls back to ``text/html``.
        """
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, tuple):  # (data, metadata)
            bundle[0]["text/html"] = self.snapshot_html()
        elif isinstance(bundle, dict):
            bundle["text/html"] = self.snapshot_html()
        return bundle

    def snapshot_html(self) -> str:
        """The chart and the heatmap as they are now, as self-contained HTML."""
        import base64

        if self.session.image is None:
            return "<p>Chest X-ray demo: no image yet (pick or upload one in JupyterLab or Voila).</p>"
        chart = self.session.chart_data()
        rows = "".join(
            f"<tr><td style='padding-right:8px'>{html.escape(n)}{' ✓' if t else ''}</td>"
            f"<td>{_bar_html(float(p), chart.threshold, a)}</td><td>{p:.3f}</td></tr>"
            for n, p, a, t in zip(chart.names, chart.probabilities, chart.above, chart.truth))
        picture = base64.b64encode(self.heatmap.value).decode("ascii") if self.heatmap.value else ""
        return (
            "<div class='cxr-demo-snapshot'>" + self.warning.value + self.notes.value
            + "<div style='display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap'>"
            f"<div>{self.chart_header.value}<table>{rows}</table></div>"
            f"<div><img src='data:image/jpeg;base64,{picture}' style='width:512px;max-width:100%'>"
            f"{self.caption.value}</div></div>"
            "<p style='font-size:85%;color:#666'>A static picture of the demo: open the notebook in "
            "JupyterLab or run <code>voila notebooks/08_demo.ipynb</code> to use it.</p></div>")

    # -- messages -----------------------------------------------------------------
    def _say(self, text: str, level: str = "info") -> None:
        colour = {"info": "#555", "warning": "#a15c00", "error": "#b00020"}[level]
        self.message.value = (f"<div class='cxr-demo-{level}' style='color:{colour};margin:2px 0'>"
                              f"{html.escape(text)}</div>") if text else ""

    def _guard(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except UploadError as err:
            self._say(f"{err} (the previous image is still shown)", "error")
        except Exception as err:  # shown, never raised: an observer's exception is invisible in Voila
            traceback.print_exc()
            self._say(f"{what} failed: {type(err).__name__}: {err}", "error")

    # -- events ---------------------------------------------------------------------
    def _on_model(self, change) -> None:
        if change["new"] is None:
            return

        def run():
            self._say("Loading the model…")
            try:
                model = self.session.select_model(change["new"])
            except Exception:
                # The menu goes back to the model still in use, so it never shows a model
                # whose results are not the ones on screen.
                if self.session.model is not None and change["old"] is not None:
                    self.model_menu.value = self.session.model.key
                raise
            self.warning.value = (
                "<div class='cxr-demo-untrained' style='background:#fff3cd;border:1px solid #e0a800;"
                "padding:4px 8px;margin:2px 0'>⚠ <b>Untrained model</b> (random weights): its "
                "probabilities and heatmaps mean nothing. Train one (<code>cxrlib train</code>) "
                "and pick it from the menu.</div>" if model.untrained else "")
            options = self.session.findings
            if list(self.finding_menu.options) != options:
                self._busy = True
                try:
                    self.finding_menu.options = options
                finally:
                    self._busy = False
            self._say("")
            self.refresh(keep_finding=True)

        self._guard("loading the model", run)

    def _on_method(self, change) -> None:
        def run():
            self.session.select_method(change["new"])
            self.show_heatmap()

        self._guard("changing the CAM method", run)

    def _on_image(self, change) -> None:
        if change["new"] is None:
            return

        def run():
            self.session.select_dataset_image(change["new"])
            self._say("")
            self.refresh(keep_finding=False)

        self._guard("loading the image", run)

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0]

        def run():
            try:
                self.session.load_upload(item["content"], item.get("name", "upload"))
            finally:
                # Cleared so that the same file can be chosen again after a fix.
                self.upload.value = ()
            self._busy = True
            try:
                self.image_menu.value = None
            finally:
                self._busy = False
            self._say("")
            self.refresh(keep_finding=False)

        self._guard("reading the upload", run)

    def _on_finding(self, change) -> None:
        if self._busy or change["new"] is None:
            return
        self._guard("computing the heatmap", self.show_heatmap)

    def _on_bar_click(self, button) -> None:
        finding = getattr(button, "_finding", None)
        if finding:
            self.finding_menu.value = finding  # the menu's observer draws the heatmap

    # -- drawing --------------------------------------------------------------------
    def refresh(self, keep_finding: bool = True) -> None:
        """Recompute the chart for the current image and model, then show a heatmap."""
        if self.session.image is None:
            return
        chart = self.session.chart_data()
        self.chart_header.value = (
            "<div style='font-size:90%;color:#444'>Probabilities, highest first; dashed line: "
            f"threshold {chart.threshold:.2f}; <b>✓</b> true label</div>")
        for (button, bar, value), name, p, above, truth in zip(
                self._rows, chart.names, chart.probabilities, chart.above, chart.truth):
            button._finding = name
            button.description = name + (" ✓" if truth else "")
            bar.value = _bar_html(float(p), chart.threshold, above)
            value.value = f"<span class='cxr-demo-value'>{p:.3f}</span>"
        finding = self.finding_menu.value if keep_finding and self.finding_menu.value else chart.names[0]
        self._busy = True
        try:
            self.finding_menu.value = finding
        finally:
            self._busy = False
        self.show_heatmap()
        self.chart.add_class("cxr-demo-ready")

    def show_heatmap(self) -> None:
        session = self.session
        finding = self.finding_menu.value
        if session.image is None or finding is None:
            return
        for button, _, _ in self._rows:
            button.button_style = "info" if getattr(button, "_finding", None) == finding else ""
        self.heatmap.value = encode_jpeg(session.overlay(finding))
        image = session.image
        probs = session.probability_table()
        boxes = session.boxes_for(finding)
        height, width = image.shape
        self.caption.value = (
            f"<div style='font-size:90%'><b>{html.escape(image.name)}</b> ({width} x {height}, "
            f"{'dataset' if image.source == 'dataset' else 'uploaded'}) · true labels: "
            f"{html.escape(_labels_text(image.labels))}<br>{html.escape(finding)}: p = {probs[finding]:.3f} · "
            f"{html.escape(session.method)} heatmap"
            + (f" · {len(boxes)} annotated box{'es' if len(boxes) != 1 else ''} (green)" if boxes else "")
            + "</div>")



def build_demo(profile: str | Path = "cpu", runs_dir: str | Path | None = "", data_dir: str | None = "",
               device: str | None = "", overrides: Sequence[str] = (), untrained: Iterable[str] = DEFAULT_UNTRAINED,
               threshold: float = DEFAULT_THRESHOLD, max_images: int = 200, data=None,
               image_size: int | None = None, session: DemoSession | None = None) -> "DemoApp":
    """The demo widget (an ipywidgets ``VBox``; its ``.session`` is the :class:`DemoSession`).

    ``profile``, ``data_dir``, ``device``, ``runs_dir`` and ``overrides`` mean what they mean
    in every notebook (empty: the profile's own): the test images of the profile's dataset
    fill the image menu and the finished runs of its runs folder the model menu. ``data``
    (a DataBundle) replaces the profile's dataset; ``session`` replaces everything. If the
    dataset cannot be loaded the demo still starts, upload-only, and says why.
    """
    problem = None
    if session is None:
        config = demo_config(profile, data_dir, device, runs_dir, overrides)
        if data is None:
            from cxrlib.data import load_data

            try:
                data = load_data(config.data, progress=False)
            except Exception as err:  # the demo still works on uploads; say what went wrong
                problem = f"dataset not loaded ({type(err).__name__}: {err}); upload images instead"
        size = image_size or getattr(data, "image_size", None) or config.data.image_size
        session = DemoSession(data=data, runs_dir=config.runs_dir, untrained=untrained, image_size=size,
                              device=config.train.device or "cpu", threshold=threshold, max_images=max_images)
    if problem:
        session.notes.append(problem)
    choices = session.image_choices
    return DemoApp(session, initial_image=choices[0][1] if choices else None)
