"""A profile resolved once: which experiment is the baseline, with what notebook parameters,
writing runs and caches where.

``profiles/<name>.yaml`` holds an ``experiment:`` section (the baseline
:class:`~cxrlib.config.ExperimentConfig`), a ``notebooks:`` section (papermill parameters
per notebook), and optionally ``seeds:`` (the training seeds of the baseline and of every
compared variant, :class:`Seeds`) and ``full_profile_only:`` (models this profile does not
train, each with the measured reason). :func:`load` reads it, applies the run's choices (data folder, device, runs
folder, ``--set`` overrides) and returns a :class:`Profile`; the command line, the report
runner and each notebook ask that value instead of reading the YAML again::

    profile = profiles.load("cpu", data_dir="/data/ChestX-ray14", overrides=["train.epochs=5"])
    profile.baseline                      # ExperimentConfig named "baseline"
    profile.config(changes={"model.head": "fpn"})   # the variant "fpn"
    profile.notebook_parameters("01_baselines")
    profile.seeds.of(profile.baseline)    # (0, 1, 2): the baseline's training seeds

One rule per setting:

* **runs folder**: the ``runs_dir`` given, else the profile's ``experiment.runs_dir``, else
  ``runs/<profile>`` (without a profile: ``runs``); **cache folder**: the profile's
  ``data.cache_dir``; **weights folder**: ``model.weights_dir`` when set (else
  :func:`cxrlib.models.weights.default_weights_dir`). When relative, all are anchored by
  :func:`project_path`.
* **image size**: a config's ``data.image_size`` (the profile's, else the config default);
  a trained run is always fed at its own size; an untrained architecture (the demo's
  "untrained" models, ``cxrlib predict --model``) at its registry entry's ``input_size``,
  unless it is shown a dataset's images (the demo with a dataset: the dataset's size).
* **a data folder given to a phantom profile** means the real ChestX-ray14 release
  (:meth:`~cxrlib.config.ExperimentConfig.with_data_dir`).
* **seeds**: the profile's ``seeds:`` (``--set seeds.variants=[0]`` changes them), else the
  baseline's own ``seed`` alone.
"""
from __future__ import annotations

import ast
import copy
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from cxrlib.config import BASELINE, ExperimentConfig, apply_overrides
from cxrlib.project import PROFILES_DIR, PROJECT_ROOT
SHARED_DATA_ENV = "CXRLIB_SHARED_DATA"

# A notebook parameter whose literal default is None means "the profile's value", so that a
# notebook run in JupyterLab with only PROFILE set does what the report does for that profile
# (Profile.notebook_value). Where a profile's notebooks: section sets nothing, it takes the
# value below: the study's own choice, as the full profile makes it.
NOTEBOOK_DEFAULTS: dict[str, dict[str, Any]] = {
    "00_data_exploration": {"N_EXAMPLES": 8},
    "01_baselines": {"MODELS": ["resnet18", "resnet50", "inception_v3", "densenet121", "nasnet"], "MAX_STEPS": {},
                     "FIFTEEN_LABELS": True},
    "05_two_stage": {"STAGE_EPOCHS": [2, 1, 1], "TAU": 0.7, "ATTENTION_LAYER": "C5"},
    "06_losses": {"LOSSES": ["bce", "weighted_bce", "focal", "asymmetric", "multilabel_margin"]},
    "07_heatmaps": {"METHODS": ["gradcam", "gradcam++", "eigencam", "randomcam"], "HEAD": "", "N_IMAGES": 200,
                    "N_RANDOM": 20, "N_EXAMPLES": 3},
    # NOISY_SEEDS 0: the noisy-label arm trains every variant seed. NEVER_REPORTED: the positive
    # control's finding, chosen from how the phantoms draw it (notebook 10 says why), not from results.
    "10_label_noise": {"NOISY_SEEDS": 0, "NEVER_REPORTED": "Effusion"},
    "11_external_site": {"SITE_DIR": "", "NUM_PHANTOMS": 600, "N_EXAMPLES": 4},
    "12_shortcuts": {"HEAD": "", "NUM_PHANTOMS": 0, "N_EXAMPLES": 3},
}


def shared_data_dir() -> Path:
    """The shared data folder (the real ChestX-ray14 sample, MedMNIST files): ``$CXRLIB_SHARED_DATA``,
    else ``../shared/data`` beside the project; resolved, so every caller names it alike."""
    return Path(os.environ.get(SHARED_DATA_ENV) or PROJECT_ROOT.parent / "shared" / "data").resolve()
