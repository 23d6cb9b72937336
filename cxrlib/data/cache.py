"""Decode and resize every image once into a uint8 memmap; training reads only this.

Layout, one folder per dataset and size::

    <cache_dir>/<dataset-key>/<size>/
        ids.txt         one image id per line: slot i holds ids[i]
        images.u8       uint8 [N, S, S] raw memmap
        masks.u16       uint16 [N, S, S] (phantoms only): bit k set = finding k there
        progress.u8     uint8 [N]: 0 = to do, 1 = done, 2 = unreadable (skipped)
        build.json      what is being built (ids fingerprint, size, count)
        manifest.json   written last, atomically: the cache is complete

A cache is read only when ``manifest.json`` matches the ids, size and count asked for and
the files have the right length; anything else (a killed build, a corrupt marker, other
ids) is resumed from ``progress.u8`` when its ``build.json`` matches, else rebuilt.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from cxrlib.fileio import atomic_write_text
from cxrlib.data.imageio import ImageError, read_image
from cxrlib.data.sources import make_plan

FORMAT_VERSION = 1
TODO, DONE, SKIPPED = 0, 1, 2

# Lanczos over the full support (reducing_gap=None) is a proper antialiasing filter for the
# 1024 -> 224 reductions ChestX-ray14 needs, and behaves for the 28 -> 128 MedMNIST upsample.
RESAMPLE = Image.Resampling.LANCZOS


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """THE resize of cxrlib: ``uint8 [H, W]`` to ``uint8 [size, size]`` (Lanczos, antialiased).

    The cache, prediction and the demo all call this, so a model at inference sees pixels
    made exactly as in training. Non-square images are stretched to a square, as NIH made
    the 1024 x 1024 release from the detector images (the box list's coordinates assume it).
    """
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"resize_image expects a 2-D gray image, got shape {arr.shape}; decode with read_image first")
    if arr.dtype != np.uint8:
        raise ValueError(f"resize_image expects uint8 pixels, got {arr.dtype}; decode with read_image first")
    size = int(size)
    if size < 1:
        raise ValueError(f"image size must be a positive number of pixels, got {size}")
    if arr.shape == (size, size):
        return np.array(arr, copy=True)
    im = Image.fromarray(np.ascontiguousarray(arr), mode="L")
    return np.asarray(im.resize((size, size), RESAMPLE, reducing_gap=None), dtype=np.uint8).copy()


def ids_fingerprint(ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode())
        h.update(b"\n")
    return h.hexdigest()


def select_cache_ids(used: Sequence[Sequence[str]], all_ids: Sequence[str] | None,
                     limited: bool) -> tuple[list[str], str]:
    """The ids a dataset's cache holds, and the suffix of its key.

    All of the dataset's images (shared by every split) or, when the parts are capped
    (``limited``), just the ``used`` ones, under a key suffix naming that subset.
    """
    if not limited and all_ids is not None:
        return sorted(str(i) for i in all_ids), ""
    ids = sorted(set().union(*(set(str(i) for i in u) for u in used)))
    return ids, "-subset-" + ids_fingerprint(ids)[:8]


@contextlib.contextmanager
def _lock(folder: Path):
    """One builder per cache folder (DDP ranks, two notebooks): the others wait, then read."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: no locking
            pass
        yield


class ImageCache:
    """A complete cache opened read-only: ``images[i]`` is ``uint8 [S, S]`` of ``ids[i]``."""

    def __init__(self, folder: str | os.PathLike, manifest: dict[str, Any], ids: np.ndarray):
        self.folder = Path(folder)
        self.manifest = manifest
        self.key = str(manifest["key"])
        self.size = int(manifest["size"])
        self.ids = ids
        self.has_masks = bool(manifest.get("masks", False))
        self.skipped: list[str] = list(manifest.get("skipped", []))
        self._index: dict[str, int] | None = None
        self._images: np.memmap | None = None
        self._masks: np.memmap | None = None

    # Memmaps are reopened lazily after pickling, so DataLoader workers share the page cache
    # instead of copying gigabytes through a pipe.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_images"] = state["_masks"] = state["_index"] = None
        return state

    @property
    def images(self) -> np.memmap:
        if self._images is None:
            self._images = np.memmap(self.folder / "images.u8", dtype=np.uint8, mode="r",
                                     shape=(len(self.ids), self.size, self.size))
        return self._images

    @property
    def masks(self) -> np.memmap | None:
        if not self.has_masks:
            return None
        if self._masks is None:
            self._masks = np.memmap(self.folder / "masks.u16", dtype=np.uint16, mode="r",
                                    shape=(len(self.ids), self.size, self.size))
        return self._masks

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, image_id: str) -> int:
        if self._index is None:
            self._index = {str(k): i for i, k in enumerate(self.ids)}
        try:
            return self._index[str(image_id)]
        except KeyError:
            raise KeyError(f"image {image_id!r} is not in the cache {self.folder}") from None

    def get(self, image_id: str) -> np.ndarray:
        return np.array(self.images[self.index_of(image_id)])

    def __repr__(self) -> str:
        return f"ImageCache({self.key!r}, size={self.size}, n={len(self)}, folder={str(self.folder)!r})"


