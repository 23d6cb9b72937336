"""The demo's logic and widget, headless: build it, feed it images, read what it would show."""
from __future__ import annotations

import datetime
import io
import json
import re
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlib.demo import (
    DemoSession,
    UploadError,
    build_demo,
    demo_profile,
    demo_settings,
    list_model_choices,
    read_upload,
)
from cxrlib.labels import FINDINGS
from cxrlib.overlay import render

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- helpers


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width x height`` with a few bytes of data: a bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 4)) + chunk(b"IEND", b""))


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME1") -> bytes:
    """A minimal 16-bit DICOM secondary capture written with pydicom."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("test.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def upload(app, name: str, content: bytes) -> None:
    """Put a file in the FileUpload widget the way the browser does."""
    app.upload.value = ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
                         "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def check_chart(session) -> None:
    chart = session.chart_data()
    assert sorted(chart.names) == sorted(FINDINGS)
    assert chart.probabilities.shape == (14,)
    assert np.all((chart.probabilities >= 0) & (chart.probabilities <= 1))
    assert np.all(np.diff(chart.probabilities) <= 0), "bars must be sorted, highest first"
    assert chart.threshold == pytest.approx(0.5)


def rendered_size(app) -> tuple[int, int]:
    return Image.open(io.BytesIO(app.heatmap.value)).size


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture()
def app(phantom_data, tmp_path):
    return build_demo(data=phantom_data, runs_dir=tmp_path / "runs", untrained=["resnet18"])


# ----------------------------------------------------------------------------- the demo


def _first_with_a_mask(data) -> tuple[int, str]:
    for i, image_id in enumerate(data.test.image_ids):
        if any(data.mask(str(image_id), f) is not None and data.mask(str(image_id), f).any() for f in FINDINGS):
            return i, str(image_id)
    pytest.fail("no phantom in the smoke test split has a lesion mask")


def test_build_shows_first_annotated_image_chart_and_heatmap(app, phantom_data):
    session = app.session
    i, first = _first_with_a_mask(phantom_data)
    assert session.image.name == first and session.image.source == "dataset"
    assert session.model.untrained and "Untrained model" in app.warning.value
    check_chart(session)
    chart = session.chart_data()
    # The rows on screen are the chart data, in order.
    assert [b._finding for b, _, _ in app._rows] == chart.names
    assert [float(v.value.split(">")[1].split("<")[0]) for _, _, v in app._rows] == pytest.approx(
        chart.probabilities, abs=1e-3)
    # The first heatmap is the most probable outlined finding's, at the model's input size, drawn full size.
    outlined = [n for n in chart.names if session.masks_for(n)]
    assert outlined and app.finding_menu.value == outlined[0] == session.first_finding()
    assert "lesion outlined" in app.caption.value
    assert session.heatmap(outlined[0]).shape == (32, 32)
    full = session.heatmap(outlined[0], full_size=True)
    assert full.shape == session.image.shape == (512, 512)
    assert full.dtype == np.float32 and 0.0 <= full.min() and full.max() <= 1.0
    assert rendered_size(app) == (512, 512)
    assert first in app.caption.value
    # The true labels are those of the dataset.
    row = phantom_data.test.targets[i]
    assert session.image.labels == [n for n, v in zip(FINDINGS, row) if v > 0.5]
    # An image without annotations opens on the most probable finding.
    for image_id in phantom_data.test.image_ids:
        app.image_menu.value = str(image_id)
        if not any(session.masks_for(f) for f in FINDINGS):
            break
    else:
        pytest.fail("every phantom of the smoke test split has a lesion mask")
    assert app.finding_menu.value == session.chart_data().names[0]


def test_pick_image_click_finding_and_method(app, phantom_data):
    session = app.session
    second = str(phantom_data.test.image_ids[1])
    app.image_menu.value = second
    assert session.image.name == second and second in app.caption.value
    check_chart(session)
    # One forward pass gave the probabilities and every heatmap: count the model's passes.
    passes = []
    analyse = session.model.analyse
    session.model.analyse = lambda *a, **k: passes.append(a) or analyse(*a, **k)
    # A click on the fourth bar shows that finding's heatmap, without running the model.
    button = app._rows[3][0]
    button.click()
    assert app.finding_menu.value == button._finding
    assert button.button_style == "info" and button._finding in app.caption.value
    assert passes == []
    # Another CAM method is one more pass, then cached per (image, model, method).
    app.method_menu.value = "center"
    assert session.method == "center" and "center heatmap" in app.caption.value
    app._rows[5][0].click()
    app.method_menu.value = "gradcam"
    assert len(passes) == 1
    assert session.heatmap(button._finding, method="center").shape == (32, 32)


@pytest.fixture(scope="module")
def real_data(cxr14_sample, sample_cache):
    """The real ChestX-ray14 sample under the sample profile (32 px): its official test part
    holds the boxed images."""
    from cxrlib.data import load_data

    config = demo_profile("sample", data_dir=str(cxr14_sample),
                          overrides=[f"data.cache_dir={sample_cache}"]).baseline
    return load_data(config.data, progress=False)


def test_boxes_are_drawn_for_the_finding(real_data, tmp_path):
    """Real data offers annotated boxes: the demo opens on a boxed image, showing a boxed
    finding, and the picture draws the chosen finding's boxes."""
    assert real_data.offers.boxes
    boxed = [str(i) for i in real_data.test.image_ids if real_data.boxes(str(i))]
    assert boxed, "no image of the sample's test part has a box"
    app = build_demo(data=real_data, runs_dir=tmp_path / "runs", untrained=["resnet18"])
    session = app.session
    assert session.image.name == boxed[0] and session.image.boxes
    assert session.boxes_for(app.finding_menu.value) and "annotated box" in app.caption.value
    image_id = boxed[-1]
    boxes = real_data.boxes(image_id)
    app.image_menu.value = image_id
    finding = boxes[0].finding
    app.finding_menu.value = finding
    assert session.boxes_for(finding) and "annotated box" in app.caption.value
    # Green outline where the box is.
    picture = session.overlay(finding)
    x, y = int(boxes[0].x), int(boxes[0].y)
    assert tuple(picture[y, x + 1]) == (0, 255, 0)


