"""MedMNIST ``.npz`` files (ChestMNIST: the 14 findings; PneumoniaMNIST: one label).

The files are read from a path; the ``medmnist`` package is used only by :func:`download`,
when asked, so nothing here needs the network.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cxrlib.labels import FINDINGS

SPLITS = ("train", "val", "test")
# ChestMNIST's labels are ChestX-ray14's 14 findings in CheXNet order (MedMNIST's INFO).
LABEL_NAMES: dict[str, list[str]] = {
    "chestmnist": list(FINDINGS),
    "pneumoniamnist": ["Pneumonia"],
}
DEFAULT_ROOT = Path("data") / "medmnist"


class NpzSplit(NamedTuple):
    images: np.ndarray  # uint8 [N, H, W]
    labels: np.ndarray  # [N, K]


def load_npz(path: str | os.PathLike) -> dict[str, NpzSplit]:
    """``{"train", "val", "test"} -> NpzSplit(images uint8 [N,H,W], labels [N,K])``, validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST file {path} not found")
    try:
        npz = np.load(path, allow_pickle=False)
        keys = set(npz.files)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    need = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
    missing = [k for k in need if k not in keys]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; a MedMNIST npz has {need}, this one has {sorted(keys)}")
    out: dict[str, NpzSplit] = {}
    width = None
    for s in SPLITS:
        try:
            images, labels = npz[f"{s}_images"], npz[f"{s}_labels"]
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read {s} arrays ({err})") from None
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.ndim != 3:
            raise ValueError(f"{path}: {s}_images has shape {images.shape}; expected gray images (N, H, W)")
        if images.dtype != np.uint8:
            raise ValueError(f"{path}: {s}_images is {images.dtype}; expected uint8")
        if labels.ndim == 1:
            labels = labels[:, None]
        if labels.ndim != 2 or len(labels) != len(images):
            raise ValueError(f"{path}: {s}_labels has shape {labels.shape} for {len(images)} images; expected (N, K)")
        if width is not None and labels.shape[1] != width:
            raise ValueError(f"{path}: {s}_labels has {labels.shape[1]} columns, other splits {width}")
        width = labels.shape[1]
        out[s] = NpzSplit(images, labels)
    return out


def find_npz(name: str, data_dir: str | os.PathLike | None) -> Path:
    """The npz for ``name`` (chestmnist | pneumoniamnist): ``data_dir`` is the file or a folder."""
    name = name.lower()
    candidates: list[Path] = []
    if data_dir is not None:
        d = Path(data_dir)
        if d.is_file() or d.suffix == ".npz":
            candidates.append(d)
        else:
            candidates += [d / f"{name}.npz", d / name / f"{name}.npz"]
    candidates += [DEFAULT_ROOT / f"{name}.npz", Path.home() / ".medmnist" / f"{name}.npz"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"{name}.npz not found (looked at {', '.join(str(c) for c in candidates)}); put the file at "
        f"{candidates[0]}, or download it with cxrlib.data.medmnist.download({name!r}, root) "
        "(needs `pip install medmnist` and the network)")


def download(name: str, root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """Fetch ``<name>.npz`` (28 px) into ``root`` through the ``medmnist`` package; returns its path."""
    name = name.lower()
    if name not in LABEL_NAMES:
        raise ValueError(f"unknown MedMNIST dataset {name!r}; cxrlib uses {sorted(LABEL_NAMES)}")
    root = Path(root)
    target = root / f"{name}.npz"
    if target.is_file():
        return target
    try:
        import medmnist
    except ImportError:
        raise ImportError(
            f"downloading {name} needs the medmnist package: `pip install medmnist`; or put "
            f"{name}.npz (from https://zenodo.org/records/10519652) at {target}") from None
    root.mkdir(parents=True, exist_ok=True)
    try:
        cls = getattr(medmnist, medmnist.INFO[name]["python_class"])
        cls(split="train", download=True, root=str(root))
    except Exception as err:  # network errors arrive as many types
        raise RuntimeError(
            f"could not download {name} ({type(err).__name__}: {err}); offline? put {name}.npz at {target}") from None
    if not target.is_file():
        raise RuntimeError(f"medmnist reported success but {target} is missing")
    return target