def cache_files(n: int, size: int, masks: bool) -> dict[str, int]:
    """The data files of a cache of ``n`` images at ``size`` px and their lengths in bytes
    (what a build lays out, and what the disk must hold)."""
    files = {"images.u8": n * size * size, "progress.u8": n}
    if masks:
        files["masks.u16"] = 2 * n * size * size
    return files


def cache_folder(cache_dir: str | os.PathLike, key: str, size: int) -> Path:
    return Path(cache_dir) / key / str(int(size))


def open_cache(cache_dir: str | os.PathLike, key: str, size: int,
               ids: Sequence[str] | None = None) -> ImageCache | None:
    """The complete cache for (key, size), or None when absent, partial or for other ids."""
    folder = cache_folder(cache_dir, key, size)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if int(manifest.get("format", -1)) != FORMAT_VERSION or int(manifest["size"]) != int(size):
            return None
        n = int(manifest["count"])
        stored = np.array((folder / "ids.txt").read_text().splitlines(), dtype=str)
        if len(stored) != n or ids_fingerprint(stored) != manifest["ids_sha256"]:
            return None
        if ids is not None and ids_fingerprint(ids) != manifest["ids_sha256"]:
            return None
        if (folder / "images.u8").stat().st_size != n * size * size:
            return None
        if manifest.get("masks") and (folder / "masks.u16").stat().st_size != 2 * n * size * size:
            return None
        progress = np.fromfile(folder / "progress.u8", dtype=np.uint8)
        if len(progress) != n or (progress == TODO).any():
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or corrupt marker: never trust the data behind it
    return ImageCache(folder, manifest, stored)


# --------------------------------------------------------------------------- building

class SlotLoader:
    """What fills one slot: ``load(i, size) -> (uint8 [S,S], uint16 [S,S] bit-mask or None)``.

    Subclasses must be picklable (they travel to worker processes) and name the image in
    ``describe(i)`` for error messages.
    """

    has_masks = False

    def load(self, i: int, size: int) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        return f"item {i}"


class FileLoader(SlotLoader):
    """Decode an image file with :func:`read_image` and :func:`resize_image` it."""

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [str(p) for p in paths]

    def load(self, i: int, size: int):
        return resize_image(read_image(self.paths[i]), size), None

    def describe(self, i: int) -> str:
        return self.paths[i]


class ArrayLoader(SlotLoader):
    """Slots from in-memory uint8 images (MedMNIST), resized to the cache size."""

    def __init__(self, images: np.ndarray, names: Sequence[str] | None = None):
        self.images = images
        self.names = names

    def load(self, i: int, size: int):
        return resize_image(np.asarray(self.images[i], dtype=np.uint8), size), None

    def describe(self, i: int) -> str:
        return self.names[i] if self.names is not None else f"array item {i}"