NOTEBOOK_PREFIX = "notebooks"
# Parameters every numbered notebook declares in its `parameters` cell.
COMMON_PARAMETERS = ("PROFILE", "DATA_DIR", "DEVICE", "RUNS_DIR", "REDO", "OVERRIDES")
SEEDS = "seeds"  # the profile key, and the override prefix: seeds=[0,1], seeds.variants=[0]
FULL_PROFILE_ONLY = "full_profile_only"


def profile_path(profile: str | Path) -> Path:
    """``smoke``, ``cpu``, ``full`` name a file in ``profiles/``; anything else is a path."""
    path = Path(profile)
    candidate = path if path.suffix in (".yaml", ".yml") else PROFILES_DIR / f"{profile}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"profile {str(profile)!r} not found at {candidate}; built-in profiles: {known}")
    return candidate


def _read_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"profile {path} must be a YAML mapping, got {type(data).__name__}")
    return data


def project_path(path: str | Path) -> Path:
    """A relative ``runs/...`` or ``data/cache`` path as the project means it.

    Absolute paths stay. Relative ones are taken from the project root when working inside
    the project below its root (JupyterLab and Voila start kernels in ``notebooks/``), so
    every frontend finds the same runs and caches as ``python -m cxrlib report`` started
    from the root; elsewhere they stay relative to the working directory.
    """
    path = Path(path)
    if path.is_absolute():
        return path
    cwd = Path.cwd().resolve()
    if cwd != PROJECT_ROOT and PROJECT_ROOT in cwd.parents:
        return PROJECT_ROOT / path
    return path


def variant_name(changes: Mapping[str, Any]) -> str:
    """A readable run name from changed values: ``{"model.head": "fpn"}`` -> ``fpn``."""
    parts = []
    for key, value in changes.items():
        leaf = key.split(".")[-1]
        if isinstance(value, bool):
            parts.append(leaf if value else f"no_{leaf}")
        elif isinstance(value, (str, int, float)) and value is not None:
            parts.append(str(value))
        else:
            parts.append(f"{leaf}={json.dumps(value, sort_keys=True)}")
    return "+".join(parts).replace("/", "_").replace(" ", "")


def parameter_defaults(notebook: str | Path) -> dict[str, Any]:
    """The values of a notebook's ``parameters`` cell (literal by the project's rule), which
    papermill keeps where the profile and the command line set nothing."""
    path = Path(notebook)
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    source = "".join(tagged[0].get("source", []))
    values: dict[str, Any] = {}
    for node in ast.parse(source).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and node.value is not None:
            try:
                values[target.id] = ast.literal_eval(node.value)
            except ValueError:
                raise ValueError(f"{path}: parameter {target.id} is not a literal ({ast.unparse(node.value)}); "
                                 "the parameters cell holds literals only") from None
    return values


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Separate experiment overrides (``train.epochs=3``) from notebook parameters.

    ``notebooks.01_baselines.MODELS=[resnet18]`` (or ``01_baselines.MODELS=...``) sets a
    notebook parameter; everything else is an experiment override.
    """
    experiment: list[str] = []
    notebook: dict[str, dict[str, Any]] = {}
    for text in overrides or ():
        key = text.split("=", 1)[0].strip()
        parts = key.split(".")
        if parts[0] == NOTEBOOK_PREFIX and len(parts) == 3:
            stem, param = parts[1], parts[2]
        elif len(parts) == 2 and _is_notebook_stem(parts[0]):
            stem, param = parts
        else:
            experiment.append(text)
            continue
        if "=" not in text:
            raise ValueError(f"override {text!r} must look like notebooks.<stem>.<PARAM>=value")
        value = apply_overrides({"v": None}, [f"v={text.split('=', 1)[1]}"])["v"]
        notebook.setdefault(stem, {})[param] = value
    return experiment, notebook


def _is_notebook_stem(text: str) -> bool:
    return len(text) > 3 and text[:2].isdigit() and text[2] == "_"


@dataclass(frozen=True)
class Seeds:
    """Training seeds: each seed changes the initial weights, the data order and the
    augmentation draws, never the split, so every seed is scored on the same test images and
    comparisons stay paired.

    The baseline is what every comparison leans on, so a profile may give it more seeds
    than the variants (the full profile measures its spread on real data at the cost of
    three baselines, not three of everything).
    """

    baseline: tuple[int, ...] = (0,)
    variants: tuple[int, ...] = (0,)

    def of(self, cfg: ExperimentConfig | str) -> tuple[int, ...]:
        """The seeds of an experiment (a config or its name): the baseline's, else the variants'."""
        name = cfg if isinstance(cfg, str) else cfg.name
        return self.baseline if name == BASELINE else self.variants

    @classmethod
    def parse(cls, value: Any, default: int = 0, where: str = SEEDS) -> "Seeds":
        """``[0, 1, 2]`` (both), ``{baseline: [0, 1, 2], variants: [0]}`` (a missing key keeps
        ``default`` alone), or nothing (``default`` alone for both)."""
        if value is None:
            return cls((default,), (default,))
        if isinstance(value, Mapping):
            unknown = set(value) - {"baseline", "variants"}
            if unknown:
                raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected baseline and/or variants")
            return cls(_seed_list(value.get("baseline", [default]), f"{where}.baseline"),
                       _seed_list(value.get("variants", [default]), f"{where}.variants"))
        seeds = _seed_list(value, where)
        return cls(seeds, seeds)

    def to_dict(self) -> dict[str, list[int]]:
        return {"baseline": list(self.baseline), "variants": list(self.variants)}


def _seed_list(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{where} must be a non-empty list of seeds such as [0, 1, 2], got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ValueError(f"{where}: seeds are whole numbers >= 0, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{where}: a seed is listed twice in {value!r}")
    return tuple(int(v) for v in value)


def _apply_seed_overrides(raw: Any, overrides: Sequence[str]) -> Any:
    """``seeds=[0, 1]`` replaces the profile's seeds; ``seeds.baseline=...`` one of its lists."""
    for text in overrides:
        if "=" not in text:
            raise ValueError(f"override {text!r} must look like seeds=[0, 1, 2] or seeds.variants=[0]")
        key, value = text.split("=", 1)[0].strip(), apply_overrides({"v": None}, [f"v={text.split('=', 1)[1]}"])["v"]
        if key == SEEDS:
            raw = value
        else:
            current = raw if isinstance(raw, Mapping) else {} if raw is None else {"baseline": raw, "variants": raw}
            raw = {**current, key.split(".", 1)[1]: value}
    return raw


