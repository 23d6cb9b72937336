"""The decode-once cache: equal to a direct decode, resumable, never read when partial."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cxrlib.data import chestxray14 as cx
from cxrlib.data.cache import (FileLoader, ImageCache, build_cache, cache_folder, open_cache, resize_image)
from cxrlib.data.imageio import ImageError, read_image

SIZE = 48
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sample_files(cxr14_sample):
    """40 real files, including every 1024 px one (6 of them RGBA)."""
    found = cx.find_images(cxr14_sample)
    from PIL import Image

    big = [i for i, p in sorted(found.items()) if Image.open(p).size[0] == 1024]
    small = [i for i in sorted(found) if i not in big][:28]
    ids = sorted(big + small)
    return ids, [found[i] for i in ids]


class CountingLoader(FileLoader):
    calls = 0

    def load(self, i, size):
        CountingLoader.calls += 1
        return super().load(i, size)


def test_resize_image_contract():
    img = (np.arange(100 * 80) % 251).astype(np.uint8).reshape(100, 80)
    out = resize_image(img, 32)
    assert out.shape == (32, 32) and out.dtype == np.uint8
    assert np.array_equal(resize_image(out, 32), out)
    with pytest.raises(ValueError, match="uint8"):
        resize_image(img.astype(np.float32), 32)
    with pytest.raises(ValueError, match="2-D"):
        resize_image(np.zeros((4, 4, 3), np.uint8), 2)


def test_cache_equals_direct_decode(sample_files, tmp_path):
    ids, paths = sample_files
    cache = build_cache("sample", ids, SIZE, FileLoader(paths), cache_dir=tmp_path, workers=2, progress=False)
    assert isinstance(cache, ImageCache) and len(cache) == len(ids) and cache.size == SIZE
    assert list(cache.ids) == ids
    for k, path in enumerate(paths):
        assert np.array_equal(cache.images[k], resize_image(read_image(path), SIZE)), path
    # A second call opens the finished cache without decoding anything.
    CountingLoader.calls = 0
    again = build_cache("sample", ids, SIZE, CountingLoader(paths), cache_dir=tmp_path, workers=1, progress=False)
    assert CountingLoader.calls == 0 and np.array_equal(again.images, cache.images)
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    assert manifest["count"] == len(ids) and manifest["size"] == SIZE and manifest["skipped"] == []
    assert cache.folder == cache_folder(tmp_path, "sample", SIZE)


class SlowLoader(FileLoader):
    """A file loader that takes its time, so a test can kill the build halfway."""

    def __init__(self, paths, delay: float):
        super().__init__(paths)
        self.delay = delay

    def load(self, i, size):
        time.sleep(self.delay)
        return super().load(i, size)


def _build_main(cache_dir: str, paths: str) -> None:
    """Entry point of the building process that gets SIGKILLed (two workers, slow decodes)."""
    paths = json.loads(paths)
    ids = [Path(p).name for p in paths]
    build_cache("kill", ids, SIZE, SlowLoader(paths, 0.1), cache_dir=cache_dir, workers=2, progress=False)


def _start_and_kill(cache_dir: Path, paths: list[Path], at_least: int) -> np.ndarray:
    """Start a real building process, SIGKILL it (and its workers) once ``at_least`` slots are
    done, and return the progress flags it left."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    code = f"import test_cache; test_cache._build_main({str(cache_dir)!r}, {json.dumps([str(p) for p in paths])!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=TESTS.parent, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    flags_file = cache_folder(cache_dir, "kill", SIZE) / "progress.u8"
    deadline = time.monotonic() + 300  # imports alone take a while on a busy machine
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if flags_file.exists() and int((np.fromfile(flags_file, np.uint8) == 1).sum()) >= at_least:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the build ended before it could be killed: {proc.stderr.read()[-2000:]!r}"
        assert time.monotonic() < deadline, "the build never got going"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return np.fromfile(flags_file, np.uint8)


def test_killed_build_resumes_and_is_never_read(sample_files, tmp_path):
    """A building process is SIGKILLed twice mid-build: what it left is never opened as a cache,
    every slot it marked done holds exactly its image, and the next build resumes."""
    ids, paths = sample_files
    assert ids == [Path(p).name for p in paths]  # the names the building process gives them
    expected = np.stack([resize_image(read_image(p), SIZE) for p in paths])
    folder = cache_folder(tmp_path, "kill", SIZE)
    done_before = 0
    for at_least in (5, 15):
        flags = _start_and_kill(tmp_path, paths, at_least)
        done = np.flatnonzero(flags == 1)
        assert at_least <= len(done) < len(ids), "killed mid-build"
        assert len(done) >= done_before  # the second process resumed, not restarted
        done_before = len(done)
        assert not (folder / "manifest.json").exists()
        assert open_cache(tmp_path, "kill", SIZE) is None and open_cache(tmp_path, "kill", SIZE, ids) is None
        pixels = np.fromfile(folder / "images.u8", np.uint8).reshape(len(ids), SIZE, SIZE)
        for k in done:  # a slot marked done is whole
            assert np.array_equal(pixels[k], expected[k]), paths[k]
    CountingLoader.calls = 0
    cache = build_cache("kill", ids, SIZE, CountingLoader(paths), cache_dir=tmp_path, workers=1, progress=False)
    assert CountingLoader.calls == len(ids) - done_before  # resumed: only the slots not done
    for k in range(len(ids)):
        assert np.array_equal(cache.images[k], expected[k]), paths[k]


def test_corrupt_or_stale_marker_is_not_trusted(sample_files, tmp_path):
    ids, paths = sample_files
    ids, paths = ids[:6], paths[:6]
    cache = build_cache("m", ids, SIZE, FileLoader(paths), cache_dir=tmp_path, workers=1, progress=False)
    good = np.array(cache.images)
    folder = cache.folder
    (folder / "manifest.json").write_text('{"format": 1, "size": ')  # killed mid-write
    assert open_cache(tmp_path, "m", SIZE) is None
    rebuilt = build_cache("m", ids, SIZE, FileLoader(paths), cache_dir=tmp_path, workers=1, progress=False)
    assert np.array_equal(rebuilt.images, good)
    # A manifest for other ids, a short data file, or an unfinished slot: all rejected.
    assert open_cache(tmp_path, "m", SIZE, ids=ids[:5]) is None
    progress = folder / "progress.u8"
    flags = np.fromfile(progress, np.uint8)
    flags[3] = 0
    flags.tofile(progress)
    assert open_cache(tmp_path, "m", SIZE) is None
    CountingLoader.calls = 0
    build_cache("m", ids, SIZE, CountingLoader(paths), cache_dir=tmp_path, workers=1, progress=False)
    assert CountingLoader.calls == 1
    with open(folder / "images.u8", "r+b") as f:
        f.truncate(100)
    assert open_cache(tmp_path, "m", SIZE) is None
    final = build_cache("m", ids, SIZE, FileLoader(paths), cache_dir=tmp_path, workers=1, progress=False)
    assert np.array_equal(final.images, good)
    # Other ids under the same key rebuild instead of serving the wrong images.
    other = build_cache("m", ids[::-1], SIZE, FileLoader(paths[::-1]), cache_dir=tmp_path, workers=1, progress=False)
    assert np.array_equal(other.images[0], good[-1])


def test_corrupt_png_error_or_skip(sample_files, tmp_path):
    ids, paths = sample_files
    data = paths[0].read_bytes()
    bad = tmp_path / "00099999_000.png"
    bad.write_bytes(data[: len(data) // 3])
    ids2, paths2 = [ids[1], "00099999_000.png", ids[2]], [paths[1], bad, paths[2]]
    with pytest.raises(ImageError, match="00099999_000.png"):
        build_cache("c", ids2, SIZE, FileLoader(paths2), cache_dir=tmp_path / "a", workers=1, progress=False)
    assert open_cache(tmp_path / "a", "c", SIZE) is None
    cache = build_cache("c", ids2, SIZE, FileLoader(paths2), cache_dir=tmp_path / "b", workers=1,
                        progress=False, on_corrupt="skip")
    assert cache.skipped == ["00099999_000.png"]
    reasons = json.loads((cache.folder / "manifest.json").read_text())["skipped_reasons"]
    assert "truncated" in reasons["00099999_000.png"] or "corrupt" in reasons["00099999_000.png"]
    assert np.array_equal(cache.images[2], resize_image(read_image(paths[2]), SIZE))


def test_load_data_skip_reports(cxr14_sample, tmp_path):
    """on_corrupt='skip' through load_data: the file is left out, counted and warned about."""
    from cxrlib.config import DataConfig
    from cxrlib.data import load_data

    ids = sorted(cx.find_images(cxr14_sample))[:40]
    root = tmp_path / "release"
    (root / "images").mkdir(parents=True)
    for name in ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt"):
        (root / name).symlink_to(cxr14_sample / name)
    for i in ids:
        (root / "images" / i).symlink_to(cxr14_sample / "images" / i)
    victim = root / "images" / ids[0]
    victim.unlink()
    victim.write_bytes((cxr14_sample / "images" / ids[0]).read_bytes()[:500])
    cfg = DataConfig(source="chestxray14", data_dir=str(root), image_size=16, cache_dir=str(tmp_path / "c"), workers=1)
    with pytest.raises(ImageError, match=ids[0]):
        load_data(cfg, progress=False)
    cfg.on_corrupt = "skip"
    with pytest.warns(UserWarning, match="unreadable"):
        b = load_data(cfg, progress=False)
    assert b.skipped == [ids[0]]
    assert ids[0] not in set(b.train.image_ids) | set(b.val.image_ids) | set(b.test.image_ids)
    assert len(b.train) + len(b.val) + len(b.test) == 39


def test_cache_pickles_without_its_pixels(sample_files, tmp_path):
    ids, paths = sample_files
    cache = build_cache("p", ids[:4], SIZE, FileLoader(paths[:4]), cache_dir=tmp_path, workers=1, progress=False)
    _ = cache.images[0]
    blob = pickle.dumps(cache)
    assert len(blob) < 4 * SIZE * SIZE
    assert np.array_equal(pickle.loads(blob).images[3], cache.images[3])
