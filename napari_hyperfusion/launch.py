"""``napari-hyperfusion``: napari with a synthetic sample subject open and
the HyperFusion panel docked (the README's demo).

    napari-hyperfusion [--subject SYN_DEMO_01] [--model NAME|PATH] [--predict] [--explain METHOD] [--screenshot PATH]

``--model`` opens a shipped model by name (``risk_medfusion``, the
MedFusionNet risk model; ``ad_hyperfusion`` is the default) or a file.
``--explain METHOD`` adds a Captum map after the prediction.
``--screenshot`` predicts, saves a screenshot of the whole window and quits
(used to make the README's picture).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "open_demo"]


def open_demo(viewer, subject: str = "SYN_DEMO_01"):
    """Open ``subject`` and dock the panel in ``viewer``; returns the panel."""
    viewer.open_sample("napari-hyperfusion", subject)
    _, panel = viewer.window.add_plugin_dock_widget("napari-hyperfusion", "HyperFusion explorer")
    # an axial view, at the level of the hippocampi (z = -14 mm in MNI space)
    viewer.dims.order = (2, 1, 0)
    viewer.dims.set_point(2, -14.0)
    return panel


def main(argv: Sequence[str] | None = None) -> int:
    from .samples import SUBJECTS

    parser = argparse.ArgumentParser(prog="napari-hyperfusion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--subject", default="SYN_DEMO_01", choices=sorted(SUBJECTS))
    parser.add_argument("--model", help="a shipped model's name (e.g. risk_medfusion) or a .safetensors file")
    parser.add_argument("--predict", action="store_true", help="click Predict once the window is up")
    parser.add_argument(
        "--explain",
        choices=("saliency", "gradcam", "integrated_gradients", "occlusion"),
        help="after predicting, explain with this method",
    )
    parser.add_argument("--screenshot", metavar="PNG", help="predict, save a window screenshot, quit")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title="napari-hyperfusion (SYNTHETIC demo data - not for diagnosis)")
    panel = open_demo(viewer, args.subject)
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
    if args.screenshot:
        viewer.window._qt_window.resize(1400, 1300)
    if args.predict or args.screenshot:
        panel.predict()
    pending = [args.explain] if args.explain else []

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
            if panel.busy or pending:
                QTimer.singleShot(200, shoot)
                return
            if args.explain:  # show the explanation, not the top of the panel
                panel.show_section(panel.explainer)
            viewer.window.screenshot(args.screenshot, canvas_only=False)
            print(f"wrote {args.screenshot}")
            viewer.close()

        QTimer.singleShot(1500, shoot)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
