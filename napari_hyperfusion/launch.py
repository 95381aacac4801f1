"""``napari-hyperfusion``: napari with a synthetic sample subject open and
the HyperFusion panel docked (the README's demo).

    napari-hyperfusion [--subject SYN_DEMO_01] [--predict] [--screenshot PATH]

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
    # show an axial slice through the middle of the scan
    viewer.dims.order = (2, 1, 0)
    return panel


def main(argv: Sequence[str] | None = None) -> int:
    from .sample_data import SUBJECTS

    parser = argparse.ArgumentParser(prog="napari-hyperfusion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--subject", default="SYN_DEMO_01", choices=sorted(SUBJECTS))
    parser.add_argument("--predict", action="store_true", help="click Predict once the window is up")
    parser.add_argument("--screenshot", metavar="PNG", help="predict, save a window screenshot, quit")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title="napari-hyperfusion (SYNTHETIC demo data - not for diagnosis)")
    panel = open_demo(viewer, args.subject)
    if args.predict or args.screenshot:
        panel.predict()
    if args.screenshot:
        def shoot() -> None:
            if panel._worker is not None:
                QTimer.singleShot(200, shoot)
                return
            viewer.window.screenshot(args.screenshot, canvas_only=False)
            print(f"wrote {args.screenshot}")
            viewer.close()

        QTimer.singleShot(1500, shoot)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