def _is_seed_override(text: str) -> bool:
    key = text.split("=", 1)[0].strip()
    return key == SEEDS or key.startswith(SEEDS + ".")


@dataclass(frozen=True)
class Profile:
    """A profile with the run's choices applied: everything a command or notebook needs."""

    name: str  # "smoke", "cpu", "full", a YAML file's stem, or "defaults" without a profile
    path: Path | None  # the YAML file; None: the built-in defaults
    baseline: ExperimentConfig  # named "baseline"; data_dir, device, runs_dir and overrides applied
    notebooks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per-notebook parameters
    data_dir: str = ""  # as given ("" = the profile's data)
    device: str = ""  # as given ("" = the profile's)
    overrides: tuple[str, ...] = ()  # the experiment and seed overrides, as given to --set
    seeds: Seeds = Seeds()  # training seeds of the baseline and of the variants
    full_profile_only: Mapping[str, str] = field(default_factory=dict)  # model -> why this profile skips it

    @property
    def runs_dir(self) -> Path:
        return Path(self.baseline.runs_dir)

    @property
    def cache_dir(self) -> Path:
        return Path(self.baseline.data.cache_dir)

    def config(self, name: str | None = None, changes: Mapping[str, Any] | None = None) -> ExperimentConfig:
        """A variant of the baseline: ``changes`` like ``{"model.name": "resnet50"}``.

        ``name`` defaults to ``baseline`` without changes, else to a name made from the
        changed values (``fpn``, ``focal``). The changes are applied after the overrides:
        they define the experiment, while the overrides adjust everything else.
        """
        changes = dict(changes or {})
        d = apply_overrides(self.baseline.to_dict(), changes)
        d["name"] = name or (BASELINE if not changes else variant_name(changes))
        d["runs_dir"] = str(project_path(d["runs_dir"]))  # in case the changes moved it
        return ExperimentConfig.from_dict(d)

    def notebook_parameters(self, stem: str, redo: bool = False) -> dict[str, Any]:
        """The papermill parameters of notebook ``stem``: the common ones, then
        :data:`NOTEBOOK_DEFAULTS`, then the profile's ``notebooks.<stem>`` section, then the
        command line's ``notebooks.<stem>.<PARAM>``."""
        params: dict[str, Any] = {
            # a built-in profile by name, any other by its absolute path: the kernel's working
            # folder may differ from the one the profile was named in
            "PROFILE": "" if self.path is None else self.name if self.path.parent == PROFILES_DIR
            else str(self.path.resolve()),
            "DATA_DIR": self.data_dir,
            "DEVICE": self.device,
            "RUNS_DIR": str(self.runs_dir),
            "REDO": bool(redo),
            "OVERRIDES": list(self.overrides),
        }
        params.update(copy.deepcopy(NOTEBOOK_DEFAULTS.get(stem, {})))
        params.update(copy.deepcopy(dict(self.notebooks.get(stem, {}))))
        return params

    def notebook_value(self, stem: str, name: str, value: Any = None) -> Any:
        """Parameter ``name`` of notebook ``stem``: ``value`` when it is set (not None), else
        what the report gives the notebook with this profile (:meth:`notebook_parameters`).
        A notebook's parameters cell writes ``None`` for "the profile's value"."""
        if value is not None:
            return value
        params = self.notebook_parameters(stem)
        if params.get(name) is None:
            raise ValueError(f"notebook {stem}: {name} is None (the profile's value) and profile {self.name} sets "
                             f"none; set it in the parameters cell or in the profile's notebooks.{stem} section")
        return params[name]

    def with_runs_dir(self, runs_dir: str | Path) -> "Profile":
        """The same profile writing its runs to ``runs_dir``."""
        return replace(self, baseline=self.baseline.with_overrides({"runs_dir": str(project_path(runs_dir))}))


