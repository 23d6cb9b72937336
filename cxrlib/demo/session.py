"""The demo's state and logic, with no widgets: choose a model and an image, read what to show.

:class:`DemoSession` holds the state (the model, the image, the CAM method), reads uploads
(:mod:`cxrlib.demo.uploads`), runs the model once per (image, model) and Grad-CAM once per
(image, model, method), and hands out plain values: :meth:`DemoSession.chart_data`,
:meth:`DemoSession.heatmap` and :meth:`DemoSession.overlay` (the picture is
:mod:`cxrlib.overlay`'s, the one the notebooks draw). Everything here runs and is tested
without a browser and without ipywidgets; :mod:`cxrlib.demo.app` puts it on screen.

The model menu (:func:`list_model_choices`) offers the finished runs of a runs folder and
untrained architectures; the notebook's parameters can be overridden from the environment
(:func:`demo_settings`), which is how a Voila server is configured.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from cxrlib.overlay import render, resize_heatmap
from cxrlib.cam import CAM_METHODS, SCORE_FREE_METHODS
from cxrlib.demo.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES, read_upload
from cxrlib.labels import FINDINGS, NO_FINDING, canonical
from cxrlib.models import create_model
from cxrlib import profiles
from cxrlib.profiles import Profile
from cxrlib.predict import Predictor
from cxrlib.runs import list_runs, load_model

DEFAULT_UNTRAINED: tuple[str, ...] = ("resnet18", "densenet121")
DEFAULT_METHOD = "gradcam"
DEFAULT_THRESHOLD = 0.5
# The overlay is sent to the browser as a JPEG; beyond this side it is only slower.
MAX_DISPLAY_SIDE = 2048

ENV_PREFIX = "CXRLIB_DEMO_"


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
    """Finished runs under ``runs_dir`` (best test mean AUROC first), then untrained models.

    Which runs are finished is :func:`cxrlib.runs.list_runs`'s rule (a run still training is
    not offered); a run whose files cannot be read is left out and described in ``problems``
    when a list is given.
    """
    choices: list[ModelChoice] = []
    if runs_dir and Path(runs_dir).is_dir():
        for run in list_runs(runs_dir, problems):
            auroc = run.mean_auroc
            auc_text = "n/a" if auroc is None or not np.isfinite(auroc) else f"{auroc:.3f}"
            choices.append(ModelChoice(
                key=f"run:{run.name}", label=f"{run.name} ({run.backbone}) · test mean AUROC {auc_text}",
                arch=run.backbone, run_dir=run.run_dir, mean_auroc=auroc, split=run.split or None))
    choices.sort(key=lambda c: -(c.mean_auroc if c.mean_auroc is not None and np.isfinite(c.mean_auroc) else -1.0))
    for arch in untrained:
        choices.append(
            ModelChoice(key=f"untrained:{arch}", label=f"untrained {arch} (random weights)", arch=arch)
        )
    return choices


# --------------------------------------------------------------------------------------
# the loaded model
# --------------------------------------------------------------------------------------


class DemoModel:
    """A menu choice loaded: its :class:`~cxrlib.predict.Predictor` (eval mode, on its device,
    with its input size, channels and label names)."""

    def __init__(self, choice: ModelChoice, predictor: Predictor):
        self.choice = choice
        self.predictor = predictor

    @property
    def key(self) -> str:
        return self.choice.key

    @property
    def untrained(self) -> bool:
        return self.choice.untrained

    @property
    def module(self) -> torch.nn.Module:
        return self.predictor.module

    @property
    def label_names(self) -> list[str]:
        return self.predictor.label_names

    @property
    def image_size(self) -> int:
        return self.predictor.image_size

    @property
    def channels(self) -> int:
        return self.predictor.channels

    @property
    def device(self) -> str:
        return str(self.predictor.device)

    @classmethod
    def load(cls, choice: ModelChoice, image_size: int | None = None, device: str = "cpu") -> "DemoModel":
        """Load a run's best weights (fed at the run's own size) or build an untrained model
        (fed at ``image_size``, by default its registry entry's input size)."""
        device = torch_device(device)
        if choice.untrained:
            predictor = Predictor.untrained(choice.arch, image_size, device,
                                            module=untrained_module(choice.arch, str(device)))
        else:
            predictor = load_model(choice.run_dir, device)
        return cls(choice, predictor)

    def analyse(self, x: torch.Tensor, method: str = DEFAULT_METHOD) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``[K]`` and every output's heatmap ``[K,H,W]`` for one image ``[C,H,W]``
        (:meth:`cxrlib.predict.Predictor.analyse`: one forward pass serves both)."""
        return self.predictor.analyse(x, method)


@functools.lru_cache(maxsize=4)
def untrained_module(arch: str, device: str = "cpu") -> torch.nn.Module:
    """A freshly initialised 14-output gray model, the same weights on every call.

    Shared by every session of the process (it is only read), so choosing it again costs
    nothing; ``untrained_module.cache_clear()`` forgets it.
    """
    # Seeded and isolated, so "untrained resnet18" is the same model every time (and in
    # every test run) without touching the global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = create_model(arch, num_classes=len(FINDINGS), in_chans=1, pretrained=False)
    return module.to(device).eval()


def torch_device(device: str | None) -> torch.device:
    """``device`` as a torch device; empty or ``auto`` means CUDA when there is one."""
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
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # finding -> bool mask over the whole image

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape[:2])


def encode_jpeg(rgb: np.ndarray, quality: int = 88) -> bytes:
    """An RGB picture as JPEG bytes, the form the browser is sent."""
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
    ``.test.targets``, ``.label_names``, ``.full_image(id)`` and ``.boxes(id)``, and
    optionally ``.masks(id)``), or None for an upload-only demo. Nothing is
    computed until asked for; every result is cached per (image, model[, method]).
    """

    def __init__(self, data=None, runs_dir: str | Path | None = "runs",
                 untrained: Iterable[str] = DEFAULT_UNTRAINED, image_size: int | None = None,
                 device: str = "cpu", threshold: float = DEFAULT_THRESHOLD, max_images: int = 200,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
                 cache_size: int = 8):
        self.data = data
        self.image_size = None if image_size is None else int(image_size)  # untrained models' input side
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

    def clear_cache(self) -> None:
        """Forget every image and result (the loaded models stay): the next request recomputes."""
        for cache in (self._images, self._inputs, self._probs, self._heatmaps):
            cache.clear()

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
        return [(f"{image_id} — {labels_text(_true_labels(row, names))}", image_id)
                for image_id, row in zip(ids, targets)]

    def first_image(self) -> str | None:
        """The test image the demo opens on: the first listed one with annotated ground truth
        (a box or a lesion mask), so that the first picture already shows where a finding is;
        else the first listed; None without a dataset."""
        choices = [image_id for _, image_id in self.image_choices]
        for image_id in choices:
            try:
                boxes = self.data.boxes(image_id) or []
            except (KeyError, LookupError):
                boxes = []
            if boxes or _dataset_masks(self.data, image_id):
                return image_id
        return choices[0] if choices else None

    @property
    def method_choices(self) -> list[str]:
        return list(CAM_METHODS)

    @property
    def method_options(self) -> list[tuple[str, str]]:
        """``(label, method)`` for the menu; the class-free baselines say so."""
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
                             labels=_true_labels(row, list(self.data.label_names)), boxes=boxes,
                             masks=_dataset_masks(self.data, image_id))

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

    def model_input(self) -> torch.Tensor:
        """The current image as the current model sees it, ``[C,S,S]`` (cached)."""
        model, image = self._require()
        key = (image.key, model.image_size, model.channels)
        # The predictor's input: the data layer's resize and normalisation, as training saw them.
        return self._inputs.get_or(key, lambda: self._timed("preprocess", lambda: model.predictor.input(image.pixels)))

    def _analysis(self, method: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, all heatmaps) of the current image and model for ``method``, cached."""
        model, image = self._require()
        method = method or self.method
        x = self.model_input()

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

    def first_finding(self) -> str:
        """The finding shown first for the current image: the most probable one with annotated
        ground truth (its boxes or outline are drawn), else the most probable."""
        names = self.chart_data().names
        annotated = [n for n in names if self.boxes_for(n) or self.masks_for(n)]
        return (annotated or names)[0]

    def heatmap(self, finding: str, method: str | None = None, full_size: bool = False) -> np.ndarray:
        """The CAM of ``finding`` for the current image: ``[S,S]`` at the model's input size,
        or at the image's full resolution when ``full_size``."""
        model, image = self._require()
        finding = canonical(finding)
        heat = self._analysis(method)[1][model.predictor.output_index(finding)]
        return resize_heatmap(heat, image.shape) if full_size else heat

    def boxes_for(self, finding: str) -> list:
        """The current image's annotated boxes of ``finding`` (full-image pixels)."""
        if self.image is None:
            return []
        finding = canonical(finding)
        return [b for b in self.image.boxes if _box_finding(b) == finding]

    def masks_for(self, finding: str) -> list[np.ndarray]:
        """The current image's ground-truth mask of ``finding``, as a list (empty without one)."""
        if self.image is None:
            return []
        mask = self.image.masks.get(canonical(finding))
        return [] if mask is None else [mask]

    def overlay(self, finding: str, method: str | None = None) -> np.ndarray:
        """RGB picture of the heatmap of ``finding`` on the full-resolution image, with its ground truth."""
        heat = self.heatmap(finding, method)
        return self._timed("render", lambda: render(
            self.image.pixels, heat, self.boxes_for(finding), self.masks_for(finding), max_side=MAX_DISPLAY_SIDE))

    def _timed(self, step: str, fn: Callable[[], Any]):
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.timings[step] = time.perf_counter() - start


