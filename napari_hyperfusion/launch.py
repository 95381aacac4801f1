"""``napari-hyperfusion``: napari with a synthetic sample subject open and
the HyperFusion panel docked (the README's demo).

    napari-hyperfusion [--subject SYN_DEMO_01] [--scan PATH] [--model NAME|PATH] [--predict] [--explain METHOD]
                       [--view three-planes|twin|lecture] [--size WxH] [--screenshot PATH]

``--scan`` opens a NIfTI file or a DICOM series instead of the sample
(the form takes ``--subject``'s record).
``--model`` opens a shipped model by name (``risk_medfusion``, the
MedFusionNet risk model; ``ad_hyperfusion`` is the default) or a file.
``--explain METHOD`` adds a Captum map after the prediction.
``--view`` opens a view after the prediction: ``whatif`` (the What-if tab
with the patient 20 years older), ``three-planes`` (the linked planes),
``twin`` (the patient beside that what-if twin) or ``lecture`` (lecture
size). ``--size`` sets the window's size in pixels.
``--screenshot`` predicts, saves a screenshot of the whole window and quits
(used to make the README's and the docs' pictures).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "open_demo", "VIEWS"]


def _plain(text: str) -> str:
    """Text from a file, printable on a terminal: control characters dropped."""
    return "".join(c if c.isprintable() or c == "\n" else " " for c in text)


VIEWS = ("whatif", "three-planes", "twin", "lecture")
TWIN_YEARS = 20.0  # the twin view's what-if: the patient this much older


def _size(text: str) -> tuple[int, int]:
    """``"1366x768"`` -> ``(1366, 768)`` (argparse type)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT in pixels, e.g. 1366x768, got {text!r}") from None
    if not (640 <= width <= 7680 and 480 <= height <= 4320):
        raise argparse.ArgumentTypeError(f"must be between 640x480 and 7680x4320, got {text!r}")
    return width, height


def open_view(panel, view: str) -> None:
    """Open one of :data:`VIEWS` on a predicted panel."""
    if view == "three-planes":
        panel.view_controls.three_planes.setChecked(True)
    elif view == "lecture":
        panel.view_controls.lecture.setChecked(True)
    else:  # the what-if patient TWIN_YEARS older (and, for "twin", side by side)
        whatif = panel.whatif
        if "AGE" in whatif.patient_record:
            whatif.set_whatif_value("AGE", float(whatif.patient_record["AGE"]) + TWIN_YEARS)
            whatif.update_whatif()
        if view == "twin":
            whatif.twin_view()


def open_demo(viewer, subject: str = "SYN_DEMO_01", scan: str | None = None):
    """Open ``subject`` (or the file or DICOM series ``scan``, with
    ``subject``'s record in the form) and dock the panel in ``viewer``;
    returns the panel. A scan that cannot be read raises
    :class:`~napari_hyperfusion.errors.ImageError`."""
    if scan is None:
        viewer.open_sample("napari-hyperfusion", subject)
    else:
        _open_scan(viewer, scan)
    _, panel = viewer.window.add_plugin_dock_widget("napari-hyperfusion", "HyperFusion explorer")
    if scan is not None:
        from .samples import subject_record

        panel.patient.set_record(subject_record(subject))
    # an axial view, at the level of the hippocampi (z = -14 mm in MNI space)
    viewer.dims.order = (2, 1, 0)
    viewer.dims.set_point(2, -14.0)
    return panel


