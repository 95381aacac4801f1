"""Prepare: register the chosen scan to the MNI template, off the UI thread.

"Prepare scan" runs :func:`~napari_hyperfusion.data.registration.prepare_scan`
on the case's scan in a worker (progress and Cancel in the job runner) and
adds what it made, for checking before any prediction:

- the prepared scan, ``<name> (prepared, MNI)``, which becomes the chosen
  scan and carries the record typed for the original;
- the template's brain outline on it (a contour layer), so a misfit shows;
- the QC figures (correlation with the template, brain coverage, head
  size) on the section's line and in the layer's metadata.

"Maps to native scan" brings the attribution overlays computed on a
prepared scan back onto the original, through the saved transform.

Without the optional extra ``[prep]`` (SimpleITK) the buttons are off and
the line says what to install.
"""

from __future__ import annotations

import importlib.util
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QLabel, QPushButton, QVBoxLayout, QWidget

from ..analysis.case import Case
from ..analysis.explain import Cancelled
from ..analysis.overlays import OVERLAY_KEY
from ..data.preprocess import resample_to_grid
from ..data.template import load_template
from ..io.nifti import layer_kwargs_for
from . import notify
from .jobs import JobRunner
from .layers import overlays_of
from .patient_form import RECORD_KEY, layer_scan

if TYPE_CHECKING:
    from collections.abc import Callable

    import napari

__all__ = ["PrepareSection", "PREPARED_KEY"]

PREPARED_KEY = "hyperfusion_prepared"


def _token(layer: Any) -> str:
    return (layer.metadata.get(PREPARED_KEY, {}).get("token", "") if layer is not None else "") or "-"


def prep_installed() -> bool:
    return importlib.util.find_spec("SimpleITK") is not None