def load(
    profile: str | Path | None = "cpu",
    *,
    data_dir: str | Path | None = "",
    device: str | None = "",
    runs_dir: str | Path | None = "",
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> Profile:
    """Resolve ``profile`` (smoke | cpu | full | a YAML path | None or "" for the built-in defaults).

    ``data_dir`` empty keeps the profile's data; ``device`` empty keeps its device;
    ``runs_dir`` empty keeps ``runs/<profile>``. ``overrides`` (``section.key=value``, or a
    mapping) apply to the baseline; ``notebooks.<stem>.<PARAM>=value`` ones set a notebook
    parameter. A bad key fails here, naming it, before anything runs.
    """
    if isinstance(overrides, Mapping):
        experiment, by_notebook = [f"{k}={json.dumps(v)}" for k, v in overrides.items()], {}
    else:
        experiment, by_notebook = split_overrides(overrides)
    seed_overrides = [o for o in experiment if _is_seed_override(o)]
    experiment = [o for o in experiment if not _is_seed_override(o)]
    if not profile:
        path, name, raw = None, "defaults", {}
    else:
        path = profile_path(profile)
        name, raw = path.stem, _read_yaml(path)
    section = raw.get("experiment") or {}
    if not isinstance(section, dict):
        raise ValueError(f"profile {path}: 'experiment' must be a mapping of config sections "
                         f"(name, data, model, train, runs_dir, seed)")
    cfg = ExperimentConfig.from_dict(section)
    d = cfg.to_dict()
    d["name"] = BASELINE
    if path is not None and not section.get("runs_dir"):
        d["runs_dir"] = str(Path("runs") / name)
    if data_dir:
        d = ExperimentConfig.from_dict(d).with_data_dir(data_dir).to_dict()
    if device:
        d["train"]["device"] = str(device)
    if runs_dir:
        d["runs_dir"] = str(runs_dir)
    d = apply_overrides(d, experiment)
    d["runs_dir"] = str(project_path(d["runs_dir"]))
    d["data"]["cache_dir"] = str(project_path(d["data"]["cache_dir"]))
    if d["model"].get("weights_dir"):
        d["model"]["weights_dir"] = str(project_path(d["model"]["weights_dir"]))
    notebooks: dict[str, dict[str, Any]] = {}
    for stem, params in (raw.get(NOTEBOOK_PREFIX) or {}).items():
        if not isinstance(params, dict):
            raise ValueError(f"profile {path}: notebooks.{stem} must be a mapping of parameters")
        notebooks[stem] = dict(params)
    for stem, params in by_notebook.items():
        notebooks.setdefault(stem, {}).update(params)
    where = f"profile {path}: {SEEDS}" if path else SEEDS
    seeds = Seeds.parse(_apply_seed_overrides(raw.get(SEEDS), seed_overrides), default=int(d["seed"]), where=where)
    skipped = raw.get(FULL_PROFILE_ONLY) or {}
    if not isinstance(skipped, dict) or not all(isinstance(v, str) and v.strip() for v in skipped.values()):
        raise ValueError(f"profile {path}: {FULL_PROFILE_ONLY} must map each model to the measured reason it is "
                         f"left to the full profile")
    return Profile(name=name, path=path, baseline=ExperimentConfig.from_dict(d), notebooks=notebooks,
                   data_dir=str(data_dir or ""), device=str(device or ""),
                   overrides=tuple(experiment + seed_overrides), seeds=seeds,
                   full_profile_only={str(k): v.strip() for k, v in skipped.items()})