_WORKER_LOADER: SlotLoader | None = None


def _init_worker(loader: SlotLoader) -> None:
    global _WORKER_LOADER
    _WORKER_LOADER = loader


def _work(args: tuple[int, int, str]) -> tuple[int, np.ndarray | None, np.ndarray | None, str | None]:
    i, size, on_corrupt = args
    assert _WORKER_LOADER is not None
    return _fill_one(_WORKER_LOADER, i, size, on_corrupt)


def _fill_one(loader: SlotLoader, i: int, size: int, on_corrupt: str):
    try:
        img, mask = loader.load(i, size)
    except ImageError as err:
        if on_corrupt == "skip":
            return i, None, None, str(err)
        raise
    img = np.asarray(img)
    if img.shape != (size, size) or img.dtype != np.uint8:
        raise ValueError(f"{loader.describe(i)}: loader returned {img.dtype} {img.shape}, expected uint8 ({size}, {size})")
    return i, img, mask, None


def resolve_workers(workers: int) -> int:
    """0 means all cores; never more processes than there is work for."""
    return max(1, os.cpu_count() or 1) if int(workers) <= 0 else int(workers)


def _context():
    # fork: no re-import of the caller's __main__ (a script without a __main__ guard works,
    # and workers start in milliseconds). Safe because slot loaders use only Pillow and
    # NumPy; they must not call torch, whose OpenMP pool does not survive a fork.
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def build_cache(key: str, ids: Sequence[str], size: int, loader: SlotLoader,
                cache_dir: str | os.PathLike = "data/cache", workers: int = 0,
                progress: bool = True, on_corrupt: str = "error") -> ImageCache:
    """Build (or finish, or just open) the cache of ``ids`` at ``size`` under ``cache_dir/key``.

    Slots are filled in parallel by ``workers`` processes (0 = all cores, 1 = in this
    process), with a tqdm bar. Progress is recorded per slot, so a killed build resumes
    where it stopped; ``manifest.json`` is written last and atomically. ``on_corrupt``:
    ``"error"`` raises :class:`ImageError` naming the file; ``"skip"`` leaves the slot black,
    lists the file in ``ImageCache.skipped`` and goes on.
    """
    if on_corrupt not in ("error", "skip"):
        raise ValueError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
    ids = [str(i) for i in ids]
    if len(ids) == 0:
        raise ValueError(f"nothing to cache for {key!r}: the list of images is empty")
    if len(set(ids)) != len(ids):
        raise ValueError(f"cache {key!r}: image ids must be unique")
    size = int(size)
    folder = cache_folder(cache_dir, key, size)
    done = open_cache(cache_dir, key, size, ids)
    if done is not None:
        return done
    with _lock(folder):
        done = open_cache(cache_dir, key, size, ids)  # another process may have finished it
        if done is not None:
            return done
        _fill(folder, key, ids, size, loader, workers, progress, on_corrupt)
        result = open_cache(cache_dir, key, size, ids)
    if result is None:  # pragma: no cover - would be a bug in _fill
        raise RuntimeError(f"cache {folder} was built but does not validate")
    return result