class PrepareSection(QWidget):
    """The Prepare button, its options and QC line, and maps-to-native."""

    def __init__(
        self,
        case: Case,
        jobs: JobRunner,
        viewer: napari.Viewer,
        current_layer: Callable[[], Any],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.case, self.jobs, self.viewer, self.current_layer = case, jobs, viewer, current_layer
        # token in the prepared layer's metadata -> (PreparedScan, native layer); a token, not id(layer):
        # the viewer a plugin gets may hand out proxy objects whose ids differ from access to access
        self.prepared: dict[str, tuple[Any, Any]] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.prepare_button = QPushButton("Prepare scan (register to MNI)")
        self.prepare_button.setObjectName("prepare_button")
        self.prepare_button.setToolTip(
            "align a T1 in any orientation, voxel size and field of view to the MNI152 template, mask it "
            "with the template's brain, and check the fit"
        )
        self.deformable = QCheckBox("deformable")
        self.deformable.setToolTip("add a B-spline refinement after the affine registration (slower)")
        layout.addWidget(self.prepare_button)
        layout.addWidget(self.deformable)  # its own line: beside the button it was clipped in a narrow dock
        self.native_button = QPushButton("Maps to native scan")
        self.native_button.setObjectName("native_maps_button")
        self.native_button.setToolTip("show this prepared scan's attribution maps on the original scan")
        layout.addWidget(self.native_button)
        self.qc_label = QLabel()
        self.qc_label.setObjectName("prepare_qc")
        self.qc_label.setWordWrap(True)
        self.qc_label.setTextFormat(Qt.TextFormat.PlainText)  # layer names come from files
        layout.addWidget(self.qc_label)
        self.installed = prep_installed()
        if not self.installed:
            self.qc_label.setText(
                "Preparing needs the optional extra: pip install 'napari-hyperfusion[prep]' (SimpleITK)."
            )
        self.prepare_button.clicked.connect(self.prepare)
        self.native_button.clicked.connect(self.maps_to_native)
        case.changed.connect(self.refresh)
        jobs.busy_changed.connect(self.refresh)
        viewer.layers.events.removed.connect(self._on_removed)
        self.refresh()

    # -- state ------------------------------------------------------------------
    def refresh(self, *args: Any) -> None:
        busy = self.jobs.busy
        self.prepare_button.setEnabled(self.installed and self.case.scan is not None and not busy)
        layer = self.current_layer()
        self.native_button.setEnabled(_token(layer) in self.prepared and not busy)
        if layer is not None and PREPARED_KEY in layer.metadata:
            self.qc_label.setText(layer.metadata[PREPARED_KEY]["summary"])
        elif self.installed:  # another scan is chosen: the last registration's QC is not about it
            self.qc_label.setText("")

    def _on_removed(self, event: Any) -> None:
        self.prepared.pop(_token(event.value), None)

    # -- prepare ----------------------------------------------------------------
    def prepare(self) -> None:
        """Register the case's scan in a worker; the result is added as a new layer."""
        if not self.installed:
            notify.error("Preparing needs the optional extra: pip install 'napari-hyperfusion[prep]' (SimpleITK).")
            return
        layer, scan = self.current_layer(), self.case.scan
        if layer is None or scan is None:
            notify.error("Choose a scan to prepare.")
            return
        record, deformable = dict(self.case.record), self.deformable.isChecked()

        def job():
            from ..data.registration import PrepCancelled, prepare_scan

            yield f"preparing {layer.name}: rigid, then affine registration to MNI152" + (
                ", then B-spline" if deformable else ""
            )
            try:
                return prepare_scan(
                    scan, deformable=deformable, progress=lambda f, stage: self.jobs.report(int(f * 1000), 1000),
                    should_stop=self.jobs.should_stop,
                )  # fmt: skip
            except PrepCancelled:
                raise Cancelled() from None

        self.jobs.start(job, lambda prepared: self._on_prepared(prepared, layer, record), "starting...",
                        "Cannot prepare")  # fmt: skip

    def _on_prepared(self, prepared: Any, native: Any, record: dict[str, Any]) -> None:
        from ..data.registration import qc_verdict

        verdict, reason = qc_verdict(prepared.qc)
        summary = (
            f"Prepared {native.name}: QC {verdict.upper()} - {reason}; head size {prepared.head_scale:.2f} x "
            f"template; {' + '.join(prepared.stages)}. Check the outline against the brain."
        )
        data = prepared.scan.data
        low, high = np.percentile(data[data > 0], [0.5, 99.8]) if (data > 0).any() else (0.0, 1.0)
        metadata = {
            key: native.metadata[key] for key in ("subject_id", "synthetic") if key in native.metadata
        }  # fmt: skip
        metadata.update({
            RECORD_KEY: record,
            PREPARED_KEY: {"source_layer": native.name, "qc": prepared.qc.to_dict(), "verdict": verdict,
                           "head_scale": prepared.head_scale, "stages": list(prepared.stages), "summary": summary,
                           "token": uuid.uuid4().hex},
            "affine": prepared.scan.affine.tolist(),
            "space": "MNI152 2009a, head size kept in the voxel size (prepared)",
        })  # fmt: skip
        # the outline first: adding the scan selects it, and the outline must then be there to be tagged
        outline = self._add_outline(prepared, native.name)
        self.viewer.add_image(
            data, name=f"{native.name} (prepared, MNI)", colormap="gray", metadata=metadata,
            contrast_limits=(float(low), float(high)), **layer_kwargs_for(prepared.scan.affine),
        )  # fmt: skip
        layer = self.viewer.layers[-1]
        layers = self.viewer.layers
        layers.move(len(layers) - 2, len(layers))  # the outline above the scan it outlines
        data_now, affine_now = layer_scan(layer)
        from ..analysis.case import scan_fingerprint

        outline.metadata[OVERLAY_KEY]["scan_fingerprint"] = scan_fingerprint(data_now, affine_now)
        self.prepared[metadata[PREPARED_KEY]["token"]] = (prepared, native)
        # show what was made: the native scan hidden (not removed), the view centred on the prepared brain
        native.visible = False
        centre = prepared.scan.affine[:3, :3] @ ((np.array(data.shape) - 1) / 2.0) + prepared.scan.affine[:3, 3]
        self.viewer.dims.set_point(range(3), tuple(float(c) for c in centre))
        self.viewer.reset_view()
        self.qc_label.setText(summary)
        self.jobs.status.setText(summary)
        if verdict == "refuse":
            notify.error(f"{summary} The input check will refuse it: {reason}.")
        self.refresh()

    def _add_outline(self, prepared: Any, name: str) -> Any:
        tpl = load_template()
        mask = (tpl.regions["intracranial"] > 0.5).astype(np.uint8)
        outline = self.viewer.add_labels(
            mask, name=f"MNI template outline on {name} (prepared)", opacity=0.8,
            metadata={OVERLAY_KEY: {"kind": "template outline", "scan_fingerprint": ""}},
            **layer_kwargs_for(prepared.scan.affine),
        )  # fmt: skip
        outline.contour = 1
        return outline

    # -- maps back to the native scan ------------------------------------------------
    def maps_to_native(self) -> list[Any]:
        """Copy the chosen prepared scan's attribution overlays onto its
        native scan (through the saved transform). Returns the new layers."""
        from ..analysis.case import scan_fingerprint
        from ..data.registration import to_native

        layer = self.current_layer()
        if _token(layer) not in self.prepared:
            notify.error("Choose a scan made by Prepare (its overlays are brought back to the original).")
            return []
        prepared, native = self.prepared[_token(layer)]
        if native not in self.viewer.layers:
            notify.error(f"The original scan {native.name} is no longer open.")
            return []
        overlays = [o for o in overlays_of(self.viewer, scan_fingerprint(*layer_scan(layer)))
                    if "attribution" in o.metadata]  # fmt: skip
        if not overlays:
            notify.error("This prepared scan has no attribution maps yet: click Explain first.")
            return []
        native_fp = scan_fingerprint(*layer_scan(native))
        shape = prepared.scan.data.shape
        added = []
        for overlay in overlays:
            grid_affine = np.asarray(overlay.metadata["affine"], dtype=float)
            # model grid -> the prepared (template) grid by world position -> native through the transform
            on_template = resample_to_grid(np.asarray(overlay.data, dtype=np.float32), grid_affine,
                                           prepared.scan.affine, shape)  # fmt: skip
            data = to_native(on_template, prepared)
            key = {**overlay.metadata[OVERLAY_KEY], "scan_fingerprint": native_fp, "space": "native"}
            metadata = {**overlay.metadata, OVERLAY_KEY: key, "affine": prepared.native.affine.tolist()}
            metadata["attribution"] = {**metadata["attribution"],
                                       "space": f"native scan {native.name}, through the Prepare transform"}  # fmt: skip
            added.append(self.viewer.add_image(
                data, name=f"{overlay.name} -> native {native.name}", metadata=metadata,
                colormap=overlay.colormap, blending=overlay.blending, opacity=overlay.opacity,
                contrast_limits=overlay.contrast_limits, **layer_kwargs_for(prepared.native.affine),
            ))  # fmt: skip
        self.jobs.status.setText(f"{len(added)} map(s) shown on {native.name}")
        return added
