"""An experiment's configuration as dataclasses, overrides as ``key=value`` (profiles: :mod:`cxrlib.profiles`).

A run folder stores its config as JSON, so a run can be recreated, compared, and reused
only when the config that produced it is exactly the one asked for.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BASELINE = "baseline"  # name of a profile's baseline experiment, the run others are compared with


@dataclass
class DataConfig:
    source: str = "phantoms"  # phantoms | chestxray14 | chestmnist | pneumoniamnist
    data_dir: str | None = None  # ChestX-ray14 folder, or folder/file of the MedMNIST npz
    split: str = "official"  # official | chexnet | a folder with train/val/test list files
    val_fraction: float = 0.1  # official split: share of train_val patients kept for validation
    image_size: int = 128  # side of the square images the cache holds and the model sees
    include_no_finding: bool = False  # add "No Finding" as a 15th target
    limit: int | None = None  # at most this many images per part (smoke runs)
    num_phantoms: int = 3000  # phantoms: images in all (split 70/10/20 by patient)
    phantom_contrast: float = 1.0  # phantoms: lesion contrast multiplier (difficulty knob)
    phantom_lesion_scale: float = 1.0  # phantoms: lesion size multiplier (difficulty knob)
    # phantoms: any other PhantomSpec knob, e.g. {confounder: 0.9, devices: 2}
    phantom_options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str = "data/cache"  # decoded, resized images live here
    # Label noise as report mining makes it (cxrlib.label_noise): the parts whose labels are
    # flipped (train | val | test; empty: the labels as the source gives them), and the
    # labeller's sensitivity (share of true findings kept) and specificity (share of absent
    # findings left absent), one number or {finding: number}
    label_noise: list[str] = field(default_factory=list)
    label_sensitivity: float | dict[str, float] = 1.0
    label_specificity: float | dict[str, float] = 1.0
    on_corrupt: str = "error"  # error | skip: what a corrupt or truncated PNG does
    workers: int = 0  # processes for building the cache (0 = all cores)
    seed: int = 0

    def __post_init__(self) -> None:
        from cxrlib import label_noise  # a leaf module: no import cycle

        label_noise.check_config(self)


@dataclass
class ModelConfig:
    name: str = "resnet18"  # see cxrlib.models.list_models()
    head: str = "gap"  # gap | fpn | psp (see cxrlib.models.list_heads())
    wrapper: str | None = None  # None | multiscale | two_stage
    pretrained: bool = False  # ImageNet weights (local file or cache; see README)
    weights_path: str | None = None  # a local weights file for the backbone
    # Folder of ImageNet weights, one file per model named as timm names it
    # (densenet121.tv_in1k.safetensors), looked in before the Hugging Face cache and the hub;
    # None: $CXRLIB_WEIGHTS_DIR, else data/weights (see cxrlib.models.weights).
    weights_dir: str | None = None
    in_chans: int = 1
    options: dict[str, Any] = field(default_factory=dict)  # head / wrapper keyword arguments


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | sgd
    weight_decay: float = 0.0
    scheduler: str = "plateau"  # plateau (divide by 10 on val-loss plateau) | cosine | none
    plateau_patience: int = 1
    plateau_factor: float = 0.1
    early_stopping_patience: int = 3  # epochs without a better val mean AUROC
    loss: str = "bce"  # bce | weighted_bce | focal | asymmetric | multilabel_margin
    loss_options: dict[str, Any] = field(default_factory=dict)
    augment: bool = True  # horizontal flip and a small affine on training images
    max_steps: int | None = None  # stop after this many optimizer steps, per stage (smoke runs)
    stage_epochs: list[int] | None = None  # staged models: epochs per stage
    tta: str = "none"  # none | tencrop, at evaluation
    num_workers: int = 0  # DataLoader workers for a dataset that is streamed rather than resident
    resident: str = "auto"  # auto | device | host | off: where a dataset within resident_gb lives (cxrlib.feed)
    resident_gb: float = 16.0  # the most GiB of uint8 images one dataset may take to stay resident
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision, on CUDA only
    channels_last: bool = True  # memory format, on CUDA only
    compile: bool | str = "auto"  # torch.compile for training: auto (on CUDA, off on the CPU) | true | false
    deterministic: bool = False  # CUDA: deterministic cuDNN, no autotuning, no TF32 (repeatable, slower)
    n_bootstrap: int = 1000  # resamples for the confidence intervals
    threads: int | None = None  # torch CPU threads (None = torch's default)
    keep_last: bool = False  # keep last.pt once the run is finished (by default only best.pt stays)
    # the precision best.pt keeps the trained parameters in: float16 halves a run on disk, and
    # the run is evaluated with exactly the weights it stores (cxrlib.checkpoint.as_stored)
    weights_dtype: str = "float16"  # float16 | float32


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runs_dir: str = "runs"  # the run folder is cxrlib.runs.run_folder(config)
    seed: int = 0  # training seed: initial weights, data order, augmentation (never the split: data.seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def fingerprint(self) -> str:
        """Hash of everything that changes the result (not where the run is written)."""
        d = self.to_dict()
        d.pop("runs_dir")
        # how fast, not what: where images live, compilation and kernel choice leave the experiment as it is
        for key in ("num_workers", "resident", "resident_gb", "compile", "deterministic", "keep_last"):
            d["train"].pop(key)
        d["data"].pop("workers")
        d["data"].pop("cache_dir")
        d["model"].pop("weights_dir")  # where the same ImageNet weights are found
        if d["train"]["weights_dtype"] == "float32":
            # full-precision weights: the fingerprint runs had before the choice existed, so they are reused
            d["train"].pop("weights_dtype")
        if not d["data"]["label_noise"]:
            # clean labels: the fingerprint runs had before label noise existed, so they are reused
            for key in ("label_noise", "label_sensitivity", "label_specificity"):
                d["data"].pop(key)
        if d["data"]["source"] == "phantoms":
            # phantoms are drawn by code: a change in how they are drawn is a change of the data,
            # so a run trained on the old drawings is not reused (their image cache keys on it too)
            from cxrlib.phantoms import code_fingerprint

            d["data"]["phantom_code"] = code_fingerprint()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def training_key(self) -> str:
        """The fingerprint without the run's name: equal for two runs that train the same weights
        (a two_stage run's global stage and its baseline, :func:`cxrlib.experiments.global_stage_equivalent`)."""
        return dataclasses.replace(self, name="").fingerprint()

    def validate(self) -> "ExperimentConfig":
        """Check every name and size before anything is loaded or trained; return ``self``.

        The one validation of a config: the command line, the notebooks' runs
        (:func:`cxrlib.experiments.run`) and :func:`cxrlib.train.fit` all call it, so a bad value
        fails at once, naming the key, the value and what is expected, wherever it came from.
        Names are checked against their owners' registries (data sources, losses, models,
        heads, wrappers); whether a device is present is the device's business at run time.
        """
        # Function-level imports: the registries import torch and timm, which a config itself
        # does not need (a profile is read and printed without them).
        from cxrlib.data import SOURCES
        from cxrlib.losses import LOSSES
        from cxrlib import models

        d, m, t = self.data, self.model, self.train
        _one_of("data.source", d.source, SOURCES)
        _one_of("model.name", m.name, models.list_models())
        _one_of("model.head", m.head, models.list_heads())
        if m.wrapper is not None:
            _one_of("model.wrapper", m.wrapper, models.list_wrappers(), also="none")
        _one_of("model.in_chans", m.in_chans, (1, 3))
        _one_of("train.loss", t.loss, LOSSES)
        _one_of("train.tta", t.tta, TTA)
        _one_of("train.weights_dtype", t.weights_dtype, WEIGHT_DTYPES)
        dev = str(t.device)
        if dev not in ("auto", "cpu", "cuda") and not (dev.startswith("cuda:") and dev[5:].isdigit()):
            raise ValueError(f"unknown device {dev!r} (train.device): expected auto, cpu, cuda or cuda:N")
        _at_least("data.image_size", d.image_size, 1)
        if t.epochs is not None:  # staged models may give stage_epochs alone
            _at_least("train.epochs", t.epochs, 1)
        _at_least("train.batch_size", t.batch_size, 1)
        _at_least("train.n_bootstrap", t.n_bootstrap, 0)
        if t.max_steps is not None:
            _at_least("train.max_steps", t.max_steps, 1)
        if d.limit is not None:
            _at_least("data.limit", d.limit, 1)
        if not 0 <= d.val_fraction < 1:
            raise ValueError(f"data.val_fraction={d.val_fraction!r}: expected a share in [0, 1)")
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        d = dict(d)
        parts = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        kwargs = {}
        for key, value in d.items():
            if key in parts:
                kwargs[key] = _build(parts[key], value or {}, key)
            elif key in _field_names(cls):
                kwargs[key] = value
            else:
                raise ValueError(f"unknown config key {key!r}: expected one of {sorted(_field_names(cls))}")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> "ExperimentConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> "ExperimentConfig":
        return ExperimentConfig.from_dict(apply_overrides(self.to_dict(), overrides))

    def with_data_dir(self, data_dir: str | Path | None) -> "ExperimentConfig":
        """Point the experiment at a data folder. The synthetic phantoms read no folder, so a
        folder given to a phantom config means the real ChestX-ray14 release."""
        if not data_dir:
            return self
        d = self.to_dict()
        d["data"]["data_dir"] = str(data_dir)
        if d["data"]["source"] == "phantoms":
            d["data"]["source"] = "chestxray14"
        return ExperimentConfig.from_dict(d)


TTA = ("none", "tencrop")  # test-time augmentation at evaluation
WEIGHT_DTYPES = ("float16", "float32")  # what best.pt stores the trained parameters in


def _one_of(key: str, value: Any, allowed, also: str = "") -> None:
    if value not in allowed:
        choices = ", ".join(str(a) for a in allowed)
        raise ValueError(f"unknown {key.split('.')[-1].replace('_', ' ')} {value!r} ({key}): expected "
                         f"{also + ' or one of ' if also else 'one of '}{choices}")


def _at_least(key: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{key}={value!r}: expected a whole number of at least {least}")


def _field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _build(cls, values: dict[str, Any], where: str):
    unknown = set(values) - _field_names(cls)
    if unknown:
        raise ValueError(
            f"unknown {where} option(s) {sorted(unknown)}: expected some of {sorted(_field_names(cls))}"
        )
    return cls(**values)


def apply_overrides(d: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Apply ``train.epochs=3``-style overrides (values parsed as YAML) to a nested dict."""
    d = json.loads(json.dumps(d))  # deep copy
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    for key, value in items:
        node = d
        *path, leaf = key.split(".")
        for part in path:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"override {key!r}: {part!r} is not a section of the config")
            node = node[part]
        if leaf not in node and not (path and path[-1] in ("options", "loss_options", "phantom_options")):
            raise ValueError(f"override {key!r}: unknown key {leaf!r}; known: {sorted(node)}")
        node[leaf] = value
    return d


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value (for example train.epochs=3)")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None