def _prepare(folder: Path, key: str, ids: list[str], size: int, masks: bool) -> np.ndarray:
    """Reuse a matching partial build, or lay out empty files; returns the progress array."""
    n = len(ids)
    fp = ids_fingerprint(ids)
    build = {"format": FORMAT_VERSION, "key": key, "size": size, "count": n, "ids_sha256": fp, "masks": masks}
    files = cache_files(n, size, masks)
    try:
        same = json.loads((folder / "build.json").read_text()) == build and all(
            (folder / f).stat().st_size == nbytes for f, nbytes in files.items())
    except (OSError, ValueError):
        same = False
    if same:
        return np.fromfile(folder / "progress.u8", dtype=np.uint8)
    # Start over: the marker goes first so nothing half-made is ever read as complete.
    for name in ("manifest.json", "build.json", "images.u8", "masks.u16", "progress.u8", "ids.txt"):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    for name, nbytes in files.items():
        with open(folder / name, "wb") as f:
            f.truncate(nbytes)  # sparse zero-filled file
    atomic_write_text("\n".join(ids) + "\n", folder / "ids.txt")
    atomic_write_text(json.dumps(build, indent=1), folder / "build.json")
    return np.zeros(n, dtype=np.uint8)


def _fill(folder: Path, key: str, ids: list[str], size: int, loader: SlotLoader, workers: int,
          progress: bool, on_corrupt: str) -> None:
    from tqdm.auto import tqdm

    masks = bool(loader.has_masks)
    with contextlib.suppress(FileNotFoundError):
        (folder / "manifest.json").unlink()  # stale or corrupt marker: not complete any more
    state = _prepare(folder, key, ids, size, masks)
    n = len(ids)
    todo = [int(i) for i in np.flatnonzero(state == TODO)]
    images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r+", shape=(n, size, size))
    mask_mm = np.memmap(folder / "masks.u16", dtype=np.uint16, mode="r+", shape=(n, size, size)) if masks else None
    prog = np.memmap(folder / "progress.u8", dtype=np.uint8, mode="r+", shape=(n,))
    skipped_before = [ids[i] for i in np.flatnonzero(state == SKIPPED)]
    errors: dict[str, str] = {}
    nproc = min(resolve_workers(workers), max(1, len(todo)))
    t0 = time.perf_counter()
    bar = tqdm(total=n, initial=n - int((state == TODO).sum()), desc=f"cache {key} {size}px",
               unit="img", disable=not progress, smoothing=0.05)
    pending = 0

    def commit():
        # Pixels reach the file before their progress flags do.
        images.flush()
        if mask_mm is not None:
            mask_mm.flush()
        prog.flush()

    def store(result):
        nonlocal pending
        i, img, mask, err = result
        if err is not None:
            errors[ids[i]] = err
            prog[i] = SKIPPED
        else:
            images[i] = img
            if mask_mm is not None:
                mask_mm[i] = mask
            prog[i] = DONE
        pending += 1
        if pending >= 256:
            commit()
            pending = 0
        bar.update(1)

    try:
        if nproc == 1 or len(todo) < 2:
            for i in todo:
                store(_fill_one(loader, i, size, on_corrupt))
        else:
            jobs = [(i, size, on_corrupt) for i in todo]
            chunk = max(1, min(16, len(jobs) // (nproc * 8)))
            with _context().Pool(nproc, initializer=_init_worker, initargs=(loader,)) as pool:
                for result in pool.imap_unordered(_work, jobs, chunksize=chunk):
                    store(result)
    finally:
        commit()
        bar.close()
    skipped = sorted(set(skipped_before) | set(errors))
    manifest = {
        "format": FORMAT_VERSION, "key": key, "size": size, "count": n,
        "ids_sha256": ids_fingerprint(ids), "masks": masks, "skipped": skipped,
        "skipped_reasons": errors, "build_seconds": round(time.perf_counter() - t0, 3),
        "workers": nproc, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(json.dumps(manifest, indent=1), folder / "manifest.json")


def build_cache_from_config(data_cfg, progress: bool = True) -> ImageCache:
    """The cache that :func:`cxrlib.data.load_data` would read for ``data_cfg`` (``cxrlib cache``)."""
    plan = make_plan(data_cfg)
    return build_cache(plan.cache_key, plan.cache_ids, data_cfg.image_size, plan.loader,
                       cache_dir=data_cfg.cache_dir, workers=data_cfg.workers,
                       progress=progress, on_corrupt=data_cfg.on_corrupt)