def _true_labels(row: np.ndarray, names: Sequence[str]) -> list[str]:
    return [n for n, v in zip(names, np.asarray(row)) if v > 0.5 and n != NO_FINDING]


def labels_text(labels: list[str] | None) -> str:
    """True labels as the menu and the caption write them (``No Finding`` when there are none)."""
    if labels is None:
        return "labels unknown"
    return ", ".join(labels) if labels else NO_FINDING


def _box_finding(box) -> str | None:
    try:
        return canonical(str(getattr(box, "finding")))
    except (AttributeError, ValueError):
        return None


def _dataset_masks(data, image_id: str) -> dict[str, np.ndarray]:
    """Every finding's non-empty ground-truth mask of a dataset image, where the data has masks
    (:meth:`cxrlib.data.DataBundle.masks`, the one place that reads them)."""
    masks_of = getattr(data, "masks", None)
    if masks_of is None:
        return {}
    try:
        return dict(masks_of(image_id))
    except (KeyError, LookupError, ValueError):
        return {}


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


def demo_profile(profile: str | Path = "cpu", data_dir: str | None = "", device: str | None = "",
                 runs_dir: str | Path | None = "", overrides: Sequence[str] = ()) -> Profile:
    """The notebook's parameters resolved into a :class:`~cxrlib.profiles.Profile`, exactly
    as every other notebook resolves them (empty values: the profile's own)."""
    return profiles.load(profile, data_dir=data_dir or "", device=device or "", runs_dir=runs_dir or "",
                        overrides=list(overrides or ()))