def test_lesion_masks_are_outlined(app, phantom_data):
    """Phantoms have lesion masks: the picture outlines the chosen finding's mask."""
    session = app.session
    for image_id in phantom_data.test.image_ids:
        app.image_menu.value = str(image_id)
        drawn = [f for f in session.findings if session.masks_for(f)]
        if drawn:
            break
    else:
        pytest.fail("no phantom in the smoke test split has a lesion mask")
    finding = drawn[0]
    np.testing.assert_array_equal(session.masks_for(finding)[0], phantom_data.mask(str(image_id), finding))
    app.finding_menu.value = finding
    assert "lesion outlined" in app.caption.value
    picture = session.overlay(finding)
    heat = session.heatmap(finding)
    boxes = session.boxes_for(finding)
    np.testing.assert_array_equal(picture, render(session.image.pixels, heat, boxes, session.masks_for(finding),
                                                  max_side=2048))
    # The outline adds green pixels that the boxes alone do not draw.
    without = render(session.image.pixels, heat, boxes)
    green = np.all(picture == (0, 255, 0), axis=-1)
    assert (green & ~np.all(without == (0, 255, 0), axis=-1)).any()
    # A finding without a mask has no outline.
    bare = [f for f in session.findings if not session.masks_for(f) and not session.boxes_for(f)]
    assert bare and "lesion outlined" not in _caption_for(app, bare[0])


def _caption_for(app, finding: str) -> str:
    app.finding_menu.value = finding
    return app.caption.value


@pytest.mark.parametrize("name, content, expect", [
    ("empty.png", b"", "empty"),
    ("notes.txt", b"this is not an image\n" * 10, "notes.txt"),
    ("truncated.png", png_bytes(np.full((64, 64), 7, np.uint8))[:80], "truncated"),
    ("bomb.png", huge_png(100_000, 100_000), "bomb.png"),
    ("large.png", huge_png(9_000, 9_000), "downsize"),
])
def test_bad_upload_gives_a_message_and_the_demo_keeps_working(app, name, content, expect):
    session = app.session
    before = session.image.key
    upload(app, name, content)
    assert "cxr-demo-error" in app.message.value and expect in app.message.value
    assert session.image.key == before, "the previous image stays"
    assert app.upload.value == (), "the upload is cleared so the file can be chosen again"
    # ... and the demo still works: a good upload goes through.
    upload(app, "ok.png", png_bytes(np.tile(np.arange(200, dtype=np.uint8), (150, 1))))
    assert "cxr-demo-error" not in app.message.value
    assert session.image.name == "ok.png" and session.image.shape == (150, 200)
    assert app.image_menu.value is None
    check_chart(session)
    assert rendered_size(app) == (200, 150)


def test_upload_size_cap(phantom_data, tmp_path):
    session = DemoSession(phantom_data, runs_dir=tmp_path, untrained=["resnet18"], image_size=32,
                          max_upload_bytes=1000)
    with pytest.raises(UploadError, match="MiB"):
        session.load_upload(b"\x89PNG" + b"\0" * 2000, "big.png")
    with pytest.raises(UploadError, match="Mpx"):
        read_upload(huge_png(5000, 5000), "wide.png", max_pixels=1_000_000)


