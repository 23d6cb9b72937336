"""The demo's widget: the :class:`cxrlib.demo.DemoSession` on screen, with ipywidgets.

:func:`build_demo` wraps a session in :class:`DemoApp` (a ``VBox``). The same widget runs
in JupyterLab, under papermill and as a Voila app. This is the only module of cxrlib that
imports ipywidgets: everything it shows comes from the session, which works without it.

The bar chart is made of widgets (a button per finding beside an HTML bar), not a
matplotlib figure, so that a click on a finding works in every frontend, Voila included,
without ipympl, and so that it redraws in milliseconds.
"""
from __future__ import annotations

import base64
import html
import traceback
from pathlib import Path
from typing import Callable, Iterable, Sequence

import ipywidgets as widgets

from cxrlib.data import load_data
from cxrlib.demo.session import (
    DEFAULT_THRESHOLD,
    DEFAULT_UNTRAINED,
    DemoSession,
    demo_profile,
    encode_jpeg,
    labels_text,
)
from cxrlib.demo.uploads import UPLOAD_ACCEPT, UploadError
from cxrlib.labels import FINDINGS


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
        finding = self.finding_menu.value if keep_finding and self.finding_menu.value else self.session.first_finding()
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
        outlined = bool(session.masks_for(finding))
        height, width = image.shape
        self.caption.value = (
            f"<div style='font-size:90%'><b>{html.escape(image.name)}</b> ({width} x {height}, "
            f"{'dataset' if image.source == 'dataset' else 'uploaded'}) · true labels: "
            f"{html.escape(labels_text(image.labels))}<br>{html.escape(finding)}: p = {probs[finding]:.3f} · "
            f"{html.escape(session.method)} heatmap"
            + (f" · {len(boxes)} annotated box{'es' if len(boxes) != 1 else ''} (green)" if boxes else "")
            + (" · lesion outlined (green)" if outlined else "")
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
        prof = demo_profile(profile, data_dir, device, runs_dir, overrides)
        config = prof.baseline
        if data is None:
            try:
                data = load_data(config.data, progress=False)
            except Exception as err:  # the demo still works on uploads; say what went wrong
                problem = f"dataset not loaded ({type(err).__name__}: {err}); upload images instead"
        # Untrained models see the dataset's images at the dataset's size (trained runs always
        # use their own); with no dataset, at their registry input size.
        size = image_size or getattr(data, "image_size", None)
        session = DemoSession(data=data, runs_dir=prof.runs_dir, untrained=untrained, image_size=size,
                              device=config.train.device or "cpu", threshold=threshold, max_images=max_images)
    if problem:
        session.notes.append(problem)
    return DemoApp(session, initial_image=session.first_image())