def _open_scan(viewer, scan: str) -> None:
    """Open a NIfTI file or a DICOM series (folder, slice file, DICOMDIR)
    with the plugin's readers; DICOM is read directly, since napari matches
    readers by file name and a DICOMDIR or an extensionless slice has none."""
    from pathlib import Path

    from .data.scan_file import is_nifti_path
    from .errors import ImageError
    from .io.dicom import read_dicom

    if not Path(scan).exists():
        raise ImageError(f"{scan}: no such file or folder")
    if not is_nifti_path(scan):
        for data, kwargs, _ in read_dicom(scan):
            viewer.add_image(data, **kwargs)
        return
    try:
        viewer.open(scan, plugin="napari-hyperfusion")
    except Exception as err:  # napari wraps a reader's error in its own; the cause says what is wrong
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise ImageError(str(cause) if isinstance(cause, ImageError) else f"{scan} cannot be opened: {err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    from .samples import SUBJECTS

    parser = argparse.ArgumentParser(prog="napari-hyperfusion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--subject", default="SYN_DEMO_01", choices=sorted(SUBJECTS))
    parser.add_argument(
        "--scan",
        help="open this NIfTI file or DICOM series (folder, file, DICOMDIR) instead; the form takes --subject's record",
    )
    parser.add_argument("--model", help="a shipped model's name (e.g. risk_medfusion) or a .safetensors file")
    parser.add_argument("--predict", action="store_true", help="click Predict once the window is up")
    parser.add_argument(
        "--explain",
        choices=("saliency", "gradcam", "integrated_gradients", "occlusion"),
        help="after predicting, explain with this method",
    )
    parser.add_argument("--view", choices=VIEWS, help="after predicting, open this view")
    parser.add_argument("--size", type=_size, metavar="WxH", help="the window's size in pixels, e.g. 1366x768")
    parser.add_argument("--screenshot", metavar="PNG", help="predict, save a window screenshot, quit")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtCore import QTimer

    from .errors import HyperFusionError

    viewer = napari.Viewer(title="napari-hyperfusion (SYNTHETIC demo data - not for diagnosis)")
    try:
        panel = open_demo(viewer, args.subject, args.scan)
    except HyperFusionError as err:
        print(f"napari-hyperfusion: {_plain(str(err))}", file=sys.stderr)
        viewer.close()
        return 2
    if args.model:
        from pathlib import Path

        from .resources import models_dir

        path = Path(args.model)
        if not path.suffix:
            path = models_dir() / f"{args.model}.safetensors"
        if not panel.open_model(path):
            print(f"napari-hyperfusion: cannot open the model {args.model}", file=sys.stderr)
            viewer.close()
            return 2
    if args.size or args.screenshot:
        viewer.window._qt_window.resize(*(args.size or (1400, 1300)))
    if args.predict or args.screenshot or args.view:
        panel.predict()
    pending = [args.explain] if args.explain else []
    views = [args.view] if args.view else []

    def view_when_idle() -> None:
        if panel.busy:
            QTimer.singleShot(200, view_when_idle)
            return
        view = views.pop()
        if panel.last_result is not None:  # a failed prediction said why; there is nothing to view
            open_view(panel, view)

    if views:
        QTimer.singleShot(300, view_when_idle)

    def explain_when_idle() -> None:
        if panel.busy:
            QTimer.singleShot(200, explain_when_idle)
            return
        index = panel.explainer.method_combo.findData(pending.pop())
        panel.explainer.method_combo.setCurrentIndex(index)
        panel.explain()

    if pending:
        QTimer.singleShot(300, explain_when_idle)
    if args.screenshot:

        def shoot() -> None:
            ortho = panel.view_controls.ortho
            if panel.busy or pending or views or (ortho is not None and ortho.busy):  # side canvases drawn too
                QTimer.singleShot(200, shoot)
                return
            if args.explain:  # show the explanation, not the top of the panel
                panel.show_section(panel.explainer)
            elif args.view:  # the What-if tab, where the view was opened from
                panel.show_section(panel.whatif)
            from qtpy.QtWidgets import QApplication

            from ._qt.linked_views import LinkedCanvas

            QApplication.processEvents()  # lay out the tab just shown before it is captured
            viewer.reset_view()  # the scan fills the canvas at the window's final size
            for canvas in panel.window().findChildren(LinkedCanvas):
                canvas.model.reset_view()
            viewer.window.screenshot(args.screenshot, canvas_only=False)
            print(f"wrote {args.screenshot}")
            viewer.close()

        QTimer.singleShot(1500, shoot)
    QTimer.singleShot(500, viewer.reset_view)  # the scan fills the canvas once the window has its size
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