def test_dicom_16bit_monochrome1_upload(app):
    # MONOCHROME1: high values are dark. Left half bright raw values must come out dark.
    raw = np.zeros((300, 240), np.uint16)
    raw[:, :120] = 4000
    raw[:, 120:] = 100
    upload(app, "chest.dcm", dicom_bytes(raw))
    session = app.session
    assert "cxr-demo-error" not in app.message.value, app.message.value
    assert session.image.shape == (300, 240) and session.image.pixels.dtype == np.uint8
    assert session.image.pixels[:, :120].mean() < session.image.pixels[:, 120:].mean()
    assert session.image.labels is None and "labels unknown" in app.caption.value
    check_chart(session)
    assert session.heatmap(session.top_finding(), full_size=True).shape == (300, 240)


def test_rgba_and_16bit_png_uploads(app):
    gray = np.tile(np.linspace(0, 255, 180).astype(np.uint8), (120, 1))
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    upload(app, "rgba.png", png_bytes(rgba, "RGBA"))
    assert app.session.image.shape == (120, 180)
    assert np.abs(app.session.image.pixels.astype(int) - gray).max() <= 1
    check_chart(app.session)
    deep = (np.tile(np.linspace(0, 65535, 90), (70, 1))).astype(np.uint16)
    upload(app, "deep.png", png_bytes(deep))
    assert app.session.image.shape == (70, 90)
    assert app.session.image.pixels[:, -1].mean() > app.session.image.pixels[:, 0].mean()
    upload(app, "photo.jpg", _jpeg(gray))
    assert app.session.image.shape == (120, 180)
    check_chart(app.session)


