"""The panel's "Explain (Captum)" section: image maps as overlay layers,
EHR-field attributions as a bar chart and, for a model that reads notes,
the note's sentences as a second chart (a mixin of :class:`HyperFusionPanel`;
the work is :mod:`napari_hyperfusion.analysis.explain`)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel, QPushButton, QSpinBox, QVBoxLayout

from ..analysis.explain import IMAGE_METHODS, Cancelled, attribute_image, attribute_note, attribute_tabular
from ..analysis.overlays import OVERLAY_KEY, overlay_layers
from ..data.notes import NoteEncoderError
from ..data.preprocess import ImageError
from ..data.schema import SchemaError
from ..io.model_file import LoadedModel

__all__ = ["ExplainSection", "METHOD_LABELS"]

METHOD_LABELS = {
    "saliency": "Saliency (fast)",
    "gradcam": "Grad-CAM (last stage)",
    "integrated_gradients": "Integrated Gradients",
    "occlusion": "Occlusion",
}
# Integrated Gradients' completeness error, as a share of the attributed change, above which we warn
IG_DELTA_WARNING = 0.05


class _Progress(QObject):
    """Carries ``(done, total)`` from a worker thread to the progress bar."""

    step = Signal(int, int)


class ExplainSection:
    """Explain controls and their worker; needs the panel's ``model``,
    ``current_scan``, ``record``, ``progress``, ``status`` and buttons."""

    def _build_explain_section(self, layout: QVBoxLayout) -> None:
        """Method, output, IG settings, the Explain button and the EHR chart."""
        explain_box = QGroupBox("Explain (Captum)")
        explain_layout = QVBoxLayout(explain_box)
        explain_form = QFormLayout()
        self.method_combo = QComboBox()
        for method in IMAGE_METHODS:
            self.method_combo.addItem(METHOD_LABELS[method], method)
        explain_form.addRow("Method:", self.method_combo)
        self.target_combo = QComboBox()
        self.target_combo.setToolTip("the output to explain: a class probability, or the predicted age")
        explain_form.addRow("Explain output:", self.target_combo)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(4, 512)
        self.steps_spin.setValue(32)
        self.steps_spin.setToolTip(
            "Integrated Gradients: steps of the path integral (more: smaller completeness error)"
        )
        explain_form.addRow("IG steps:", self.steps_spin)
        self.baseline_combo = QComboBox()
        self.baseline_combo.addItems(["zeros", "blurred", "template"])
        self.baseline_combo.setToolTip("Integrated Gradients' reference image: background, the scan blurred (6 mm), "
                                       "or the MNI template")  # fmt: skip
        explain_form.addRow("IG baseline:", self.baseline_combo)
        explain_layout.addLayout(explain_form)
        self.explain_button = QPushButton("Explain")
        self.explain_button.setObjectName("explain_button")
        explain_layout.addWidget(self.explain_button)
        self.ehr_figure = Figure(figsize=(3.2, 2.2), tight_layout=True)
        self.ehr_canvas = FigureCanvasQTAgg(self.ehr_figure)
        self.ehr_canvas.setMinimumHeight(170)
        explain_layout.addWidget(self.ehr_canvas)
        self.note_figure = Figure(figsize=(3.2, 1.8), tight_layout=True)
        self.note_canvas = FigureCanvasQTAgg(self.note_figure)
        self.note_canvas.setMinimumHeight(140)
        self.note_canvas.setVisible(False)
        explain_layout.addWidget(self.note_canvas)
        self.explain_label = QLabel("Maps appear as layers on the scan; EHR fields as bars (IG).")
        self.explain_label.setWordWrap(True)
        explain_layout.addWidget(self.explain_label)
        layout.addWidget(explain_box)

        self.last_explanation = None
        self._stop = threading.Event()
        self._progress = _Progress()
        self._progress.step.connect(self._on_step)
        self.explain_button.clicked.connect(self.explain)

    # -- explanations ----------------------------------------------------------
    def explain(self) -> None:
        """Attribute the chosen output to the scan (overlay layers) and to
        the EHR fields (bar chart), in a worker thread with progress and
        Cancel."""
        ok, reason = self._validate()
        if not ok:
            self.notify_error(reason)
            return
        try:
            scan = self.current_scan()
        except ImageError as err:
            self.notify_error(f"Cannot use this scan: {err}")
            return
        from napari.qt.threading import thread_worker

        model, record, layer, note = self.model, self.record(), self.current_layer(), self.note_text()
        method = self.method_combo.currentData()
        target = self.target_combo.currentText()
        settings = {"method": method, "target": target, "baseline": self.baseline_combo.currentText(),
                    "n_steps": self.steps_spin.value()}  # fmt: skip
        stop, step = self._stop, self._progress.step

        @thread_worker
        def work():
            try:
                image = None
                if model.info.config.uses_image:
                    image = attribute_image(model, scan, record, progress=step.emit, should_stop=stop.is_set,
                                            note=note, **settings)  # fmt: skip
                if stop.is_set():
                    raise Cancelled()
                tabular = attribute_tabular(model, scan, record, target=target, note=note)
                sentences = None
                if model.info.config.uses_note and note:
                    sentences = attribute_note(model, scan, record, note, target=target, should_stop=stop.is_set)
                return image, tabular, sentences
            except Cancelled:
                return "Explanation cancelled; nothing was changed."
            except (ImageError, SchemaError, NoteEncoderError, ValueError) as err:
                return f"Cannot explain: {err}"

        worker = work()
        worker.returned.connect(lambda result: self._on_explained(result, layer, model, record))
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._stop.clear()
        self._worker = worker
        self.predict_button.setEnabled(False)
        self.explain_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"explaining with {METHOD_LABELS[method]}...")
        worker.start()

    def _on_step(self, done: int, total: int) -> None:
        if self._worker is not None:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def _on_explained(self, result: Any, layer: Any, model: LoadedModel, record: dict[str, Any]) -> None:
        if isinstance(result, str):
            self.status.setText(result)
            if not result.startswith("Explanation cancelled"):
                self.notify_error(result)
            return
        image, tabular, sentences = result
        self.last_explanation = (image, tabular, sentences)
        source = layer.name if layer is not None else ""
        if image is not None:
            for data, kwargs in overlay_layers(image, source, model.info.name, model.sha256, record):
                self._put_overlay(data, kwargs)
            if image.completeness_is_poor(IG_DELTA_WARNING):
                from napari.utils.notifications import show_warning

                show_warning(
                    f"Integrated Gradients' completeness error is {image.relative_delta:.0%} of the attributed "
                    f"change (delta {image.convergence_delta:.2g}); raise 'IG steps' (now "
                    f"{image.params.get('n_steps')}) for a faithful map."
                )
        self._draw_tabular(tabular, model)
        self._draw_note(sentences, model)
        parts = []
        if image is not None:
            parts.append(f"{METHOD_LABELS[image.method]} for {image.target}: {image.seconds:.1f} s")
            if image.convergence_delta is not None:
                parts.append(f"IG completeness error {image.convergence_delta:.2g}")
        if tabular.image_share is not None:
            parts.append(f"image {tabular.image_share:.0%} / EHR {1 - tabular.image_share:.0%} of the change "
                         "against a blurred scan and the average record")  # fmt: skip
        self.explain_label.setText("; ".join(parts))
        self.status.setText("done")

    def _put_overlay(self, data: np.ndarray, kwargs: dict[str, Any]) -> None:
        """Replace the map of the same scan, view and model; add it otherwise."""
        if isinstance(kwargs["colormap"], dict):
            from napari.utils import Colormap

            kwargs = {**kwargs, "colormap": Colormap(**kwargs["colormap"])}
        key = kwargs["metadata"][OVERLAY_KEY]
        for existing in self.viewer.layers:
            if existing.metadata.get(OVERLAY_KEY) == key:
                existing.data = data
                existing.name = kwargs["name"]
                existing.metadata = kwargs["metadata"]
                existing.colormap = kwargs["colormap"]
                existing.blending = kwargs["blending"]
                existing.opacity = kwargs["opacity"]
                existing.contrast_limits = kwargs["contrast_limits"]
                return
        self.viewer.add_image(data, **kwargs)

    def _draw_tabular(self, tabular: Any, model: LoadedModel | None = None) -> None:
        fig = self.ehr_figure
        fig.clear()
        ax = fig.add_subplot(111)
        values = np.asarray(tabular.values)
        colors = ["#4daf4a" if v >= 0 else "#c2a5cf" for v in values]
        labels = list(tabular.labels)
        selection = model.info.risk_selection() if model is not None else None
        if selection is not None:  # say which fields stage 1 dropped: their 0 is by design
            kept = set(selection.fields(model.info.schema))
            labels = [f"{lab} (not read)" if name in model.info.schema.names and name not in kept else lab
                      for name, lab in zip(tabular.fields, labels)]  # fmt: skip
        ax.barh(labels[::-1], values[::-1], color=colors[::-1])
        ax.axvline(0, color="#888888", linewidth=0.8)
        ax.tick_params(labelsize=7)
        ax.set_title(f"EHR fields -> {tabular.target} (IG vs. average record)", fontsize=8)
        self.ehr_canvas.draw_idle()

    def _draw_note(self, sentences: Any, model: LoadedModel) -> None:
        """Shapley values of the note's sentences (hidden for models
        without notes)."""
        reads_note = model.info.config.uses_note
        self.note_canvas.setVisible(reads_note)
        if not reads_note:
            return
        fig = self.note_figure
        fig.clear()
        ax = fig.add_subplot(111)
        if sentences is None:
            ax.text(0.5, 0.5, "no note was given: nothing to attribute", ha="center", va="center", fontsize=7)
            ax.set_axis_off()
        else:
            values = np.asarray(sentences.values)
            names = [s if len(s) <= 38 else s[:36] + "..." for s in sentences.sentences]
            colors = ["#4daf4a" if v >= 0 else "#c2a5cf" for v in values]
            ax.barh(names[::-1], values[::-1], color=colors[::-1])
            ax.axvline(0, color="#888888", linewidth=0.8)
            ax.tick_params(labelsize=6)
            how = "exact Shapley" if sentences.exact else "sampled Shapley"
            ax.set_title(f"note sentences -> {sentences.target} ({how} vs. no note)", fontsize=8)
        self.note_canvas.draw_idle()