def _jpeg(gray: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([gray] * 3)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_upload_only_demo_without_dataset(tmp_path):
    session = DemoSession(None, runs_dir=tmp_path, untrained=["resnet18"], image_size=32)
    app = build_demo(session=session)
    assert session.image_choices == [] and "upload" in app.message.value.lower()
    upload(app, "x.png", png_bytes(np.full((64, 48), 100, np.uint8)))
    check_chart(session)


def _listed_run(folder: Path, auroc, arch: str = "resnet18", metrics_text: str | None = None) -> None:
    """A run folder with every file a finished run has (cxrlib.runs.is_finished); its best.pt
    is a stand-in, so loading it fails."""
    from cxrlib import profiles, runs

    folder.mkdir(parents=True)
    (folder / runs.CONFIG).write_text(profiles.load("smoke").config(folder.name, {"model.name": arch}).to_json())
    (folder / runs.METRICS).write_text(metrics_text if metrics_text is not None else json.dumps(
        {"mean_auroc": auroc, "split": "official", "model": {"name": arch}}))
    np.savez(folder / runs.PREDICTIONS, ids=np.array(["a.png"]))
    (folder / runs.BEST).write_bytes(b"not a checkpoint")


def test_model_choices_from_runs_folder(tmp_path):
    def make_run(name: str, auroc, arch: str = "resnet18") -> None:
        _listed_run(tmp_path / name, auroc, arch)

    make_run("baseline", 0.71)
    make_run("densenet", 0.82, "densenet121")
    make_run("shortcut_control", 0.9, "intensity_statistics")  # a control: no network to load, never offered
    control = json.loads((tmp_path / "shortcut_control" / "metrics.json").read_text())
    (tmp_path / "shortcut_control" / "metrics.json").write_text(json.dumps({**control, "kind": "control"}))
    (tmp_path / "still_training").mkdir()  # no metrics.json yet: not offered
    _listed_run(tmp_path / "broken", None, metrics_text="{not json")
    problems: list[str] = []
    choices = list_model_choices(tmp_path, ["resnet18"], problems)
    assert [c.key for c in choices] == ["run:densenet", "run:baseline", "untrained:resnet18"]
    assert "0.820" in choices[0].label and "densenet121" in choices[0].label
    assert not choices[0].untrained and choices[-1].untrained and "untrained" in choices[-1].label
    assert len(problems) == 1 and "broken" in problems[0]
    assert [c.key for c in list_model_choices(tmp_path / "missing", ["densenet121"])] == ["untrained:densenet121"]


def test_run_that_cannot_load_gives_a_message(phantom_data, tmp_path):
    _listed_run(tmp_path / "runs" / "no_checkpoint", 0.9)  # finished, but its checkpoint is unreadable
    app = build_demo(data=phantom_data, runs_dir=tmp_path / "runs", untrained=["resnet18"])
    session = app.session
    assert [c.key for c in session.model_choices] == ["run:no_checkpoint", "untrained:resnet18"]
    # The best run will not load: the demo says so and falls back to the next choice.
    assert "cxr-demo-error" in app.message.value and "no_checkpoint" in app.message.value
    assert session.model.key == app.model_menu.value == "untrained:resnet18"
    check_chart(session)
    app.model_menu.value = "run:no_checkpoint"
    assert "cxr-demo-error" in app.message.value
    assert app.model_menu.value == "untrained:resnet18" == session.model.key
    check_chart(session)


@pytest.mark.slow
def test_trained_run_is_offered_and_used(phantom_data, tmp_path):
    """A real (tiny) run: listed with its AUROC, loaded, and its probabilities match the engine's."""
    from cxrlib.predict import predict_images
    from cxrlib.train import run_experiment

    config = demo_profile("smoke", runs_dir=tmp_path / "runs",
                         overrides=[f"data.cache_dir={phantom_data.cache.folder.parent.parent}",
                                    "train.max_steps=1", "train.n_bootstrap=10"]).baseline
    result = run_experiment(config, data=phantom_data, progress=False)
    app = build_demo(data=phantom_data, runs_dir=tmp_path / "runs", untrained=["resnet18"])
    session = app.session
    assert session.model_choices[0].key == "run:baseline"
    assert f"{result.metrics['mean_auroc']:.3f}" in session.model_choices[0].label
    assert not session.model.untrained and app.warning.value == ""
    expected = predict_images(result.model, [session.image.pixels], config.data.image_size, 1)[0]
    np.testing.assert_allclose(session.probabilities(), expected, atol=1e-5)
    # Switching to the untrained model shows the warning.
    app.model_menu.value = "untrained:resnet18"
    assert "Untrained model" in app.warning.value
    check_chart(session)


def test_demo_settings_from_environment(monkeypatch):
    monkeypatch.setenv("CXRLIB_DEMO_PROFILE", "smoke")
    monkeypatch.setenv("CXRLIB_DEMO_OVERRIDES", "data.num_phantoms=40; data.limit=4")
    monkeypatch.setenv("CXRLIB_DEMO_UNTRAINED", "resnet18")
    monkeypatch.setenv("CXRLIB_DEMO_MAX_IMAGES", "5")
    monkeypatch.setenv("CXRLIB_DEMO_THRESHOLD", "0.3")
    out = demo_settings(profile="cpu", data_dir="", overrides=[], untrained=["a", "b"], max_images=200,
                        threshold=0.5)
    assert out == {"profile": "smoke", "data_dir": "", "overrides": ["data.num_phantoms=40", "data.limit=4"],
                   "untrained": ["resnet18"], "max_images": 5, "threshold": 0.3}


def test_demo_imports_and_works_without_ipywidgets(tmp_path):
    """Only cxrlib.demo.app needs ipywidgets: the session runs in a process that cannot import it."""
    script = textwrap.dedent(f"""
        import io, sys
        sys.modules["ipywidgets"] = None  # any import of it now fails
        import numpy as np
        from PIL import Image
        import cxrlib.demo as demo

        session = demo.DemoSession(None, runs_dir={str(tmp_path)!r}, untrained=["resnet18"], image_size=32)
        buffer = io.BytesIO()
        Image.fromarray(np.tile(np.arange(96, dtype=np.uint8), (64, 1))).save(buffer, format="PNG")
        session.load_upload(buffer.getvalue(), "x.png")
        assert session.chart_data().probabilities.shape == (14,)
        assert session.overlay(session.top_finding()).shape == (64, 96, 3)
        assert not isinstance(sys.modules.get("ipywidgets"), type(sys)), "ipywidgets was imported"
        try:
            demo.build_demo
        except ImportError as err:
            assert "ipywidgets" in str(err), err
        else:
            raise AssertionError("build_demo without ipywidgets must raise ImportError")
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_only_the_app_imports_ipywidgets():
    statement = re.compile(r"^\s*(import|from)\s+ipywidgets\b", re.MULTILINE)
    importers = sorted(path.relative_to(REPO).as_posix() for path in (REPO / "cxrlib").rglob("*.py")
                       if statement.search(path.read_text()))
    assert importers == ["cxrlib/demo/app.py"]


def test_notebook_is_thin_and_committed_without_outputs():
    nb = json.loads((REPO / "notebooks" / "08_demo.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    source = ["".join(c["source"]) for c in code]
    tagged = [s for c, s in zip(code, source) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    for name in ("PROFILE", "DATA_DIR", "DEVICE", "RUNS_DIR", "REDO", "OVERRIDES"):
        assert f"{name}:" in tagged[0]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert "cxrlib.demo.build_demo(" in source[-1]
